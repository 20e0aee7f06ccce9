"""The `saerl` command line: demo, run, ablate, ingest, status, report, gc, export. It is the top layer (it starts
flows); the library `saerl` never imports it.

Config errors are reported before anything heavy starts (no server, no model). Flows are imported only
after the local Prefect server is up, so Prefect picks up the right API URL and home folder.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import io
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from saerl.config import (
    SHIPPED_CONFIGS,
    ConfigError,
    PipelineConfig,
    load_config,
)
from saerl.overrides import refuse_rewrites
from saerl.privacy import credentials_to_env, telemetry_off, without_uri_credentials
from saerl.terminal import output_columns, stderr_handler, stderr_is_terminal

if TYPE_CHECKING:
    from saerl.report import RunReport
    from saerl.runs import RunRecord

DEMO_CONFIG = SHIPPED_CONFIGS / "demo.yaml"
OVERRIDES_HELP = ("dotted overrides KEY=VALUE, each VALUE parsed as YAML: a scalar (curriculum.mix_ratio=0.2) or a "
                  "list ('train.seeds=[0,1]'; quote it for the shell)")
HELP_COLUMNS = 80  # the terminal width the pre-wrapped help texts (RawDescriptionHelpFormatter's) fit in
HELP_MARGIN = 2  # argparse's own: it wraps its help to the terminal's width less this
RUN_EPILOG = (  # `saerl run --help`: override values are YAML, lists included (saerl.config.load_config)
    "override values are YAML, so lists work too (quote them for the shell), e.g.:\n"
    "  saerl run configs/demo.yaml curriculum.mix_ratio=0.2 --until curriculum\n"
    "  saerl run configs/demo.yaml 'train.seeds=[0,1]' \\\n"
    "      'train.arms=[saerl,vanilla,order_only]'")


USER_ERRORS = (ValueError, OSError)  # what main prints as one line, `saerl: error: ...` (a config, data or path
# problem whose message names the fix)
EXIT_OK = 0  # the command did what it was asked (a read-only command whose reader closed stdout early too)
EXIT_FAILED = 1  # a run started and failed (its record says at which stage; the same command resumes), an ablation
# child failed, `status --check` of a failed run, or an unexpected error (Python's own status for an uncaught one)
EXIT_USAGE = 2  # the command line, the config, an input or the environment is wrong: nothing ran (argparse's own)
EXIT_NOT_ENDED_OK = 3  # `status --check`: the run was stopped (a signal) or killed before it could record its end
EXIT_RUNNING = 4  # `status --check`: the run is still going (or it cannot be told whether its process is alive)
EXIT_SIGNAL_BASE = 128  # a run a signal stopped exits 128 + the signal's number (129 SIGHUP, 130 SIGINT, 143 SIGTERM)
EXIT_LINES = (  # the `saerl --help` epilog's lines, each wrapped to HELP_COLUMNS (:func:`help_entry`)
    (str(EXIT_OK), "done (also a read-only command whose reader closed its output early: saerl report | head)"),
    (str(EXIT_FAILED), "a run started and failed: stderr names the run id and the stage, `saerl status RUN` too; the "
     "same command resumes it. Also an ablation whose child failed, or an unexpected error"),
    (str(EXIT_USAGE), "bad command line, config, input or environment (a stale PREFECT_API_URL): nothing ran"),
    (str(EXIT_NOT_ENDED_OK), "status --check: the run was stopped or killed (the same command resumes it)"),
    (str(EXIT_RUNNING), "status --check: the run is still going"),
    (f"{EXIT_SIGNAL_BASE}+N", "stopped by signal N: 129 SIGHUP, 130 Ctrl-C, 143 SIGTERM or a Cancel of the run in "
     "Prefect (a run: recorded as stopped; under nohup a closed terminal's SIGHUP leaves a run going)"))
EXIT_STATUS_WIDTH = 5  # the width of the exit statuses' column (128+N), after two spaces


def help_text(text: str) -> str:
    """`text` wrapped to fit HELP_COLUMNS, less argparse's own margin (HELP_MARGIN): a RawDescriptionHelpFormatter
    text keeps its line breaks, and wrapped by hand, at up to 99 columns, it broke mid-word in an 80-column terminal.
    in: text; out: its lines."""
    return textwrap.fill(text, HELP_COLUMNS - HELP_MARGIN)


def help_entry(name: str, text: str) -> str:
    """One entry of a help table: `name` in its column (EXIT_STATUS_WIDTH wide, after two spaces), then `text`
    wrapped to HELP_COLUMNS beside it. in: the name, its meaning; out: the lines."""
    head = f"  {name:<{EXIT_STATUS_WIDTH}} "
    return textwrap.fill(text, HELP_COLUMNS - HELP_MARGIN, initial_indent=head, subsequent_indent=" " * len(head))


EXIT_CODES = "exit statuses:\n" + "\n".join(help_entry(code, text) for code, text in EXIT_LINES)  # README's "Exit
# statuses" says the same


def resume_hint(run_id: str | None = None) -> str:
    """What a failed run's last stderr line says: what is kept, that the same command resumes, and the `saerl status`
    command naming the stage. in: the run's id (None: not known, e.g. an ablation's); out: the line."""
    status = f"saerl status {run_id}" if run_id else "saerl status"
    return (f"saerl: the run failed (`{status}` names the stage); every finished stage and chunk is kept, so once "
            "the cause is fixed the same command resumes where it stopped")


RESUME_HINT = resume_hint()
PREFECT_CRASH = "Crash detected!"  # how Prefect's flow engine starts the line it logs when a flow run ends abruptly
PREFECT_INTERRUPT = "Execution was aborted by an interrupt signal."  # its cause on Ctrl-C (and SIGHUP: Interrupted)
PREFECT_TERMINATION = "Execution was aborted by a termination signal."  # its cause on SIGTERM (TerminationSignal)
PREFECT_SIGNAL_CAUSES = (PREFECT_INTERRUPT, PREFECT_TERMINATION)  # the words prefect.states.exception_to_crashed_state
# gives a person's stop; any other crash (an unexpected exception, a lost server) keeps its line
PREFECT_FLOW_LOGGER = "prefect.flow_runs"  # where Prefect logs a flow run's end: also a lost API's error
PREFECT_RUN_LOGGERS = (PREFECT_FLOW_LOGGER, "prefect.task_runs")  # where Prefect logs a failed task or flow run
LOGGED = "_saerl_traceback_logged"  # set on an error whose traceback a Prefect run logger printed (main's cue)
USER_LINE_LOGGED = "_saerl_user_line_logged"  # set on a user error whose line a Prefect run logger printed
PREFECT_FAILED_STATE = "Finished in state Failed("  # how Prefect's task engine starts its line after the failure's
PREFECT_CRASHED_STATE = "Finished in state Crashed("  # its line for a task run a signal ended mid-way: on a loaded
# machine a Ctrl-C can reach the stage's task engine first, which words the same cause (PREFECT_SIGNAL_CAUSES)
SEEN_KEPT = 8  # the user errors UserErrorTracebacks remembers for that line (the latest; a run stops at its first)
URLLIB3_POOL_LOGGER = "urllib3.connectionpool"  # where urllib3 (MLflow's HTTP client) logs each retry of a request
URLLIB3_RETRY = "Retrying ("  # how that warning starts: 'Retrying (Retry(total=1, ...)) after connection broken by'
# where prefect-dask logs the failed start of a run's LocalCluster (flows.dask_runner.LocalClusterTaskRunner: its
# runner's name), with the cause's traceback, and how that line starts; saerl's own line says the cause
LOCAL_CLUSTER_LOGGER = "prefect.task_runner.localcluster"
CLUSTER_START_FAILED = "Failed to create "
NOISY_LOGGERS = ("httpx", "httpcore", "alembic", "urllib3", "filelock",  # at WARNING, -v or not
                 "sqlalchemy.engine", "huey")  # these two MLflow quieted so with its own handler (MLFLOW_LOGGERS):
# at INFO SQLAlchemy logs every SQL statement
MLFLOW_CONFIGURE_LOGGING = "MLFLOW_CONFIGURE_LOGGING"  # MLflow's switch: give its loggers a handler of its own at import
MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")  # the loggers that handler is given (with no
# propagation: mlflow/utils/logging_utils.py:_configure_mlflow_loggers)
MLFLOW_NO = ("false", "0")  # how MLflow's boolean environment variables say no (case aside)


class UserErrorTracebacks(logging.Filter):
    """Keeps the first line but drops the traceback Prefect's flow and task run loggers attach to a user error
    (USER_ERRORS): a stage's "extract.layer=6 is out of range" came after 120-250 lines of tracebacks, then
    main's own line. Other errors (a bug's) keep theirs; `saerl -v` keeps every one. The same user error logged
    again (the task's "Finished in state Failed(...)" line, then once per enclosing flow run: the same object goes
    up) is dropped, so a stage's user error reads once from Prefect and once from main, not five times. Also drops
    Prefect's "Crash detected! Execution was aborted by an interrupt signal." and "... by a termination signal."
    (PREFECT_SIGNAL_CAUSES: an ERROR line on every Ctrl-C, SIGHUP and SIGTERM, read as a crash; Prefect's flow engine
    logs one for any BaseException that ends a flow run, with no way to tell it a stop was asked for), and its task
    engine's "Finished in state Crashed('Execution was aborted by an interrupt signal.')" (PREFECT_CRASHED_STATE), where saerl's
    own line says the run was stopped by which signal and what is kept (:func:`stop_now`); a crash of any other cause
    keeps its line. Drops the flow run logger's line and traceback (about 80 lines) for an API that stopped answering
    (:func:`lost_api`: Prefect could not report the flow run's end), which saerl words itself: a warning where every
    stage finished (flows.pipeline.run_pipeline_flow), else main's traceback and line (the error is not marked as
    printed). One instance serves both run loggers (:func:`_setup_logging`), so it knows what either printed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []  # "Type: message" of the user errors printed, as Prefect's state line words them

    def filter(self, record: logging.LogRecord) -> bool:
        """in: a log record; out: False for Prefect's crash line of a stop by a signal and for a user error printed
        before, else True, with exc_info cleared for a user error."""
        message = record.getMessage()
        if message.startswith((PREFECT_CRASH, PREFECT_CRASHED_STATE)) and any(cause in message
                                                                             for cause in PREFECT_SIGNAL_CAUSES):
            return False
        err = record.exc_info[1] if record.exc_info else None
        if record.name == PREFECT_FLOW_LOGGER and lost_api(err):
            return False
        if isinstance(err, USER_ERRORS):
            record.exc_info, record.exc_text = None, None
            if getattr(err, USER_LINE_LOGGED, False):
                return False
            try:
                setattr(err, USER_LINE_LOGGED, True)
            except AttributeError:  # an error type without attributes of its own: printed each time, as before
                pass
            self.seen = [*self.seen[-SEEN_KEPT + 1:], f"{type(err).__name__}: {err}"]
        elif err is not None:  # printed with its traceback: marked so
            try:
                setattr(err, LOGGED, True)
            except AttributeError:  # an error type without attributes of its own: main prints it as before
                pass
        elif message.startswith(PREFECT_FAILED_STATE) and any(text in message or repr(text)[1:-1] in message
                                                              for text in self.seen):  # repr: a message's newlines
            return False
        return True


def lost_api(err: BaseException | None) -> bool:
    """Is `err` what Prefect's client raises when its API no longer answers: an httpx transport error (refused,
    reset, timed out)? in: an error or None; out: bool (False where httpx was never imported: it cannot be one)."""
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(err, httpx.TransportError)


class RetryLines(logging.Filter):
    """Drops urllib3's warning before each retry of a request ('Retrying (Retry(total=1, ...)) after connection
    broken by ...'): a tracking server that stopped answering gave two per failed MLflow request, besides saerl's
    own warning that tracking stopped (saerl.tracking), which says what matters. `saerl -v` keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """in: a log record; out: False for urllib3's retry warning, else True."""
        return not record.getMessage().startswith(URLLIB3_RETRY)


class ClusterStartLines(logging.Filter):
    """Drops prefect-dask's 'Failed to create distributed.deploy.local.LocalCluster cluster' line and its traceback
    (about 40 lines) when a run's local Dask cluster does not start: saerl's own line (flows.runner.ClusterStartError)
    names the cause and the fix. `saerl -v` keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """in: a log record; out: False for prefect-dask's failed cluster start, else True."""
        return not record.getMessage().startswith(CLUSTER_START_FAILED)


def traceback_logged(err: BaseException) -> bool:
    """Did a Prefect run logger print `err` with its traceback in this process (:class:`UserErrorTracebacks` marks
    it)? A flow run's failure reaches main as the same object. in: an error; out: bool."""
    return bool(getattr(err, LOGGED, False))


def _setup_logging(verbose: bool) -> None:
    """Log INFO and up (DEBUG with -v) to stderr, above any progress bar drawn there (saerl.terminal.stderr_handler:
    each line led by its sweep setting's label in an ablation, saerl.terminal.labelled_logs),
    MLflow's records too (:func:`mlflow_logs_to_saerl`), the chattiest libraries at WARNING (NOISY_LOGGERS); below
    -v, Prefect's run loggers drop the tracebacks saerl words itself (:class:`UserErrorTracebacks`), urllib3 its retry
    warnings (:class:`RetryLines`) and prefect-dask a local cluster's failed start (:class:`ClusterStartLines`).
    in: -v."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[stderr_handler()])
    mlflow_logs_to_saerl()
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    shared = UserErrorTracebacks()  # one for both loggers: a task's error is printed again by its flow's logger
    for name in PREFECT_RUN_LOGGERS:  # -v keeps every traceback, also after a run without it in this process
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, UserErrorTracebacks)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(shared)
    for name, kind in ((URLLIB3_POOL_LOGGER, RetryLines), (LOCAL_CLUSTER_LOGGER, ClusterStartLines)):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, kind)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(kind())


def mlflow_logs_to_saerl() -> None:
    """Have MLflow's records reach saerl's stderr handler, in its format and at its level (-v: DEBUG): at import
    MLflow gave its loggers (MLFLOW_LOGGERS) a handler of its own and no propagation, so its lines ('Creating
    initial MLflow database tables...') carried another date format (2026/12/07) and -v did not reach them. Its switch
    MLFLOW_CONFIGURE_LOGGING is set off, unless the environment says otherwise (so also for the workers this process
    starts), before a command imports MLflow; an MLflow imported already has those handlers taken off here."""
    os.environ.setdefault(MLFLOW_CONFIGURE_LOGGING, MLFLOW_NO[0])
    if "mlflow" not in sys.modules or os.environ[MLFLOW_CONFIGURE_LOGGING].lower() not in MLFLOW_NO:
        return
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [], True
    logging.getLogger(MLFLOW_LOGGERS[0]).setLevel(logging.NOTSET)  # the root's: INFO, DEBUG with -v


def stop_now(signum: int, cause: str | None = None) -> None:
    """End the process at once on an interrupt, saying what is kept: the stages' threads are not waited for (a
    stage stops where it is; its finished chunks and every finished artifact stay, and the same command resumes);
    the local Prefect server and a training run's torchrun (train.num_processes > 1) are sent SIGTERM
    (flows.server.stop_servers, saerl.distributed.stop_training; they also stop with their parent through their
    launcher: die_with_parent on Linux, watch_parent without prctl, macOS, within a poll). Exit status 128 + the signal's number,
    as a shell reports a process a signal ended. in: the signal's number; what stopped the run, when no signal did
    (flows.cancel.CANCEL_CAUSE: it exits as SIGTERM does; None: the signal's name)."""
    from flows.server import stop_servers
    from saerl.distributed import stop_training

    stop_servers()
    stop_training()
    try:  # a closed terminal (SIGHUP) takes stderr and stdout with it: the exit status still says why
        print(f"\nsaerl: stopped by {cause or signal.Signals(signum).name}: finished stages and chunks are kept; run "
              "the same command again to resume", file=sys.stderr, flush=True)
        sys.stdout.flush()
    except OSError:
        pass
    os._exit(EXIT_SIGNAL_BASE + signum)


class Interrupted(KeyboardInterrupt):
    """SIGHUP (a closed terminal or ssh session, a cron job's parent gone) raised as a Ctrl-C is, naming its signal
    (`signum`): the flow records the run as stopped by it (flows.pipeline.stop_signal) and :func:`stop_on_interrupt`
    ends the process with 128 + its number. It ended the process at once, leaving a record that read 'killed'."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    """SIGHUP's handler during a run: raise :class:`Interrupted` in the main thread (where the flow runs)."""
    raise Interrupted(signum)


@contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """For the block (a pipeline or ablation run): Ctrl-C, SIGHUP and SIGTERM end the process at once
    (:func:`stop_now`). Prefect's flow engine takes SIGTERM over while a flow runs and hands it back, once the flow
    has ended on it, to the handler set here; SIGHUP is raised as an interrupt (:class:`Interrupted`), which the
    flow records as Ctrl-C's. A Cancel of the run's flow run in Prefect, which ends the flow run Cancelled
    (flows.cancel.FlowRunCancelled), ends it at once too, as SIGTERM does (status 143: the stage's thread is not
    waited for). The previous handlers are restored after the block. Outside the main thread (where no handler can
    be set) the block runs as it is."""
    from flows.cancel import CANCEL_CAUSE, FlowRunCancelled

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = take_over(signal.SIGTERM, lambda signum, _frame: stop_now(signum))
    before_hup = take_over(signal.SIGHUP, _raise_interrupted)
    try:
        yield
    except KeyboardInterrupt as err:
        stop_now(getattr(err, "signum", signal.SIGINT))
    except FlowRunCancelled:
        stop_now(signal.SIGTERM, CANCEL_CAUSE)
    finally:
        for signum, handler in ((signal.SIGTERM, before), (signal.SIGHUP, before_hup)):
            if handler is not None:
                signal.signal(signum, handler)


def take_over(signum: int, handler: Callable[[int, Any], None]) -> Any:
    """Set `handler` for `signum`, unless this process was started ignoring it: `nohup saerl run ...` starts it with
    SIGHUP ignored so that a closed terminal leaves the run going, and a handler set anyway stopped the run (129).
    in: the signal, the handler; out: the handler before, or None where the signal was left ignored."""
    if signal.getsignal(signum) is signal.SIG_IGN:
        return None
    return signal.signal(signum, handler)


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # the errors of a disk that is full, or a quota used up
# how a library that raises no OSError says the disk is full: Rust's io::Error in polars and safetensors ends
# '(os error 28)'; sqlite says 'database or disk is full' (SQLITE_FULL)
FULL_DISK_WORDS = {code: (os.strerror(code).lower(), f"(os error {code})") for code in FULL_DISK}
SQLITE_FULL_WORDS = "database or disk is full"
# free space under which a failed write whose message does not say why (torch.save's 'unexpected pos 576 vs 534')
# is taken for a full disk: less than any stage's artifacts need, far less than a disk a run can go on with
NEARLY_FULL_BYTES = 64 * 2**20


def error_chain(err: BaseException | None) -> Iterator[BaseException]:
    """The error, then what it was raised from or during (__cause__, else __context__), each once."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def free_bytes(root: Path) -> int | None:
    """Free space on the disk holding `root` (its nearest existing folder while it is not made yet), in bytes;
    None where it cannot be read."""
    folder = next((p for p in (root, *root.parents) if p.exists()), None)
    try:
        return shutil.disk_usage(folder).free if folder is not None else None
    except OSError:
        return None


def full_disk_errno(err: BaseException, free: int | None) -> tuple[int, bool] | None:
    """Is `err` a full disk's error? (errno, said): an OSError of FULL_DISK in its chain or a message that says the
    disk is full (FULL_DISK_WORDS, SQLITE_FULL_WORDS) gives that errno and said=True; a RuntimeError (torch.save's
    'unexpected pos') while the disk has under NEARLY_FULL_BYTES free gives ENOSPC and said=False; None otherwise (a
    ValueError or a bug's error keeps its own words and traceback). in: the error, the
    root's free bytes (None: unknown)."""
    chain = list(error_chain(err))
    if code := next((e.errno for e in chain if isinstance(e, OSError) and e.errno in FULL_DISK), None):
        return code, True
    for e in chain:
        text = str(e).lower()
        if code := next((c for c, words in FULL_DISK_WORDS.items() if any(w in text for w in words)), None):
            return code, True
        if SQLITE_FULL_WORDS in text:
            return errno.ENOSPC, True
    if free is not None and free < NEARLY_FULL_BYTES and isinstance(err, RuntimeError):  # a failed write's words
        return errno.ENOSPC, False  # (torch.save's); a user's ValueError or a bug's IndexError keeps its own
    return None


@contextmanager
def naming_a_full_disk(root: Path) -> Iterator[None]:
    """Re-raise a full disk's error of the block with what to do: Zarr's ENOSPC named no file, so the user read only
    '[Errno 28] No space left on device' and no hint that the run resumes; polars, safetensors, sqlite and torch
    raise no OSError on a full disk (:func:`full_disk_errno` tells them). The new error, an OSError of the full
    disk's errno raised from the original, names the root, its free space now and the fixes; others pass unchanged.
    in: the run's artifact root."""
    try:
        yield
    except Exception as err:
        free = free_bytes(root)
        found = full_disk_errno(err, free)
        if found is None:
            raise
        code, said = found
        if isinstance(err, OSError) and err.errno in FULL_DISK:
            what = f"{err.strerror}{f' writing {err.filename}' if err.filename else ''}"
        else:
            what = f"{type(err).__name__}: {err}{'' if said else ', with the disk all but full'}"
        space = f"has {free / 2**30:.1f} GB free now" if free is not None else "(its free space cannot be read)"
        raise OSError(code, f"{what}; the run's artifact root {root} {space}. Free space (`saerl gc --root "
                      f"{shlex.quote(str(root))} "
                      "--dry-run` lists what can go; the Hugging Face cache and /tmp may share that disk) or point "
                      "runtime.artifact_root at a larger disk, then rerun the same command: every finished stage "
                      "and chunk is kept") from err


@dataclass
class Launch:
    """A run or ablation a command started, for main to name when it fails (:func:`run_failed`): its artifact root,
    the run's id (None: an ablation, whose children have their own) and whether it got past its checks and the
    server's start (`started`: from then on its failure is the run's, exit status EXIT_FAILED; before, nothing ran)."""

    root: Path
    run_id: str | None = None
    started: bool = False


def require_writable_root(root: Path) -> None:
    """Refuse, in one line, a run into an artifact root this process cannot write (mounted read-only, another user's):
    even a run whose every stage is cached writes its locks, its record, its MLflow rows and Prefect's database there;
    it stopped with a bare errno naming Prefect's server-start.lock. A root not made yet is judged by the nearest
    folder above it that exists. Checked before a server starts. in: the artifact root; raises a ConfigError."""
    folder = Path(root)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"artifact root {root} is not writable: a run writes locks and its record there; status, "
                          "report (--html PATH), export and gc --dry-run read it as it is")


def run_pipeline(cfg: PipelineConfig, until: str | None = None, invocation: str | None = None,
                 launch: Launch | None = None) -> dict:
    """Run the pipeline flow for a validated config under one local Prefect server; returns the run record.
    `invocation`: the command line, which the run record and MLflow keep (:func:`command_line`). `launch`, when
    given, gets the root, the run's id and `started` once the flow is called (main names the run if it fails).
    A Prefect server that dies mid-run costs a warning, not the run (flows.pipeline.run_pipeline_flow)."""
    from flows.server import prefect_server
    from saerl.preflight import check_paths_encodable, check_runnable
    from saerl.runs import new_run_id

    check_paths_encodable(cfg)  # a root the locale cannot name: one line, not a codec error from resolve()
    require_writable_root(Path(cfg.runtime.artifact_root).resolve())  # before its checks open the root's store
    check_runnable(cfg, until, warn=False)  # before a server starts; the flow checks again, and warns
    cfg = without_uri_credentials(cfg)  # the flow's parameters are kept in clear by Prefect
    root = Path(cfg.runtime.artifact_root).resolve()
    launch = launch or Launch(root)
    launch.root, launch.run_id = root, new_run_id()
    with naming_a_full_disk(root), stop_on_interrupt(), prefect_server(root, cfg.runtime.prefect_api_url,
                                                                      cfg.runtime.dask_address):
        from flows.pipeline import pipeline_flow, quiet_libraries, run_pipeline_flow
        from flows.runner import task_runner

        flow = pipeline_flow.with_options(task_runner=task_runner(cfg))
        with quiet_libraries(cfg):  # runtime.progress off: no library progress bars or Dask INFO lines either
            launch.started = True
            return run_pipeline_flow(flow, cfg.model_dump(mode="json"), until, invocation, launch.run_id)


def with_root(overrides: list[str], root: str | None) -> list[str]:
    """The user's overrides, each key given once (saerl.overrides.refuse_rewrites: a repeat would win without a word),
    with `--root ROOT` appended as runtime.artifact_root (last, so it wins over an override of the same key), or
    unchanged without --root. in: dotted overrides, the --root value; out: a new list."""
    refuse_rewrites(overrides)
    if not root:
        return list(overrides)
    return [*overrides, f"runtime.artifact_root={json.dumps(root)}"]  # a quoted string: '#', digits kept


def cmd_demo(args: argparse.Namespace) -> int:
    """`saerl demo`: the whole available pipeline on the embedded default."""
    overrides = with_root(args.overrides, args.root)
    if not DEMO_CONFIG.exists():  # a checkout has it in configs/, a wheel in saerl/configs/: a broken install
        raise ConfigError(f"saerl demo reads {DEMO_CONFIG}, which this install does not have: reinstall saerl, or run "
                          "it from a clone of the repository (python3 dev.py demo), or `saerl run CONFIG` with a config "
                          "of yours")
    cfg = load_config(DEMO_CONFIG, overrides)
    args.launch = Launch(Path(cfg.runtime.artifact_root))
    run_pipeline(cfg, invocation=command_line(args), launch=args.launch)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """`saerl run CONFIG [key=value ...] [--until STAGE] [--root ROOT]`."""
    cfg = load_config(args.config, with_root(args.overrides, args.root))
    args.launch = Launch(Path(cfg.runtime.artifact_root))
    run_pipeline(cfg, args.until, command_line(args), args.launch)  # checks --until and the plan before a server
    return EXIT_OK  # starts


def command_line(args: argparse.Namespace) -> str:
    """The command that started this run, as the shell would read it back ('saerl run configs/smoke.yaml a=1 --until
    score'), URL credentials masked: the run record and its MLflow parent keep it. in: parsed args (parse_args keeps
    the words); out: the text."""

    from saerl.privacy import redact

    return redact(shlex.join(["saerl", *getattr(args, "argv", [])]))


class GridAction(argparse.Action):
    """`--grid KEY=V1,V2 [OVERRIDE ...]`: the first value is one grid axis (appended to `grid`); any further
    values are plain overrides written after it (held in `late_overrides`, which :func:`parse_args` merges
    into `overrides` in command-line order), so overrides may follow the grid as in
    `saerl ablate CONFIG --grid a.b=1,2 train.max_steps=5`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        axis, *rest = values if isinstance(values, list) else [str(values)]
        if bad := [v for v in rest if "=" not in v]:
            parser.error(f"{bad[0]!r} after --grid is not KEY=VALUE; put CONFIG first: saerl ablate CONFIG --grid ...")
        namespace.grid = [*(getattr(namespace, "grid", None) or []), axis]
        namespace.late_overrides = [*(getattr(namespace, "late_overrides", None) or []), *rest]


def cmd_ablate(args: argparse.Namespace) -> int:
    """`saerl ablate CONFIG --grid KEY=V1,V2 [--grid ...] [key=value ...] [--until STAGE] [--root ROOT]`: every
    setting of the grid as a child run of one ablation flow, then the table (kept under ROOT/sweeps/). Config,
    grid and --until are checked before anything starts."""
    from saerl.preflight import check_paths_encodable
    from saerl.sweep import parse_grid, plan_sweep

    overrides = with_root(args.overrides, args.root)
    cfg = load_config(args.config, overrides)
    check_paths_encodable(cfg)  # a root the locale cannot name: one line, not a codec error from resolve()
    require_writable_root(Path(cfg.runtime.artifact_root).resolve())
    grid = parse_grid(args.grid)
    # a child that cannot run up to --until (saerl.preflight.check_runnable), or repeats another's runs, fails here,
    # before a server starts
    plan_sweep(cfg.model_dump(mode="json"), grid, overrides, until=args.until)
    cfg = without_uri_credentials(cfg)  # the flow's parameters are kept in clear by Prefect
    from flows.server import prefect_server

    root = Path(cfg.runtime.artifact_root).resolve()
    args.launch = Launch(root)
    with naming_a_full_disk(root), stop_on_interrupt(), prefect_server(root, cfg.runtime.prefect_api_url,
                                                                      cfg.runtime.dask_address):
        from flows.pipeline import quiet_libraries
        from flows.sweep import named_ablation

        config = cfg.model_dump(mode="json")
        named, sweep_id = named_ablation(config)  # the flow run named after the sweep id it prints
        with quiet_libraries(cfg):
            args.launch.started = True
            named(config=config, grid=grid, until=args.until, sweep_id=sweep_id)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    """`saerl ingest FILE --prompt F --answer F [--hf-split S ...]`: check a data set and write prompts/rejected tables."""
    from saerl.config import DataConfig
    from saerl.data import INGEST_OPTIONS, ingest, require_rows, summarize, write_ingest

    if not Path(args.file).exists():  # data.py's message names data.path, the config's field, not this argument
        raise FileNotFoundError(f"data file {args.file} does not exist (check FILE, the first argument of saerl ingest)")
    fields = {k: getattr(args, k) for k in (*INGEST_OPTIONS, "format", "hf_split")}
    cfg = DataConfig(source="file", path=str(args.file), **{k: v for k, v in fields.items() if v is not None})
    out = _out_dir(args.out)
    result = ingest(cfg, Path(args.file), progress=stderr_is_terminal())  # as runtime.progress's auto
    out.mkdir(parents=True, exist_ok=True)
    write_ingest(result, out)
    if result.kept.height:
        print(summarize(result))
    print(f"wrote {out / 'prompts.parquet'} and {out / 'rejected.parquet'} (one line per problem: row is the "
          "0-based source row, field, reason, value, and detail saying why where there is more to say)")
    require_rows(result)  # none kept: exit status 2, the summary in the error, after the tables to read
    return 0


UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # a folder the user may not write (read-only, not theirs)


def write_page(report: RunReport, html: Path) -> tuple[Path | None, OSError | None]:
    """Write a run's HTML report page (saerl.report.write_html) before its table is printed, so a printing that
    fails (a closed pipe: `saerl report --html out.html | head`) still leaves the page; a failed write is handed
    back for the caller to judge once the table is out. in: the loaded report, the page's path; out: (the path
    written, None) or (None, the error)."""
    from saerl.report import write_html

    try:
        return write_html(report, html), None
    except OSError as err:
        return None, err


def cmd_report(args: argparse.Namespace) -> int:
    """`saerl report [RUN] [--root ROOT] [--html PATH] [--relog] [--uri URI] [--again]`: a run's comparison table read from
    its artifacts on disk, a self-contained HTML report, and (--relog) the run logged into MLflow afterwards."""
    from saerl.report import default_html_path, format_text, load_report, relog

    if args.again and not args.relog:
        raise ValueError("--again goes with --relog (it logs a run into a store that holds it already)")
    root = _root(args.root)
    report = load_report(root, args.run)  # an unknown run id is a ValueError: main prints it
    html = Path(args.html) if args.html else default_html_path(root, report.record)
    written, unwritten = write_page(report, html)  # before the table: a page whatever becomes of the printing
    print(format_text(report, output_columns()))
    say_unfinished(root, report.record)
    if unwritten is None:
        print(f"wrote {written}")
    elif args.html or unwritten.errno not in UNWRITABLE:
        raise unwritten
    else:  # a read-only root: the table is printed, only the page the user did not ask for is lost
        print(f"saerl: could not write the HTML report to {html} ({unwritten.strerror}): pass --html PATH",
              file=sys.stderr)
    if args.relog:
        try:
            parent = relog(root, report.record, credentials_to_env(args.uri), again=args.again)
        except RuntimeError as err:
            print(f"saerl: {err}", file=sys.stderr)
            return 1
        print(f"re-logged run {report.record.run_id} into MLflow: parent run {parent}")
    return 0


def say_unfinished(root: Path, record: RunRecord) -> None:
    """Say on stderr that the run a report shows did not finish (failed, stopped, killed or still running), and how a
    script tests that: the exit status stays 0, as the report of what the run computed is what was asked for
    (`saerl status RUN --check` exits with the outcome). in: artifact root, the run's record."""
    from saerl.status import outcome

    word, at = outcome(root, record)
    if word != "ok":
        where = f" at {at}" if at else ""
        print(f"saerl: run {record.run_id} did not finish ({word}{where}): the report shows what it computed; "
              f"`saerl status {record.run_id} --check` exits non-zero for it", file=sys.stderr)


def _out_dir(arg: str) -> Path:
    """The --out folder of ingest or export; ValueError naming --out when a file stands at that path."""
    out = Path(arg)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {arg} is a file, not a folder: pass the path of a folder (it is created if missing)")
    return out


def _root(arg: str | None) -> Path:
    """The artifact root a command reads: --root, else the config schema's default (.saerl), read by the config's
    own runtime.artifact_root validator, as run, demo and ablate read their --root (:func:`with_root`): '~/runs' is
    the home folder's runs for every command (status, report, gc and export read a folder named '~' under the
    current one, and found no runs where `saerl run --root=~/runs` wrote them). in: --root or None; out: the path."""
    from saerl.config import RuntimeConfig

    return Path(RuntimeConfig(**({"artifact_root": arg} if arg else {})).artifact_root)


CHECK_EXIT = {"ok": EXIT_OK, "failed": EXIT_FAILED, "stopped": EXIT_NOT_ENDED_OK, "killed": EXIT_NOT_ENDED_OK,
              "running": EXIT_RUNNING, "unfinished": EXIT_RUNNING}  # `status --check`: per outcome (saerl.status.outcome)


def cmd_status(args: argparse.Namespace) -> int:
    """`saerl status [RUN] [--root ROOT] [--verify] [--paths] [--json] [--check] [--list [--json] [--limit N]]`:
    per stage run of a run (default the latest): computed or cached, key, why, seconds, size, whether its artifact is intact (file
    sizes; --verify hashes every file) and, with --paths, its artifact's folder; or the recent runs (--list; with
    --json a JSON array of them, saerl.status.list_json). --json prints the run's record with its outcome instead
    (saerl.status.run_json); --check exits with the run's outcome (CHECK_EXIT), so a script can test how a run ended
    (one run: --list --check is refused)."""
    from saerl.runs import RUNS_DIR, load_run
    from saerl.status import list_json, list_status, outcome, run_json, run_status

    root = _root(args.root)
    if args.list:
        if args.run != "latest":  # a run named beside --list was silently ignored
            raise ValueError(f"--list lists the recent runs, so it reads no run id ({args.run!r}): saerl status "
                             f"{args.run} for that run, or saerl status --list")
        if args.check:
            raise ValueError("--check exits with how one run ended, so it does not go with --list: saerl status RUN "
                             "--check (or read each run's outcome from saerl status --list --json)")
        if not args.json:
            print(list_status(root, args.limit, width=output_columns()))
            return EXIT_OK
        runs = list_json(root, args.limit)
        if not runs:  # stdout stays the JSON alone; a mistyped --root is said where a person reads it
            print(f"saerl: no runs under {root / RUNS_DIR}", file=sys.stderr)
        print(json.dumps(runs, indent=1))
        return EXIT_OK
    record = load_run(root, args.run)  # once: `latest` may be another run a moment later
    print(json.dumps(run_json(root, record), indent=1) if args.json else run_status(root, record, args.verify,
                                                                                    args.paths, output_columns()))
    return CHECK_EXIT[outcome(root, record)[0]] if args.check else EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    """`saerl gc [--root ROOT] [--keep-runs N] [--min-age-hours H] [--forget-runs-older-than-days D] [--vacuum]
    [--dry-run]`: remove artifacts no recent run references, nor the latest complete run of a config name or of its
    sweeps (saerl.gc.kept_runs); with D, first forget the old runs nothing keeps (saerl.gc.forget_runs; their Prefect flow
    runs: flows.forget.forget_flow_runs); with --vacuum, last compact the root's mlflow.db and prefect.db
    (saerl.gc.vacuum)."""
    from saerl.gc import collect, format_report, mlflow_database

    root = _root(args.root)
    forget_prefect = None
    if args.forget_runs_older_than_days is not None:
        from flows.forget import forget_flow_runs

        forget_prefect = forget_flow_runs
    vacuum_dbs = None
    if args.vacuum:
        from flows.server import prefect_database

        vacuum_dbs = [mlflow_database(root), prefect_database(root)]
    print(format_report(collect(root, args.keep_runs, args.dry_run, args.min_age_hours,
                                forget_days=args.forget_runs_older_than_days, forget_prefect=forget_prefect,
                                vacuum_dbs=vacuum_dbs)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`saerl export RUN --format hf|verl|trl [--arm ARM] [--seed S] --out DIR`: the stream one training seed of a
    run's arm reads, with its prompts."""
    from saerl.export import export_run

    # the run ('latest' resolved: it may not be the newest run, one without a curriculum stage is passed over with a
    # warning on stderr a script does not read) and the default seed are named on stdout
    done = export_run(_root(args.root), args.run, args.format, _out_dir(args.out), args.arm, args.data_source,
                      args.seed)
    print(f"exported run {done.run_id}, arm {args.arm}, training seed {done.seed}: wrote "
          + ", ".join(str(f) for f in done.files))
    return 0


class CommandParser(argparse.ArgumentParser):
    """saerl's top-level parser: an error met once a subcommand is chosen (an option it does not know, a word that is
    no override: :func:`parse_args`; a bad value, on a Python whose subparsers hand their errors up) prints that
    subcommand's usage line and the error, `usage: saerl status [-h] ...` then `saerl status: error: ...`, where it
    printed the top level's `usage: saerl [-h] [-v] {demo,run,...} ...`, which shows none of the subcommand's
    options. Exit status EXIT_USAGE, as argparse's own errors."""

    chosen: argparse.ArgumentParser | None = None  # the chosen subcommand's parser (:class:`Commands` sets it)

    def error(self, message: str) -> NoReturn:
        """Print the chosen subcommand's usage (else the top level's) and `message`; exit EXIT_USAGE."""
        if self.chosen is not None:
            self.chosen.error(message)
        super().error(message)


class Commands(argparse._SubParsersAction):
    """build_parser's subcommands, as argparse's, but noting the chosen subcommand's parser on the top-level parser
    (:class:`CommandParser`'s `chosen`) before it parses the subcommand's words, so their errors show its usage."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if isinstance(parser, CommandParser) and values and values[0] in self.choices:
            parser.chosen = self.choices[values[0]]
        super().__call__(parser, namespace, values, option_string)


def version_text() -> str:
    """What `saerl --version` prints: saerl's version and the code it runs (saerl.runs.code_summary of its checkout:
    the commit, and whether it has uncommitted changes), then the interpreter's and the libraries' versions that
    shape results (saerl.artifacts.library_versions, as every manifest records them), one line each. out: text."""
    from saerl.artifacts import PYTHON, library_versions
    from saerl.runs import GIT, code_summary
    from saerl.tracking import git_tags

    versions = library_versions()
    head = f"saerl {versions.pop('saerl', 'unknown (not installed: run from a checkout)')}"
    head += f" ({code_summary({GIT: git_tags()})})"
    python = versions.pop(PYTHON)
    return "\n".join([head, f"python {python}", *(f"{name} {version}" for name, version in versions.items())])


class VersionAction(argparse.Action):
    """`saerl --version`: print :func:`version_text` and exit 0, before any subcommand is asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def add_command(sub: Any, name: str, **kw: Any) -> argparse.ArgumentParser:
    """A subcommand's parser in `sub` (build_parser's subparsers): -v accepted after the subcommand too (`saerl run
    CONFIG -v` was 'unrecognized arguments'; its default SUPPRESS leaves the top level's value when not given), and no
    abbreviated options (`saerl run --roo X` was read as --root: a script's typo, or a later option sharing the
    prefix, changed what ran). in: subparsers, name, add_parser's keywords; out: the parser."""
    verbose = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return sub.add_parser(name, parents=[verbose], allow_abbrev=False, **kw)


def build_parser() -> CommandParser:
    """The argument parser for every subcommand (a CommandParser: an error shows the subcommand's usage line)."""
    p = CommandParser(prog="saerl", description="SAE-guided data engineering for RL post-training.",
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES, allow_abbrev=False)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action=VersionAction, help="print saerl's version, the code's commit and the libraries' "
                   "versions (for a bug report), then exit")
    sub = p.add_subparsers(dest="command", required=True, action=Commands)

    d = add_command(sub, "demo", help="run the pipeline on the embedded default (configs/demo.yaml)")
    d.add_argument("overrides", nargs="*", default=[], help=OVERRIDES_HELP)  # default: not listed as required
    d.add_argument("--root", help="artifact root (default: runtime.artifact_root of the demo config)")
    d.set_defaults(fn=cmd_demo, runs_stages=True)

    r = add_command(sub, "run", help="run the pipeline for a config file",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EPILOG)
    r.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    r.add_argument("overrides", nargs="*", default=[], help=OVERRIDES_HELP)  # default: not listed as required
    r.add_argument("--until", help="stop after this stage")
    r.add_argument("--root", help="artifact root (default: runtime.artifact_root of the config)")
    r.set_defaults(fn=cmd_run, runs_stages=True)

    a = add_command(
        sub, "ablate", help="run a grid of settings as child runs of one ablation flow; ends in a table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=help_text("Run the pipeline once per setting of the cartesian product of the --grid values, as "
                              "child flow runs of one Prefect flow, then print per setting and arm the greedy held-out "
                              "accuracy and steps-to-target, and per child which stages it computed or reused. Stages "
                              "a setting does not change are cache hits: a curriculum grid pays for extraction, SAE, "
                              "encoding and scoring once."),
        epilog="example (3 x 2 = 6 settings, each trained for 50 steps):\n"
        "  saerl ablate configs/demo.yaml --grid curriculum.mix_ratio=0,0.1,0.3 \\\n"
        "      --grid curriculum.ordering=easy_to_hard,random train.max_steps=50")
    a.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    a.add_argument("overrides", nargs="*", default=[],  # a default: `saerl ablate` does not call them required
                   help="dotted overrides applied to every setting, e.g. train.max_steps=50")
    a.add_argument("--grid", action=GridAction, nargs="+", required=True, metavar=("KEY=V1,V2", "OVERRIDE"),
                   help="one swept config key and its comma-separated values, parsed as YAML (quote a value "
                   "holding a comma: data.path='a,b.jsonl',c.jsonl); repeat --grid for more keys; overrides may "
                   "follow it")
    a.add_argument("--until", metavar="STAGE", help="stop every child after this stage (no accuracy table before evaluate)")
    a.add_argument("--root", help="artifact root (default: runtime.artifact_root of the config); the table is kept "
                   "under ROOT/sweeps/")
    a.set_defaults(fn=cmd_ablate, late_overrides=[], runs_stages=True)

    i = add_command(sub, "ingest", help="check a data set: kept/rejected summary and both tables")
    i.add_argument("file", help="jsonl / parquet / csv file or HF save_to_disk folder")
    i.add_argument("--prompt", required=True, help="prompt field, or a template like '{body} {question}' (a nested "
                   "field as a dotted path: extra_info.question; a chat message list is read as its user message)")
    i.add_argument("--answer", required=True, help="gold answer field (a nested one as a dotted path: "
                   "reward_model.ground_truth)")
    for name in ("id", "topic", "difficulty", "quality"):
        i.add_argument(f"--{name}", help=f"optional {name} field")
    i.add_argument("--labelled", help="optional boolean field marking the labelled subset for the property models")
    i.add_argument("--defect", help="optional defect-kind field (text, e.g. 'none', 'garbled')")
    i.add_argument("--format", choices=["auto", "jsonl", "parquet", "csv", "hf"], help="file format (default auto)")
    i.add_argument("--hf-split", help="the split to read from a HF DatasetDict folder with several splits")
    i.add_argument("--out", default="ingest-out", help="output folder (default ./ingest-out)")
    i.set_defaults(fn=cmd_ingest)

    rp = add_command(sub, "report", help="a run's comparison table and an HTML report, from its artifacts")
    rp.add_argument("run", nargs="?", default="latest", help="run id or a unique prefix (default: latest)")
    rp.add_argument("--root", help="artifact root (default: .saerl)")
    rp.add_argument("--html", help="HTML report path (default: ROOT/reports/RUN.html)")
    rp.add_argument("--relog", action="store_true", help="log the finished run into MLflow from its artifacts")
    rp.add_argument("--uri", help="tracking URI for --relog (default: the run's tracking.uri, else ROOT/mlflow.db)")
    rp.add_argument("--again", action="store_true", help="with --relog: log the run even if the store holds it "
                    "already (refused by default: a second copy counts twice in every comparison)")
    rp.set_defaults(fn=cmd_report)
    _add_artifact_commands(sub)
    return p


def _int_at_least(text: str, least: int, why: str = "") -> int:
    """A command-line option's value as a whole number of at least `least`, else argparse's error (argparse names the
    option in it), ending in `why`. in: the text given, the least value, what the bound means; out: the number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}{why}")
    return value


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def _seed(text: str) -> int:
    """An argparse type: a training seed, a whole number of at least 0 (train.seeds' bound)."""
    return _int_at_least(text, 0, " (training seeds are 0 or more)")


def _count(text: str) -> int:
    """An argparse type: a whole number of at least 0; `gc --keep-runs -1` was taken as "keep every run", which its
    help does not say."""
    return _int_at_least(text, 0, " (0 keeps nothing of ended runs)")


def _hours(text: str) -> float:
    """An argparse type: a number of hours of at least 0, 'inf' allowed (keep everything); `gc --min-age-hours nan`
    turned the age guard off and -5 kept nothing young, both without a word."""
    return _age(text, "hours")


def _days(text: str) -> float:
    """An argparse type: a number of days of at least 0, 'inf' allowed (forget nothing): `gc
    --forget-runs-older-than-days`."""
    return _age(text, "days")


def _age(text: str, unit: str) -> float:
    """A command-line age as a number of `unit` of at least 0, 'inf' allowed (keeps everything), else argparse's
    error: nan or a negative age would keep nothing. in: the text given, the unit's name; out: the number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of {unit} of at least 0 (inf keeps everything), got {text}")
    return value


def _add_artifact_commands(sub: argparse._SubParsersAction) -> None:
    """The status, gc and export subcommands (they read run records and artifacts; no server, no model)."""
    from saerl.export import ARM_FILES, DATA_SOURCE, DEFAULT_SEED, FORMATS
    from saerl.gc import KEEP_RUNS, MIN_AGE_HOURS
    from saerl.status import LIST_LIMIT

    s = add_command(sub, "status", help="what a run computed or reused and why, per stage run; --list: recent runs")
    s.add_argument("run", nargs="?", default="latest", help="run id or a unique prefix (default: latest)")
    s.add_argument("--root", help="artifact root (default: .saerl)")
    s.add_argument("--verify", action="store_true",
                   help="hash every artifact file against its manifest, as a run does when it reads one (finds a "
                   "changed byte that keeps a file's size; seconds per GB); default: file sizes only (quick)")
    s.add_argument("--paths", action="store_true",
                   help="add a column with each stage run's artifact folder (ROOT/STAGE/KEY: its files, e.g. "
                   "evaluate's eval.parquet)")
    s.add_argument("--json", action="store_true", help="print the run's record as JSON instead, with its outcome "
                   "(ok, failed, stopped, killed, running) and the stage it ended at; with --list, the recent runs "
                   "as a JSON array (outcome, stage, signal or error, start and end times, counts per run)")
    s.add_argument("--check", action="store_true", help=f"exit with how the run ended: {EXIT_OK} ok, {EXIT_FAILED} "
                   f"failed, {EXIT_NOT_ENDED_OK} stopped or killed, {EXIT_RUNNING} still running")
    s.add_argument("--list", action="store_true", help="list the recent runs instead, one row each (its sweep, how it "
                   "ended, the overrides and --until it ran with)")
    s.add_argument("--limit", type=_positive_int, default=LIST_LIMIT, help=f"runs listed by --list (default {LIST_LIMIT})")
    s.set_defaults(fn=cmd_status)

    g = add_command(sub, "gc", help="remove artifacts that none of the recent runs references")
    g.add_argument("--root", help="artifact root (default: .saerl)")
    g.add_argument("--keep-runs", type=_count, default=KEEP_RUNS,
                   help=f"keep every artifact of this many newest ended runs (default {KEEP_RUNS}); besides, runs "
                   "still going keep theirs, the latest complete run (not cut short by --until) of each config name "
                   "keeps its, and so does the latest complete run of its sweeps (one for all its `saerl ablate` "
                   "runs: the newest sweep's last complete child; an older sweep's children go like any run), and "
                   "the latest failed, stopped or killed run of each config name (and of its sweeps) its unfinished "
                   "builds (resume state); 0 keeps nothing of ended runs")
    g.add_argument("--min-age-hours", type=_hours, default=MIN_AGE_HOURS,
                   help=f"keep anything younger, e.g. a running pipeline's (default {MIN_AGE_HOURS:g})")
    g.add_argument("--forget-runs-older-than-days", type=_days, metavar="DAYS",
                   help="first forget, for good, the runs that ended at least DAYS days ago and that gc keeps nothing "
                   "of (never a run still going, one of the --keep-runs newest, nor a latest complete or resumable "
                   "run of a config name or of its sweeps, one each for all its sweeps): their run records, their "
                   "MLflow runs (deleted, and purged from the root's own store; a tracking server's own `mlflow gc` "
                   "purges its), their Prefect flow runs with their task runs and logs (where a Prefect API answers; "
                   "their Prefect events stay until Prefect's event retention, server.events.retention_period, 7 "
                   "days by default, trims them), their report pages (ROOT/reports/RUN.html), the folders of sweeps "
                   "and the MLflow experiments left without runs; their artifacts then go as any other's. Default: no "
                   "run is forgotten")
    g.add_argument("--vacuum", action="store_true",
                   help="last, compact the root's SQLite files (mlflow.db, prefect/prefect.db: SQLite's VACUUM) so "
                   "the space of forgotten runs goes back to the disk (else the files keep their size and later runs "
                   "reuse it); refused, in one line naming it, while a run goes on the root or another process (its "
                   "Prefect server, an `mlflow ui`) holds one open; prints each file's size before and after")
    g.add_argument("--dry-run", action="store_true", help="list what would go and the bytes freed; delete nothing")
    g.set_defaults(fn=cmd_gc)

    e = add_command(sub, "export", help="a run's curriculum with its prompts for HF datasets, verl or trl")
    e.add_argument("run", help="run id or a unique prefix, or 'latest'")
    e.add_argument("--format", required=True, choices=FORMATS, help="hf: save_to_disk folder; verl/trl: "
                   "parquet + sampler module + README")
    e.add_argument("--arm", default="saerl", choices=list(ARM_FILES), help="whose order (default saerl)")
    e.add_argument("--seed", type=_seed, metavar="S", help="the training seed whose stream to export, one the run "
                   f"trains (train.seeds; each seed reads its own order); default: seed {DEFAULT_SEED} when the run "
                   "trains it (the curriculum artifact's own draw), else its first training seed")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--root", help="artifact root (default: .saerl)")
    e.add_argument("--data-source", default=DATA_SOURCE, help=f"verl data_source (default {DATA_SOURCE})")
    e.set_defaults(fn=cmd_export)


def _in_command_line_order(words: list[str], argv: list[str]) -> list[str]:
    """`words` (each a word of `argv`, repeats allowed) sorted by where they stand in `argv`; a repeated word
    takes its occurrences in turn; a word not found in `argv` goes last, in its given order."""
    used: set[int] = set()
    placed = []
    for n, w in enumerate(words):
        i = next((i for i, a in enumerate(argv) if a == w and i not in used), len(argv) + n)
        used.add(i)
        placed.append((i, w))
    return [w for _, w in sorted(placed)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line, letting dotted overrides come before and after options (`saerl run c.yaml
    a=1 --until score b=2`, `saerl ablate c.yaml a=1 --grid k=1,2 a=2`), which argparse alone refuses for a
    positional list. Overrides keep their command-line order, so a later one still wins; a stray option or a
    word without "=" is an error naming it, under the subcommand's usage line (:class:`CommandParser`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()  # a CommandParser: an error shows the subcommand's usage
    args, rest = parser.parse_known_args(argv)
    args.argv = argv  # the words as given: what the run records as its command (command_line)
    stray = [a for a in rest if a.startswith("-") or "=" not in a]
    if stray or (rest and getattr(args, "overrides", None) is None):
        if args.command in argv and set(stray or rest) & set(argv[:argv.index(args.command)]):
            parser.chosen = None  # a word before the subcommand (saerl --bogus status): the top level's usage
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if getattr(args, "overrides", None) is not None:
        words = [*args.overrides, *getattr(args, "late_overrides", []), *rest]
        args.overrides = _in_command_line_order(words, argv)
        if hasattr(args, "late_overrides"):
            args.late_overrides = []
    return args


def stdout_closed() -> bool:
    """Has the reader of standard output closed it (a pipe whose read end is gone: poll reports an error on it)?
    out: the verdict; False where it cannot be told."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or stdout is no file (a captured one)
        return False


OUTPUT_ERRORS = "saerl-escape"  # the error handler standard output is given (:func:`escape_unencodable_output`)
STRICT_ERRORS = ("strict", "surrogateescape")  # handlers that raise on text the encoding lacks (Python's defaults
# for standard output: strict, surrogateescape under the C/POSIX locale); one a user chose
# (PYTHONIOENCODING=ascii:replace) is kept


def escape_unencodable(err: UnicodeError) -> tuple[str | bytes, int]:
    """The codec error handler OUTPUT_ERRORS: text standard output's encoding cannot write is written escaped, as
    Python's stderr writes it ('smoke_\\xfc\\u6570'), except a file name's undecodable bytes (surrogateescape: an
    argument or path the OS gave as bytes), which are written back as those bytes. in: the encoder's error; out: the
    replacement and where encoding resumes."""
    try:
        return codecs.lookup_error("surrogateescape")(err)
    except UnicodeError:
        return codecs.backslashreplace_errors(err)


codecs.register_error(OUTPUT_ERRORS, escape_unencodable)


def escape_unencodable_output() -> None:
    """Make standard output write what its encoding lacks escaped (:func:`escape_unencodable`) instead of raising:
    under a latin-1 or ASCII locale (or PYTHONIOENCODING=ascii) a config name or data label outside it (a name
    'smoke_' + CJK) failed a finished run at its last table, and `saerl status` / `report` with it. A standard
    output that is no text file (replaced by a caller) or whose errors a user chose is left as it is; calling it
    again does nothing."""
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and stream.errors in STRICT_ERRORS:
        try:
            stream.reconfigure(errors=OUTPUT_ERRORS)
        except (OSError, ValueError):  # closed, or its reader gone mid-flush: printing fails on its own terms
            pass


def stdout_to_devnull() -> bool:
    """Point standard output at /dev/null (its reader is gone: main's closed pipe, and a run's,
    flows.pipeline.stdout_gone); a standard output that is no file (a captured one) is left be. out: whether it was
    pointed."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured one
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return True


def flush_stdout() -> None:
    """Write out what standard output holds, inside main's error handling: a command's short output (`saerl status`,
    `--version`, `--help`) stayed in its buffer until the interpreter's exit, whose flush into a closed pipe or a
    full disk printed Python's "Exception ignored ... BrokenPipeError" and exit status 120. A reader that closed it
    has what it wanted: standard output is pointed at /dev/null and nothing is raised. Any other failure (a full disk)
    is raised for :func:`failed` to word, the unwritable text dropped (pointed at /dev/null too, so the exit's flush
    does not fail again)."""
    if sys.stdout is None:  # closed by the shell (>&-): nothing to write
        return
    try:
        sys.stdout.flush()
    except OSError as err:
        closed = isinstance(err, BrokenPipeError) and stdout_closed()
        stdout_to_devnull()
        if not closed:
            raise


def user_error(err: BaseException, verbose: bool) -> int:
    """Print an error the user can act on as one line, `saerl: error: ...`, saying where its traceback is; with -v
    its traceback first, then the line. Exit status EXIT_USAGE either way (-v raised it: exit status 1, which the
    exit-status table gives a run that started and failed). in: the error, -v; out: the exit status."""
    if verbose:
        traceback.print_exception(err)
        print(f"saerl: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"saerl: error: {err} (saerl -v ... shows its traceback)", file=sys.stderr)
    return EXIT_USAGE


def failed_stage(launch: Launch) -> str:
    """Where a started run failed, from its record (extra['failed']: '<stage run>: <error>'): 'at <stage run>',
    'before its record was saved' when there is none to read, '' for an ablation (its children's records say).
    in: the launch; out: text."""
    from saerl.runs import FAILED, read_run, run_path
    from saerl.status import failed_at

    if launch.run_id is None:
        return ""
    try:
        failed = read_run(run_path(launch.root, launch.run_id)).extra.get(FAILED)
    except (OSError, ValueError):
        return "before its record was saved"
    return f"at {failed_at(failed)}" if failed else "at an unrecorded point"


def cluster_start_error(err: BaseException) -> BaseException | None:
    """The local Dask cluster's failed start (flows.runner.ClusterStartError) in `err`'s chain, if any: raised as the
    flow run starts, before any stage, so it is the environment's problem (exit status EXIT_USAGE, one line), not the
    run's ('failed at testbed', exit status 1 and a resume hint that resumed nothing). in: an error; out: that error or
    None (always None where flows.runner was never imported: it cannot be one)."""
    runner = sys.modules.get("flows.runner")
    wanted = getattr(runner, "ClusterStartError", None)
    return next((e for e in error_chain(err) if wanted is not None and isinstance(e, wanted)), None)


def run_failed(err: BaseException, launch: Launch, verbose: bool) -> int:
    """Say that a run that started failed, and exit with EXIT_FAILED, whatever the error (a stage's ValueError, a
    full disk's OSError exited 2, as a wrong command line does, and named neither the run nor the stage): a bug's
    traceback first where Prefect did not print it (every one with -v), then 'saerl: run ID failed at STAGE: error'
    and the resume hint naming `saerl status ID` (an ablation: 'saerl: the ablation failed: error').
    in: the error, the launch, -v; out: the exit status."""
    if verbose or not (isinstance(err, USER_ERRORS) or traceback_logged(err)):
        traceback.print_exception(err)
    what = f"{type(err).__name__}: {err}" if not isinstance(err, USER_ERRORS) else str(err)
    tail = "" if verbose or not isinstance(err, USER_ERRORS) else " (saerl -v ... shows its traceback)"
    run = f"run {launch.run_id} failed {failed_stage(launch)}" if launch.run_id else "the ablation failed"
    print(f"saerl: {run}: {what}{tail}", file=sys.stderr)
    print(resume_hint(launch.run_id), file=sys.stderr, flush=True)
    return EXIT_FAILED


def failed(err: Exception, args: argparse.Namespace) -> int:
    """main's answer to a command's error: a run that started (:class:`Launch`) failed (:func:`run_failed`); a
    config error is one line, `saerl: ...`; a read-only command whose reader closed stdout (`saerl report | head`)
    is done; a user error (USER_ERRORS: the local server not starting too, flows.server.ServerStartError) is one
    line (:func:`user_error`), as is a started run's local Dask cluster that did not start
    (:func:`cluster_start_error`); a run that failed before it started (a bug) prints the resume hint before its
    traceback is raised; anything else is raised.
    in: the error, the parsed command line; out: the exit status."""
    runs_stages = getattr(args, "runs_stages", False)
    launch = getattr(args, "launch", None)
    if isinstance(launch, Launch) and launch.started:
        if (cluster := cluster_start_error(err)) is not None:  # before any stage: nothing ran, nothing to resume
            return user_error(cluster, args.verbose)
        return run_failed(err, launch, args.verbose)
    if isinstance(err, ConfigError):
        print(f"saerl: {err}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(err, BrokenPipeError) and not runs_stages and stdout_closed():  # its reader had what it wanted
        stdout_to_devnull()  # Python's flush at exit then fails silently
        return EXIT_OK
    if isinstance(err, USER_ERRORS):  # OSError: a path that cannot be read or written, named in the message; a
        return user_error(err, args.verbose)  # BrokenPipeError of another pipe (a worker's): the command failed
    if runs_stages:  # failed another way (a bug, a Dask worker lost for good): what the user can do about the run
        if traceback_logged(err) and not args.verbose:  # Prefect printed it: once is enough (it came twice)
            print(f"saerl: {type(err).__name__}: {err}", file=sys.stderr)
            print(RESUME_HINT, file=sys.stderr, flush=True)
            return EXIT_FAILED
        print(RESUME_HINT, file=sys.stderr, flush=True)
    raise err


def interrupted(signum: int) -> int:
    """Say, in one line on stderr, that a command other than a run was stopped by `signum` (Ctrl-C printed Python's
    traceback, 41 lines for `saerl report`), and give its exit status, 128 + the signal's number. in: the signal's
    number; out: the exit status."""
    try:
        print(f"\nsaerl: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    except OSError:  # a closed terminal
        pass
    return EXIT_SIGNAL_BASE + signum


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `saerl` console script; its exit statuses are EXIT_CODES. What a command prints, and
    `--help` and `--version` too, is written out inside the error handling (:func:`flush_stdout`), so a closed
    reader or a full disk is answered as for any command (:func:`failed`). The verifier's workers stop when a
    command ends, however it ends (:func:`saerl.pipeline.stop_verifier`)."""
    escape_unencodable_output()  # user text (a config's name, data labels) never fails a command at its printing
    args = argparse.Namespace(verbose=False)  # what failed() reads until the command line is parsed
    parsed = False
    try:
        try:
            args = parse_args(argv)  # --help and --version print here, then exit
        except SystemExit:
            flush_stdout()
            raise
        parsed = True
        telemetry_off()  # before any command imports huggingface_hub, which reads its setting once
        _setup_logging(args.verbose)
        status = args.fn(args)
        flush_stdout()
        return status
    except KeyboardInterrupt as err:  # outside a run (report, gc, status), whose own stop says more: one line
        return interrupted(getattr(err, "signum", signal.SIGINT))
    except Exception as err:
        return failed(err, args)
    finally:
        if parsed:
            from saerl.pipeline import stop_verifier

            stop_verifier()


if __name__ == "__main__":
    sys.exit(main())
