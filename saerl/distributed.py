"""One training run in several processes (train.num_processes > 1): torch's torchrun starts that many copies of this
module's worker (:func:`main`), each one process of one trl GRPOTrainer (accelerate reads torchrun's environment:
gloo on a CPU, nccl with one GPU per process), and the stage's own process waits for them (:func:`train_in_processes`).

The stage's process writes what the run needs into a folder (:func:`write_spec`); every rank reads it and runs
:func:`saerl.rl.train_grpo`; rank 0 alone writes the policy, the checkpoints' own files and the run's result
(``result.json``), and appends each step's metrics to ``steps.jsonl``, which the stage's process hands to its step sink
as they arrive (:func:`saerl.rl.step_sink`: the stage run's MLflow run). The ranks' output goes to the stage's stderr;
a rank that fails leaves its error in ``error-<rank>.json``, and the stage's process raises it with the output's tail.
This module's top level imports nothing heavy: flows/server.py imports :func:`die_with_parent` from it.
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

log = logging.getLogger("saerl.distributed")

WORKER = "saerl.distributed"  # the module torchrun runs in each process
SPEC = "spec.json"  # the run's arguments (the frames beside it as parquet)
PROMPTS = "prompts.parquet"
SETS = "sets"  # the in-training held-out sets, <i>.parquet in the spec's order
RESULT = "result.json"  # rank 0's return value of train_grpo
STEPS = "steps.jsonl"  # rank 0's step sink: one {"step", "values"} line per point, as measured
ERROR = "error-{rank}.json"  # a failed rank's error: {"rank", "type", "message"}
POLL_S = 0.5  # how often the stage's process reads new step points while the ranks train
TAIL_CHARS = 6000  # how much of the ranks' output a failure quotes
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as the command line's (flows/cli.py)
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"
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


# Runs first in torchrun's process, then becomes torchrun (exec keeps the pid): on Linux the kernel sends it SIGTERM
# when the stage's process dies (a run stopped by Ctrl-C ends with os._exit, one killed by SIGKILL runs no `finally`),
# and torchrun stops its ranks on SIGTERM; a starter already gone means exit at once. argv: the starter's pid, then
# the command.
LAUNCHER = f"""import os, signal, sys
{inspect.getsource(die_with_parent)}
die_with_parent(signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


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


def write_spec(folder: Path, args: dict[str, Any], prompts: Any, eval_sets: dict[str, Any]) -> None:
    """Write one run's arguments into `folder` (made afresh): `args` (JSON values: configs as their dicts) as SPEC,
    the prompts and each held-out set as parquet. in: the folder, the arguments, the prompts frame, {set: frame}."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / SETS).mkdir(parents=True)
    prompts.write_parquet(folder / PROMPTS)
    for i, frame in enumerate(eval_sets.values()):
        frame.write_parquet(folder / SETS / f"{i}.parquet")
    (folder / SPEC).write_text(json.dumps({**args, "sets": list(eval_sets)}))


def read_spec(folder: Path) -> dict[str, Any]:
    """:func:`write_spec`'s run as :func:`saerl.rl.train_grpo`'s keyword arguments (configs validated again, the
    extra reward functions imported by their 'module:name'). in: the folder; out: kwargs."""
    import polars as pl

    from saerl.config import HealthConfig, ModelConfig, TrainConfig

    spec = json.loads((folder / SPEC).read_text())
    sets = {name: pl.read_parquet(folder / SETS / f"{i}.parquet") for i, name in enumerate(spec.pop("sets"))}
    spec["cfg"] = TrainConfig.model_validate(spec["cfg"])
    spec["model_cfg"] = None if spec["model_cfg"] is None else ModelConfig.model_validate(spec["model_cfg"])
    spec["health"] = None if spec["health"] is None else HealthConfig.model_validate(spec["health"])
    spec["extra_rewards"] = [imported(name) for name in spec["extra_rewards"]] or None
    return {**spec, "prompts": pl.read_parquet(folder / PROMPTS), "eval_sets": sets}


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
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "values": values}) + "\n")


def forward_steps(path: Path, done: int, sink: Any) -> int:
    """Hand the points of `path` after its first `done` complete lines to `sink` (None: read them only); a line not
    ended yet waits for the next call. in: the STEPS file, lines already handed, the sink; out: lines handed now."""
    if not path.exists():
        return done
    lines = path.read_text().split("\n")[:-1]  # the last piece is unfinished (or empty)
    for line in lines[done:]:
        point = json.loads(line)
        if sink is not None:
            sink(int(point["step"]), point["values"])
    return max(done, len(lines))


def _pump(stream: Any, tail: deque[str]) -> None:
    """Copy the ranks' output to this process's stderr as it comes (progress bars included), keeping its tail.
    in: torchrun's stdout (binary, stderr merged), the tail buffer (characters)."""
    for chunk in iter(lambda: stream.read1(4096), b""):
        text = chunk.decode(errors="replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        tail.extend(text)


def rank_error(folder: Path, processes: int, returncode: int, tail: str) -> Exception:
    """The error a failed multi-process run raises: the error of the rank that failed first (its type kept where it is in
    KEPT_ERRORS, else a RuntimeError), or torchrun's exit status where no rank wrote one, with the output's tail.
    in: the spec folder, processes, torchrun's exit status, the tail; out: the error."""
    written = sorted((p for r in range(processes) if (p := folder / ERROR.format(rank=r)).exists()),
                     key=lambda p: p.stat().st_mtime_ns)  # the first to fail: the others may fail of its absence
    errors = [json.loads(p.read_text()) for p in written]
    quote = f"\n--- last output of the {processes} training processes ---\n{tail}"
    if not errors:
        return RuntimeError(f"training in {processes} processes (train.num_processes) failed: torchrun exited with "
                            f"status {returncode}{quote}")
    first = errors[0]
    cls = KEPT_ERRORS.get(first["type"], RuntimeError)
    return cls(f"{first['message']} (rank {first['rank']} of {processes} training processes, "
               f"train.num_processes; {first['type']}){quote}")


def train_in_processes(model_dir: str | Path, prompts: Any, order: list[str] | None, cfg: Any,
                       out_dir: str | Path, *, folder: Path, prompts_per_step: int, seed: int = 0,
                       eval_sets: dict[str, Any] | None = None, eval_batch: int = 64,
                       eval_timeout_s: float | None = None, checkpoint_dir: str | Path | None = None,
                       model_cfg: Any = None, device: str = "auto", progress: bool = True,
                       clusters: dict[str, int | None] | None = None, label: str = "", health: Any = None,
                       extra_rewards: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`saerl.rl.train_grpo` in cfg.num_processes processes started by torchrun (:func:`launch_command`),
    waited for here: the same arguments (`extra_rewards` by 'module:function' path) and the same result, read back
    from rank 0's RESULT; each step's points go to this thread's step sink as rank 0 measures them. `folder` holds
    the run's spec while it runs (the caller removes it). A failed rank raises its error (:func:`rank_error`);
    torchrun is stopped if this thread stops waiting. in: as train_grpo, the spec folder; out: train_grpo's dict."""
    from saerl.rl import current_sink

    processes = cfg.num_processes
    check_processes(processes, device, cfg.algorithm)
    dump = (lambda c: None if c is None else c.model_dump(mode="json"))  # noqa: E731 - a config or None
    args = {"model_dir": str(model_dir), "order": order, "cfg": dump(cfg), "out_dir": str(out_dir),
            "prompts_per_step": prompts_per_step, "seed": seed, "eval_batch": eval_batch,
            "eval_timeout_s": eval_timeout_s, "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
            "model_cfg": dump(model_cfg), "device": device, "progress": progress, "clusters": clusters,
            "label": label, "health": dump(health), "extra_rewards": list(extra_rewards)}
    write_spec(folder, args, prompts.select("id", "prompt", "answer"), eval_sets or {})
    here = str(Path(__file__).resolve().parents[1])  # the ranks import this saerl, whatever their working folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    log.info("training %s in %d processes (train.num_processes): %s", label or "the run", processes,
             " ".join(torchrun_command(processes, folder)))
    sink, handed, tail = current_sink(), 0, deque[str](maxlen=TAIL_CHARS)
    proc = subprocess.Popen(launch_command(processes, folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
    pump.start()
    try:
        while proc.poll() is None:
            handed = forward_steps(folder / STEPS, handed, sink)
            time.sleep(POLL_S)
        pump.join()
        forward_steps(folder / STEPS, handed, sink)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if proc.returncode != 0 or not (folder / RESULT).exists():
        raise rank_error(folder, processes, proc.returncode, "".join(tail))
    return json.loads((folder / RESULT).read_text())


def main(argv: Sequence[str] | None = None) -> None:
    """One rank of a multi-process training run (torchrun runs it): :func:`saerl.rl.train_grpo` on the spec in
    argv[0]; rank 0 logs at INFO, sends its step points to STEPS and writes RESULT; the others log warnings only
    and draw no progress bar. A failure writes ERROR for the stage's process, then ends the rank with it.
    in: [the spec folder]."""
    from saerl.artifacts import write_file_atomic
    from saerl.rl import process_rank, step_sink, train_grpo

    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    rank = process_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    try:
        kwargs = read_spec(folder)
        if rank != 0 or not kwargs["progress"]:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        with step_sink(FileSink(folder / STEPS) if rank == 0 else None):
            run = train_grpo(**kwargs)
        if rank == 0:
            write_file_atomic(folder / RESULT, lambda tmp: tmp.write_text(json.dumps(run)))
    except BaseException as err:
        (folder / ERROR.format(rank=rank)).write_text(json.dumps(
            {"rank": rank, "type": type(err).__name__, "message": str(err)}))
        raise


if __name__ == "__main__":
    main()
