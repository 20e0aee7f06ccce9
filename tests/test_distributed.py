"""One training run in several processes (train.num_processes, saerl.distributed): the order across processes, the
command torchrun runs, the config's checks and keys, and (slow) a two-process run on the CPU (gloo)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from saerl import distributed
from saerl.config import HealthConfig, ModelConfig, PipelineConfig, TrainConfig
from saerl.rl import (
    CURVE_FILE,
    CurveCheckpoint,
    OrderSampler,
    merge_shares,
    micro_batch,
    share,
    step_sink,
    train_grpo,
)

TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parent / "configs"


def shares(stream: list[int], processes: int, block: int) -> list[list[int]]:
    """What accelerate hands each process of a sampler's stream: batches of block / processes indices dealt round
    robin (its BatchSamplerShard, split_batches off). in: the stream, processes, indices per generation batch; out:
    each process's indices in order."""
    size = block // processes
    batches = [stream[i:i + size] for i in range(0, len(stream), size)]
    return [[i for b in batches[r::processes] for i in b] for r in range(processes)]


@pytest.mark.parametrize(("processes", "steps"), [(1, 1), (2, 1), (2, 2), (4, 2), (2, 3)])
def test_each_step_trains_the_orders_batch_across_processes(processes, steps):
    """Each process splits its part of a generation batch into the batch's steps in turn; step k across the
    processes (process 0's k-th part, then process 1's, ...) is the k-th batch of the order, each prompt's group
    whole on one process. Laid out in plain order, a 2-process, 2-step generation batch trained step 1 on the first
    halves of batches 1 and 2."""
    per_step, repeat = 4, 2
    batch = per_step * steps
    sampler = OrderSampler(batch * 2, repeat, batch, processes=processes, steps=steps)
    got = shares(list(sampler), processes, batch * repeat)
    step_rows = [[] for _ in range(2 * steps)]
    for rank_rows in got:
        part = len(rank_rows) // (2 * steps)
        for k in range(2 * steps):
            step_rows[k] += rank_rows[k * part:(k + 1) * part]
    assert step_rows == [[i for i in range(k * per_step, (k + 1) * per_step) for _ in range(repeat)]
                         for k in range(2 * steps)]


def test_one_process_keeps_the_plain_order():
    assert list(OrderSampler(4, 2, 2, block_repeats=2, processes=1, steps=2)) == list(OrderSampler(4, 2, 2, 2))
    assert OrderSampler(8, 1, 8, processes=2, steps=2).block(0) == [0, 1, 4, 5, 2, 3, 6, 7]


def test_a_step_that_does_not_split_into_whole_groups_is_refused():
    with pytest.raises(ValueError, match="must divide by train.num_processes"):
        OrderSampler(12, 2, 6, processes=4)


def test_micro_batches_count_each_processs_share():
    assert micro_batch(16, 2, 2) == 4 and micro_batch(16, 2) == 8
    with pytest.raises(ValueError, match=r"train.micro_batches=4 x train.num_processes=2 does not divide"):
        micro_batch(12, 4, 2)


def test_grpo_config_gives_each_process_its_share_of_a_step(monkeypatch):
    """trl's generation batch is per-process batch x processes x passes: the per-process batch is a step's
    completions / (micro_batches x WORLD_SIZE), so a step holds curriculum.batch_size prompts whatever the count."""
    from saerl import rl

    seen = {}
    monkeypatch.setattr("trl.GRPOConfig", lambda **kw: seen.update(kw) or SimpleNamespace(**kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("saerl.train_env._Process.saerl_rank", True)  # a rank saerl's torchrun started (main)
    rl.grpo_config(TrainConfig(num_generations=4, micro_batches=2), Path("x"), 4, 2, 0, "cpu")
    assert seen["per_device_train_batch_size"] == 4 and seen["steps_per_generation"] == 2


def test_the_command_is_torchrun_of_the_installed_torch_running_the_worker(tmp_path):
    cmd = distributed.torchrun_command(4, tmp_path, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                   "-m", "saerl.distributed", str(tmp_path)]
    launch = distributed.launch_command(4, tmp_path, python="py")
    assert launch[:4] == ["py", "-c", distributed.LAUNCHER, str(os.getpid())] and launch[4:] == cmd
    assert "die_with_parent(signal.SIGTERM)" in distributed.LAUNCHER


def test_the_server_and_torchrun_launchers_are_one_source():
    """flows/server.py's launcher and torchrun's were two pasted copies: one builder, differing in the status a
    launcher whose starter is gone exits with and the server's umask."""
    from flows import server

    for source in (server.LAUNCHER, distributed.LAUNCHER):
        compile(source, "launcher", "exec")
        assert "asked = True and die_with_parent(signal.SIGTERM)" in source
        assert "if asked:\n    os.execvp(sys.argv[2], sys.argv[2:])\nwatch_parent(" in source
    assert "sys.exit(0)\nos.umask(os.umask(0) | 0o7)\nif asked" in server.LAUNCHER
    assert "sys.exit(1)\nif asked" in distributed.LAUNCHER and "umask" not in distributed.LAUNCHER


def _alive(pid: int) -> bool:
    """Is process `pid` running (a zombie counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    """Whether `pid` ends within `seconds`."""
    deadline = time.time() + seconds
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_launcher_without_a_parent_death_signal_stops_its_command_when_its_starter_is_killed(tmp_path):
    """Without prctl (macOS) the launcher became the command and asked for nothing: a CLI killed by SIGKILL left
    torchrun (and the local Prefect server) running with parent pid 1. Without the signal it now runs the command as
    its child and stops it once its starter is gone. Here a starter process runs the launcher (parent_death False,
    the macOS path) over a long sleep, and is killed by SIGKILL."""
    source = distributed.launcher(parent_death=False)
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
               "time.sleep(120)"]
    starter = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys, time; "
                                "subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid()), *sys.argv[2:]]); "
                                "time.sleep(120)", source, *command])
    try:
        deadline = time.time() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        command_pid = int(pid_file.read_text())
        assert _alive(command_pid)
        starter.kill()
        starter.wait()
        assert _wait_gone(command_pid, 10 * distributed.ORPHAN_POLL_S + 5), "the command outlived its starter"
    finally:
        starter.kill()
        if pid_file.exists() and pid_file.read_text() and _alive(pid := int(pid_file.read_text())):
            os.kill(pid, signal.SIGKILL)


def test_a_watching_launcher_passes_sigterm_on_and_ends_as_its_command_did(tmp_path):
    """stop_training and stop_servers send SIGTERM to the launcher's pid: where it watches (no parent-death signal)
    rather than becoming the command, the signal goes on to the command, and the launcher ends killed by it (the
    status torchrun's own pid would give); a command's exit status is the launcher's."""
    source = distributed.launcher(parent_death=False)
    ready = tmp_path / "ready"
    sleeper = [sys.executable, "-c", f"import time; open({str(ready)!r}, 'w').close(); time.sleep(120)"]
    proc = subprocess.Popen([sys.executable, "-c", source, str(os.getpid()), *sleeper])
    deadline = time.time() + 30
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(timeout=20) == -signal.SIGTERM
    done = subprocess.run([sys.executable, "-c", source, str(os.getpid()), sys.executable, "-c", "raise SystemExit(7)"],
                          timeout=60)
    assert done.returncode == 7
    # a command killed by SIGKILL (the out-of-memory killer, the watch's own kill after the grace): the launcher tried
    # to reset SIGKILL's action, which the kernel refuses, and ended with status 1 and an OSError traceback
    killed = subprocess.run([sys.executable, "-c", source, str(os.getpid()), sys.executable, "-c",
                             "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                            timeout=60, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL and "Traceback" not in killed.stderr, killed.stderr


def test_every_train_grpo_argument_crosses_into_the_processes(tmp_path, monkeypatch):
    """compute_train's call with train.num_processes > 1 failed at once ("unexpected keyword argument
    'eval_extraction'"): train_in_processes takes train_grpo's arguments, with its defaults (but NOT_FORWARDED, and
    the spec's folder), and each one given reaches the ranks' train_grpo (read back from the spec as they read it), so
    the next argument train_grpo gains fails here until it crosses too."""
    from saerl.answers import BOXED_OR_LAST

    grpo = inspect.signature(train_grpo).parameters
    procs = inspect.signature(distributed.train_in_processes).parameters
    assert [n for n in grpo if n not in distributed.NOT_FORWARDED] == [n for n in procs if n != "folder"]
    assert all((procs[n].default, procs[n].kind) == (grpo[n].default, grpo[n].kind) for n in procs if n != "folder")
    frame = pl.DataFrame({"id": ["p0", "p1"], "prompt": ["q0", "q1"], "answer": ["1", "2"]})
    given = {"model_dir": tmp_path / "m", "prompts": frame.with_columns(extra=pl.lit(1)), "order": ["p1", "p0"],
             "cfg": TrainConfig(num_processes=2, learning_rate=2e-6), "out_dir": tmp_path / "o", "prompts_per_step": 2,
             "seed": 3, "max_steps": 5, "time_limit_s": 6.0, "extra_rewards": [distributed.imported, "json:dumps"],
             "eval_sets": {"h": frame.head(1)}, "eval_max_new_tokens": 7, "eval_batch": 8, "eval_timeout_s": 9.0,
             "eval_extraction": BOXED_OR_LAST, "checkpoint_dir": tmp_path / "c", "model_cfg": ModelConfig(revision="r"),
             "device": "cpu", "progress": False, "clusters": {"p0": 1, "p1": None}, "label": "saerl:3",
             "health": HealthConfig(no_signal_share=0.9)}
    assert set(given) == set(procs) - {"folder"}, "give the new argument a value other than its default here"
    assert all(procs[n].default is inspect.Parameter.empty or given[n] != procs[n].default for n in given)
    monkeypatch.setattr(distributed, "launch_command", lambda *_: [sys.executable, "-c", "pass"])  # no ranks
    with pytest.raises(RuntimeError, match="torchrun exited with status 0"):  # no result written
        distributed.train_in_processes(**given, folder=tmp_path / "spec")
    got = distributed.read_spec(tmp_path / "spec")
    inspect.signature(train_grpo).bind(**got)
    assert got.keys() == given.keys()
    crossed = {**given, "model_dir": str(tmp_path / "m"), "out_dir": str(tmp_path / "o"), "prompts": frame,
               "checkpoint_dir": str(tmp_path / "c"), "extra_rewards": [distributed.imported, json.dumps]}
    for name, value in crossed.items():
        same = value.equals(got[name]) if isinstance(value, pl.DataFrame) else (
            value.keys() == got[name].keys() and all(v.equals(got[name][k]) for k, v in value.items())
            if name == "eval_sets" else got[name] == value)
        assert same, name


def test_an_extra_reward_the_ranks_cannot_import_is_refused_naming_the_form():
    """train_grpo takes reward functions: train_in_processes takes them too, by their module and name, and refuses one
    the ranks cannot import (it failed as 'Object of type function is not JSON serializable')."""
    assert distributed.reward_name(distributed.imported) == "saerl.distributed:imported"
    assert distributed.reward_name("pkg.mod:fn") == "pkg.mod:fn"

    def local(completions, **_):
        return [0.0] * len(completions)

    for fn in (local, lambda completions, **_: [0.0], TrainConfig.model_validate):
        with pytest.raises(ValueError, match=r"cannot cross into the training processes.*'package.module:function'"):
            distributed.reward_name(fn)


def test_each_cpu_rank_gets_its_share_of_the_cores(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 where it is unset: on a CPU each rank gets the cores / N instead; a value set
    here is kept, and a GPU run is left to torchrun."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = distributed.rank_env(2, "cpu", cpus=8)
    assert env["OMP_NUM_THREADS"] == "4" and env["PYTHONPATH"].split(os.pathsep)[0] == str(TESTS.parent)
    assert distributed.rank_env(4, "cpu", cpus=2)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in distributed.rank_env(2, "cuda", cpus=8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert distributed.rank_env(2, "cpu", cpus=8)["OMP_NUM_THREADS"] == "3"


def test_several_processes_on_gpus_under_dask_are_refused_before_the_first_stage(tmp_path, monkeypatch):
    """Dask runs a stage's training runs at once, each torchrun on the first N GPUs: the runs shared the cards. Refused
    with the plan on a GPU device (an 'auto' under a dask_address counts as one); on a CPU they share cores only."""
    from saerl.config import load_config
    from saerl.preflight import check_runnable

    problem = distributed.shared_gpus_problem(2, "cuda", "dask", None)
    assert problem and "runtime.task_runner=dask on runtime.device=cuda" in problem
    assert "set runtime.task_runner=local" in problem
    assert "runtime.dask_address=tcp://h:1" in distributed.shared_gpus_problem(2, "auto", "local", "tcp://h:1")
    assert distributed.shared_gpus_problem(2, "cpu", "dask", "tcp://h:1") is None
    assert distributed.shared_gpus_problem(1, "cuda", "dask", None) is None
    assert distributed.shared_gpus_problem(2, "cuda", "local", None) is None
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a GPU machine
    over = [f"runtime.artifact_root={tmp_path}", "train.num_processes=2", "runtime.task_runner=dask"]
    cfg = load_config(CONFIGS / "smoke.yaml", [*over, "runtime.device=cuda"])
    with pytest.raises(ValueError, match=r"train.num_processes=2 with runtime.task_runner=dask"):
        check_runnable(cfg)
    assert check_runnable(cfg, "curriculum")[-1][0] == "curriculum"  # no training run: nothing shares a GPU
    check_runnable(load_config(CONFIGS / "smoke.yaml", [*over, "runtime.device=cpu"]), "curriculum")


def test_config_checks_the_processes_against_the_step():
    assert TrainConfig().num_processes == 1
    PipelineConfig.model_validate({"curriculum": {"batch_size": 8}, "train": {"num_processes": 4}})
    with pytest.raises(ValueError, match=r"train.num_processes=3 does not divide curriculum.batch_size=8"):
        PipelineConfig.model_validate({"curriculum": {"batch_size": 8}, "train": {"num_processes": 3}})
    with pytest.raises(ValueError, match=r"train.micro_batches=3 does not divide each of the train.num_processes=2"):
        PipelineConfig.model_validate({"curriculum": {"batch_size": 4},
                                       "train": {"num_processes": 2, "num_generations": 2, "micro_batches": 3}})
    with pytest.raises(ValueError, match=r"set train.num_processes=1 or train.algorithm=grpo"):
        TrainConfig(num_processes=2, algorithm="dapo")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrainConfig(num_processes=0)


def test_more_processes_than_visible_gpus_is_refused(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError, match=r"torch sees 1 \(CUDA_VISIBLE_DEVICES=3\): set train.num_processes=1"):
        distributed.check_processes(2, "cuda")
    distributed.check_processes(2, "cpu")
    distributed.check_processes(1, "cuda")



def test_several_dapo_processes_are_refused_at_launch_when_the_config_skipped_validation():
    """TrainConfig refuses train.num_processes > 1 with DAPO when built or assigned, but model_copy(update=...) skips
    pydantic's validation (the repo's own tests copy train configs so): the launch check refuses it still, naming
    both fixes (DAPO's dynamic sampling draws its prompts in one process), before torchrun starts."""
    from saerl.config import TrainConfig

    copied = TrainConfig(algorithm="dapo").model_copy(update={"num_processes": 2})
    assert copied.num_processes == 2, "model_copy did not validate"
    with pytest.raises(ValueError, match=r"train.num_processes=2 with train.algorithm=dapo: .*set "
                                         r"train.num_processes=1 or train.algorithm=grpo"):
        distributed.check_processes(copied.num_processes, "cpu", copied.algorithm)
    distributed.check_processes(1, "cpu", "dapo")
    distributed.check_processes(2, "cpu", "grpo")

def test_more_processes_than_visible_gpus_is_refused_before_the_first_stage(tmp_path, monkeypatch):
    """Too few GPUs was refused only as the train stage started, after extraction, the SAE and the labels: refused
    with the plan, where a training run is to compute."""
    from saerl.config import load_config
    from saerl.preflight import check_runnable

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "train.num_processes=2",
                                               "runtime.device=cuda"])
    with pytest.raises(ValueError, match=r"train.num_processes=2 needs one GPU per process, but torch sees 1"):
        check_runnable(cfg)
    assert check_runnable(cfg, "curriculum")[-1][0] == "curriculum"  # no training run: no GPUs needed


def test_one_process_keeps_the_train_keys_and_more_processes_change_them():
    """train.num_processes enters the train key only above 1 (keys built before it existed stay): each process
    samples its share of the rollouts from its own seed, so two processes train another policy than one."""
    from saerl.stages import stage_key, stage_slice

    one = PipelineConfig()
    keys = {"device": "cpu", "arm": "saerl"}
    assert "train.num_processes" not in stage_slice(one, "train", keys)
    two = PipelineConfig.model_validate({"train": {"num_processes": 2}})
    assert stage_slice(two, "train", keys)["train.num_processes"] == 2
    assert stage_key(one, "train", keys) != stage_key(two, "train", keys)
    assert stage_key(one, "heldout", keys) == stage_key(two, "heldout", keys)


@pytest.mark.parametrize("name", [None, *sorted(p.name for p in CONFIGS.glob("*.yaml"))])
def test_every_configs_train_keys_are_those_before_the_field(name, monkeypatch):
    """At its default (1), train.num_processes leaves every config's train keys as they were before it existed:
    the same as with the field taken out of the train stage's reads. in: a config file's name (None: defaults)."""
    import dataclasses

    from saerl.config import load_config
    from saerl.stages import STAGES, stage_key

    cfg = load_config(None if name is None else CONFIGS / name)
    runs = [{"device": device, "arm": arm} for device in ("cpu", "cuda") for arm in cfg.train.arms]
    now = [stage_key(cfg, "train", keys) for keys in runs]
    before = tuple(r for r in STAGES["train"].reads if r != "train.num_processes")
    monkeypatch.setitem(STAGES, "train", dataclasses.replace(STAGES["train"], reads=before))
    assert [stage_key(cfg, "train", keys) for keys in runs] == now


def test_only_the_first_process_writes_a_checkpoints_files(tmp_path):
    """Every process saves its own part of a checkpoint (its RNG state); ours (the curve, the run's counts) are
    written and the old checkpoints pruned by the first process alone, after every process has saved."""
    calls = []
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    saving = CurveCheckpoint(SimpleNamespace(rows=[], problems=[]), tmp_path, {"run.json": lambda: calls.append(1) or {}})
    saving.on_save(None, SimpleNamespace(global_step=2, is_world_process_zero=False), None)
    assert calls == [1] and not (ckpt / CURVE_FILE).exists() and not (ckpt / "run.json").exists()
    saving.on_save(None, SimpleNamespace(global_step=2, is_world_process_zero=True), None)
    assert (ckpt / CURVE_FILE).exists() and (ckpt / "run.json").exists()


def test_step_points_are_handed_on_as_whole_lines(tmp_path):
    """Each poll reads the bytes after the last whole line handed on (it read the whole file twice a second, so a
    long run's poll grew with its length); a line rank 0 is still writing waits."""
    path = tmp_path / distributed.STEPS
    got = []
    assert distributed.forward_steps(path, 0, lambda s, v: got.append((s, v))) == 0
    distributed.FileSink(path)(1, {"reward": 0.5})
    first = path.stat().st_size
    with path.open("a") as f:
        f.write('{"step": 2, "val')  # rank 0 is still writing it
    assert distributed.forward_steps(path, 0, lambda s, v: got.append((s, v))) == first
    with path.open("r+") as f:
        f.write("x" * (first - 1))  # what was handed on is not read again
    with path.open("a") as f:
        f.write('ues": {"loss": 1.0}}\n')
    assert distributed.forward_steps(path, first, lambda s, v: got.append((s, v))) == path.stat().st_size
    assert got == [(1, {"reward": 0.5}), (2, {"loss": 1.0})]


def test_rank_zeros_saerl_lines_are_logged_again_in_the_stages_thread(tmp_path, caplog):
    """The ranks' saerl lines (in-training evaluations, the resume, progress) reached the terminal as raw text only,
    never a Prefect run's log: rank 0 writes its saerl records to LOGS instead of printing them, and the stage's
    thread logs them again through the same loggers, at their levels, once (a partial line waits)."""
    path = tmp_path / distributed.LOGS
    saerl = logging.getLogger(distributed.SAERL_LOGGER)
    with caplog.at_level(logging.INFO, logger="saerl"):
        handler = distributed.send_saerl_records(path)
        try:
            logging.getLogger("saerl.rl").info("train %s step %d: h greedy %.3f", "saerl:0", 2, 0.5)
            logging.getLogger("saerl.rl").debug("not at INFO")
            try:
                raise KeyError("boom")
            except KeyError:
                logging.getLogger("saerl.x").exception("100% failed")
        finally:
            saerl.removeHandler(handler)
            saerl.propagate = True
        assert caplog.records == []  # not printed in rank 0: the stage's process prints them
        with path.open("a") as f:
            f.write('{"name": "saerl.rl", "lev')
        whole = path.read_bytes().rfind(b"\n") + 1
        assert distributed.forward_logs(path, 0) == whole
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [("saerl.rl", logging.INFO, "train saerl:0 step 2: h greedy 0.500"),
                   ("saerl.x", logging.ERROR, "100% failed")]
    assert "KeyError: 'boom'" in caplog.text and "Traceback" in caplog.records[1].exc_text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saerl"):
        distributed.forward_logs(path, 0)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # the level this process takes


def test_other_ranks_warnings_are_logged_again_marked_with_their_rank(tmp_path, caplog):
    """Ranks 1.. printed their saerl warnings raw to the terminal, never the run's log: each writes them to its own
    file, which the stage's thread logs again with '[rank <r>] ' before the message (rank 0's as they are)."""
    assert [distributed.log_file(r) for r in (0, 2)] == [distributed.LOGS, "log-2.jsonl"]
    assert [distributed.rank_prefix(r) for r in (0, 2)] == ["", "[rank 2] "]
    path = tmp_path / distributed.log_file(2)
    handler = distributed.RecordFile(path)
    record = logging.makeLogRecord({"name": "saerl.rl", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": "%d%% of answers cut off", "args": (40,)})
    handler.emit(record)
    with caplog.at_level(logging.INFO, logger="saerl"):
        distributed.forward_logs(path, 0, distributed.rank_prefix(2))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("saerl.rl", logging.WARNING, "[rank 2] 40% of answers cut off")]


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
def test_each_rank_takes_a_share_and_the_shares_merge_back_in_order(processes):
    """The in-training evaluation's split (saerl.rl.share): every item in exactly one rank's share, the shares within
    one item of each other's size, and their results merged back in the items' order, whatever the count."""
    for total in range(9):
        items = [f"q{i}" for i in range(total)]
        parts = [share(items, r, processes) for r in range(processes)]
        assert sorted(i for p in parts for i in p) == sorted(items)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert merge_shares([[f"result of {i}" for i in p] for p in parts]) == [f"result of {i}" for i in items]
    assert share([1, 2, 3], 0, 1) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"shares hold \[1, 2\] results, not shares of 3 items"):
        merge_shares([[0], [1, 2]])


@pytest.mark.slow
def test_two_gloo_processes_gather_their_shares_in_order(tmp_path):
    """saerl.rl.gather_shares in 2 gloo processes: each gets the whole list in order; processes gathering at
    different points (a diverged evaluation schedule) fail naming both instead of merging mismatched results."""
    import socket

    import torch.multiprocessing as mp
    from rank_reward import gather_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(gather_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"gathered-{r}.json").read_text()) for r in (0, 1)]
    assert [g["gathered"] for g in got] == [[2 * i for i in range(7)]] * 2
    assert all("gathered different evaluations (['step 4 set h', 'step 6 set h'], by rank)" in g["error"] for g in got)


def test_processes_over_their_time_limit_at_different_steps_stop_together(monkeypatch):
    """Each process times its own training: one over train.time_limit a step before another stopped alone (its last
    evaluation then gathered against the other's next step). Each stops where any is over."""
    from saerl import rl

    timer = rl._TimeLimit(100.0)
    control = SimpleNamespace(should_training_stop=False)
    timer.on_step_end(None, None, control)
    assert not control.should_training_stop
    monkeypatch.setattr(rl, "sum_over_processes", lambda values: [v + 1.0 for v in values])  # another is over
    timer.on_step_end(None, None, control)
    assert control.should_training_stop


def test_a_stopped_cli_stops_the_torchrun_it_started(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM ends a CLI run at once (os._exit: no `finally` stops torchrun); on Linux torchrun stops with
    its parent, but without prctl (macOS; here: a child started without the launcher) it trained on. The CLI's stop
    sends it SIGTERM, and a torchrun that has ended is forgotten."""
    from flows import cli, server

    monkeypatch.setattr(distributed, "launch_command", lambda *_: [sys.executable, "-c", "import time; time.sleep(60)"])
    ended: list[BaseException] = []

    def train() -> None:
        try:
            distributed.train_in_processes("m", pl.DataFrame({"id": ["p"], "prompt": ["q"], "answer": ["1"]}), None,
                                           TrainConfig(num_processes=2), tmp_path / "o", folder=tmp_path / "spec",
                                           prompts_per_step=2, device="cpu")
        except BaseException as err:  # noqa: BLE001 - the test reads it
            ended.append(err)

    waiting = threading.Thread(target=train)
    waiting.start()
    deadline = time.monotonic() + 30
    while not distributed._RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    [proc] = distributed._RUNNING
    try:
        monkeypatch.setattr(cli.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
        monkeypatch.setattr(server, "_STARTED", set())  # not the suite's own Prefect server (conftest's prefect_api)
        with pytest.raises(SystemExit):
            cli.stop_now(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        waiting.join(timeout=10)
        assert "torchrun exited with status -15" in str(ended[0]) and not distributed._RUNNING
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_failed_rank_raises_its_own_error_first_with_the_output(tmp_path):
    (tmp_path / "error-1.json").write_text(json.dumps({"rank": 1, "type": "ValueError", "message": "lower lr"}))
    os.utime(tmp_path / "error-1.json", ns=(1, 1))
    (tmp_path / "error-0.json").write_text(json.dumps({"rank": 0, "type": "DistBackendError", "message": "gone"}))
    err = distributed.rank_error(tmp_path, 2, 1, "Traceback ... lower lr")
    assert isinstance(err, ValueError) and str(err).startswith("lower lr (rank 1 of 2 training processes")
    assert "Traceback ... lower lr" in str(err)
    bare = distributed.rank_error(tmp_path / "none", 2, -9, "killed")
    assert isinstance(bare, RuntimeError) and "torchrun exited with status -9" in str(bare)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A saved 1-layer policy with the word-level tokenizer of tests/tiny.py, and prompts it can read."""
    from tiny import tiny_policy

    return tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.mark.slow
def test_two_processes_train_the_order_and_write_one_run(tiny_run, tmp_path, monkeypatch, caplog, capfd):
    """The train stage's runner (compute_train, its inputs faked) with train.num_processes=2: torchrun with 2 CPU
    processes (gloo). The prompts the reward function scores, process 0's share of a step then process 1's, follow
    the order step by step (2 steps per generation batch); one set of checkpoints, each with both processes' RNG
    states and our files once; the step points reach this process's sink and rank 0's evaluation lines this process's
    loggers (printed here once, not by the rank), and rank 1's saerl warnings too, marked '[rank 1]'; each rank
    generates only its share of the held-out set at each evaluation (every rank generated all of it), and the curve
    holds the whole set's rows and problems in its order; eval.answer_extraction reaches the ranks; the policy loads;
    and the result has a one-process run's keys, log columns, order and curve steps and problems, with the reward
    checks of both processes."""
    from rank_reward import GENERATED, SEEN, record, seen
    from transformers import AutoModelForCausalLM

    from saerl import runners
    from saerl.artifacts import Build
    from saerl.config import load_config

    policy, prompts = tiny_run
    order = prompts["id"].to_list()[::-1]
    monkeypatch.setenv(SEEN, str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sets = {"h": prompts.head(6)}
    monkeypatch.setattr(runners, "arm_order_frame", lambda *_: pl.DataFrame(
        {"id": order, "position": range(len(order)), "batch": [i // 4 for i in range(len(order))]}))
    monkeypatch.setattr(runners, "eval_sets", lambda *_: sets)
    monkeypatch.setattr(runners, "policy_path", lambda *_: str(policy))
    monkeypatch.setattr(runners, "read_prompts", lambda _: prompts)
    monkeypatch.setattr(runners, "cluster_shares", lambda *_: {})
    real, seen_here = distributed.train_in_processes, {}

    def rewarded(*args, **kwargs):
        """train_in_processes with the extra reward that records what each rank scores, and what the runner removes
        once the run is done (the spec, the checkpoints) read first."""
        run = real(*args, **kwargs, extra_rewards=["rank_reward:record"])
        ck = Path(kwargs["checkpoint_dir"])
        seen_here.update(run=run, spec=json.loads((kwargs["folder"] / distributed.SPEC).read_text()),
                         ckpts={c.name: {p.name for p in c.iterdir()} for c in ck.glob("checkpoint-*")},
                         run_json=json.loads((ck / "checkpoint-4" / "saerl_run.json").read_text()))
        return run

    monkeypatch.setattr(distributed, "train_in_processes", rewarded)
    cfg = load_config(None, ["train.num_generations=2", "train.max_completion_length=3", "train.max_steps=4",
                             "train.steps_per_generation=2", "train.save_every=2", "train.keep_checkpoints=5",
                             "train.eval_every=2", "train.num_processes=2", "curriculum.batch_size=4",
                             "runtime.device=cpu", "runtime.progress=false", "eval.answer_extraction=boxed_or_last"])
    build = Build(tmp_path / "build", {})
    (build.path / "plots").mkdir(parents=True)
    # the root logger's handlers less those an earlier test of the suite left there (a command line's console
    # handler on a capture stream since closed printed 'Logging error' quoting the re-logged lines)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if type(h).__module__.startswith("_pytest")])
    points: list[tuple[int, dict]] = []
    with step_sink(lambda step, values: points.append((step, values))), caplog.at_level(logging.INFO, logger="saerl"):
        metrics = runners.compute_train(cfg, {}, build, arm="saerl", seed=0)
    run = seen_here["run"]
    assert metrics["steps"] == 4.0 and seen_here["spec"]["eval_extraction"] == "boxed_or_last"
    assert not (build.path / runners.LAUNCH).exists() and not (build.path / runners.CHECKPOINTS).exists()
    per_rank = [seen(tmp_path, r) for r in (0, 1)]
    assert [len(calls) for calls in per_rank] == [2, 2]  # one reward call per generation batch and process
    steps = [per_rank[0][g][k * 4:(k + 1) * 4] + per_rank[1][g][k * 4:(k + 1) * 4] for g in range(2) for k in range(2)]
    assert steps == [[i for i in order[k * 4:(k + 1) * 4] for _ in range(2)] for k in range(4)]
    assert run["steps"] == 4 and run["reward_checks"] == 4 * 4 * 2
    assert run["order"] == order[:16] and run["order_steps"] == [1] * 8 + [3] * 8
    assert pl.read_parquet(build.path / "trained_order.parquet")["id"].to_list() == order[:16]
    assert [r["step"] for r in run["curve"]] == [0, 2, 4]
    assert sorted(seen_here["ckpts"]) == ["checkpoint-2", "checkpoint-4"]
    for names in seen_here["ckpts"].values():
        assert {"rng_state_0.pth", "rng_state_1.pth", CURVE_FILE, "saerl_run.json", "model.safetensors"} <= names
    assert seen_here["run_json"]["reward_checks"] == 32
    assert {s for s, v in points if "loss" in v} == {1, 2, 3, 4}
    assert {s for s, v in points if "eval/h/greedy" in v} == {0, 2, 4}
    evals = [r.getMessage() for r in caplog.records if r.name == "saerl.rl" and " greedy " in r.getMessage()]
    assert [m.split(":", 2)[1] for m in evals] == ["0 step 0", "0 step 2", "0 step 4"], evals  # 'train saerl:0 step 2: h'
    # the rank did not print them too: no log line of its console format ('... INFO saerl.rl: ... greedy ...'; the
    # root logger holds pytest's handlers alone, see above)
    printed = [line for line in capfd.readouterr().err.splitlines()
               if re.search(r"INFO saerl\.rl: .* greedy |WARNING saerl\.rank_reward: ", line)]
    assert not printed, printed
    # each rank generated its share of the set at each of the 3 evaluations, and rank 1 said so through this process
    held = sets["h"]["prompt"].to_list()
    assert [seen(tmp_path, r, "generated") for r in (0, 1)] == [[held[r::2]] * 3 for r in (0, 1)]
    warned = [r.getMessage() for r in caplog.records if r.name == "saerl.rank_reward"]
    assert warned == ["[rank 1] " + GENERATED % (1, 3)] * 3, warned
    assert [(r["step"], r["set"], r["n"]) for r in run["curve"]] == [(s, "h", 6) for s in (0, 2, 4)]
    assert [(p["step"], p["id"]) for p in run["curve_problems"]] == [(s, i) for s in (0, 2, 4)
                                                                     for i in sets["h"]["id"].to_list()]
    AutoModelForCausalLM.from_pretrained(build.path / "policy")

    out = build.path / "policy"
    one = train_grpo(policy, prompts, order, cfg.train.model_copy(update={"num_processes": 1}), tmp_path / "one",
                     prompts_per_step=4, seed=0, eval_sets=sets, device="cpu", progress=False, extra_rewards=[record],
                     checkpoint_dir=tmp_path / "ck1", eval_batch=cfg.eval.batch_size,
                     eval_timeout_s=cfg.eval.verify_timeout_s, eval_extraction=cfg.eval.answer_extraction)
    assert run.keys() == one.keys() and run["log"][0].keys() == one["log"][0].keys()
    assert (run["order"], run["order_steps"], run["reward_checks"]) == (one["order"], one["order_steps"],
                                                                         one["reward_checks"])
    assert [r["step"] for r in run["curve"]] == [r["step"] for r in one["curve"]]
    assert [{k: p[k] for k in ("step", "set", "id")} for p in run["curve_problems"]] == \
        [{k: p[k] for k in ("step", "set", "id")} for p in one["curve_problems"]]
    # the weights evaluated at step 0 are the same: so are the greedy results, gathered from both ranks
    assert [p for p in run["curve_problems"] if p["step"] == 0] == [p for p in one["curve_problems"] if p["step"] == 0]
    assert [(r["greedy"], r["failures"]) for r in run["curve"][:1]] == [(r["greedy"], r["failures"]) for r in one["curve"][:1]]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_a_failing_rank_raises_its_error_here(tiny_run, tmp_path):
    """A rank that fails (here: an extra reward named without its function) ends the run with its error, its type
    kept, and the ranks' last output."""
    policy, prompts = tiny_run
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=2, num_processes=2)
    with pytest.raises(ValueError, match=r"(?s)is not 'package.module:function' \(rank \d of 2 training processes.*"
                                         r"last output"):
        distributed.train_in_processes(policy, prompts, None, cfg, tmp_path / "out", folder=tmp_path / "spec",
                                       prompts_per_step=2, device="cpu", progress=False, extra_rewards=["nocolon"])
    assert not (tmp_path / "out").exists()
