"""One training run in several processes (train.num_processes > 1): torch's torchrun starts that many copies of this
module's worker (:func:`main`), each one process of one trl GRPOTrainer (accelerate reads torchrun's environment:
gloo on a CPU, nccl with one GPU per process), and the stage's own process waits for them (:func:`train_in_processes`).

The stage's process writes what the run needs into a folder (:func:`write_spec`); every rank reads it and runs
:func:`saerl.rl.train_grpo`; rank 0 alone writes the policy, the checkpoints' own files and the run's result
(``result.json``), and appends each step's metrics to ``steps.jsonl``, which the stage's process hands to its step sink
as they arrive (:func:`saerl.rl.step_sink`: the stage run's MLflow run), and its saerl log records to ``log.jsonl``,
which the stage's process logs again through the same loggers (so a Prefect run's log has them, as with one process);
the other ranks log saerl's warnings and errors alone, each to its own ``log-<rank>.jsonl``, logged again likewise with
'[rank <r>] ' before the message. The ranks' other output goes to the stage's stderr; a rank that fails leaves its
error in ``error-<rank>.json``, and the stage's process raises it with the output's tail. The torchruns this process started and has not seen end are
kept (:func:`stop_training` ends them where the CLI stops at once). This module's top level imports nothing heavy:
flows/server.py imports :func:`launcher` from it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saerl.answers import BOXED
from saerl.terminal import end_relay, relay_output

log = logging.getLogger("saerl.distributed")

WORKER = "saerl.distributed"  # the module torchrun runs in each process
SPEC = "spec.json"  # the run's arguments (the frames beside it as parquet)
PROMPTS = "prompts.parquet"
SETS = "sets"  # the in-training held-out sets, <i>.parquet in the spec's order
RESULT = "result.json"  # rank 0's return value of train_grpo
STEPS = "steps.jsonl"  # rank 0's step sink: one {"step", "values"} line per point, as measured
LOGS = "log.jsonl"  # rank 0's saerl log records: one RECORD_FIELDS line per record, as logged
RANK_LOGS = "log-{rank}.jsonl"  # another rank's saerl records (its WARNING and above), likewise
RECORD_FIELDS = ("name", "levelno", "levelname", "msg", "created", "msecs", "exc_text")  # a record's, as re-logged
SAERL_LOGGER = "saerl"  # the logger whose records (its children's) each rank writes to its log file (log_file)
ERROR = "error-{rank}.json"  # a failed rank's error: {"rank", "type", "message"}
POLL_S = 0.5  # how often the stage's process reads new step points while the ranks train
TAIL_CHARS = 6000  # how much of the ranks' output a failure quotes
# errors a rank's failure is raised again as, by name (a user's mistake keeps its type, so a caller reads it as one);
# any other is a RuntimeError
KEPT_ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "NotImplementedError": NotImplementedError}


def die_with_parent(signum: int) -> bool:
    """Ask the kernel to send this process `signum` when the thread that started it (its parent) ends, even by
    SIGKILL, which leaves it no `finally` to stop its children (Linux's PR_SET_PDEATHSIG; the setting is not passed
    on to the children it starts). in: the signal; out: whether it was set (False without prctl: not Linux). Also
    the first lines of flows/server.py's LAUNCHER and of :data:`LAUNCHER`, which run it as its own source: keep it
    self-contained."""
    import ctypes

    pr_set_pdeathsig = 1  # prctl's option number (linux/prctl.h)
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signum) == 0
    except (OSError, AttributeError):  # no prctl in the C library
        return False


ORPHAN_POLL_S = 0.5  # how often a launcher without a parent-death signal checks its starter (watch_parent)
STOP_GRACE_S = 10.0  # how long it gives its command to end on SIGTERM before SIGKILL (under the server's 15 s wait)


def watch_parent(starter: int, argv: list[str], poll_s: float, grace_s: float) -> None:
    """Run `argv` as a child and end with it, where the kernel has no parent-death signal (:func:`die_with_parent`
    False: macOS): a SIGTERM, SIGINT or SIGHUP sent to this process goes on to the child, and once the process that
    started this one (pid `starter`) is gone (this one's parent pid changes: a CLI killed by SIGKILL), the child gets
    SIGTERM, then SIGKILL after `grace_s`. Ends as the child did: its exit status, or killed by its signal. Runs in
    :func:`launcher`'s source: keep it self-contained. in: the starter's pid, the command, poll and grace seconds."""
    import signal
    import subprocess
    import time

    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # signals that came before the child started: sent to it once it has

    def forward(got: int, _frame: object) -> None:
        if started:
            started[0].send_signal(got)
        else:
            pending.append(got)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before the child starts: none is missed
        signal.signal(signum, forward)
    child = subprocess.Popen(argv)
    started.append(child)
    for got in pending:
        child.send_signal(got)
    while child.poll() is None:
        if os.getppid() != starter:
            child.terminate()
            try:
                child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        time.sleep(poll_s)
    if child.returncode < 0:  # killed by a signal: end by the same one, as the command itself would have
        if -child.returncode not in (signal.SIGKILL, signal.SIGSTOP):  # those two keep their action: none to set
            signal.signal(-child.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -child.returncode)
    sys.exit(child.returncode)


def launcher(orphan_status: int = 1, umask_bits: int | None = None, parent_death: bool = True) -> str:
    """The source of a `python -c` launcher that runs first in a child's process, then runs the command: it asks
    for SIGTERM when the process that started it dies (:func:`die_with_parent`: on Linux; a run stopped by Ctrl-C
    ends with os._exit, one killed by SIGKILL runs no `finally`), exits at once with `orphan_status` where that
    starter is already gone, and with `umask_bits` adds them to its umask (what the command writes keeps them off).
    Given that signal it becomes the command (exec keeps the pid); without it (macOS, or `parent_death` False, as a
    test of that path asks) it runs the command as its child and watches the starter (:func:`watch_parent`), which
    left the command running with parent pid 1 when the starter was killed. Its argv: the starter's pid, then the
    command. Used for torchrun (:data:`LAUNCHER`) and the local Prefect server (flows/server.py). in: exit status,
    umask bits or None, whether to ask for the signal; out: the source."""
    umask = "" if umask_bits is None else f"os.umask(os.umask(0) | {umask_bits:#o})\n"
    return (f"import os, signal, sys\n{inspect.getsource(die_with_parent)}\n{inspect.getsource(watch_parent)}\n"
            f"asked = {parent_death!r} and die_with_parent(signal.SIGTERM)\n"
            f"if os.getppid() != int(sys.argv[1]):\n    sys.exit({orphan_status})\n{umask}"
            "if asked:\n    os.execvp(sys.argv[2], sys.argv[2:])\n"
            f"watch_parent(int(sys.argv[1]), sys.argv[2:], {ORPHAN_POLL_S!r}, {STOP_GRACE_S!r})\n")


# torchrun's launcher (:func:`launcher`): torchrun stops its ranks on the SIGTERM it gets when the stage's process dies
LAUNCHER = launcher()
# the torchruns this process started (train_in_processes) and has not seen end: stop_training ends them where the
# process ends without reaching train_in_processes' `finally` (flows.cli.stop_now: os._exit), at once, where the
# launcher's own stop (die_with_parent, or watch_parent's poll on macOS) follows the process's end
_RUNNING: set[subprocess.Popen[bytes]] = set()


def stop_training() -> None:
    """Send SIGTERM to every torchrun this process started and has not seen end (torchrun stops its ranks on it),
    without waiting: the CLI calls it as it ends at once on Ctrl-C or SIGTERM (flows.cli.stop_now). in/out: nothing."""
    for proc in list(_RUNNING):
        try:
            proc.terminate()
        except OSError:  # already gone
            pass


def torchrun_command(processes: int, folder: Path, python: str = sys.executable) -> list[str]:
    """The command that trains the run written in `folder` in `processes` processes: torch's torchrun
    (torch.distributed.run of the installed torch), standalone (its rendezvous on a free local port, so runs side by
    side do not collide), one process per rank running :data:`WORKER`. in: processes, the spec's folder, the
    interpreter; out: argv."""
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", WORKER, str(folder)]


def launch_command(processes: int, folder: Path, python: str = sys.executable) -> list[str]:
    """:func:`torchrun_command` behind :data:`LAUNCHER` (torchrun ends with the stage's process). in/out: as it."""
    return [python, "-c", LAUNCHER, str(os.getpid()), *torchrun_command(processes, folder, python)]


def check_processes(processes: int, device: str, algorithm: str = "grpo") -> None:
    """Refuse what several processes cannot train here, naming the fix: DAPO (its dynamic sampling draws prompts in
    one process), or more processes than GPUs torch sees on a CUDA device (each process needs its own GPU).
    in: train.num_processes, runtime.device, train.algorithm."""
    from saerl.config import device_type

    if processes > 1 and algorithm == "dapo":
        raise ValueError(f"train.num_processes={processes} with train.algorithm=dapo: DAPO's dynamic sampling draws "
                         "its prompts in one process; set train.num_processes=1 or train.algorithm=grpo")
    if processes > 1 and device_type(device) == "cuda":
        import torch

        seen = torch.cuda.device_count()
        if seen < processes:
            raise ValueError(f"train.num_processes={processes} needs one GPU per process, but torch sees {seen} "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): set "
                             f"train.num_processes={max(seen, 1)} or make {processes} GPUs visible")


def shared_gpus_problem(processes: int, device: str, task_runner: str, dask_address: str | None) -> str | None:
    """Why several processes per run cannot train under Dask here (None where they can): the train stage's runs run at
    once there (flows.pipeline.PARALLEL_STAGES), and each run's torchrun puts its ranks on the first N GPUs the
    machine shows, so the runs on one machine would share the same cards. Allowed on a CPU device (runtime.device=cpu,
    or 'auto' with no GPU here and no dask_address): the runs share the cores only. 'auto' with a dask_address counts as
    a GPU (the workers' devices are not known here). in: train.num_processes, runtime.device, runtime.task_runner,
    runtime.dask_address; out: one line naming the fix, or None."""
    from saerl.config import device_type

    if processes == 1 or (task_runner != "dask" and not dask_address):
        return None
    if device == "cpu" or (device == "auto" and not dask_address and device_type(device) == "cpu"):
        return None
    where = f"runtime.dask_address={dask_address}" if dask_address else "runtime.task_runner=dask"
    return (f"train.num_processes={processes} with {where} on runtime.device={device}: Dask runs the training runs "
            f"at once and each run's {processes} processes take the first {processes} GPUs of their machine, so the "
            "runs would share them; set runtime.task_runner=local (the runs take the GPUs one after another), or "
            "train.num_processes=1 (one run per Dask worker, each worker with its own GPU), or runtime.device=cpu")


def write_spec(folder: Path, args: dict[str, Any], prompts: Any, eval_sets: dict[str, Any]) -> None:
    """Write one run's arguments into `folder` (made afresh): `args` (JSON values: configs as their dicts) as SPEC,
    the prompts and each held-out set as parquet. in: the folder, the arguments, the prompts frame, {set: frame}."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / SETS).mkdir(parents=True)
    prompts.write_parquet(folder / PROMPTS)
    for i, frame in enumerate(eval_sets.values()):
        frame.write_parquet(folder / SETS / f"{i}.parquet")
    (folder / SPEC).write_text(json.dumps({**args, "sets": list(eval_sets)}), encoding="utf-8")


def read_spec(folder: Path) -> dict[str, Any]:
    """:func:`write_spec`'s run as :func:`saerl.rl.train_grpo`'s keyword arguments (configs validated again, the
    extra reward functions imported by their 'module:name'). in: the folder; out: kwargs."""
    import polars as pl

    from saerl.config import HealthConfig, ModelConfig, TrainConfig

    spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
    sets = {name: pl.read_parquet(folder / SETS / f"{i}.parquet", glob=False)
            for i, name in enumerate(spec.pop("sets"))}
    spec["cfg"] = TrainConfig.model_validate(spec["cfg"])
    spec["model_cfg"] = None if spec["model_cfg"] is None else ModelConfig.model_validate(spec["model_cfg"])
    spec["health"] = None if spec["health"] is None else HealthConfig.model_validate(spec["health"])
    spec["extra_rewards"] = [imported(name) for name in spec["extra_rewards"]] or None
    return {**spec, "prompts": pl.read_parquet(folder / PROMPTS, glob=False), "eval_sets": sets}


def reward_name(reward: Any) -> str:
    """An extra reward as the ranks import it (:func:`imported`): a 'package.module:function' path as it is, a
    function by its module and name; one the ranks cannot import by name (a lambda, a function defined inside
    another, a method, one of a script run as __main__) is refused, naming the form. in: a path or a function; out: the path."""
    if isinstance(reward, str):
        return reward
    module, name = getattr(reward, "__module__", None), getattr(reward, "__qualname__", "")
    if not module or module == "__main__" or not name or "<" in name or "." in name:
        raise ValueError(f"extra reward {reward!r} cannot cross into the training processes (train.num_processes > 1): "
                         "they import each one by name, so give a function defined at the top of an importable module, "
                         "or its path 'package.module:function'")
    return f"{module}:{name}"


def rank_env(processes: int, device: str, cpus: int | None = None) -> dict[str, str]:
    """The ranks' environment: this one less what training ignores (saerl.train_env.without_ignored: accelerate's
    settings, and the stale distributed variables of this process, which torchrun sets afresh for each rank;
    warned of once), with this saerl first on PYTHONPATH (the ranks import it, whatever their
    working folder), and on a CPU device OMP_NUM_THREADS at the cores / `processes` each (torchrun sets 1 where it is
    unset, so 2 ranks on a 32-core box used 2 threads where one process used them all); an OMP_NUM_THREADS set here is
    kept. in: train.num_processes, runtime.device, the cores (None: those this process may run on); out: the
    environment."""
    from saerl.config import device_type
    from saerl.train_env import without_ignored
    from saerl.verify import usable_cpus

    here = str(Path(__file__).resolve().parents[1])
    env = {**without_ignored(os.environ),
           "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    if "OMP_NUM_THREADS" not in env and device_type(device) == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (cpus or usable_cpus()) // processes))
    return env


def imported(name: str) -> Any:
    """The object a 'package.module:name' path names (an extra reward function crosses into the ranks by its
    path). in: the path; out: the object."""
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"extra reward {name!r} is not 'package.module:function'")
    return getattr(importlib.import_module(module), attr)


class FileSink:
    """A step sink (:data:`saerl.rl.StepSink`) that appends each point to a JSON-lines file, flushed at once, for
    the stage's process to read (:func:`forward_steps`). in: the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, step: int, values: dict[str, float]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "values": values}) + "\n")


class RecordFile(logging.Handler):
    """A logging handler that appends each record (:data:`RECORD_FIELDS`, its message formatted, a traceback as
    text) to a JSON-lines file, flushed at once, for the stage's process to log again (:func:`forward_logs`).
    in: the file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else record.exc_text
            fields = {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                      "msg": record.getMessage(), "created": record.created, "msecs": record.msecs,
                      "exc_text": exc_text}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(fields) + "\n")
        except Exception:  # noqa: BLE001 - logging's rule: a failing handler reports, never raises
            self.handleError(record)


def log_file(rank: int) -> str:
    """The file a rank writes its saerl log records to (:func:`send_saerl_records`): LOGS for rank 0, RANK_LOGS for
    another. in: the rank; out: the file's name in the spec folder."""
    return LOGS if rank == 0 else RANK_LOGS.format(rank=rank)


def rank_prefix(rank: int) -> str:
    """What the stage's process puts before a rank's re-logged messages (:func:`forward_logs`): nothing for rank 0
    (its records are the run's, as one process logs them), '[rank <r>] ' for another. in: the rank; out: text."""
    return "" if rank == 0 else f"[rank {rank}] "


def send_saerl_records(path: Path) -> RecordFile:
    """In a rank: write saerl's log records (those its level lets through: INFO in rank 0, WARNING in the others) to
    `path` (:class:`RecordFile`) instead of printing them, since the stage's process logs them again
    (:func:`forward_logs`) through its own handlers: its console prints them there, once, and a Prefect run's log gets
    them (a rank's own output reaches the terminal only, as raw text). Records of other loggers (trl, transformers,
    torch) print as before. in: the rank's file (:func:`log_file`); out: the handler added."""
    handler = RecordFile(path)
    logger = logging.getLogger(SAERL_LOGGER)
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The lines of `path` ended after byte `offset` (a line not ended yet waits for the next call), read from there
    only. in: a JSON-lines file another process appends to, bytes already read; out: (lines, the new offset)."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # 0: no line ended yet
    return data[:end].decode().splitlines(), offset + end


def forward_steps(path: Path, offset: int, sink: Any) -> int:
    """Hand the points of `path` ended after byte `offset` to `sink` (None: read them only; :func:`new_lines`).
    in: the STEPS file, bytes already handed, the sink; out: bytes handed now."""
    lines, offset = new_lines(path, offset)
    for line in lines:
        point = json.loads(line)
        if sink is not None:
            sink(int(point["step"]), point["values"])
    return offset


def forward_logs(path: Path, offset: int, prefix: str = "") -> int:
    """Log the records of `path` ended after byte `offset` (a rank's, :class:`RecordFile`) again in this thread,
    through the loggers that logged them, at their levels where those loggers take them, `prefix` before each message
    (:func:`rank_prefix`): this process's handlers print them and, inside a Prefect run, send them to its log
    (flows.runlog), as with one process. in: the rank's log file, bytes already logged, the prefix; out: bytes logged
    now."""
    lines, offset = new_lines(path, offset)
    for line in lines:
        fields = json.loads(line)
        logger = logging.getLogger(fields["name"])
        if logger.isEnabledFor(fields["levelno"]):
            record = logging.makeLogRecord({k: fields.get(k) for k in RECORD_FIELDS})
            record.msg = f"{prefix}{record.msg}"
            logger.handle(record)
    return offset


def _pump(stream: Any, tail: deque[str]) -> None:
    """Copy the ranks' output to this process's stderr as it comes (progress bars included: saerl.terminal
    .relay_output, so that the records relayed from the ranks' log files, and this process's own, are written above
    rank 0's bar, not glued onto its frame), keeping its tail. in: torchrun's stdout (binary, stderr merged), the tail
    buffer (characters)."""
    for chunk in iter(lambda: stream.read1(4096), b""):
        text = chunk.decode(errors="replace")
        relay_output(text)
        tail.extend(text)


def rank_error(folder: Path, processes: int, returncode: int, tail: str) -> Exception:
    """The error a failed multi-process run raises: the error of the rank that failed first (its type kept where it is in
    KEPT_ERRORS, else a RuntimeError), or torchrun's exit status where no rank wrote one, with the output's tail.
    in: the spec folder, processes, torchrun's exit status, the tail; out: the error."""
    written = sorted((p for r in range(processes) if (p := folder / ERROR.format(rank=r)).exists()),
                     key=lambda p: p.stat().st_mtime_ns)  # the first to fail: the others may fail of its absence
    errors = [json.loads(p.read_text(encoding="utf-8")) for p in written]
    quote = f"\n--- last output of the {processes} training processes ---\n{tail}"
    if not errors:
        return RuntimeError(f"training in {processes} processes (train.num_processes) failed: torchrun exited with "
                            f"status {returncode}{quote}")
    first = errors[0]
    cls = KEPT_ERRORS.get(first["type"], RuntimeError)
    return cls(f"{first['message']} (rank {first['rank']} of {processes} training processes, "
               f"train.num_processes; {first['type']}){quote}")


# train_grpo's arguments train_in_processes does not take: Python objects of this process (trainer callbacks)
NOT_FORWARDED = ("callbacks",)


def train_in_processes(model_dir: str | Path, prompts: Any, order: list[str] | None, cfg: Any,
                       out_dir: str | Path, *, folder: Path, prompts_per_step: int, seed: int = 0,
                       max_steps: int | None = None, time_limit_s: float | None = None,
                       extra_rewards: Sequence[Any] | None = None, eval_sets: dict[str, Any] | None = None,
                       eval_max_new_tokens: int | None = None, eval_batch: int = 64,
                       eval_timeout_s: float | None = None, eval_extraction: str = BOXED,
                       checkpoint_dir: str | Path | None = None, model_cfg: Any = None, device: str = "auto",
                       progress: bool = True, clusters: dict[str, int | None] | None = None, label: str = "",
                       health: Any = None) -> dict[str, Any]:
    """:func:`saerl.rl.train_grpo` in cfg.num_processes processes started by torchrun (:func:`launch_command`),
    waited for here: the same arguments but NOT_FORWARDED (`extra_rewards` as functions or 'module:function' paths:
    :func:`reward_name`) and the same result, read back from rank 0's RESULT; each step's points go to this thread's
    step sink and the ranks' saerl log records (rank 0's, the others' warnings, :func:`rank_prefix`) to this thread's
    loggers as the ranks make them (:func:`forward_steps`, :func:`forward_logs`). `folder` holds the run's spec while
    it runs (the caller removes it). A failed rank raises its error (:func:`rank_error`); torchrun is stopped if this
    thread stops waiting, or by :func:`stop_training`.
    in: as train_grpo, the spec folder; out: train_grpo's dict."""
    from saerl.rl import current_sink

    processes = cfg.num_processes
    check_processes(processes, device, cfg.algorithm)
    dump = (lambda c: None if c is None else c.model_dump(mode="json"))  # noqa: E731 - a config or None
    args = {"model_dir": str(model_dir), "order": order, "cfg": dump(cfg), "out_dir": str(out_dir),
            "prompts_per_step": prompts_per_step, "seed": seed, "max_steps": max_steps, "time_limit_s": time_limit_s,
            "extra_rewards": [reward_name(r) for r in extra_rewards or ()],
            "eval_max_new_tokens": eval_max_new_tokens, "eval_batch": eval_batch, "eval_timeout_s": eval_timeout_s,
            "eval_extraction": eval_extraction,
            "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir), "model_cfg": dump(model_cfg),
            "device": device, "progress": progress, "clusters": clusters, "label": label, "health": dump(health)}
    write_spec(folder, args, prompts.select("id", "prompt", "answer"), eval_sets or {})
    log.info("training %s in %d processes (train.num_processes): %s", label or "the run", processes,
             " ".join(torchrun_command(processes, folder)))
    sink, stepped, logged, tail = current_sink(), 0, [0] * processes, deque[str](maxlen=TAIL_CHARS)
    proc = subprocess.Popen(launch_command(processes, folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=rank_env(processes, device))
    _RUNNING.add(proc)
    pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
    pump.start()
    try:
        while proc.poll() is None:
            stepped = forward_steps(folder / STEPS, stepped, sink)
            logged = [forward_logs(folder / log_file(r), n, rank_prefix(r)) for r, n in enumerate(logged)]
            time.sleep(POLL_S)
        pump.join()
        end_relay()  # a bar the ranks left unfinished ends here: the lines below start their own
        forward_steps(folder / STEPS, stepped, sink)
        for r, n in enumerate(logged):
            forward_logs(folder / log_file(r), n, rank_prefix(r))
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        _RUNNING.discard(proc)
        end_relay()
    if proc.returncode != 0 or not (folder / RESULT).exists():
        raise rank_error(folder, processes, proc.returncode, "".join(tail))
    return json.loads((folder / RESULT).read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> None:
    """One rank of a multi-process training run (torchrun runs it): :func:`saerl.rl.train_grpo` on the spec in
    argv[0]; rank 0 logs at INFO, the others warnings only, saerl's records each to its own file
    (:func:`send_saerl_records`, :func:`log_file`); rank 0 sends its step points to STEPS and writes RESULT; the others
    draw no progress bar. A failure writes ERROR for the stage's process, then ends the rank with it. Marks the
    process as a saerl rank first (saerl.train_env.mark_saerl_rank): only there are torchrun's variables trusted.
    in: [the spec folder]."""
    from saerl.artifacts import write_file_atomic
    from saerl.rl import process_rank, step_sink, train_grpo
    from saerl.terminal import stderr_handler
    from saerl.train_env import mark_saerl_rank

    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    mark_saerl_rank()  # torchrun's WORLD_SIZE, RANK and the rest are this process's own (saerl.train_env)
    rank = process_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        handlers=[stderr_handler()])  # the CLI's lines; other libraries' above rank 0's training bar
    send_saerl_records(folder / log_file(rank))
    try:
        kwargs = read_spec(folder)
        if rank != 0 or not kwargs["progress"]:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        with step_sink(FileSink(folder / STEPS) if rank == 0 else None):
            run = train_grpo(**kwargs)
        if rank == 0:
            write_file_atomic(folder / RESULT, lambda tmp: tmp.write_text(json.dumps(run), encoding="utf-8"))
    except BaseException as err:
        (folder / ERROR.format(rank=rank)).write_text(json.dumps(
            {"rank": rank, "type": type(err).__name__, "message": str(err)}), encoding="utf-8")
        raise


if __name__ == "__main__":
    main()
