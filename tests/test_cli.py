"""The `saerl` CLI: config errors before heavy work, ingest summary, demo end to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main, parse_args

REPO = Path(__file__).resolve().parents[1]


def test_unknown_override_fails_fast_with_suggestion(capsys):
    started = time.time()
    code = main(["run", str(REPO / "configs" / "demo.yaml"), "curriculum.mix_ratoi=0.2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "curriculum.mix_ratoi" in err and "curriculum.mix_ratio" in err
    assert time.time() - started < 5, "config errors must come before any server/model start"


def test_overrides_may_come_before_and_after_options():
    args = parse_args(["run", "c.yaml", "a.b=1", "--until", "score", "c.d=2", "a.b=3"])
    assert args.until == "score" and args.overrides == ["a.b=1", "c.d=2", "a.b=3"], "order kept: the later a.b wins"
    args = parse_args(["demo", "a.b=1", "--root", "/x", "c.d=2"])
    assert args.root == "/x" and args.overrides == ["a.b=1", "c.d=2"]
    args = parse_args(["ablate", "c.yaml", "a.b=1", "--grid", "k.x=1,2", "a.b=2", "--until", "score", "a.b=3",
                       "--grid", "k.y=3,4", "a.b=1"])
    assert args.grid == ["k.x=1,2", "k.y=3,4"]
    assert [*args.overrides, *args.late_overrides] == ["a.b=1", "a.b=2", "a.b=3", "a.b=1"], "the last a.b wins"


@pytest.mark.parametrize("argv, named", [(["run", "c.yaml", "a=1", "--untl", "score"], "--untl"),
                                         (["run", "c.yaml", "--until", "score", "stray"], "stray"),
                                         (["gc", "--dry-run", "a.b=1"], "a.b=1")])
def test_stray_words_are_errors_naming_them(argv, named, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert named in capsys.readouterr().err


def test_unknown_until_stage_fails_fast(capsys):
    assert main(["run", str(REPO / "configs" / "demo.yaml"), "--until", "extrakt"]) == 2
    assert "unknown stage 'extrakt'" in capsys.readouterr().err


def test_missing_config_file(capsys, tmp_path, monkeypatch):
    """From another folder the hint named a relative 'configs/' that is not there: it names the current folder the
    path was read against and where the shipped configs are."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "configs/demo.yaml"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and f"current folder {tmp_path}" in err and str(REPO / "configs") in err


@pytest.mark.parametrize(("words", "names"), [
    (["curriculum.mix_ratio=0.5", str(REPO / "configs" / "smoke.yaml")],
     ["looks like a config file: the config file comes first", "saerl run CONFIG KEY=VALUE"]),
    ([str(REPO / "configs" / "smoke.yaml"), "train.seeds=[0,", "1]", "--until", "ingest"],
     ["override '1]' looks like the rest of a list or mapping the shell split at a space",
      "quote the whole override 'train.seeds=[0, 1]'"]),
])
def test_a_swapped_config_or_a_list_split_by_the_shell_says_what_happened(words, names, capsys):
    """`saerl run curriculum.mix_ratio=0.5 configs/smoke.yaml` and an unquoted `train.seeds=[0, 1]` said only
    "override '...' is not of the form key.path=value"."""
    assert main(["run", *words]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in names), err


def test_a_config_error_names_the_overrides_given(capsys):
    """The header said '+ overrides' for an override the user never typed (--root adds one): it lists them."""
    assert main(["run", str(REPO / "configs" / "demo.yaml"), "train.max_steps=-5", "--root", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "+ overrides train.max_steps=-5 runtime.artifact_root=" in err


def test_ingest_command_writes_tables_and_summary(tmp_path, capsys):
    src = tmp_path / "d.jsonl"
    rows = [{"q": "What is 2+3?", "a": "#### 5"}, {"q": "What is 2+3?", "a": "5"}, {"q": "", "a": "1"},
            {"q": "Half of 1?", "a": "\\frac{1}{2}"}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    assert main(["ingest", str(src), "--prompt", "q", "--answer", "a", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kept 2" in text and "duplicate prompt 1" in text and "empty prompt 1" in text
    kept = pl.read_parquet(out / "prompts.parquet")
    assert kept["id"].to_list() == sorted(kept["id"].to_list()), "the kept rows in id order, as the pipeline reads them"
    assert kept.sort("row")["answer"].to_list()[0] == "5"
    assert pl.read_parquet(out / "rejected.parquet").height == 2


def test_an_ingest_that_keeps_no_row_is_an_error_with_its_reasons(tmp_path, capsys):
    """An answer field mapped to one that holds no final answer kept 0 of 2000 ASDiv rows and exited 0; in a pipeline
    the empty ingest was published (and cached) and extract then failed inside the tokenizer with an IndexError."""
    from types import SimpleNamespace

    from saerl.config import DataConfig, load_config
    from saerl.data import IngestError, ingest, require_rows
    from saerl.runners import compute_ingest

    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps({"q": f"What is {i}+1?", "kind": "Addition", "a": i + 1}) for i in range(3)) + "\n")
    assert main(["ingest", str(src), "--prompt", "q", "--answer", "kind", "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert "wrote" in out and (tmp_path / "out" / "rejected.parquet").exists()
    assert "ingest kept no row: kept 0 of 3 rows; rejected 3: unparseable answer 3" in err and "fix the mapping" in err
    cfg = load_config(None, ["data.source=file", f"data.path={src}", "data.prompt=q", "data.answer=kind"])
    with pytest.raises(IngestError, match="ingest kept no row"):
        compute_ingest(cfg, {}, SimpleNamespace(path=tmp_path / "build"))
    assert not (tmp_path / "build").exists()  # nothing written: no artifact to publish
    require_rows(ingest(DataConfig(source="file", path=str(src), prompt="q", answer="a"), src))  # rows kept: fine


def test_prefects_run_loggers_keep_a_user_errors_line_but_not_its_traceback():
    """A stage's user error (a ValueError naming the fix) came after 120-250 lines of Prefect tracebacks; they go,
    the line stays (main prints the error last); a bug's traceback stays, and -v keeps every one."""
    import logging

    from flows.cli import PREFECT_RUN_LOGGERS, UserErrorTracebacks, _setup_logging

    def record(err):
        try:
            raise err
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed", None,
                                     sys.exc_info())

    user, bug = record(ValueError("extract.layer=6 is out of range")), record(IndexError("list index"))
    assert UserErrorTracebacks().filter(user) and user.exc_info is None
    assert UserErrorTracebacks().filter(bug) and bug.exc_info is not None
    crash = "Crash detected! Execution was aborted by an interrupt signal."  # Prefect's line on every Ctrl-C
    assert not UserErrorTracebacks().filter(logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, crash,
                                                              None, None))
    other = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Crash detected! %s",
                              ("Execution was interrupted by an unexpected exception: MemoryError",), None)
    assert UserErrorTracebacks().filter(other), "a crash of another cause (Prefect's own words for it) stays"
    _setup_logging(False)
    _setup_logging(False)
    for name in PREFECT_RUN_LOGGERS:
        assert sum(isinstance(f, UserErrorTracebacks) for f in logging.getLogger(name).filters) == 1
    _setup_logging(True)  # -v, even after a run without it in this process
    for name in PREFECT_RUN_LOGGERS:
        assert not any(isinstance(f, UserErrorTracebacks) for f in logging.getLogger(name).filters)
    _setup_logging(False)


def test_prefects_traceback_of_an_api_that_stopped_answering_is_dropped_below_verbose():
    """A local Prefect server that died mid-run: the flow run logger printed 'Encountered exception during
    execution: ConnectError(...)' with two chained tracebacks (about 80 lines) before saerl's own warning that every
    stage finished. The flow run logger's record of a transport error is dropped, not marked as printed (main still
    prints such an error where it ends the command); a task's, and an error status's, keep theirs; -v keeps all."""
    import logging

    import httpx

    from flows.cli import PREFECT_RUN_LOGGERS, UserErrorTracebacks, _setup_logging, traceback_logged

    def record(logger: str, err: BaseException) -> logging.LogRecord:  # as Prefect's flow engine logs it
        try:
            raise err
        except Exception:
            return logging.LogRecord(logger, logging.ERROR, __file__, 1, "Encountered exception during execution: %r",
                                     (err,), sys.exc_info())

    refused = httpx.ConnectError("[Errno 111] Connection refused")
    assert not UserErrorTracebacks().filter(record("prefect.flow_runs", refused))
    assert not traceback_logged(refused), "main must still print it where the error ends the command"
    assert not UserErrorTracebacks().filter(record("prefect.flow_runs", httpx.ReadTimeout("timed out")))
    task = record("prefect.task_runs", httpx.ConnectError("a stage's own request"))
    assert UserErrorTracebacks().filter(task) and task.exc_info is not None
    status = httpx.HTTPStatusError("500", request=httpx.Request("POST", "http://x"), response=httpx.Response(500))
    kept = record("prefect.flow_runs", status)
    assert UserErrorTracebacks().filter(kept) and kept.exc_info is not None, "a server that answers keeps its line"
    _setup_logging(True)
    try:
        assert all(logging.getLogger(name).filter(record(name, refused)) for name in PREFECT_RUN_LOGGERS)
    finally:
        _setup_logging(False)


def test_urllib3s_retry_warnings_are_dropped_below_verbose():
    """A tracking server that died mid-run: urllib3 warned 'Retrying (Retry(total=1, ...)) after connection broken
    by ...' twice per failed MLflow request besides saerl's own warning. A real retried request to a refused port
    logs none below -v, and its retries with -v; urllib3's other warnings stay."""
    import logging
    import socket

    import urllib3

    from flows.cli import URLLIB3_POOL_LOGGER, _setup_logging

    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Caught(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    def retried_request_logs() -> list[str]:
        caught, pool = Caught(), logging.getLogger(URLLIB3_POOL_LOGGER)
        pool.addHandler(caught)
        try:
            with pytest.raises(urllib3.exceptions.MaxRetryError):
                urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/", retries=urllib3.Retry(total=2,
                                                                                                        backoff_factor=0))
            pool.warning("Connection pool is full, discarding connection: %s", "127.0.0.1")
        finally:
            pool.removeHandler(caught)
        return caught.messages

    try:
        _setup_logging(False)
        quiet = retried_request_logs()
        _setup_logging(True)
        verbose = retried_request_logs()
    finally:
        _setup_logging(False)
    assert not [m for m in quiet if m.startswith("Retrying")] and any("pool is full" in m for m in quiet), quiet
    assert sum(m.startswith("Retrying") for m in verbose) == 2, verbose


def test_prefects_crash_line_of_a_stop_by_any_signal_is_dropped_in_its_own_words():
    """`kill -TERM` of a run logged Prefect's ERROR 'Crash detected! Execution was aborted by a termination signal.'
    beside saerl's 'stopped by SIGTERM' line (Ctrl-C's crash line was dropped already): Prefect's flow engine logs a
    crash for any BaseException ending a flow run. The filter drops the line for each signal's cause, in the words
    Prefect's installed version gives it (prefect.states.exception_to_crashed_state), and keeps any other crash."""
    import logging

    from prefect.exceptions import TerminationSignal
    from prefect.states import exception_to_crashed_state
    from prefect.utilities.asyncutils import run_coro_as_sync

    from flows.cli import PREFECT_CRASH, Interrupted, UserErrorTracebacks

    def crash_line(err: BaseException) -> logging.LogRecord:  # as Prefect's FlowRunEngine.handle_crash logs it
        message = run_coro_as_sync(exception_to_crashed_state(err)).message
        return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, f"{PREFECT_CRASH} {message}", None,
                                 None)

    def task_line(err: BaseException) -> logging.LogRecord:  # as the task engine logs a task run a signal ended
        state = run_coro_as_sync(exception_to_crashed_state(err))
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, f"Finished in state {state}", None,
                                 None)

    for stop in (KeyboardInterrupt(), Interrupted(signal.SIGHUP), TerminationSignal(signal.SIGTERM)):
        assert not UserErrorTracebacks().filter(crash_line(stop)), type(stop).__name__
        assert not UserErrorTracebacks().filter(task_line(stop)), type(stop).__name__  # CI: Ctrl-C under load
    for other in (MemoryError(), SystemExit(1)):
        assert UserErrorTracebacks().filter(crash_line(other)), type(other).__name__
        assert UserErrorTracebacks().filter(task_line(other)), type(other).__name__


@pytest.mark.parametrize("argv", [["status", "--limit", "0"], ["status", "--bogus"], ["run", "c.yaml", "--bogus"],
                                  ["run", "--bogus"], ["gc", "--min-age-hours", "nan"], ["gc", "--dry-run", "a.b=1"],
                                  ["status", "RUN", "stray"], ["export", "RUN", "--out", "o", "--format", "bad"]])
def test_a_subcommands_bad_argument_shows_the_subcommands_usage(argv, capsys):
    """An option a subcommand does not know, or a stray word, printed the top level's usage (`usage: saerl [-h] [-v]
    {demo,run,...} ...`, none of the subcommand's options) above 'saerl: error: unrecognized arguments'. Every error
    of a subcommand's arguments shows its own usage line and its name, exit status 2."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"usage: saerl {argv[0]} [-h]") and f"saerl {argv[0]}: error: " in err, err



@pytest.mark.parametrize(("argv", "option", "text"), [(["gc", "--keep-runs", "two"], "--keep-runs", "two"),
                                                      (["gc", "--keep-runs", "1.5"], "--keep-runs", "1.5"),
                                                      (["status", "--list", "--limit", "ten"], "--limit", "ten")])
def test_a_count_option_given_no_whole_number_names_the_option_and_the_value(argv, option, text, capsys):
    """`saerl gc --keep-runs two` and `saerl status --list --limit ten`: argparse's error, exit status 2, names the
    option and says the value is not a whole number."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert f"saerl {argv[0]}: error: argument {option}: {text!r} is not a whole number" in capsys.readouterr().err

def test_a_bad_word_before_the_subcommand_shows_the_top_levels_usage(capsys):
    """A stray word before the subcommand is the top level's error (its usage is the one that word belongs to)."""
    for argv in (["--bogus", "status"], ["nosuch"], []):
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("usage: saerl [-h] [-v] [--version]") and "{demo," in err and "saerl: error: " in err


def test_log_lines_carry_the_date(monkeypatch):
    """saerl's log lines said the time of day alone (12:04:02): in the log file of a run crossing midnight, or kept
    for days, one could not tell when a line was written. They carry the date too."""
    import logging

    from flows.cli import _setup_logging

    asked: dict = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: asked.update(kw))
    _setup_logging(False)
    (handler,) = asked["handlers"]
    line = handler.format(logging.LogRecord("saerl.flow", logging.INFO, __file__, 1, "said", None, None))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO saerl\.flow: said", line), line


def test_a_stage_user_error_reads_once_from_prefect_not_once_per_run_level(prefect_api):
    """A user error raised in a task of a flow run inside another (a stage inside a sweep's child run) read five
    times: Prefect's task line, its "Finished in state Failed(...)", one line per flow run level, then main's.
    Now Prefect prints it once (no traceback) and main once; a bug's error keeps Prefect's every line."""
    import logging

    from prefect import flow, task

    from flows.cli import PREFECT_RUN_LOGGERS, _setup_logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    @task
    def stage(err):
        raise err

    @flow
    def child(err):
        return stage.submit(err).result()

    @flow
    def sweep(err):
        return child(err)

    def prefect_records(err, text):
        _setup_logging(False)
        keep.records.clear()
        with pytest.raises(type(err)):
            sweep(err)
        return [r for r in keep.records if text in r.getMessage()]

    keep = Keep()
    for name in PREFECT_RUN_LOGGERS:  # after the loggers' filters, as any handler of theirs (Prefect's own too)
        logging.getLogger(name).addHandler(keep)
    try:
        user = prefect_records(ValueError("USER-ERR-7 set data.x"), "USER-ERR-7")
        assert len(user) == 1 and user[0].exc_info is None, [r.getMessage() for r in user]
        bug = prefect_records(IndexError("BUG-ERR-7"), "BUG-ERR-7")
        assert len(bug) >= 3 and bug[0].exc_info is not None, "a bug's error keeps every line, with its traceback"
    finally:
        for name in PREFECT_RUN_LOGGERS:
            logging.getLogger(name).removeHandler(keep)
        _setup_logging(False)


def test_a_run_that_fails_unexpectedly_says_it_resumes_after_its_traceback(monkeypatch, capsys):
    """A stage failing with an error that is no user error (a bug, a Dask worker lost for good) ended in a bare
    traceback, twice as long on Dask, with nothing on what to do; a Ctrl-C said the same command resumes. Now the
    traceback stays and one line after it says so; commands that run no stage add nothing."""
    import types

    from distributed.scheduler import KilledWorker

    import flows.cli as cli

    def fail(_args):
        raise KilledWorker("extract-shard-1", "tcp://10.0.0.2:4001", 3)

    for runs_stages in (True, False):
        monkeypatch.setattr(cli, "parse_args", lambda argv=None, r=runs_stages: types.SimpleNamespace(
            verbose=False, fn=fail, runs_stages=r))
        with pytest.raises(KilledWorker):
            cli.main([])
        assert (cli.RESUME_HINT in capsys.readouterr().err) is runs_stages
    assert "the same command resumes" in cli.RESUME_HINT
    # Prefect's flow run logger printed the traceback already (the flow's failure reaches main as the same error):
    # main says the error in one line and the hint, exit status 1, instead of a second traceback of 90 lines
    import logging

    err = KilledWorker("extract-shard-1", types.SimpleNamespace(address="tcp://10.0.0.2:4001"), 3)

    def logged(_args):
        try:
            raise err
        except KilledWorker:
            record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception", None,
                                       sys.exc_info())
        assert cli.UserErrorTracebacks().filter(record) and record.exc_info is not None  # Prefect's keeps it
        raise err

    for verbose in (False, True):
        monkeypatch.setattr(cli, "parse_args", lambda argv=None, v=verbose: types.SimpleNamespace(
            verbose=v, fn=logged, runs_stages=True))
        if verbose:  # -v: every traceback, this one too
            with pytest.raises(KilledWorker):
                cli.main([])
            continue
        assert cli.main([]) == 1
        out = capsys.readouterr().err
        assert out.startswith("saerl: KilledWorker: ") and cli.RESUME_HINT in out and "Traceback" not in out


def test_output_cut_short_by_its_reader_is_not_an_error():
    """`saerl report | head` ended with "saerl: error: [Errno 32] Broken pipe" and exit status 2."""
    script = ("import sys, types, flows.cli as c\n"
              "def fn(a):\n    for _ in range(20000):\n        print('x' * 100)\n    return 0\n"
              "c.parse_args = lambda argv=None: types.SimpleNamespace(verbose=False, fn=fn)\n"
              "sys.exit(c.main())\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"x")
    proc.stdout.close()  # what head does after its line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Broken pipe" not in err, err
    # a broken pipe of something else (a worker's socket, a subprocess) while stdout is fine is the command failing
    other = script.replace("for _ in range(20000):\n        print('x' * 100)\n    return 0",
                           "raise BrokenPipeError(32, 'a worker went away')")
    done = subprocess.run([sys.executable, "-c", other], capture_output=True, timeout=60)
    assert done.returncode == 2 and b"saerl: error: [Errno 32] a worker went away" in done.stderr, done.stderr


def test_ingest_takes_every_mapping_option_its_errors_name():
    """saerl.data's column errors name `--FIELD` for each of INGEST_OPTIONS: each is an option of saerl ingest."""
    from saerl.data import INGEST_OPTIONS

    args = parse_args(["ingest", "d.jsonl", *(w for name in INGEST_OPTIONS for w in (f"--{name}", f"f_{name}"))])
    assert all(getattr(args, name) == f"f_{name}" for name in INGEST_OPTIONS)


def test_ingest_of_a_missing_file_names_the_argument(tmp_path, capsys):
    """The data module's message names data.path (the config's field); on the command line it is FILE."""
    assert main(["ingest", str(tmp_path / "nope.jsonl"), "--prompt", "q", "--answer", "a",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl does not exist" in err and "FILE, the first argument of saerl ingest" in err
    assert "data.path" not in err


def test_ingest_out_pointing_at_a_file_is_an_error_naming_out(tmp_path, capsys):
    """--out naming an existing file crashed with a FileExistsError traceback."""
    src, taken = tmp_path / "d.jsonl", tmp_path / "taken.txt"
    src.write_text(json.dumps({"q": "What is 2+3?", "a": "5"}) + "\n")
    taken.write_text("mine")
    assert main(["ingest", str(src), "--prompt", "q", "--answer", "a", "--out", str(taken)]) == 2
    assert "--out" in capsys.readouterr().err and taken.read_text() == "mine"


@pytest.mark.slow
def test_cli_run_end_to_end_twice(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flows.cli", "run", str(REPO / "configs" / "smoke.yaml"),
           f"runtime.artifact_root={tmp_path / 'root'}"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[curriculum] computed" in first.stdout and "[evaluate] computed" in first.stdout
    assert "diff vs vanilla" in first.stdout, "the run ends with the arm comparison table"
    assert "Loading weights" not in first.stderr and "Writing model shards" not in first.stderr, \
        "smoke has runtime.progress off: no transformers progress bars either"
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    def stage_lines(out: str) -> list[str]:
        return [ln for ln in out.splitlines() if re.match(r"\d\d:\d\d:\d\d \[", ln) and " key=" in ln
                and " computing " not in ln]

    again = stage_lines(second.stdout)
    assert len(again) == len(stage_lines(first.stdout)) >= 10 and all(" cached " in ln for ln in again)


def terminal_signals() -> None:
    """A child's signals as a terminal's foreground job has them: Ctrl-C and SIGHUP at their defaults, whatever the
    test process inherited (a suite started under nohup, or in a background job, ignores them, and a run keeps a
    signal it was started ignoring)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interrupt_stops_the_run_inside_a_stage_and_keeps_what_it_finished(tmp_path, sig):
    """Ctrl-C, SIGTERM or SIGHUP while a stage runs ends `saerl run` there (status 128 + the signal, saying what is kept),
    instead of after the stage: Prefect's thread pool waited for the running stage, and a wait without a timeout
    ran the Ctrl-C handler only once the stage was done. The stage in flight (a pretraining made long here) is
    left unfinished; the run record says where the run stopped."""
    from saerl.runs import FAILED, STOPPED, list_runs, read_run

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PREFECT_API_URL", None)
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "flows.cli", "run", str(REPO / "configs" / "smoke.yaml"), f"runtime.artifact_root={root}",
           "testbed.pretrain_steps=100000", "tracking.enabled=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=terminal_signals)
    try:
        deadline = time.monotonic() + 300
        while not list((root / "testbed").glob(".partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before its testbed stage started"
        time.sleep(2)  # inside the pretraining
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"stopped by {signal.Signals(sig).name}" in err and "run the same command again to resume" in err
    assert not [p for p in (root / "testbed").iterdir() if not p.name.startswith(".")], "the stage was not finished"
    (path,) = list_runs(root)
    extra = read_run(path).extra  # a person's stop, not a failure (`status --list` read 'failed at testbed')
    assert extra[STOPPED] == f"testbed: {signal.Signals(sig).name}" and FAILED not in extra
    assert "Crash detected" not in err and " ERROR " not in err, "a stop asked for is no crash (SIGTERM's read so)"


def test_a_run_takes_sigterm_over_only_while_it_runs():
    """stop_on_interrupt sets its SIGTERM handler for a pipeline or ablation run and gives the previous one back, so
    `saerl status` (or a test calling main in-process) keeps the process's own handler."""
    from flows.cli import stop_on_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_demo_without_its_config_says_where_to_run_it(monkeypatch, tmp_path, capsys):
    import flows.cli as cli

    monkeypatch.setattr(cli, "DEMO_CONFIG", tmp_path / "configs" / "demo.yaml")  # as in a wheel install
    assert cli.main(["demo"]) != 0
    assert "run it from a clone" in capsys.readouterr().err



def test_demo_runs_the_demo_config_with_the_overrides_and_root(monkeypatch, tmp_path):
    """`saerl demo`'s body never ran in a test (its missing-config refusal alone): it loads configs/demo.yaml with
    the user's overrides and --root (last, as runtime.artifact_root), and runs the whole pipeline (no --until),
    with the command line as the run's invocation and its launch rooted at --root."""
    import flows.cli as cli
    from saerl.config import load_config

    seen = []
    monkeypatch.setattr(cli, "run_pipeline", lambda cfg, until=None, invocation=None, launch=None: seen.append(
        (cfg, until, invocation, launch)) or {})
    root = tmp_path / "demo root"
    assert cli.main(["demo", "train.max_steps=7", "--root", str(root), "curriculum.mix_ratio=0.3"]) == 0
    ((cfg, until, invocation, launch),) = seen
    assert cli.DEMO_CONFIG.resolve() == (REPO / "configs" / "demo.yaml").resolve()
    expected = load_config(REPO / "configs" / "demo.yaml", ["train.max_steps=7", "curriculum.mix_ratio=0.3",
                                                             f"runtime.artifact_root={root}"])
    assert cfg == expected and cfg.name == "demo" and cfg.train.max_steps == 7
    assert cfg.curriculum.mix_ratio == 0.3 and cfg.runtime.artifact_root == str(root)
    assert until is None, "the demo runs every stage"
    assert invocation == f"saerl demo train.max_steps=7 --root '{root}' curriculum.mix_ratio=0.3"
    assert launch.root == root

def test_ablate_without_a_held_out_set_fails_before_a_server_starts(monkeypatch, capsys):
    import flows.server

    def no_server(*args, **kwargs):
        raise AssertionError("the held-out check must come before the Prefect server starts")

    monkeypatch.setattr(flows.server, "prefect_server", no_server)
    argv = ["ablate", str(REPO / "configs" / "real-gsm8k.yaml"), "--grid", "curriculum.mix_ratio=0,0.1"]
    assert main(argv) == 2
    assert "no held-out set" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "ablate"])
def test_a_run_into_a_root_it_cannot_write_is_refused_in_one_line_before_a_server_starts(command, tmp_path,
                                                                                         monkeypatch, capsys):
    """A run on a root mounted read-only (or another user's) stopped with a bare '[Errno 30] Read-only file system:
    .../prefect/server-start.lock'. It is refused before the server starts, naming the root and what does read it;
    a root not made yet is judged by the folder it would be made in. (Tests run as root, where chmod does not stop
    writes: the probe, os.access, says the folder is not writable instead.)"""
    import flows.server

    def no_server(*args, **kwargs):
        raise AssertionError("the writable check must come before the Prefect server starts")

    mounted = tmp_path / "mounted"
    mounted.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (Path(path) == mounted and mode & os.W_OK)
                        and real_access(path, mode, **kw))
    monkeypatch.setattr(flows.server, "prefect_server", no_server)
    root = mounted / "root"
    argv = [command, str(REPO / "configs" / "demo.yaml"), f"runtime.artifact_root={root}"]
    argv += ["--grid", "curriculum.mix_ratio=0,0.1"] if command == "ablate" else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"saerl: artifact root {root} is not writable: a run writes locks and its record there; "
                           "status, report (--html PATH), export and gc --dry-run read it as it is"), err
    assert not root.exists()


def test_ingest_command_reads_one_split_of_a_dataset_dict(tmp_path, capsys):
    import datasets

    split = {"train": {"q": ["What is 1+1?"], "a": ["2"]}, "test": {"q": ["What is 2+2?"], "a": ["4"]}}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in split.items()}).save_to_disk(str(tmp_path / "hf"))
    base = ["ingest", str(tmp_path / "hf"), "--prompt", "q", "--answer", "a", "--out", str(tmp_path / "out")]
    assert main(base) == 2
    assert "--hf-split SPLIT" in capsys.readouterr().err
    assert main([*base, "--hf-split", "test"]) == 0
    assert pl.read_parquet(tmp_path / "out" / "prompts.parquet")["prompt"].to_list() == ["What is 2+2?"]


def _no_server(monkeypatch):
    """Stand in for the Prefect server the run and ablate commands start (nothing is served)."""
    import contextlib

    import flows.server

    monkeypatch.setattr(flows.server, "prefect_server", lambda *a, **k: contextlib.nullcontext("http://x/api"))


def _quiet_state() -> tuple[bool, str | None, int]:
    """(transformers' progress bars on, HF_HUB_DISABLE_PROGRESS_BARS, the `distributed` logger's level) now."""
    import logging

    from transformers.utils import logging as hf_logging

    return (hf_logging.is_progress_bar_enabled(), os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"),
            logging.getLogger("distributed").level)


def test_run_takes_root_and_runs_quiet_when_progress_is_off(monkeypatch, tmp_path):
    """`saerl run CONFIG --root X` was 'unrecognized arguments' (demo, report, status, gc and export had it); with
    runtime.progress off (smoke) transformers still drew its weight loading/saving bars and Dask printed its INFO
    lines. --root goes last, so it wins over an artifact_root override."""
    import flows.pipeline

    seen = []
    _no_server(monkeypatch)
    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow",
                        lambda flow, config, until, invocation=None, run_id=None: seen.append(
                            (config["runtime"]["artifact_root"], until, _quiet_state())))
    import distributed  # noqa: F401 - its import sets its logger's level (the flow imports it anyway on Dask)

    before = _quiet_state()
    root = tmp_path / "my root"
    argv = ["run", str(REPO / "configs" / "smoke.yaml"), "runtime.artifact_root=elsewhere", "--root", str(root),
            "--until", "ingest", "runtime.task_runner=dask"]
    assert main(argv) == 0
    ((artifact_root, until, during),) = seen
    assert artifact_root == str(root) and until == "ingest"
    assert during[:2] == (False, "1") and during[2] >= 30, "bars off (here and in Dask workers), distributed at WARNING"
    assert _quiet_state() == before, "restored after the run"
    assert main(argv[:-1] + ["runtime.progress=true"]) == 0
    assert seen[-1][2] == before, "progress on: nothing silenced"


def test_ablate_takes_root(monkeypatch, tmp_path):
    import flows.sweep

    seen = []
    _no_server(monkeypatch)
    flow = lambda config, grid, until, sweep_id: seen.append(  # noqa: E731
        (config["runtime"]["artifact_root"], grid, _quiet_state()))
    monkeypatch.setattr(flows.sweep, "named_ablation", lambda config: (flow, "sweep-id"))
    argv = ["ablate", str(REPO / "configs" / "smoke.yaml"), "--grid", "curriculum.mix_ratio=0,0.5", "--root",
            str(tmp_path), "--until", "curriculum"]
    assert main(argv) == 0
    ((artifact_root, grid, during),) = seen
    assert artifact_root == str(tmp_path) and grid == {"curriculum.mix_ratio": [0, 0.5]}
    assert during[0] is False, "smoke has runtime.progress off"


def test_a_command_stops_the_verifier_workers_it_started(tmp_path, capsys, monkeypatch):
    """An answer only math-verify reads (a LaTeX fraction) starts the verifier's worker processes during `saerl
    ingest`; they are gone once main returns, so a process that runs many commands does not keep them."""
    from saerl import verify

    started: list[int] = []
    real_run = verify._POOL.run

    def run(tasks, timeout_s):  # the pool's batch call: note how many workers it left running
        out = real_run(tasks, timeout_s)
        started.append(len(verify._POOL.workers))
        return out

    monkeypatch.setattr(verify._POOL, "run", run)
    verify.shutdown_verifier()
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"q": "Half of 1?", "a": "\\frac{1}{2}"}) + "\n")
    assert main(["ingest", str(src), "--prompt", "q", "--answer", "a", "--out", str(tmp_path / "out")]) == 0
    assert started and started[0] >= 1, "the command started verifier workers (else this proves nothing)"
    assert verify._POOL.workers == []


def test_run_help_says_override_values_are_yaml_lists_included(capsys):
    """`saerl run --help` showed only a scalar override (curriculum.mix_ratio=0.2), so nothing said a list such as
    train.seeds could be given on the command line. It says values are YAML, with list examples that parse to lists
    (as the same words given to `saerl run` do)."""
    import re
    import shlex

    from saerl.config import load_config

    with pytest.raises(SystemExit):
        parse_args(["run", "--help"])
    text = capsys.readouterr().out
    assert "YAML" in text and "'train.seeds=[0,1]'" in text and "'train.arms=[saerl,vanilla,order_only]'" in text
    example = next(line for line in text.replace("\\\n", " ").splitlines() if "train.arms=[" in line)  # as a shell
    # reads a line continued with a backslash
    args = parse_args(shlex.split(re.sub(r"^\s*saerl ", "", example)))
    cfg = load_config(REPO / args.config, args.overrides)
    assert cfg.train.seeds == [0, 1] and cfg.train.arms == ["saerl", "vanilla", "order_only"]


def test_ingest_maps_the_labelled_subset_and_defect_kinds_a_config_can(tmp_path, capsys):
    """`saerl ingest` took no --labelled / --defect, so a user could not check those columns before a run."""
    src = tmp_path / "d.jsonl"
    rows = [{"q": f"What is {i}+1?", "a": i + 1, "lab": i % 2 == 0, "d": "garbled" if i == 0 else "none"}
            for i in range(4)] + [{"q": "What is 9+9?", "a": 18, "lab": "maybe", "d": "none"}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    assert main(["ingest", str(src), "--prompt", "q", "--answer", "a", "--labelled", "lab", "--defect", "d",
                 "--out", str(out)]) == 0
    assert "invalid label 1" in capsys.readouterr().out
    kept = pl.read_parquet(out / "prompts.parquet").sort("row")  # written in id order; compared in file order
    assert kept["labelled"].to_list() == [True, False, True, False, None]
    assert kept["defect"].to_list() == ["garbled", "none", "none", "none", "none"]
    assert pl.read_parquet(out / "rejected.parquet").select("row", "field").rows() == [(4, "lab")]


def test_again_without_relog_is_refused(tmp_path, capsys):
    """`saerl report --again` did nothing (it only means something with --relog) and said nothing."""
    from flows.cli import main

    assert main(["report", "--root", str(tmp_path), "--again"]) == 2
    assert "--again goes with --relog" in capsys.readouterr().err


@pytest.mark.parametrize("error", [OSError(30, "Read-only file system"), PermissionError(13, "Permission denied")])
def test_report_on_a_root_it_cannot_write_prints_the_table_and_warns_about_the_default_page(error, tmp_path, monkeypatch,
                                                                                           capsys):
    """`saerl report` on a read-only root printed the whole table, then failed (rc 2) on the HTML page nobody asked
    for (ROOT/reports/RUN.html). Now the default page that cannot be written is a warning naming --html (rc 0);
    a page the user named with --html, or another error, stays an error. The writer raises as a read-only or
    another user's folder does (a test run as root may write anywhere)."""
    import errno
    from types import SimpleNamespace

    import saerl.report

    writes = []

    def unwritable(report, path):
        writes.append(path)
        raise type(error)(error.errno, error.strerror, str(path.parent))

    monkeypatch.setattr(saerl.report, "load_report", lambda root, run: SimpleNamespace(record=SimpleNamespace(run_id="r1", extra={})))
    monkeypatch.setattr(saerl.report, "format_text", lambda report, width=None: "THE TABLE")
    monkeypatch.setattr(saerl.report, "write_html", unwritable)
    assert main(["report", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "THE TABLE" in captured.out and "wrote" not in captured.out
    assert captured.err == (f"saerl: could not write the HTML report to {tmp_path / 'reports' / 'r1.html'} "
                            f"({error.strerror}): pass --html PATH\n")
    assert writes == [tmp_path / "reports" / "r1.html"]
    assert main(["report", "--root", str(tmp_path), "--html", str(tmp_path / "mine.html")]) == 2
    assert capsys.readouterr().err.startswith(f"saerl: error: [Errno {error.errno}] {error.strerror}")
    error = OSError(errno.ENOSPC, "No space left on device")  # what the writer raises from now on: not unwritable
    assert main(["report", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("saerl: error: [Errno 28] No space left on device")


def test_every_command_reads_a_root_under_home_where_run_writes_it(tmp_path, monkeypatch, capsys):
    """`saerl run CONFIG --root=~/runs` wrote to the home folder's runs (the config's validator expands '~'), while
    status, report, gc and export read a folder named '~' under the current one and found no runs there (the shell
    leaves '~' in '--root=~/runs' as it is). Every command now reads the root as runtime.artifact_root does."""
    from flows.cli import _root, with_root
    from saerl.config import load_config
    from saerl.runs import RunRecord, save_run

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    written = load_config(REPO / "configs" / "smoke.yaml", with_root([], "~/runs")).runtime.artifact_root
    assert _root("~/runs") == Path(written) == tmp_path / "home" / "runs"
    assert _root(None) == Path(".saerl") and _root("rel") == Path("rel")
    save_run(Path(written), RunRecord(name="smoke", run_id="20260101-000000-000000-aaaa"))
    capsys.readouterr()
    assert main(["status", "--list", "--root=~/runs"]) == 0
    assert "20260101-000000-000000-aaaa" in capsys.readouterr().out
    assert main(["gc", "--dry-run", "--root=~/runs"]) == 0, capsys.readouterr().err
    assert not (tmp_path / "~").exists()


def test_a_key_given_twice_on_the_command_line_is_refused_before_anything_runs(capsys):
    """`train.max_steps=5 train.max_steps=6` trained 6 steps without a word (the last override won); --root's own
    override after the user's runtime.artifact_root still wins, as documented."""
    assert main(["run", str(REPO / "configs" / "demo.yaml"), "train.max_steps=5", "train.max_steps=6"]) == 2
    assert "sets train.max_steps again, after 'train.max_steps=5'" in capsys.readouterr().err
    assert main(["demo", "eval.sets.a=x.jsonl", "eval.sets={b: y.jsonl}"]) == 2
    assert "dropping eval.sets.a" in capsys.readouterr().err
    from flows.cli import with_root

    assert with_root(["runtime.artifact_root=/a"], "/b")[-1] == 'runtime.artifact_root="/b"'


@pytest.mark.parametrize("entry", ["flows.pipeline:pipeline_from_file", "flows.sweep:ablation_from_file"])
def test_a_deployments_overrides_give_each_key_once(entry):
    import importlib

    from saerl.config import ConfigError

    module, name = entry.split(":")
    flow = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match="sets curriculum.mix_ratio again"):
        flow.fn(str(REPO / "configs" / "smoke.yaml"), overrides=["curriculum.mix_ratio=0.1", "curriculum.mix_ratio=0.3"])


def _polars_full_disk() -> Exception:
    """polars' own error on a full disk: a parquet file written to /dev/full (every write there fails with ENOSPC)."""
    import numpy as np

    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full device to fill")
    try:
        pl.DataFrame({"x": np.random.default_rng(0).random(100_000)}).write_parquet("/dev/full")  # no compressing
    except Exception as err:  # noqa: BLE001 - the error is what the test needs
        return err
    raise AssertionError("writing to /dev/full did not fail")


def _sqlite_full_disk() -> Exception:
    """sqlite's own error on a full disk (SQLITE_FULL), from a database allowed two pages."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("pragma max_page_count=2")
    db.execute("create table t(x)")
    try:
        db.execute("insert into t values (?)", (b"x" * 100_000,))
    except sqlite3.OperationalError as err:
        return err
    raise AssertionError("a two-page database took 100 kB")


def _safetensors_full_disk() -> Exception:
    """safetensors' error type with the message it gave on a full 1 MB tmpfs (a real write needs a full disk)."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _quota_full() -> Exception:
    """A Rust library's error on a used-up quota (EDQUOT)."""
    return RuntimeError("failed to write chunk: Disk quota exceeded (os error 122)")


@pytest.mark.parametrize("make", [_polars_full_disk, _sqlite_full_disk, _safetensors_full_disk, _quota_full])
def test_a_full_disk_a_library_reports_in_its_own_words_gets_the_same_hint(make, monkeypatch, tmp_path, capsys):
    """polars (ComputeError '... (os error 28)'), safetensors (SafetensorError), sqlite (OperationalError 'database
    or disk is full') raise no OSError on a full disk: the error reached the user raw, with no root, free space,
    `saerl gc` or word that the run resumes. Now a message saying the disk is full gets the hint, whatever the
    disk's free space now (the failed write freed its temp file), the original error chained."""
    import errno

    import flows.pipeline
    from flows.cli import naming_a_full_disk

    error = make()
    code = errno.EDQUOT if make is _quota_full else errno.ENOSPC
    with pytest.raises(OSError) as raised, naming_a_full_disk(tmp_path):
        raise error
    assert raised.value.errno == code and raised.value.__cause__ is error

    def full(*args, **kwargs):
        raise error

    _no_server(monkeypatch)
    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow", full)
    root = tmp_path / "root"
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(root)]) == 1  # the run started: failed
    err = capsys.readouterr().err
    assert f": [Errno {code}] {type(error).__name__}: {error}; the run's artifact root {root} has " in err
    assert f"saerl gc --root {root} --dry-run" in err and "rerun the same command" in err


def test_an_error_that_does_not_say_why_is_a_full_disk_only_when_the_disk_is_all_but_full(monkeypatch, tmp_path):
    """torch.save on a full disk says only 'unexpected pos 576 vs 534'. With the root's disk all but full
    (NEARLY_FULL_BYTES) it gets the full disk's hint, chained; with room left it, and a config, value or bug's error
    on a full disk, pass unchanged."""
    import errno
    import shutil

    from flows.cli import NEARLY_FULL_BYTES, naming_a_full_disk
    from saerl.config import ConfigError

    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    for free, hinted in [(NEARLY_FULL_BYTES - 1, True), (NEARLY_FULL_BYTES, False), (10 * 2**30, False)]:
        monkeypatch.setattr(shutil, "disk_usage", lambda p, free=free: shutil._ntuple_diskusage(2**40, 2**40 - free, free))
        with pytest.raises(Exception) as raised, naming_a_full_disk(tmp_path / "not made yet"):
            raise error
        if hinted:
            assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
            assert raised.value.__cause__ is error
            assert str(raised.value).startswith(f"[Errno 28] RuntimeError: {error}, with the disk all but full; the "
                                                f"run's artifact root {tmp_path / 'not made yet'} has 0.1 GB free now")
            for other in (ConfigError("train.max_steps must be positive"), ValueError("extract.layer=60 is out of "
                          "range"), IndexError("list index out of range")):  # a user's or a bug's own words (a review)
                with pytest.raises(type(other)) as raised, naming_a_full_disk(tmp_path):
                    raise other
                assert raised.value is other
        else:
            assert raised.value is error


@pytest.mark.parametrize("command", ["run", "ablate"])
def test_a_full_disk_names_the_root_its_free_space_and_that_the_run_resumes(command, monkeypatch, tmp_path, capsys):
    """Zarr's ENOSPC named no file: a full disk mid-extraction printed only '[Errno 28] No space left on device',
    without the disk, gc or a word that the run resumes. The run and ablate commands name the root, its free
    space and the fixes; another OSError passes unchanged."""
    import errno

    import flows.pipeline
    import flows.sweep

    _no_server(monkeypatch)
    error = OSError(errno.ENOSPC, "No space left on device")

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow", full)
    monkeypatch.setattr(flows.sweep, "named_ablation", lambda config: (full, "sweep-id"))
    root = tmp_path / "root"
    argv = [command, str(REPO / "configs" / "smoke.yaml"), "--root", str(root)]
    argv += ["--grid", "curriculum.mix_ratio=0,0.5"] if command == "ablate" else []
    assert main(argv) == 1  # the run started, then failed: not a wrong command line's 2
    err = capsys.readouterr().err
    assert "[Errno 28] No space left on device; the run's artifact root" in err and str(root) in err
    assert "GB free now" in err and f"saerl gc --root {root} --dry-run" in err and "rerun the same command" in err
    error = OSError(errno.EACCES, "Permission denied")
    assert main(argv) == 1
    err = capsys.readouterr().err
    lead = "saerl: the ablation failed: " if command == "ablate" else "saerl: run "
    assert err.startswith(lead) and ": [Errno 13] Permission denied (saerl -v" in err, err


def test_tracking_credentials_stay_out_of_the_flows_parameters_and_telemetry_is_off(monkeypatch, tmp_path):
    """tracking.uri=http://alice:pw@host reached Prefect's flow-run parameters (the whole config, in clear in
    prefect.db and served by its API) and MLflow's printed run links. The command line moves an http(s) URI's
    credentials to MLflow's own variables first; and turns Hugging Face's telemetry off before any command imports
    huggingface_hub (a hub model's up-front check imported it before the server's environment said so, and trl's
    trainers then sent telemetry)."""
    import huggingface_hub.constants

    import flows.cli as cli
    import flows.pipeline as fp
    import saerl.preflight as sp
    from saerl.privacy import MLFLOW_CREDENTIALS, TELEMETRY_OFF

    for name in (*MLFLOW_CREDENTIALS, *TELEMETRY_OFF):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores it as it was (absent), not what the run sets
        monkeypatch.delenv(name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)  # restored after
    given = {}
    monkeypatch.setattr(sp, "check_runnable", lambda cfg, until=None, warn=True: [])
    monkeypatch.setattr(fp, "run_pipeline_flow", lambda flow, config, until, invocation=None, run_id=None: given.setdefault("config", config))
    monkeypatch.setattr("flows.server.prefect_server", lambda *a, **k: contextlib.nullcontext("http://x/api"))
    assert cli.main(["run", str(REPO / "configs" / "smoke.yaml"), "tracking.uri=http://alice:S3CRET@127.0.0.1:5000", "--root",
                     str(tmp_path)]) == 0
    assert given["config"]["tracking"]["uri"] == "http://127.0.0.1:5000" and "S3CRET" not in str(given["config"])
    assert [os.environ[n] for n in MLFLOW_CREDENTIALS] == ["alice", "S3CRET"]
    assert all(os.environ[n] == v for n, v in TELEMETRY_OFF.items())
    assert huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY is True


def test_a_run_records_the_command_that_started_it(monkeypatch):
    """No record said how a run was started (its overrides, --until): `saerl run` passes its command line, URL
    credentials masked, which the run record and its MLflow parent keep."""
    import flows.cli

    calls = []
    monkeypatch.setattr(flows.cli, "run_pipeline", lambda cfg, until=None, invocation=None, launch=None: calls.append(
        (until, invocation)))
    argv = ["run", "configs/smoke.yaml", "curriculum.mix_ratio=0.5", "--until", "curriculum",
            "tracking.uri=https://u:pw@mlflow.example/api", "train.seeds=[3]"]
    assert main(argv) == 0
    assert calls == [("curriculum", "saerl run configs/smoke.yaml curriculum.mix_ratio=0.5 --until curriculum "
                                    "tracking.uri=https://***@mlflow.example/api 'train.seeds=[3]'")]


def test_a_runs_lines_stop_when_the_reader_of_stdout_goes_and_the_run_goes_on():
    """`saerl run ... | head -2`: the next stage line raised BrokenPipeError inside the flow, the run failed at that
    stage (nothing trained) and saerl exited 0. say() now points stdout at /dev/null at the first broken write and
    says so once on stderr; the run goes on to its end."""
    script = ("import sys\nfrom flows.pipeline import say\n"
              "for i in range(3000):\n    say('[stage] computed key=' + 'x' * 200)\n"
              "print('RUN-WENT-ON', file=sys.stderr)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert b"[stage] computed" in proc.stdout.readline()
    proc.stdout.close()  # what head does after its lines
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"RUN-WENT-ON" in err and b"Traceback" not in err, err[-2000:]
    assert err.count(b"the reader of standard output has closed it") == 1


def test_a_closed_stdout_is_success_only_for_a_command_that_runs_no_stage(monkeypatch, tmp_path, capsys):
    """main returned 0 for any BrokenPipeError once stdout was closed: a run it had killed (`saerl run | head`)
    exited 0. A read-only command (`saerl report | head`) still does; a run that started exits 1, naming itself."""
    import types

    import flows.cli as cli

    monkeypatch.setattr(cli, "stdout_closed", lambda: True)

    def broken(args):
        if args.runs_stages:
            args.launch = cli.Launch(tmp_path, "20261206-150357-158103-980e", started=True)
        raise BrokenPipeError(32, "Broken pipe")

    for runs_stages, code in ((False, cli.EXIT_OK), (True, cli.EXIT_FAILED)):
        monkeypatch.setattr(cli, "parse_args", lambda argv=None, r=runs_stages: types.SimpleNamespace(
            verbose=False, fn=broken, runs_stages=r))
        assert cli.main([]) == code
    err = capsys.readouterr().err
    assert "saerl: run 20261206-150357-158103-980e failed" in err and "saerl status 20261206-150357-158103-980e" in err


def test_a_stage_failing_mid_run_exits_1_naming_the_run_the_stage_and_the_resume(monkeypatch, tmp_path, capsys):
    """A stage's ValueError or OSError mid-run (a full disk, a permission error) exited 2, as a wrong command line
    does, with one line naming neither the stage nor the run, and no resume hint. Once a run has started its
    failure exits 1: 'saerl: run ID failed at STAGE: ...' and the hint naming `saerl status ID`; a wrong config
    still exits 2 before anything starts."""
    import flows.pipeline
    from saerl.runs import FAILED, RunRecord, save_run

    def fails_at_curriculum(flow, config, until, invocation=None, run_id=None):
        root = Path(config["runtime"]["artifact_root"])
        save_run(root, RunRecord(name="smoke", run_id=run_id, extra={FAILED: "curriculum: ValueError: injected"}))
        raise ValueError("injected failure in curriculum")

    _no_server(monkeypatch)
    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow", fails_at_curriculum)
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    (run_id,) = [p.stem for p in (tmp_path / "runs").glob("*.json")]
    assert f"saerl: run {run_id} failed at curriculum: injected failure in curriculum" in err
    assert f"`saerl status {run_id}` names the stage" in err and "the same command resumes" in err
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "train.max_steps=-5", "--root", str(tmp_path)]) == 2


def test_a_held_out_set_with_no_usable_row_is_a_user_error_before_the_first_stage(monkeypatch, tmp_path, capsys):
    """An eval.sets file whose every answer is a struct ran extract, sae, encode, score and curriculum, then failed
    the run at train:saerl:0 (exit 1). `saerl run` refuses it before any stage, one line naming the set, its counts
    and the fix, exit status 2."""
    import flows.pipeline

    bad = tmp_path / "allbad_eval.jsonl"
    bad.write_text('{"prompt": "What is 1+1?", "answer": {"a": 1}}\n{"prompt": "What is 2+2?", "answer": {"a": 2}}\n')
    ran = []
    _no_server(monkeypatch)
    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow", lambda *a, **k: ran.append(a) or {})
    root = tmp_path / "root"
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(root),
                 f"eval.sets.x={{path: {bad}, id: prompt}}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saerl: error: held-out set eval.sets.x ({bad}) has no usable row: kept 0 of 2 rows; "
                          "rejected 2: struct answer 2. Fix: "), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not ran and not (root / "runs").exists()  # no run started, no stage ran


def test_saerl_help_lists_the_exit_statuses(capsys):
    """No exit status was documented (2 meant both a wrong command line and a stage's failure)."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "exit statuses:" in out and "a run started and failed" in out and "129 SIGHUP" in out
    assert "status --check" in out


def test_a_stale_prefect_api_url_is_one_line_naming_the_variable_and_the_fix(monkeypatch, tmp_path, capsys):
    """A PREFECT_API_URL left in the environment with no server there failed the run after 6 s with a 117-line
    traceback ending 'Failed to reach API', after a hint that the run resumes. It is refused before the run starts:
    one line naming the variable and the fix, exit status 2."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # port 9: nothing listens
    started = time.time()
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(tmp_path), "--until", "ingest"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http://127.0.0.1:9/api (from PREFECT_API_URL) does not answer" in err, err
    assert "unset PREFECT_API_URL" in err and "Traceback" not in err and time.time() - started < 60
    monkeypatch.delenv("PREFECT_API_URL")
    argv = ["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(tmp_path), "runtime.prefect_api_url=http://127.0.0.1:9/api"]
    assert main(argv) == 2
    assert "(from runtime.prefect_api_url) does not answer" in capsys.readouterr().err


def test_sighup_stops_a_run_as_ctrl_c_does(monkeypatch):
    """A closed terminal or ssh session (SIGHUP) ended a run at once by the signal, no 'stopped' line, and its record
    read 'killed'. During a run SIGHUP is raised as an interrupt naming it, which the flow records as stopped by
    SIGHUP, and the process ends with 129."""
    import flows.cli as cli
    from flows.pipeline import stop_signal

    seen: list[int] = []
    monkeypatch.setattr(cli, "stop_now", seen.append)
    before = signal.signal(signal.SIGHUP, lambda *a: seen.append(-1))  # without the fix: this one, not a dead pytest
    try:
        with cli.stop_on_interrupt():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.5)
        assert seen == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) is not None and seen == [signal.SIGHUP], "the handler before is back"
    finally:
        signal.signal(signal.SIGHUP, before)
    assert stop_signal(cli.Interrupted(signal.SIGHUP)) == "SIGHUP" and stop_signal(KeyboardInterrupt()) == "SIGINT"
    assert cli.EXIT_SIGNAL_BASE + signal.SIGHUP == 129


@pytest.mark.parametrize("hours", ["nan", "-5", "NaN", "x"])
def test_gc_refuses_a_min_age_that_is_no_age(hours, capsys):
    """`gc --min-age-hours nan` turned the age guard off (and missed the cache records), -5 kept nothing young."""
    with pytest.raises(SystemExit):
        parse_args(["gc", "--dry-run", "--min-age-hours", hours])
    assert "--min-age-hours" in capsys.readouterr().err
    assert parse_args(["gc", "--min-age-hours", "inf"]).min_age_hours == float("inf")


def test_progress_bars_follow_whether_stderr_is_a_terminal(monkeypatch):
    """runtime.progress defaulted to true: '\\r' tqdm frames went into every `2>log` and CI log (demo.yaml, the
    Qwen config). Its default, auto, is whether stderr is a terminal; true and false are kept."""
    import io

    from saerl.config import RuntimeConfig, load_config

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:  # a terminal's, whose size os.get_terminal_size gives below
            return 2

    monkeypatch.setenv("TERM", "xterm")  # a terminal that draws bars (not TERM=dumb, not 0 columns: test_terminal.py)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((80, 24)))
    for stream, shown in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert RuntimeConfig().progress is shown and RuntimeConfig(progress="auto").progress is shown
        assert load_config(REPO / "configs" / "demo.yaml", []).runtime.progress is shown
        assert RuntimeConfig(progress=True).progress is True and RuntimeConfig(progress=False).progress is False


def test_a_report_of_a_run_that_did_not_finish_says_so_on_stderr_and_exits_0(tmp_path, capsys):
    """`saerl report` of a failed or killed run printed 'the run did not finish' inside its table only, exit 0, so
    a script reading its output could take it for a result. It says so on stderr too, naming `status --check`
    (the report of what the run computed is what was asked: exit 0)."""
    from saerl.runs import FAILED, RunRecord, save_run

    save_run(tmp_path, RunRecord(name="smoke", run_id="20260101-000000-aaaaaa", extra={FAILED: "curriculum: x"}))
    assert main(["report", "--root", str(tmp_path), "--html", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert "saerl: run 20260101-000000-aaaaaa did not finish (failed at curriculum)" in err
    assert "saerl status 20260101-000000-aaaaaa --check" in err


def test_verbose_after_the_subcommand_and_no_abbreviated_options(capsys):
    """-v is taken after the subcommand as before it ('saerl run CONFIG -v' was 'unrecognized arguments'), and an
    abbreviated option is an error, not the option it begins (--roo was read as --root)."""
    assert parse_args(["status", "-v"]).verbose and parse_args(["-v", "status"]).verbose
    assert not parse_args(["status"]).verbose
    assert parse_args(["run", "c.yaml", "a.b=1", "-v"]).verbose
    for argv in (["status", "--roo", "/x"], ["run", "c.yaml", "--unt", "score"]):
        with pytest.raises(SystemExit) as err:
            parse_args(argv)
        assert err.value.code == 2
        assert argv[-2] in capsys.readouterr().err


def test_version_prints_saerls_version_its_commit_and_the_libraries(capsys):
    """`saerl --version` was 'the following arguments are required: command': a bug report had no way to say which
    saerl, which checkout and which library versions ran. It prints them and exits 0, without a subcommand."""
    from importlib import metadata

    from saerl.artifacts import code_state

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"saerl {metadata.version('saerl')} (")
    commit = code_state()["commit"]
    assert (f"commit {commit[:12]}" if commit != "unknown" else "commit unknown") in lines[0]
    assert f"torch {metadata.version('torch')}" in lines and f"trl {metadata.version('trl')}" in lines
    assert lines[1].startswith("python 3.")


def test_verbose_keeps_a_user_errors_exit_status_and_adds_its_traceback(tmp_path, capsys):
    """With -v a user error was raised: exit status 1 (the table's "a run started and failed") where the same error
    without -v exits 2, while a config error kept 2 under -v. Now -v prints the traceback, then the line, and exits
    2; without -v the line alone says where the traceback is."""
    root = str(tmp_path / "root")
    for argv in (["status", "nosuch", "--root", root],
                 ["run", str(REPO / "configs" / "smoke.yaml"), "--root", root, "--until", "nosuch"]):
        assert main(argv) == 2
        quiet = capsys.readouterr().err
        assert quiet.startswith("saerl: error: ") and "(saerl -v ... shows its traceback)" in quiet
        assert "Traceback" not in quiet and quiet.count("\n") == 1, quiet
        assert main(["-v", *argv]) == 2
        loud = capsys.readouterr().err
        assert loud.startswith("Traceback (most recent call last):") and "\nsaerl: error: " in loud, loud
        assert "shows its traceback" not in loud and "resumes" not in loud


def test_an_uninstalled_pkg_model_is_one_line_naming_the_field_exit_status_2(tmp_path, monkeypatch, capsys):
    """extract.model=pkg:<module> of a package not installed (configs/real-gsm8k.yaml's without the examples extra)
    raised ModuleNotFoundError while the run was planned: exit status 1, a 35-line traceback and the false "the run
    failed ... the same command resumes" line, though nothing ran. Now one line names the field and the install,
    exit status 2; 'pkg:a.b' too (importlib's own "No module named 'a'")."""
    _no_server(monkeypatch)
    for name in ("no_such_pkg_xyz", "no_such_pkg_xyz.sub"):
        argv = ["run", str(REPO / "configs" / "smoke.yaml"), f"extract.model=pkg:{name}", "--root",
                str(tmp_path / "root"), "--until", "extract"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"saerl: error: extract.model=pkg:{name}: no installed Python package or module named "
                              f"'{name}'. Fix: pip install ") and err.count("\n") == 1, err
        assert "Traceback" not in err and "resumes" not in err
    assert not (tmp_path / "root" / "runs").exists() or not list((tmp_path / "root" / "runs").iterdir())


@pytest.mark.slow
def test_a_model_folder_that_does_not_load_is_refused_before_the_first_stage_in_one_line(monkeypatch, tmp_path, capsys):
    """A local model folder whose config.json and weights disagree passed the up-front checks and failed when the
    extract stage loaded it: ~130 lines, two Prefect tracebacks of a RuntimeError naming neither the field nor the
    file (since, one line from the stage, exit status 1, after ingest ran). `saerl run` now refuses it before any
    stage, read from the weights' headers: one line naming extract.model, the folder, a tensor with both shapes and
    the fix, exit status 2, no run started."""
    from test_activations import save_tiny_lm

    import flows.pipeline

    model = tmp_path / "model"
    save_tiny_lm(model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))
    data = tmp_path / "g.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(4)))
    ran = []
    _no_server(monkeypatch)
    monkeypatch.setattr(flows.pipeline, "run_pipeline_flow", lambda *a, **k: ran.append(a) or {})
    root = tmp_path / "root"
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["run", str(REPO / "configs" / "real-gsm8k.yaml"), f"data.path={data}", f"extract.model={model}",
                 "extract.layer=1", "tracking.enabled=false", "--until", "extract", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saerl: error: extract.model={model}: the weights in {model} do not fit its config.json: "), err
    assert re.search(r"model.layers.0.mlp.down_proj.weight is \[32, 64\] in model.safetensors, and config.json makes "
                     r"it \[32, 128\].*Fix: put back the config.json saved with these weights", err), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not ran and not (root / "runs").exists()  # no run started, no stage ran


def test_a_run_under_nohup_keeps_going_when_the_terminal_closes(monkeypatch):
    """`nohup saerl run ...` starts the process with SIGHUP ignored; stop_on_interrupt set its own handler anyway, so
    a closed terminal stopped the run (129). A signal the process was started ignoring stays ignored, in the block
    and after it."""
    import flows.cli as cli

    seen: list[int] = []
    monkeypatch.setattr(cli, "stop_now", seen.append)
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it
    try:
        with cli.stop_on_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.5)
        assert seen == [] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_ctrl_c_outside_a_run_says_so_in_one_line(monkeypatch, capsys):
    """Ctrl-C during `saerl report` or `saerl gc` printed Python's whole traceback (41 lines); it now ends the
    command with one line and 128 + the signal's number."""
    import flows.cli as cli

    def interrupted_report(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_report", interrupted_report)
    assert cli.main(["report"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "saerl: stopped by SIGINT" and "Traceback" not in err
