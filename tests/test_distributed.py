"""One training run in several processes (train.num_processes, saerl.distributed): the order across processes, the
command torchrun runs, the config's checks and keys, and (slow) a two-process run on the CPU (gloo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from saerl import distributed
from saerl.config import PipelineConfig, TrainConfig
from saerl.rl import CURVE_FILE, CurveCheckpoint, OrderSampler, micro_batch, step_sink, train_grpo

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
    rl.grpo_config(TrainConfig(num_generations=4, micro_batches=2), Path("x"), 4, 2, 0, "cpu")
    assert seen["per_device_train_batch_size"] == 4 and seen["steps_per_generation"] == 2


def test_the_command_is_torchrun_of_the_installed_torch_running_the_worker(tmp_path):
    cmd = distributed.torchrun_command(4, tmp_path, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                   "-m", "saerl.distributed", str(tmp_path)]
    launch = distributed.launch_command(4, tmp_path, python="py")
    assert launch[:4] == ["py", "-c", distributed.LAUNCHER, str(os.getpid())] and launch[4:] == cmd
    assert "die_with_parent(signal.SIGTERM)" in distributed.LAUNCHER


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
    path = tmp_path / distributed.STEPS
    got = []
    assert distributed.forward_steps(path, 0, lambda s, v: got.append((s, v))) == 0
    distributed.FileSink(path)(1, {"reward": 0.5})
    with path.open("a") as f:
        f.write('{"step": 2, "val')  # rank 0 is still writing it
    assert distributed.forward_steps(path, 0, lambda s, v: got.append((s, v))) == 1
    with path.open("a") as f:
        f.write('ues": {"loss": 1.0}}\n')
    assert distributed.forward_steps(path, 1, lambda s, v: got.append((s, v))) == 2
    assert got == [(1, {"reward": 0.5}), (2, {"loss": 1.0})]


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
    from tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("policy")
    tok = tiny_tokenizer()
    tiny_model(tok, "llama", seed=0, hidden=16).save_pretrained(root)
    tok.save_pretrained(root)
    prompts = pl.DataFrame({"id": [f"p{i:02d}" for i in range(40)],
                            "prompt": [f"what is {i % 10} + {i // 10} ?" for i in range(40)],
                            "answer": [str(i % 10 + i // 10) for i in range(40)]})
    return root, prompts


@pytest.mark.slow
def test_two_processes_train_the_order_and_write_one_run(tiny_run, tmp_path, monkeypatch):
    """torchrun with 2 CPU processes (gloo): the prompts the reward function scores, process 0's share of a step
    then process 1's, follow the order step by step (2 steps per generation batch); one set of checkpoints, each
    with both processes' RNG states and our files once; the step points reach this process's sink; the policy
    loads; and the result has a one-process run's keys, log columns, order and curve steps, with the reward
    checks of both processes."""
    from rank_reward import SEEN, record, seen
    from transformers import AutoModelForCausalLM

    policy, prompts = tiny_run
    order = prompts["id"].to_list()[::-1]
    monkeypatch.setenv(SEEN, str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, steps_per_generation=2, save_every=2,
                      keep_checkpoints=5, eval_every=2, num_processes=2)
    sets = {"h": prompts.head(6)}
    points: list[tuple[int, dict]] = []
    with step_sink(lambda step, values: points.append((step, values))):
        run = distributed.train_in_processes(policy, prompts, order, cfg, tmp_path / "out", folder=tmp_path / "spec",
                                             prompts_per_step=4, seed=0, eval_sets=sets, device="cpu",
                                             checkpoint_dir=tmp_path / "ck", progress=False,
                                             extra_rewards=["rank_reward:record"])
    per_rank = [seen(tmp_path, r) for r in (0, 1)]
    assert [len(calls) for calls in per_rank] == [2, 2]  # one reward call per generation batch and process
    steps = [per_rank[0][g][k * 4:(k + 1) * 4] + per_rank[1][g][k * 4:(k + 1) * 4] for g in range(2) for k in range(2)]
    assert steps == [[i for i in order[k * 4:(k + 1) * 4] for _ in range(2)] for k in range(4)]
    assert run["steps"] == 4 and run["reward_checks"] == 4 * 4 * 2
    assert run["order"] == order[:16] and run["order_steps"] == [1] * 8 + [3] * 8
    assert [r["step"] for r in run["curve"]] == [0, 2, 4]
    ckpts = sorted(p.name for p in (tmp_path / "ck").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-2", "checkpoint-4"]
    for c in ckpts:
        names = {p.name for p in (tmp_path / "ck" / c).iterdir()}
        assert {"rng_state_0.pth", "rng_state_1.pth", CURVE_FILE, "saerl_run.json", "model.safetensors"} <= names
    assert json.loads((tmp_path / "ck" / "checkpoint-4" / "saerl_run.json").read_text())["reward_checks"] == 32
    assert {s for s, v in points if "loss" in v} == {1, 2, 3, 4}
    assert {s for s, v in points if "eval/h/greedy" in v} == {0, 2, 4}
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")

    one = train_grpo(policy, prompts, order, cfg.model_copy(update={"num_processes": 1}), tmp_path / "one",
                     prompts_per_step=4, seed=0, eval_sets=sets, device="cpu", progress=False, extra_rewards=[record],
                     checkpoint_dir=tmp_path / "ck1")
    assert run.keys() == one.keys() and run["log"][0].keys() == one["log"][0].keys()
    assert (run["order"], run["order_steps"], run["reward_checks"]) == (one["order"], one["order_steps"],
                                                                         one["reward_checks"])
    assert [r["step"] for r in run["curve"]] == [r["step"] for r in one["curve"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


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
