"""GRPO through trl: our sampler, the order trained, the reward."""

import json
import logging
import math
import os
from pathlib import Path

import polars as pl
import pytest

from saerl.config import HealthConfig, TrainConfig
from saerl.config import TestbedConfig as TBConfig
from saerl.rl import (
    CorrectnessReward,
    OrderSampler,
    completion_text,
    format_reward,
    grpo_config,
    health_notes,
    is_correct,
    judge,
    reward_functions,
    train_grpo,
)


def test_order_sampler_repeats_each_prompt_in_a_row_in_order():
    assert list(OrderSampler(5, 2, 2)) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(OrderSampler(4, 2, 2, block_repeats=2)) == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
    assert len(OrderSampler(5, 2, 2)) == 8


def test_an_order_naming_ids_the_prompts_lack_is_refused_naming_the_first():
    """An order from another run's curriculum names prompts this pool has not: the run refuses it before loading a
    trainer, saying how many ids are missing, the first of them, and which stage to rerun."""
    from saerl.rl import _training_rows

    prompts = pl.DataFrame({"id": ["a", "b"], "prompt": ["1+1", "2+2"], "answer": [2, 4], "topic": ["x", "y"]})
    assert [r["id"] for r in _training_rows(prompts, ["b", "a", "b"])] == ["b", "a", "b"]
    with pytest.raises(ValueError, match=r"2 ids of the training order are not among the prompts \(first: 'zz'\).*"
                                         "rerun the curriculum stage"):
        _training_rows(prompts, ["a", "zz", "zz", "q"])


def test_a_resume_reads_back_the_curve_and_the_runs_counts(tmp_path):
    """A resumed run continues the learning curve, the training seconds and the reward's counts its checkpoint kept;
    a checkpoint of an older version (a bare list of curve rows, no run file) resumes with zero counts."""
    from saerl.checkpoints import CURVE_FILE
    from saerl.rl import RUN_FILE, _resume_state

    rows = [{"step": 0, "set": "e", "greedy": 0.1}, {"step": 4, "set": "e", "greedy": 0.3}]
    problems = [{"step": 4, "set": "e", "id": "q1", "correct": True}]
    new, old = tmp_path / "checkpoint-4", tmp_path / "checkpoint-2"
    new.mkdir(), old.mkdir()
    (new / CURVE_FILE).write_text(json.dumps({"rows": rows, "problems": problems}), encoding="utf-8")
    (new / RUN_FILE).write_text(json.dumps({"seconds": 12.5, "reward_checks": 40, "verifier_failures": 3}))
    (old / CURVE_FILE).write_text(json.dumps(rows[:1]), encoding="utf-8")
    state = _resume_state(new)
    assert (state.rows, state.problems, state.last_step) == (rows, problems, 4)
    assert (state.seconds, state.reward_checks, state.verifier_failures) == (12.5, 40, 3)
    older = _resume_state(old)
    assert (older.rows, older.problems, older.last_step) == (rows[:1], [], 0)
    assert (older.seconds, older.reward_checks, older.verifier_failures) == (0.0, 0, 0)
    fresh = _resume_state(None)
    assert (fresh.rows, fresh.last_step, fresh.seconds, fresh.reward_checks) == ([], -1, 0.0, 0)


def test_the_order_trained_counts_whole_generation_batches_at_their_first_step():
    """With steps_per_generation > 1 a generation batch's prompts are trained over its steps: the order reports each
    at the batch's first step, and a run stopped inside a batch had generated (and reports) all of its prompts."""
    from saerl.rl import _drawn_order

    seq = [f"p{i}" for i in range(12)]
    drawn = _drawn_order(seq, 3, prompts_per_step=2, steps_per_generation=2)  # stopped in the second batch
    assert drawn == [(f"p{i}", 1) for i in range(4)] + [(f"p{i}", 3) for i in range(4, 8)]
    assert _drawn_order(seq, 2, 2, 1) == [("p0", 1), ("p1", 1), ("p2", 2), ("p3", 2)]
    assert _drawn_order(seq, 0, 2, 2) == []


def test_dapos_order_trained_holds_the_drawn_prompts_with_a_reward_spread():
    from saerl.rl import _dapo_drawn_order

    seq = ["a", "b", "c", "d", "a"]
    assert _dapo_drawn_order(seq, [(0, True, 1), (1, False, 1), (2, True, 1), (4, True, 2)]) == [
        ("a", 1), ("c", 1), ("a", 2)]


def test_correctness_reward_reads_the_final_answer():
    comps = [[{"role": "assistant", "content": "3 + 4 = 7 #### 7"}], "#### 8", "no answer"]
    assert CorrectnessReward()(comps, ["7", "7", "7"]) == [1.0, 0.0, 0.0]
    assert is_correct(["#### 07", "#### 7 , 3", "#### -2", "x #### 1/2"], ["7", "7", "-2", "0.5"]) == [
        True, False, True, True]


def test_judge_names_every_outcome_and_the_reward_counts_verifier_failures(monkeypatch):
    """'#### 1/2' needs math-verify's worker pool (here: every task over its limit), '#### 3' is read in process."""
    from saerl import verify as V

    assert judge(["#### 7", "#### 8", "no answer here", "#### x"], ["7", "7", "7", "7"]) == [
        "correct", "wrong", "no_answer", "wrong"]
    monkeypatch.setattr(V._POOL, "run", lambda tasks, timeout_s: [("timeout", "over the limit")] * len(tasks))
    reward = CorrectnessReward(timeout_s=0.1)
    assert reward(["#### 1/2", "#### 3"], ["0.5", "3"]) == [0.0, 1.0]
    assert (reward.checked, reward.failures) == (2, 1)
    assert reward.__name__ == "correctness"
    monkeypatch.setattr(V._POOL, "run", lambda tasks, timeout_s: [("error", "worker crashed")] * len(tasks))
    assert judge(["#### 1/2"], ["0.5"]) == ["error"]
    assert reward(["#### 1/2", "#### 3"], ["0.5", "3"]) == [0.0, 1.0]
    assert (reward.checked, reward.failures) == (4, 2)  # an error is a verifier failure as a timeout is


def test_judge_agrees_with_the_final_evaluation_on_plain_numbers(monkeypatch):
    """The reward and the in-training curve judge as verify_batch (the final evaluation) does; plain numbers
    against a plain-integer gold stay in process."""
    from saerl import verify as V
    from saerl.verify import verify_batch

    texts = ["#### 1,000", "\\boxed{18.00}", "#### $18", "#### 18 dollars", "#### 18.", "#### 18.5", "#### 07", "none"]
    golds = ["1000", "18", "18", "18", "18", "18", "7", "7"]
    final = [r.status for r in verify_batch(texts, golds, 10)]
    assert final == ["correct"] * 5 + ["wrong", "correct", "no_answer"]

    def no_pool(*args, **kwargs):
        raise AssertionError("plain numbers must be judged in process")

    monkeypatch.setattr(V._POOL, "run", no_pool)
    assert judge(texts, golds) == final


def test_format_reward_and_reward_weights():
    assert format_reward(["a #### 3", "\\boxed{4}", "no"]) == [1.0, 1.0, 0.0]
    args = grpo_config(TrainConfig(format_reward=0.2), Path("/tmp/x"), 2, 1, 0)
    assert args.reward_weights == [1.0, 0.2]
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0).reward_weights == [1.0]


def test_train_max_grad_norm_reaches_trl_and_defaults_to_what_ran_before():
    """Gradient clipping was transformers' default 1.0, not a config field: train.max_grad_norm sets it."""
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0).max_grad_norm == 1.0
    assert grpo_config(TrainConfig(max_grad_norm=0.5), Path("/tmp/x"), 2, 1, 0).max_grad_norm == 0.5


def test_a_cut_off_completion_earns_no_format_reward():
    """format_reward gave 1.0 to any completion holding '#### X', one cut off at max_completion_length too, so a
    policy could earn it with unfinished answers. trl passes each reward function the completion's token ids: a
    completion of the limit's length that does not end on a stop id was cut off and earns 0; one that ends on its
    stop id at the limit, or stops before it, earns the reward. reward_functions binds the limit and stop ids."""
    texts = ["#### 3"] * 4 + ["no answer"]
    ids = [[5, 6, 7, 8], [5, 6, 0], [5, 6, 7, 0], [5, 6, 7, 8, 9], [5, 0]]
    assert format_reward(texts, ids, max_completion_length=4, stop_ids={0}) == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert format_reward(texts, ids) == [1.0, 1.0, 1.0, 1.0, 0.0]  # no limit given: the text alone decides
    funcs, _ = reward_functions(TrainConfig(format_reward=0.1, max_completion_length=4), CorrectnessReward(), None, [0])
    assert funcs[1](completions=texts, completion_ids=ids, answer=["3"] * 5) == [0.0, 1.0, 1.0, 0.0, 0.0]
    from trl.trainer.utils import get_callable_name

    assert get_callable_name(funcs[1]) == "format_reward"  # the name trl logs it by: rewards/format_reward/mean


def test_the_format_reward_goes_to_rollouts_that_were_not_cut_off(tiny_policy_dir, tmp_path, one_torch_thread,
                                                                  monkeypatch):
    """In a run, with every text read as answered, the format reward's mean is the share of rollouts that were not
    cut off at the limit, as trl counts them (completions/clipped_ratio): trl passes the ids and the stop ids are
    the policy's."""
    policy, prompts = tiny_policy_dir
    monkeypatch.setattr("saerl.rl.extract_final_answer", lambda text: "1")
    cfg = TrainConfig(num_generations=4, max_completion_length=3, max_steps=2, format_reward=0.5)
    run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert any(h["completions/clipped_ratio"] > 0 for h in run["log"])  # the premise: some rollouts were cut off
    for h in run["log"]:
        assert h["rewards/format_reward/mean"] == pytest.approx(1 - h["completions/clipped_ratio"])


def test_the_policys_trust_remote_code_reaches_what_trl_loads_itself():
    """trl loads vLLM's engine and the reference model with GRPOConfig.trust_remote_code, which was never set: a
    user's model.trust_remote_code=true did not reach them (and the default stays off)."""
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0, trust_remote_code=True).trust_remote_code is True
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0).trust_remote_code is False


def test_reward_functions_in_order_with_dapo_overlong_shaping():
    """Correctness, the format reward, DAPO's soft overlong punishment (0 up to max_completion_length minus the
    buffer, then linearly down to -1 at the limit), then extra functions; the weights in the same order, and
    grpo_config passes the same weights (without extras) and DAPO's overlong filtering when asked."""
    correct = CorrectnessReward()

    def extra(completions, **_):
        return [0.0] * len(completions)

    cfg = TrainConfig(format_reward=0.2, max_completion_length=10, overlong_buffer=4)
    funcs, weights = reward_functions(cfg, correct, [extra])
    assert funcs[0] is correct and funcs[1].func is format_reward and funcs[3] is extra
    assert weights == [1.0, 0.2, 1.0, 1.0]
    assert funcs[2]([[1] * 6, [1] * 7, [1] * 8, [1] * 10]) == [0.0, -0.25, -0.5, -1.0]
    assert reward_functions(TrainConfig(), correct) == ([correct], [1.0])
    args = grpo_config(cfg.model_copy(update={"mask_truncated_completions": True}), Path("/tmp/x"), 2, 1, 0)
    assert args.reward_weights == [1.0, 0.2, 1.0] and args.mask_truncated_completions
    assert not grpo_config(cfg, Path("/tmp/x"), 2, 1, 0).mask_truncated_completions
    dapo = grpo_config(TrainConfig(algorithm="dapo"), Path("/tmp/x"), 2, 1, 0)
    assert (dapo.loss_type, dapo.epsilon_high) == ("dapo", 0.28)
    spg = grpo_config(TrainConfig(steps_per_generation=4, num_generations=2), Path("/tmp/x"), 3, 1, 0)
    assert (spg.steps_per_generation, spg.generation_batch_size) == (4, 4 * 3 * 2)  # one generation, 4 steps


def test_training_stays_on_the_cpu_when_runtime_device_says_so(monkeypatch):
    """trl takes a GPU whenever one is there; runtime.device=cpu keeps training where labels and evaluation run
    (and bf16, a GPU setting, off)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = grpo_config(TrainConfig(bf16=True), Path("/tmp/x"), 2, 1, 0, device="cpu")
    assert args.use_cpu is True and args.bf16 is False
    assert args.disable_tqdm is False  # progress on by default
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0, "cpu", progress=False).disable_tqdm is True


def test_checkpoint_is_complete_only_once_our_files_are_written(tmp_path):
    """A run killed after the trainer's files but before saerl_curve.json resumes from the checkpoint before;
    the state files and the curve are written whole (temp file + rename), the curve last."""
    from types import SimpleNamespace

    from saerl.rl import CURVE_FILE, CurveCheckpoint, EvalCallback, last_checkpoint

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    evals = EvalCallback({}, None, 1, 1, 1)
    evals.rows = [{"step": 0, "set": "h", "greedy": 0.5, "n": 2, "seconds": 0.1}]
    saving = CurveCheckpoint(evals, tmp_path, {"extra.json": lambda: {"cursor": 3}})
    saving.on_save(None, SimpleNamespace(global_step=2, is_world_process_zero=True), None)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"  # checkpoint-4 lacks the curve: incomplete
    assert json.loads((tmp_path / "checkpoint-2" / CURVE_FILE).read_text())["rows"] == evals.rows
    assert json.loads((tmp_path / "checkpoint-2" / "extra.json").read_text()) == {"cursor": 3}
    assert sorted(p.name for p in (tmp_path / "checkpoint-2").iterdir()) == sorted(
        [CURVE_FILE, "extra.json", "trainer_state.json"])

    def killed():
        raise KeyboardInterrupt

    saving.states["extra.json"] = killed
    with pytest.raises(KeyboardInterrupt):
        saving.on_save(None, SimpleNamespace(global_step=4, is_world_process_zero=True), None)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_checkpoints_land_on_generation_batch_boundaries(tmp_path):
    """trl keeps a generation batch's completions in memory only: a run resumed inside one generated it again
    and missed half of the next, so checkpoints are saved, and resumed from, at generation-batch boundaries."""
    from saerl.rl import CURVE_FILE, last_checkpoint, save_period

    assert [save_period(n, 2) for n in (1, 2, 3, 4)] == [2, 2, 4, 4] and save_period(3, 1) == 3
    args = grpo_config(TrainConfig(save_every=3, steps_per_generation=2, num_generations=2), tmp_path, 2, 9, 0)
    assert args.save_steps == 4
    for step in (3, 4, 5, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in ("trainer_state.json", CURVE_FILE):
            (tmp_path / f"checkpoint-{step}" / name).write_text("{}")
    assert last_checkpoint(tmp_path, 2, 10) == tmp_path / "checkpoint-4"  # 5 is inside a generation batch
    assert last_checkpoint(tmp_path, 2, 9) == tmp_path / "checkpoint-9"  # the last step: nothing left to train
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-9"


def test_eval_curve_judges_with_the_train_timeout_and_counts_failures(monkeypatch):
    """The in-training curve judges answers as the reward does, bounded by train.verify_timeout_s, and counts
    the verifier's failures (scored wrong) instead of hiding them among the wrong answers."""
    from types import SimpleNamespace

    from saerl import policy_lm
    from saerl import verify as V
    from saerl.rl import EvalCallback

    seen = {}

    def pool_over_time(tasks, timeout_s):  # the worker pool (math-verify): here every task overruns
        seen["timeout_s"] = timeout_s
        return [("timeout", "over the limit")] * len(tasks)

    monkeypatch.setattr(V._POOL, "run", pool_over_time)
    monkeypatch.setattr(policy_lm, "generate", lambda model, tok, prompts, *a, **k: policy_lm.Completions(
        ["#### 3", "#### x^2", "#### 5"], [2, 2, 2], [True] * 3))
    heldout = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["p"] * 3, "answer": ["3", "x^2", "4"]})
    evals = EvalCallback({"h": heldout}, None, 1, 4, 8, timeout_s=30.0)
    evals._run(SimpleNamespace(training=False), 0)
    assert seen["timeout_s"] == 30.0
    assert evals.rows[0]["greedy"] == pytest.approx(1 / 3) and evals.rows[0]["failures"] == 1
    assert [p["correct"] for p in evals.problems] == [True, False, False]


def test_a_resumed_run_adds_no_eval_point_off_the_schedule():
    """Resumed from checkpoint-2 with eval_every 3, the curve keeps the uninterrupted run's points (0, 3, ...):
    no extra point at step 2, which would let that seed reach a target earlier than it would have."""
    from types import SimpleNamespace

    from saerl.rl import EvalCallback

    evals = EvalCallback({"h": pl.DataFrame({"id": ["a"], "prompt": ["p"], "answer": ["1"]})}, None, 3, 4, 8)
    measured = []
    evals._run = lambda model, step: measured.append(step)
    evals.on_train_begin(None, SimpleNamespace(global_step=0), None)
    evals.last_step = 0  # resumed: the rows saved with the checkpoint end at step 0
    evals.on_train_begin(None, SimpleNamespace(global_step=2), None)
    evals.last_step = 3
    evals.on_train_begin(None, SimpleNamespace(global_step=6), None)  # on the schedule, not measured yet
    assert measured == [0, 6]


@pytest.fixture(scope="module")
def tiny_tb(tmp_path_factory):
    from saerl.testbed import build_testbed

    root = tmp_path_factory.mktemp("tb")
    tb = TBConfig(n_pretrain=100, n_pool=40, n_eval=20, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                  pretrain_steps=2, batch_size=8, warmup_steps=1, log_every=1, eval_batch=32, max_new_tokens=6)
    build_testbed(tb, root)
    return root


@pytest.mark.slow
def test_eval_curve_and_checkpoints_during_training(tiny_tb, tmp_path):
    pool = pl.read_parquet(tiny_tb / "world" / "pool.parquet")
    heldout = pl.read_parquet(tiny_tb / "world" / "eval.parquet").head(8)
    cfg = TrainConfig(num_generations=2, max_completion_length=6, max_steps=5, eval_every=2, save_every=2)
    run = train_grpo(tiny_tb / "lm", pool, None, cfg, tmp_path / "rl", prompts_per_step=2, seed=0,
                     eval_sets={"h": heldout}, checkpoint_dir=tmp_path / "ck")
    assert [r["step"] for r in run["curve"]] == [0, 2, 4, 5]
    assert all(r["set"] == "h" and r["n"] == 8 and 0 <= r["greedy"] <= 1 for r in run["curve"])
    assert sorted(c.name for c in (tmp_path / "ck").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    assert (tmp_path / "ck" / "checkpoint-4" / "model.safetensors").exists()
    assert (tmp_path / "ck" / "checkpoint-4" / "optimizer.pt").exists()
    assert run["reward_checks"] == 5 * 2 * 2 and run["resumed_from"] is None


# the killed run: 6 steps, checkpoints every 2; it stops at the end of step 5 (trained one step past checkpoint-4,
# kept in memory alone) and waits there to be killed, so the kill always lands between two checkpoints
RESUME_STEPS, HOLD_STEP, SAVE_EVERY = 6, 5, 2
HOLD_FILE = "held"  # in the run's folder: written by the child when it stops at HOLD_STEP
HOLD_MAX_S = 600  # a child never killed (its test failed first) ends by itself after this
RESUME_SCRIPT = """
import sys, time, polars as pl, torch
from transformers import TrainerCallback
from saerl.config import TrainConfig
from saerl.rl import train_grpo
torch.set_num_threads(1)
tb, out, steps, save_every, hold, hold_file, hold_max_s = sys.argv[1:8]

class Hold(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == int(hold):
            open(out + "/" + hold_file, "w").close()
            time.sleep(float(hold_max_s))
            sys.exit("held at step " + hold + " and never killed")

pool = pl.read_parquet(tb + "/world/pool.parquet")
heldout = pl.read_parquet(tb + "/world/eval.parquet").head(6)
cfg = TrainConfig(num_generations=2, max_completion_length=6, max_steps=int(steps), eval_every=2,
                  save_every=int(save_every))
train_grpo(tb + "/lm", pool, None, cfg, out + "/policy", prompts_per_step=2, seed=0, eval_sets={"h": heldout},
           checkpoint_dir=out + "/ck", callbacks=[Hold()])
"""


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tiny_tb, tmp_path, one_torch_thread):
    """A run killed between two checkpoints (held at HOLD_STEP, one step past the last) resumes from the last one
    and ends as the uninterrupted run does: same metrics per step, prompt order and learning curve."""
    import signal
    import subprocess
    import sys
    import time

    from saerl.rl import last_checkpoint

    steps, killed = RESUME_STEPS, tmp_path / "k"
    killed.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(tiny_tb), str(killed), str(steps),
                             str(SAVE_EVERY), str(HOLD_STEP), HOLD_FILE, str(HOLD_MAX_S)])
    try:
        deadline = time.time() + 300
        while not (killed / HOLD_FILE).exists():
            assert proc.poll() is None and time.time() < deadline, "the training subprocess ended before the hold"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = HOLD_STEP // SAVE_EVERY * SAVE_EVERY
    assert last_checkpoint(killed / "ck") == killed / "ck" / f"checkpoint-{last}"
    assert not (killed / "policy" / "model.safetensors").exists(), "killed before the end"
    pool = pl.read_parquet(tiny_tb / "world" / "pool.parquet")
    heldout = pl.read_parquet(tiny_tb / "world" / "eval.parquet").head(6)
    cfg = TrainConfig(num_generations=2, max_completion_length=6, max_steps=steps, eval_every=2, save_every=SAVE_EVERY)
    resumed = train_grpo(tiny_tb / "lm", pool, None, cfg, killed / "policy", prompts_per_step=2, seed=0,
                         eval_sets={"h": heldout}, checkpoint_dir=killed / "ck")
    assert resumed["resumed_from"] is not None and 2 <= resumed["resumed_from"] < steps
    assert resumed["resumed_from"] == last
    assert resumed["steps"] == steps
    curve_steps = [r["step"] for r in resumed["curve"]]
    assert curve_steps == sorted(set(curve_steps)) and curve_steps[0] == 0 and curve_steps[-1] == steps
    fresh = train_grpo(tiny_tb / "lm", pool, None, cfg, tmp_path / "f" / "policy", prompts_per_step=2, seed=0,
                       eval_sets={"h": heldout}, checkpoint_dir=tmp_path / "f" / "ck")
    assert [h["step"] for h in resumed["log"]] == [h["step"] for h in fresh["log"]]
    assert resumed["order"] == fresh["order"]
    assert [r["greedy"] for r in resumed["curve"]] == [r["greedy"] for r in fresh["curve"]]


@pytest.mark.slow
def test_dapo_trains_on_a_subsequence_of_the_stream(tiny_tb, tmp_path):
    pool = pl.read_parquet(tiny_tb / "world" / "pool.parquet")
    order = pool["id"].to_list()
    cfg = TrainConfig(algorithm="dapo", num_generations=2, max_completion_length=6, max_steps=3,
                      dynamic_sampling_max_rounds=2)
    run = train_grpo(tiny_tb / "lm", pool, order, cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert run["steps"] == 3
    it = iter(order * 2)
    assert all(any(i == j for j in it) for i in run["order"]), "trained prompts keep the stream's order"
    log_kept = [int(h["dynamic_sampling/kept_groups"]) for h in run["log"]]
    assert [run["order_steps"].count(s) for s in (1, 2, 3)] == log_kept, "each step holds the groups it kept"
    assert run["order_steps"] == sorted(run["order_steps"])


@pytest.mark.slow
def test_resumed_dapo_run_keeps_its_prompt_stream(tiny_tb, tmp_path, monkeypatch):
    """A DAPO run resumed from a checkpoint continues the dynamic-sampling stream and keeps the prompts drawn
    before it: its trained order is the uninterrupted run's."""
    from saerl import rl
    from saerl.dapo import STATE_FILE

    pool = pl.read_parquet(tiny_tb / "world" / "pool.parquet")
    order = pool["id"].to_list()
    flat = set(order[::3])  # every third prompt's answers are all wrong: dropped, the next one drawn
    pool = pool.with_columns(answer=pl.when(pl.col("id").is_in(sorted(flat))).then(pl.lit("flat")).otherwise(pl.lit("spread")))

    def judge(texts, golds, timeout_s=5.0):  # the other prompts' groups: one rollout right, one wrong
        return ["correct" if g == "spread" and j % 2 else "wrong" for j, g in enumerate(golds)]

    monkeypatch.setattr(rl, "judge", judge)

    def train(steps, folder):
        cfg = TrainConfig(algorithm="dapo", num_generations=2, max_completion_length=6, max_steps=steps,
                          dynamic_sampling_max_rounds=1, save_every=2, keep_checkpoints=5)
        return train_grpo(tiny_tb / "lm", pool, order, cfg, folder, prompts_per_step=2, seed=0,
                          checkpoint_dir=folder / "ck")

    fresh = train(4, tmp_path / "f")
    first = train(2, tmp_path / "k")
    assert (tmp_path / "k" / "ck" / "checkpoint-2" / STATE_FILE).exists()
    resumed = train(4, tmp_path / "k")
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert len(first["order"]) == 4 and resumed["order"][:4] == first["order"]
    assert resumed["order_steps"] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert (resumed["order"], resumed["order_steps"]) == (fresh["order"], fresh["order_steps"])


def test_dapo_resume_without_its_stream_state_is_refused(tmp_path):
    from types import SimpleNamespace

    from saerl.rl import CurveCheckpoint, EvalCallback, _keep_dynamic_sampling

    saving = CurveCheckpoint(EvalCallback({}, None, 1, 1, 1), tmp_path)
    trainer = SimpleNamespace(dynamic_sampling_state=lambda: {"cursor": 0, "drawn": []})
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(ValueError, match="delete .* to train from the start"):
        _keep_dynamic_sampling(trainer, saving, tmp_path / "checkpoint-2", tmp_path)
    assert "saerl_dynamic_sampling.json" in saving.states


@pytest.mark.slow
def test_tiny_grpo_run_reads_prompts_in_the_given_order(tmp_path):
    from saerl.testbed import build_testbed

    tb = TBConfig(n_pretrain=100, n_pool=40, n_eval=20, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                       pretrain_steps=2, batch_size=8, warmup_steps=1, log_every=1, eval_batch=32, max_new_tokens=6)
    build_testbed(tb, tmp_path / "tb")
    pool = pl.read_parquet(tmp_path / "tb" / "world" / "pool.parquet")
    order = pool["id"].to_list()[::-1][:6]
    seen: list[str] = []

    def record(completions, id, **_):  # noqa: A002 - trl passes dataset columns by name
        seen.extend(id)
        return [0.0] * len(completions)

    cfg = TrainConfig(num_generations=2, max_completion_length=6, max_steps=2)
    run = train_grpo(tmp_path / "tb" / "lm", pool, order, cfg, tmp_path / "rl", prompts_per_step=3, seed=0,
                     extra_rewards=[record])
    assert run["steps"] == 2
    assert seen == [i for i in order for _ in range(2)]
    assert run["order"] == order and run["order_steps"] == [1, 1, 1, 2, 2, 2]
    assert (tmp_path / "rl" / "model.safetensors").exists()


@pytest.mark.slow
def test_resume_inside_a_generation_batch_generates_each_batch_once(tiny_tb, tmp_path):
    """steps_per_generation 2 and save_every 3: the checkpoint lands at step 4 (a generation boundary), so the
    resumed run generates the third batch once, as the uninterrupted run does, instead of the second again."""
    from transformers import TrainerCallback

    pool = pl.read_parquet(tiny_tb / "world" / "pool.parquet")
    order = pool["id"].to_list()

    class Killed(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt

    def train(folder, callbacks=()):
        generated: list[list[str]] = []

        def record(completions, id, **_):  # noqa: A002 - trl passes dataset columns by name
            generated.append(list(id)[::2])
            return [0.0] * len(completions)

        cfg = TrainConfig(num_generations=2, max_completion_length=4, max_steps=6, steps_per_generation=2,
                          save_every=3, keep_checkpoints=5)
        run = train_grpo(tiny_tb / "lm", pool, order, cfg, folder, prompts_per_step=2, seed=0, extra_rewards=[record],
                         checkpoint_dir=folder / "ck", callbacks=list(callbacks))
        return generated, run

    fresh, _ = train(tmp_path / "f")
    assert fresh == [order[0:4], order[4:8], order[8:12]]
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "k", [Killed()])
    resumed, run = train(tmp_path / "k")
    assert run["resumed_from"] == 4 and resumed == [order[8:12]]


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    """A saved 1-layer policy with the word-level tokenizer of tests/tiny.py, and prompts it can read."""
    from tiny import tiny_policy

    return tiny_policy(tmp_path_factory.mktemp("policy"))


def test_order_steps_name_the_generation_batch_each_prompt_was_generated_for(tiny_policy_dir, tmp_path,
                                                                              one_torch_thread):
    """steps_per_generation 2: trl generates for steps 1-2 at step 1 and spreads the rollouts over both steps, so
    the prompts generated then are recorded at step 1 (as DAPO records them), not half at step 2; a run stopped
    inside a generation batch (3 steps) generated for all of its prompts."""
    policy, prompts = tiny_policy_dir
    generated: list[str] = []

    def record(completions, id, **_):  # noqa: A002 - trl passes dataset columns by name
        generated.extend(id[::2])
        return [0.0] * len(completions)

    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, steps_per_generation=2)
    run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0,
                     max_steps=3, extra_rewards=[record])  # stopped inside the second generation batch
    assert run["steps"] == 3 and run["order"] == generated == [f"p{i:02d}" for i in range(8)]
    assert run["order_steps"] == [1, 1, 1, 1, 3, 3, 3, 3]


def test_resumed_run_keeps_its_reward_counts_and_training_seconds(tiny_policy_dir, tmp_path, one_torch_thread):
    """A run resumed from a checkpoint reports the verifier checks and failures of the whole run, not only those
    after the resume, and its time limit counts the seconds trained before the kill."""
    from transformers import TrainerCallback

    from saerl.rl import RUN_FILE

    policy, prompts = tiny_policy_dir

    class Killed(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt

    def train(folder, callbacks=(), time_limit_s=None):
        cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, save_every=2, keep_checkpoints=5)
        return train_grpo(policy, prompts, None, cfg, folder / "policy", prompts_per_step=2, seed=0,
                          checkpoint_dir=folder / "ck", callbacks=list(callbacks), time_limit_s=time_limit_s)

    fresh = train(tmp_path / "f")
    assert fresh["reward_checks"] == 4 * 2 * 2
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "k", [Killed()])
    saved = json.loads((tmp_path / "k" / "ck" / "checkpoint-2" / RUN_FILE).read_text())
    assert saved["reward_checks"] == 2 * 2 * 2 and saved["verifier_failures"] == 0 and saved["seconds"] > 0
    resumed = train(tmp_path / "k")
    assert resumed["resumed_from"] == 2 and resumed["reward_checks"] == fresh["reward_checks"]
    assert resumed["seconds"] >= round(saved["seconds"], 1)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "t", [Killed()])
    run_file = tmp_path / "t" / "ck" / "checkpoint-2" / RUN_FILE
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "seconds": 1000.0}))
    limited = train(tmp_path / "t", time_limit_s=500.0)  # the budget was spent before the kill: one step, then stop
    assert limited["resumed_from"] == 2 and limited["steps"] == 3 and limited["seconds"] >= 1000


def test_a_resumed_tied_policy_takes_its_head_from_the_checkpoints_embeddings_unwarned(tiny_policy_dir, tmp_path,
                                                                                      one_torch_thread):
    """The testbed LM ties its head to its embeddings, and its checkpoints hold that tensor once, as the embeddings:
    every resume warned "There were missing keys in the checkpoint model loaded: ['lm_head.weight']", which read like
    a corrupt checkpoint. Checked here: the resumed head is the embeddings' tensor, with the checkpoint's values
    (shifted after the kill, so a head left as the starting policy had it would differ); the warning is dropped."""
    import logging

    import torch
    from safetensors.torch import load_file, save_file
    from tiny import tiny_model, tiny_tokenizer
    from transformers import TrainerCallback

    from saerl.rl import TRAINER_LOGGER

    _, prompts = tiny_policy_dir
    tok, policy = tiny_tokenizer(), tmp_path / "tied"
    tiny_model(tok, "llama", seed=0, hidden=16, tied=True).save_pretrained(policy)
    tok.save_pretrained(policy)
    seen: list[tuple[bool, bool]] = []

    class Killed(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt

    class Head(TrainerCallback):  # after the checkpoint is loaded, before the first step
        def on_train_begin(self, args, state, control, model=None, **kw):
            head, embed = model.lm_head.weight, model.model.embed_tokens.weight
            seen.append((head.data_ptr() == embed.data_ptr(), torch.equal(head.detach(), saved)))

    class Warned(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    def train(callbacks):
        cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, save_every=2, keep_checkpoints=5)
        return train_grpo(policy, prompts, None, cfg, tmp_path / "out", prompts_per_step=2, seed=0,
                          checkpoint_dir=tmp_path / "ck", callbacks=callbacks, progress=False)

    with pytest.raises(KeyboardInterrupt):
        train([Killed()])
    weights = tmp_path / "ck" / "checkpoint-2" / "model.safetensors"
    tensors = load_file(weights)
    assert "lm_head.weight" not in tensors  # stored once, as the embeddings
    saved = tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    warned = Warned()
    logging.getLogger(TRAINER_LOGGER).addHandler(warned)
    try:
        resumed = train([Head()])
    finally:
        logging.getLogger(TRAINER_LOGGER).removeHandler(warned)
    assert resumed["resumed_from"] == 2 and seen == [(True, True)]
    assert not [m for m in warned.messages if "missing keys" in m], warned.messages


def test_only_missing_keys_tied_to_a_stored_one_go_unwarned():
    """The missing-keys warning is dropped only where every key it lists shares its tensor with one it does not."""
    import logging

    from tiny import tiny_model, tiny_tokenizer

    from saerl.rl import MISSING_KEYS, TiedKeysFilter, tied_twins

    twins = tied_twins(tiny_model(tiny_tokenizer(), "llama", hidden=16, tied=True))
    assert twins == {"lm_head.weight": {"model.embed_tokens.weight"}, "model.embed_tokens.weight": {"lm_head.weight"}}
    assert tied_twins(tiny_model(tiny_tokenizer(), "llama", hidden=16)) == {}
    quiet = TiedKeysFilter(twins)

    def passes(message: str) -> bool:
        return quiet.filter(logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, message, None, None))

    assert not passes(f"{MISSING_KEYS}['lm_head.weight'].")
    assert passes(f"{MISSING_KEYS}['model.norm.weight'].")
    assert passes(f"{MISSING_KEYS}['lm_head.weight', 'model.embed_tokens.weight'].")  # neither stored
    assert passes(f"{MISSING_KEYS}['lm_head.weight', 'model.norm.weight'].")
    assert passes("There were unexpected keys in the checkpoint model loaded: ['lm_head.weight'].")


def test_the_training_bar_is_named_from_its_first_frame_and_checkpoints_draw_no_bar(tiny_policy_dir, tmp_path,
                                                                                  one_torch_thread, capfd):
    """The training bar's first frame had no description (it was set after the bar drew itself), and transformers'
    "Writing model shards" bar at each checkpoint, drawn below the training bar, wrote cursor-up codes (ESC[A) into
    a log file. The bar says whose it is from its first frame; checkpoints draw no bar (the trained policy's own
    save, after the training bar closed, still does), and transformers' bars are on again after training."""
    import re

    from transformers.utils import logging as hf_logging

    policy, prompts = tiny_policy_dir
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, save_every=2, keep_checkpoints=5)
        capfd.readouterr()
        train_grpo(policy, prompts, None, cfg, tmp_path / "out", prompts_per_step=2, seed=0,
                   checkpoint_dir=tmp_path / "ck", progress=True, label="saerl:0")
        err = capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()
    assert sorted(c.name for c in (tmp_path / "ck").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    first = next(f for f in re.split(r"[\r\n]", err) if "/4 [" in f)
    assert first.startswith("train saerl:0: "), first
    assert "\x1b[" not in err, repr(err)
    assert err.count("Writing model shards: 100%") == 1, err  # the trained policy's save, none per checkpoint


def test_the_trained_policy_keeps_its_tokenizer_class(tiny_policy_dir, tmp_path, one_torch_thread):
    """A hub policy's tokenizer (here named Qwen2Tokenizer) is saved with the trained policy as it was loaded,
    not renamed to the testbed's plain class."""
    import shutil

    policy, prompts = tiny_policy_dir
    src = tmp_path / "src"
    shutil.copytree(policy, src)
    conf = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**conf, "tokenizer_class": "Qwen2Tokenizer"}))
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=1)
    train_grpo(src, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert json.loads((tmp_path / "rl" / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_micro_batches_give_the_same_update_in_smaller_passes(tiny_policy_dir, tmp_path, one_torch_thread, loss_type):
    """train.micro_batches=2 (gradient accumulation) runs each step's completions in two forward/backward passes
    of half the rows and sums them into the gradient of one whole-batch pass: the same rollouts, the same
    gradient before each optimizer step, the same prompts and steps."""
    import torch
    from transformers import TrainerCallback

    policy, prompts = tiny_policy_dir

    class Grads(TrainerCallback):
        def __init__(self) -> None:
            self.grads: list[torch.Tensor] = []
            self.rows: list[int] = []

        def on_pre_optimizer_step(self, args, state, control, model=None, **_):
            self.grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone())

    def uneven(completions, **_):  # a reward spread inside each group: the gradient is not zero
        return [float(len(completion_text(c)) % 3) for c in completions]

    def train(parts: int) -> tuple[dict, Grads]:
        grads = Grads()
        cfg = TrainConfig(num_generations=2, max_completion_length=4, max_steps=2, steps_per_generation=2,
                          micro_batches=parts, loss_type=loss_type, temperature=1.0)
        run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / f"rl{parts}", prompts_per_step=2,
                         seed=0, extra_rewards=[uneven], callbacks=[grads])
        return run, grads

    (whole, g1), (split, g2) = train(1), train(2)
    assert split["steps"] == whole["steps"] == 2
    assert split["order"] == whole["order"] and split["order_steps"] == whole["order_steps"]
    assert len(g1.grads) == len(g2.grads) == 2 and float(g1.grads[0].abs().sum()) > 0
    for a, b in zip(g1.grads, g2.grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_changes_memory_not_the_update(tiny_policy_dir, tmp_path, one_torch_thread,
                                                                recwarn):
    """train.activation_checkpointing reaches the trainer (the model recomputes its activations in the backward
    pass only when on) and is result-neutral, as saerl.stages.RESULT_NEUTRAL declares: the same rollouts, the same
    per-step metrics and the same weights bit for bit. trl's calls of transformers' old gradient-checkpointing
    names warn nothing (a FutureWarning per call a user cannot act on)."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    policy, prompts = tiny_policy_dir

    class Seen(TrainerCallback):
        def __init__(self) -> None:
            self.on: list[bool] = []

        def on_pre_optimizer_step(self, args, state, control, model=None, **_):
            self.on.append(bool(model.is_activation_checkpointing))

    def uneven(completions, **_):  # a reward spread inside each group: the gradient is not zero
        return [float(len(completion_text(c)) % 3) for c in completions]

    def train(on: bool) -> tuple[dict, list[bool], dict[str, torch.Tensor]]:
        seen = Seen()
        cfg = TrainConfig(num_generations=2, max_completion_length=4, max_steps=2, activation_checkpointing=on)
        run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / f"rl{on}", prompts_per_step=2,
                         seed=0, extra_rewards=[uneven], callbacks=[seen])
        return run, seen.on, load_file(tmp_path / f"rl{on}" / "model.safetensors")

    (on, seen_on, w_on), (off, seen_off, w_off) = train(True), train(False)
    assert seen_on == [True, True] and seen_off == [False, False]
    clock = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}
    assert on["order"] == off["order"]
    assert [{k: v for k, v in h.items() if k not in clock} for h in on["log"]] == \
        [{k: v for k, v in h.items() if k not in clock} for h in off["log"]]
    assert any(not torch.equal(w_on[k], load_file(policy / "model.safetensors")[k]) for k in w_on), "it trained"
    assert all(torch.equal(w_on[k], w_off[k]) for k in w_on)
    assert not [w for w in recwarn if "gradient_checkpointing" in str(w.message)]


def test_overlong_shaping_and_filtering_reach_the_trainer(tiny_policy_dir, tmp_path, one_torch_thread):
    """With train.overlong_buffer the trainer logs the soft overlong punishment (every rollout cut at the limit
    scores -1); with train.mask_truncated_completions a step whose rollouts were all cut off leaves the weights as
    they were (no loss tokens), while the same run without it trains."""
    import torch
    from safetensors.torch import load_file

    policy, prompts = tiny_policy_dir
    start = load_file(policy / "model.safetensors")

    def uneven(completions, **_):  # a reward spread inside each group: the gradient is not zero
        return [float(len(completion_text(c)) % 3) for c in completions]

    def train(mask: bool) -> tuple[dict, dict[str, torch.Tensor]]:
        cfg = TrainConfig(num_generations=2, max_completion_length=2, overlong_buffer=1, max_steps=1,
                          mask_truncated_completions=mask)
        # on the CPU: the premise (all 4 rollouts of 2 tokens cut at the limit) is what seed 0 samples there; a GPU
        # draws other tokens, and one that ends in EOS within 2 tokens is not cut
        run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / f"rl{mask}", prompts_per_step=2,
                         seed=0, extra_rewards=[uneven], device="cpu")
        return run, load_file(tmp_path / f"rl{mask}" / "model.safetensors")

    (masked, w_masked), (kept, w_kept) = train(True), train(False)
    for run in (masked, kept):
        step = run["log"][0]
        assert step["completions/clipped_ratio"] == 1.0  # every rollout hit the limit: the premise of the test
        assert step["rewards/soft_overlong_punishment_reward/mean"] == -1.0
    assert all(torch.equal(w_masked[k], start[k]) for k in start)
    assert any(not torch.equal(w_kept[k], start[k]) for k in start)


def test_learning_rate_warms_up_then_stays(tiny_policy_dir, tmp_path, one_torch_thread):
    """train.warmup_steps: the learning rate rises linearly from 0 over that many optimizer steps (the first step
    uses 0, as transformers' schedule starts), then stays at train.learning_rate; without warmup it is constant."""
    policy, prompts = tiny_policy_dir

    def rates(warmup: int) -> list[float]:
        cfg = TrainConfig(num_generations=2, max_completion_length=4, max_steps=4, warmup_steps=warmup, learning_rate=1e-4)
        run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / f"w{warmup}", prompts_per_step=2)
        assert not any("epoch" in h for h in run["log"]), "transformers' epoch counts the stream, not the pool"
        return [h["learning_rate"] for h in run["log"]]

    assert rates(2) == pytest.approx([0.0, 5e-5, 1e-4, 1e-4])  # the rate each step used (transformers' schedule)
    assert rates(0) == pytest.approx([1e-4] * 4)
    assert grpo_config(TrainConfig(), Path("/tmp/x"), 2, 1, 0).lr_scheduler_type == "constant"


# what a user's shell may export for other trainers: accelerate's mixed precision, then a torchrun rank left behind
SHELL_PRECISION = {"ACCELERATE_MIXED_PRECISION": "bf16"}
SHELL_TRAINER_ENV = {**SHELL_PRECISION, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}


def set_shell(monkeypatch, env: dict[str, str]) -> dict[str, str]:
    """`env` in the environment (no MASTER_ADDR: a stale rank then failed at once, not waiting for rank 1), and
    saerl.train_env's warnings forgotten, so a test's warning is its own. in: the patcher, the variables; out: them."""
    from saerl import train_env

    monkeypatch.setattr(train_env._Process, "warned", set())
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_the_config_not_the_shell_sets_the_training_precision(monkeypatch):
    """ACCELERATE_MIXED_PRECISION=bf16 in the shell ran a train stage configured in float32 under bf16 autocast,
    under the same key: transformers' TrainingArguments starts from it where bf16 and fp16 are off. The config alone
    decides (float32 on a CPU), and the process's environment is as it was after."""
    shell = set_shell(monkeypatch, SHELL_PRECISION)
    args = grpo_config(TrainConfig(bf16=True), Path("/tmp/x"), 2, 1, 0, device="cpu")
    assert (args.mixed_precision, args.bf16, args.fp16) == ("no", False, False)
    assert {k: os.environ.get(k) for k in shell} == shell


def test_a_plain_run_ignores_a_stale_torchrun_rank(monkeypatch):
    """WORLD_SIZE=2 RANK=1 LOCAL_RANK=0 left in the shell (or MPI's OMPI_COMM_WORLD_SIZE): GRPOConfig took the
    process for a rank of 2 and failed for want of MASTER_ADDR (with it, it waited for ever for the others), and
    world_size() halved each process's share of a step. A process saerl's torchrun did not start trains alone, as
    train.num_processes=1 says; a rank it started reads its own (saerl.distributed.main marks it)."""
    from saerl import train_env
    from saerl.rl import process_rank, world_size

    set_shell(monkeypatch, {**SHELL_TRAINER_ENV, "RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"})
    assert (world_size(), process_rank()) == (1, 0)
    args = grpo_config(TrainConfig(num_generations=4, micro_batches=2), Path("/tmp/x"), 4, 2, 0, device="cpu")
    assert args.world_size == 1 and args.per_device_train_batch_size == 8  # 4 prompts x 4 rollouts in 2 passes
    monkeypatch.setattr(train_env._Process, "saerl_rank", True)
    assert (world_size(), process_rank()) == (2, 1)


@pytest.mark.parametrize("shell", [SHELL_PRECISION, SHELL_TRAINER_ENV], ids=["precision", "and-a-stale-rank"])
def test_a_run_trains_as_configured_whatever_the_shell_says_of_other_trainers(tiny_policy_dir, tmp_path,
                                                                              one_torch_thread, monkeypatch,
                                                                              caplog, shell):
    """A whole run under ACCELERATE_MIXED_PRECISION=bf16 trained a float32 config under bf16 autocast (accelerate
    wraps the policy's forward); with a stale WORLD_SIZE / RANK / LOCAL_RANK too it failed at train (accelerate's
    MASTER_ADDR error: exit 1, 'the same command resumes'). It now trains in one process without autocast, says
    once which variables it ignored, and leaves the environment as it found it."""
    from transformers import TrainerCallback

    policy, prompts = tiny_policy_dir
    set_shell(monkeypatch, shell)
    seen = {}

    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen.update(precision=args.mixed_precision, processes=args.world_size,
                        autocast=hasattr(model, "_original_forward"), env=[k for k in shell if k in os.environ])

    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=1)
    with caplog.at_level(logging.WARNING, logger="saerl"):
        for out in ("a", "b"):  # a stage's second run warns no more
            run = train_grpo(policy, prompts, None, cfg, tmp_path / out, prompts_per_step=2, seed=0, device="cpu",
                             progress=False, callbacks=[Look()])
            assert run["steps"] == 1
    assert seen == {"precision": "no", "processes": 1, "autocast": False, "env": []}
    warned = [r.getMessage() for r in caplog.records if r.name == "saerl.train_env"]
    assert len(warned) == 1 and f"training ignores {', '.join(sorted(shell))} from" in warned[0], warned
    assert {k: os.environ.get(k) for k in shell} == shell


def test_micro_batches_must_divide_a_steps_completions():
    """grpo_config splits a step's prompts x num_generations completions into train.micro_batches passes of
    trl's per-device batch, and refuses a split that leaves a remainder, naming the setting."""
    cfg = TrainConfig(num_generations=4, micro_batches=4, steps_per_generation=2)
    args = grpo_config(cfg, Path("/tmp/unused"), prompts_per_step=3, max_steps=5, seed=0, device="cpu")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (3, 4)
    assert (args.steps_per_generation, args.generation_batch_size) == (8, 24)
    with pytest.raises(ValueError, match="train.micro_batches=8 does not divide a step's 12 completions"):
        grpo_config(cfg.model_copy(update={"micro_batches": 8}), Path("/tmp/unused"), prompts_per_step=3, max_steps=5,
                    seed=0, device="cpu")


def test_vllm_rollouts_stop_where_the_policy_stops():
    """trl builds vLLM from the checkpoint's files, whose generation_config may name EOS alone (base Qwen2.5-Math):
    with train.use_vllm the policy's stop ids (EOS and the chat template's turn end) go to vLLM's sampling params;
    without vLLM, trl's generate reads them from the policy's generation_config and nothing is added."""
    on = grpo_config(TrainConfig(use_vllm=True), Path("/tmp/unused"), 2, 1, 0, device="cpu", stop_token_ids=[2, 7])
    assert on.generation_kwargs == {"stop_token_ids": [2, 7]}
    off = grpo_config(TrainConfig(), Path("/tmp/unused"), 2, 1, 0, device="cpu", stop_token_ids=[2, 7])
    assert not off.generation_kwargs


@pytest.mark.parametrize("progress", [True, False])
def test_training_prints_no_metric_dict_per_step(tiny_policy_dir, tmp_path, one_torch_thread, capsys, progress):
    """transformers printed every step's whole log dict (with the bar, and without it through PrinterCallback):
    a hundred lines a run in the demo. The bar (runtime.progress) shows the step's reward instead, and names the run
    (the arms' and seeds' bars were alike); the metrics still reach the run's log."""
    policy, prompts = tiny_policy_dir
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=2)
    run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0,
                     progress=progress, label="saerl:0")
    out = capsys.readouterr()
    assert "{'loss'" not in out.out + out.err and "'reward'" not in out.out + out.err
    assert ("reward=" in out.err) is progress
    assert ("train saerl:0: 100%" in out.err) is progress, out.err
    assert [h["step"] for h in run["log"] if "reward" in h] == [1, 2]


def test_a_kill_while_saving_keeps_the_previous_checkpoint_with_one_kept(tiny_policy_dir, tmp_path, monkeypatch,
                                                                        one_torch_thread):
    """train.keep_checkpoints=1: a run killed after the trainer wrote checkpoint-4 but before our files landed in it
    still resumes from checkpoint-2 (the previous complete one is removed only once the new one is complete)."""
    from saerl import rl

    policy, prompts = tiny_policy_dir
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=4, save_every=2, keep_checkpoints=1)
    write = rl._write_json

    def killed_at_4(path, obj):
        if path.parent.name == "checkpoint-4":
            raise KeyboardInterrupt
        write(path, obj)

    def train():
        return train_grpo(policy, prompts, None, cfg, tmp_path / "policy", prompts_per_step=2, seed=0,
                          checkpoint_dir=tmp_path / "ck")

    monkeypatch.setattr(rl, "_write_json", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        train()
    assert rl.last_checkpoint(tmp_path / "ck", 1, 4) == tmp_path / "ck" / "checkpoint-2"
    monkeypatch.setattr(rl, "_write_json", write)
    resumed = train()
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert [c.name for c in (tmp_path / "ck").glob("checkpoint-*")] == ["checkpoint-4"]  # one kept, once complete


def test_checkpoints_are_pruned_only_once_the_newest_is_complete(tmp_path):
    """The trainer prunes nothing (it would before our files land); CurveCheckpoint keeps the newest
    train.keep_checkpoints complete ones once the new one is complete, and drops those a kill left half-written."""
    from types import SimpleNamespace

    from saerl.rl import CURVE_FILE, CurveCheckpoint, EvalCallback, last_checkpoint

    assert grpo_config(TrainConfig(save_every=2, keep_checkpoints=1), tmp_path, 2, 4, 0).save_total_limit is None
    for step in (2, 4, 6, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / CURVE_FILE).write_text("{}")  # 6: half-written by a kill; 8: saving now
    saving = CurveCheckpoint(EvalCallback({}, None, 1, 1, 1), tmp_path, keep=2)

    def killed():
        raise KeyboardInterrupt

    saving.states["extra.json"] = killed
    with pytest.raises(KeyboardInterrupt):
        saving.on_save(None, SimpleNamespace(global_step=8, is_world_process_zero=True), None)
    assert sorted(c.name for c in tmp_path.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in (2, 4, 6, 8)]
    saving.states["extra.json"] = dict
    saving.on_save(None, SimpleNamespace(global_step=8, is_world_process_zero=True), None)
    assert sorted(c.name for c in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-8"


@pytest.mark.parametrize(("eval_timeout_s", "expected"), [(None, 2.5), (30.0, 30.0)])
def test_the_curve_judges_with_the_timeout_it_is_given(tiny_policy_dir, tmp_path, monkeypatch, eval_timeout_s,
                                                       expected):
    """train_grpo hands the held-out curve eval_timeout_s (eval.verify_timeout_s, as the final evaluation judges),
    and train.verify_timeout_s (the reward's) only when none is given."""
    from saerl import rl

    policy, prompts = tiny_policy_dir
    seen = {}

    class Stop(Exception):
        pass

    def record(sets, tok, every, max_new_tokens, batch, timeout_s=5.0, **_):  # label, sink
        seen["timeout_s"] = timeout_s
        raise Stop

    monkeypatch.setattr(rl, "EvalCallback", record)
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=1, verify_timeout_s=2.5)
    with pytest.raises(Stop):
        train_grpo(policy, prompts, None, cfg, tmp_path / "rl", prompts_per_step=2, eval_sets={"h": prompts},
                   eval_timeout_s=eval_timeout_s)
    assert seen["timeout_s"] == expected


def test_the_kl_reference_is_the_pinned_policy_from_safetensors(tiny_policy_dir, tmp_path, monkeypatch):
    """train.beta > 0: trl builds the KL reference model from the policy's name itself, with GRPOConfig's
    model_init_kwargs; it gets the pinned model.revision, safetensors only and model.trust_remote_code, as the
    policy did (it had loaded the hub's newest revision, and any pickled checkpoint there)."""
    from trl.trainer import grpo_trainer

    from saerl.config import ModelConfig

    policy, prompts = tiny_policy_dir
    seen = {}

    class Stop(Exception):
        pass

    def record(model_id, **kwargs):
        seen.update(kwargs, model_id=model_id)
        raise Stop

    monkeypatch.setattr(grpo_trainer, "create_model_from_path", record)
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=1, beta=0.1)
    with pytest.raises(Stop):
        train_grpo(policy, prompts, None, cfg, tmp_path / "rl", prompts_per_step=2,
                   model_cfg=ModelConfig(revision="0123abc"))
    assert seen["model_id"] == str(policy)
    assert (seen["revision"], seen["use_safetensors"], seen["trust_remote_code"]) == ("0123abc", True, False)
    assert seen["use_kernels"] is False  # no layer code from the hub (model.hub_kernels is off)


def test_shuffle_within_steps_keeps_each_steps_rows_together():
    import torch

    from saerl.rl import shuffle_within_steps

    batch = {"x": torch.arange(8), "names": [f"r{i}" for i in range(8)], "n": torch.tensor(8), "none": None}
    out = shuffle_within_steps(batch, 2)
    assert sorted(out["x"][:4].tolist()) == [0, 1, 2, 3] and sorted(out["x"][4:].tolist()) == [4, 5, 6, 7]
    assert out["names"] == [f"r{i}" for i in out["x"].tolist()]  # every field permuted alike
    assert int(out["n"]) == 8 and out["none"] is None


def test_each_step_of_a_generation_batch_trains_on_its_own_batch_of_the_order(tiny_policy_dir, tmp_path,
                                                                              one_torch_thread):
    """steps_per_generation 2 with 2 micro-batches: trl generates for two steps at once and shuffled the rows of
    both together before splitting them into steps, so each step trained on half-groups of both batches of the
    order; now each step trains on its own batch's groups, whole, whatever the micro-batch."""
    from datasets import Dataset

    from saerl.rl import _trainer_class

    policy, prompts = tiny_policy_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(policy), AutoModelForCausalLM.from_pretrained(policy)
    seen: dict[int, list[str]] = {}
    tokens: dict[int, list[tuple[int, int]]] = {}  # per step: (its micro-batch's loss tokens, num_items_in_batch)

    class Recording(_trainer_class()):
        def _compute_loss(self, model, inputs):
            step = self.state.global_step + 1
            for ids, mask in zip(inputs["prompt_ids"], inputs["prompt_mask"], strict=True):
                text = tok.decode(ids[mask.bool()])
                seen.setdefault(step, []).append(
                    next(i for i, p in zip(prompts["id"], prompts["prompt"], strict=True) if p in text))
            tokens.setdefault(step, []).append((int(inputs["completion_mask"].sum()), int(inputs["num_items_in_batch"])))
            return super()._compute_loss(model, inputs)

    def flat(completions, **_):
        return [0.0] * len(completions)

    steps, per_step = 4, 2
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=steps, steps_per_generation=2,
                      micro_batches=2)
    args = grpo_config(cfg, tmp_path, per_step, steps, seed=0)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts["prompt"]],
                              "id": prompts["id"].to_list(), "answer": prompts["answer"].to_list()})
    args.reward_weights = [1.0]
    Recording(model=model, reward_funcs=[flat], args=args, train_dataset=data, processing_class=tok).train()
    ids = prompts["id"].to_list()
    assert {s: sorted(v) for s, v in seen.items()} == {
        s: sorted(ids[(s - 1) * per_step: s * per_step] * 2) for s in range(1, steps + 1)}
    # a token-level loss divides by num_items_in_batch / steps_per_generation: each step's own token count
    for parts in tokens.values():
        assert {n for _, n in parts} == {2 * sum(t for t, _ in parts)}


@pytest.mark.parametrize(("overrides", "warned"), [({"loss_type": "grpo"}, True), ({"loss_type": "dr_grpo"}, True),
                                                   ({"loss_type": "bnpo"}, False), ({"algorithm": "dapo"}, False)])
def test_overlong_filtering_under_a_mean_over_rollouts_is_warned(tmp_path, caplog, overrides, warned):
    cfg = TrainConfig(mask_truncated_completions=True, **overrides)
    with caplog.at_level("WARNING", logger="saerl.rl"):
        grpo_config(cfg, tmp_path, 2, 4, seed=0)
    assert ("mask_truncated_completions with loss_type" in caplog.text) == warned


def test_the_steps_aware_shuffle_follows_its_own_thread_only():
    """trl's shuffle is wrapped once (module-level); a trainer's per-step setting applied to every trainer in the
    process while it was swapped in: another thread's trainer, even one generating for a single step, got it."""
    import threading

    import torch

    from saerl.rl import _SHUFFLE_STEPS, _steps_aware_shuffle

    shuffle = _steps_aware_shuffle(lambda batch: "trl's")
    batch = {"x": torch.arange(8)}
    token = _SHUFFLE_STEPS.set(2)
    try:
        other: list[object] = []
        thread = threading.Thread(target=lambda: other.append(shuffle(batch)))
        thread.start()
        thread.join()
        mine = shuffle(batch)
    finally:
        _SHUFFLE_STEPS.reset(token)
    assert other == ["trl's"] and sorted(mine["x"][:4].tolist()) == [0, 1, 2, 3]
    assert shuffle(batch) == "trl's"


@pytest.fixture
def fresh_accelerator_state():
    """accelerate's AcceleratorState is one per process: a training run earlier in it (any train_grpo test) left it
    without mixed precision, and Accelerator(mixed_precision="bf16") then refused to start. Cleared before the test,
    and after it, so that no bf16 state is left for the next one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_the_in_training_evaluation_reads_the_weights_in_their_own_precision_as_heldout_does(one_torch_thread,
                                                                                             fresh_accelerator_state):
    """With train.bf16 (a GPU) accelerate wraps the policy's forward in bf16 autocast on the model itself, and the
    learning curve generated through it, while the heldout stage reads the same weights in float32: one policy
    measured at two precisions (63 of 300 greedy completions differed on the testbed LM). The callback's
    generation runs the model's own forward; training's autocast is back after it."""
    import torch
    from accelerate import Accelerator
    from tiny import tiny_model, tiny_tokenizer

    from saerl.rl import EvalCallback

    tok = tiny_tokenizer()
    model = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(tiny_model(tok, seed=1))
    seen: list[torch.dtype] = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    model(torch.tensor([[1, 2, 3]]))
    assert seen == [torch.bfloat16], "the trainer's wrapping (the case this is about)"
    seen.clear()
    evals = EvalCallback({"h": pl.DataFrame({"id": ["a"], "prompt": ["1 + 1 ?"], "answer": ["2"]})}, tok, 1, 3, 4)
    evals._run(model, 0)
    assert seen and set(seen) == {torch.float32}
    seen.clear()
    model(torch.tensor([[1, 2, 3]]))
    assert seen == [torch.bfloat16], "training's autocast restored"


H = HealthConfig()  # the default thresholds


def healthy_step(step: int, **over: float) -> dict[str, float]:
    """One step's row of trl's log as a healthy run logs it, with `over` replacing some metrics."""
    return {"step": step, "loss": 0.01, "grad_norm": 0.3, "entropy": 1.2, "completions/clipped_ratio": 0.1,
            "frac_reward_zero_std": 0.25, "reward": 0.4, "kl": 0.02, **over}


def test_grpo_config_logs_a_non_finite_loss_as_it_is():
    """transformers' logging_nan_inf_filter replaced a nan/inf step loss by the running mean before logging it, so
    log.parquet and MLflow could never show one (the audit's NaN run logged loss 0.0): it is off."""
    assert grpo_config(TrainConfig(), Path("/tmp/unused"), 2, 1, 0, device="cpu").logging_nan_inf_filter is False


def test_a_healthy_run_earns_no_health_note():
    assert health_notes([healthy_step(s) for s in range(1, 9)], TrainConfig(beta=0.1), H, 64, 0) == []
    assert health_notes([], TrainConfig(), H, 0, 0) == []


def test_health_notes_name_each_failure_and_its_first_step():
    """Each failure the RL-health audit provoked ended with notes [] (exit 0, no warning): each earns a note."""
    cfg = TrainConfig(learning_rate=1e-3)
    nan = [healthy_step(1), healthy_step(2, grad_norm=float("nan")), healthy_step(3, loss=float("inf"))]
    [note] = health_notes(nan, cfg, H)
    assert "grad_norm was nan at step 2" in note and "lower train.learning_rate (now 0.001)" in note
    collapse = [healthy_step(s, entropy=e) for s, e in enumerate([4.4, 2.0, 0.5, 0.1, 0.01, 0.0, 0.0, 0.0], 1)]
    [note] = health_notes(collapse, cfg, H)  # the last quarter: steps 7-8
    assert "entropy fell from 4.4 (step 1) to 0 nats/token over the last 2 steps" in note
    assert health_notes(collapse, cfg, HealthConfig(entropy_floor=0.0)) == []  # 0 = off
    assert len(health_notes(collapse, cfg, HealthConfig(entropy_floor=0.02, tail_share=1 / 8))) == 1  # step 8 only
    cut = [healthy_step(s, **{"completions/clipped_ratio": 1.0}) for s in range(1, 4)]
    [note] = health_notes(cut, cfg.model_copy(update={"max_completion_length": 12}), H)
    assert "100% of rollouts hit train.max_completion_length=12" in note
    flat = [healthy_step(s, frac_reward_zero_std=1.0, reward=0.0) for s in range(1, 4)] + [healthy_step(4)]
    [note] = health_notes(flat, cfg, H)
    assert "no group had a reward spread on 3 of 4 steps" in note and "mean reward 0.1" in note
    assert health_notes(flat[2:], cfg, H) == []  # 1 of 2 steps: not over the default half
    [note] = health_notes([healthy_step(1)], cfg, H, reward_checks=24, verifier_failures=24)
    assert "24 of 24 reward checks (100%) timed out or erred" in note and "train.verify_timeout_s" in note
    assert health_notes([healthy_step(1)], cfg, H, reward_checks=1000, verifier_failures=10) == []  # 1%: at the ceiling
    drift = [healthy_step(s, kl=k) for s, k in enumerate([0.0, 0.7, 1.9, 2.5], 1)]
    [note] = health_notes(drift, cfg.model_copy(update={"beta": 0.05}), H)
    assert "exceeded health.kl_bound=1 nats/token on 2 of 4 steps (first step 3: 1.9; max 2.5)" in note
    assert health_notes(drift, cfg, H) == []  # beta 0: trl measures no KL, and none is judged


def test_reward_earned_from_the_format_alone_is_noted():
    """A policy can raise its reward by writing '#### X' with the format reward on while staying wrong: over the
    last quarter of the steps (health.tail_share) the format reward's mean above correctness's by more than
    health.format_only_share earns a note naming both means and the fix."""
    cfg = TrainConfig(format_reward=0.2)

    def step(s: int, fmt: float, right: float) -> dict[str, float]:
        return healthy_step(s, **{"rewards/format_reward/mean": fmt, "rewards/correctness/mean": right})

    hacked = [step(s, f, 0.05) for s, f in enumerate([0.1, 0.3, 0.6, 0.8, 0.9, 0.95, 1.0, 1.0], 1)]
    [note] = health_notes(hacked, cfg, H)
    assert "over the last 2 steps the format reward averaged 1 and correctness 0.05: 95% of rollouts" in note
    assert "health.format_only_share=0.5" in note and "lower train.format_reward (now 0.2) or set it to 0" in note
    assert health_notes(hacked, cfg.model_copy(update={"format_reward": 0.0}), H) == []  # off: no format reward
    assert health_notes(hacked, cfg, HealthConfig(format_only_share=0.96)) == []
    learning = [step(s, 1.0, c) for s, c in enumerate([0.1, 0.2, 0.4, 0.6], 1)]  # formatted and getting right
    assert health_notes(learning, cfg, H) == []


def test_dapo_running_out_of_rounds_is_noted():
    """DAPO's dynamic sampling that used every extra round and still had groups without a reward spread only logged
    a warning (once): the train manifest notes on how many generation batches it happened, with the fix."""
    cfg = TrainConfig(algorithm="dapo", dynamic_sampling_max_rounds=2)
    rows = [healthy_step(s, **{"dynamic_sampling/filled_groups": f, "dynamic_sampling/skipped_updates": k})
            for s, (f, k) in enumerate([(0, 0), (3, 0), (0, 0), (4, 1)], 1)]
    [note] = health_notes(rows, cfg, H)
    assert ("ran out of its train.dynamic_sampling_max_rounds=2 extra rounds on 2 of 4 generation batches, "
            "leaving 7 groups without a reward spread") in note
    assert "1 optimizer steps made no update (no group to learn from)" in note
    assert "raise train.dynamic_sampling_max_rounds" in note
    never = [healthy_step(s, **{"dynamic_sampling/filled_groups": 0.0}) for s in (1, 2)]
    assert health_notes(never, cfg, H) == []


WRECK = TrainConfig(learning_rate=1e-2, max_completion_length=64)  # the probe's: GRPO at 200x the default rate


def test_a_reward_collapse_is_noted_after_the_reward_was_there():
    """A learning rate too high wrecks a policy while every number stays finite, and no note said so: the mean reward
    over the last quarter of the steps (health.tail_share) below the first quarter's by more than
    health.reward_drop_share of it, after an early mean of at least health.reward_floor, earns a note naming both
    means, their steps and the learning-rate fix."""
    wreck = [healthy_step(s, reward=r) for s, r in enumerate([0.5, 0.6, 0.3, 0.1, 0.0, 0.0, 0.02, 0.0], 1)]
    [note] = health_notes(wreck, WRECK, H)
    assert ("the mean reward fell from 0.55 over the first 2 steps (steps 1-2) to 0.01 over the last 2 (steps 7-8), "
            "98% of it (over health.reward_drop_share=0.9)") in note
    assert "lower train.learning_rate (now 0.01, e.g. 0.001) or add train.warmup_steps" in note
    assert health_notes(wreck, WRECK, HealthConfig(reward_drop_share=0.0)) == []  # 0 = off
    assert health_notes(wreck, WRECK, HealthConfig(reward_drop_share=0.99)) == []
    assert health_notes(wreck, WRECK, HealthConfig(reward_floor=0.6)) == []  # little to lose: not a collapse
    curriculum = [healthy_step(s, reward=r) for s, r in enumerate([0.16, 0.15, 0.1, 0.08, 0.05, 0.04, 0.03, 0.02], 1)]
    assert health_notes(curriculum, WRECK, H) == []  # 85% down, as the demo's saerl arm on ever harder prompts
    never = [healthy_step(s, reward=r) for s, r in enumerate([0.02, 0.0, 0.0, 0.0], 1)]
    assert health_notes(never, WRECK, H) == []  # under the floor: nothing was learned to lose


def test_held_out_accuracy_lost_in_training_is_noted():
    """The probe's wreck (learning rate 1e-2) took the in-training held-out accuracy from 0.1 at step 0 to 0 by step
    12 with no note about it (only truncation and no reward spread, whose fixes point elsewhere): a set's last
    point below its step-0 one by more than health.eval_drop earns a note with both points and the first step
    that was."""
    def curve(points: list[tuple[int, float]], name: str = "heldout") -> list[dict]:
        return [{"step": s, "set": name, "greedy": g, "n": 100} for s, g in points]

    wreck = curve([(0, 0.1), (12, 0.0), (24, 0.0), (36, 0.0)]) + curve([(0, 0.5), (12, 0.49), (36, 0.47)], "math")
    rows = [healthy_step(s) for s in range(1, 37)]
    [note] = health_notes(rows, WRECK, H, curve=wreck)  # 'math' lost 3 points: within the default 5
    assert ("held-out set 'heldout': in-training greedy accuracy fell from 0.1 at step 0 to 0 at step 36 (100 "
            "problems), 10.0 points (over health.eval_drop=0.05; first more than that below at step 12: 0)") in note
    assert "lower train.learning_rate (now 0.01, e.g. 0.001)" in note
    assert len(health_notes(rows, WRECK, HealthConfig(eval_drop=0.02), curve=wreck)) == 2
    assert health_notes(rows, WRECK, HealthConfig(eval_drop=0.0), curve=wreck) == []  # 0 = off
    demo = curve([(0, 0.16), (25, 0.135), (50, 0.115), (75, 0.125), (100, 0.125)])  # the demo's worst: 3.5 points
    assert health_notes(rows, WRECK, H, curve=demo) == []
    assert health_notes(rows, WRECK, H, curve=curve([(0, 0.3), (0, 0.3)])) == []  # only step 0: nothing trained
    assert health_notes(rows, WRECK, H, curve=curve([(0, 0.15), (10, 0.1)])) == []  # 5 points: not more than 5
    # 0.56 - 0.51 is 0.050000000000000044 in floats: exactly 5 points, not more, at the end and on the way
    assert health_notes(rows, WRECK, H, curve=curve([(0, 0.56), (10, 0.52), (20, 0.51)])) == []
    [note] = health_notes(rows, WRECK, H, curve=curve([(0, 0.56), (10, 0.51), (20, 0.50)]))
    assert "fell from 0.56 at step 0 to 0.5 at step 20 (100 problems), 6.0 points (over health.eval_drop=0.05; first " \
        "more than that below at step 20: 0.5)" in note, note


def test_grad_norm_spikes_are_noted_against_the_runs_median():
    """A step whose gradient norm is many times the run's usual was logged and nothing said: the steps above
    health.grad_spike_factor times the median over the steps that had a gradient earn a note with the first and the
    largest, how many were clipped, and the fix. Steps without a reward spread (grad_norm 0) are not the run's
    usual."""
    norms = [0.3, 0.0, 0.25, 0.35, 4.0, 0.3, 0.0, 12.0, 0.28, 0.3]
    spiky = [healthy_step(s, grad_norm=g) for s, g in enumerate(norms, 1)]
    [note] = health_notes(spiky, WRECK, H)
    assert ("grad_norm was above health.grad_spike_factor=10 times the run's median (0.3) on 2 of 8 steps with a "
            "gradient (first step 5: 4; max 12 at step 8; 2 clipped to train.max_grad_norm=1)") in note
    assert "lower train.max_grad_norm or train.learning_rate (now 0.01, e.g. 0.001) or add train.warmup_steps" in note
    assert health_notes(spiky, WRECK, HealthConfig(grad_spike_factor=0.0)) == []  # 0 = off
    assert health_notes(spiky, WRECK, HealthConfig(grad_spike_factor=50.0)) == []
    demo = [healthy_step(s, grad_norm=g) for s, g in enumerate([0.3, 0.35, 1.25, 0.28, 0.31], 1)]  # demo's 4x
    assert health_notes(demo, WRECK, H) == []
    assert health_notes([healthy_step(s, grad_norm=0.0) for s in (1, 2)], WRECK, H) == []  # no gradient at all


def test_a_completion_length_blow_up_or_collapse_is_noted():
    """The probe's wreck drove the answers from 25 tokens to the 64-token limit; the mean completion length over the
    last quarter beyond health.length_factor times the first quarter's (or below 1/factor of it) earns a note."""
    def step(s: int, length: float, cut: float = 0.0) -> dict[str, float]:
        return healthy_step(s, **{"completions/mean_length": length, "completions/clipped_ratio": cut})

    blow_up = [step(s, n, c) for s, (n, c) in enumerate([(20, 0), (22, 0), (30, 0.1), (45, 0.4), (55, 0.7),
                                                         (60, 0.8), (63, 0.9), (64, 1.0)], 1)]
    notes = health_notes(blow_up, WRECK, H)
    [note] = [n for n in notes if "completion length" in n]
    assert ("the mean completion length went from 21 tokens over the first 2 steps (steps 1-2) to 63.5 over the last "
            "2 (steps 7-8), 3x (beyond health.length_factor=2): the answers blew up") in note
    assert "95% cut off at train.max_completion_length=64 over those steps" in note
    assert "lower train.learning_rate (now 0.01" in note
    collapse = [step(s, n) for s, n in enumerate([40, 38, 30, 20, 10, 5, 3, 2], 1)]
    [note] = health_notes(collapse, WRECK, H)
    assert "from 39 tokens over the first 2 steps (steps 1-2) to 2.5 over the last 2" in note
    assert "the answers collapsed" in note
    assert health_notes(collapse, WRECK, HealthConfig(length_factor=0.0)) == []  # 0 = off
    assert health_notes(collapse, WRECK, HealthConfig(length_factor=20.0)) == []
    curriculum = [step(s, n) for s, n in enumerate([15, 15.6, 18, 20, 22, 24, 25, 25.2], 1)]  # the demo's 1.6x
    assert health_notes(curriculum, WRECK, H) == []


def test_truncation_that_grew_while_training_points_at_the_learning_rate_too():
    """The probe's wreck earned the truncation note, whose only fix was a longer limit, though 41% were cut off over
    its first quarter and 96% over its last: when the first steps were under health.truncated_share and the last
    over, the note says so and names the learning-rate fix as well; a run cut off from the start does not."""
    grew = [healthy_step(s, **{"completions/clipped_ratio": c}) for s, c in
            enumerate([0.1, 0.2, 0.5, 0.7, 0.9, 1.0, 1.0, 1.0], 1)]
    [note] = health_notes(grew, WRECK, H)
    assert "raise train.max_completion_length; or, since only 15% were cut off over the first steps and 100% " in note
    assert "lower train.learning_rate (now 0.01, e.g. 0.001)" in note
    always = [healthy_step(s, **{"completions/clipped_ratio": 0.9}) for s in range(1, 9)]
    [note] = health_notes(always, WRECK, H)
    assert note.endswith("raise train.max_completion_length")


@pytest.mark.parametrize("field", ["grad_spike_factor", "length_factor"])
def test_a_health_factor_at_or_below_one_is_refused(field):
    with pytest.raises(ValueError, match=rf"health.{field}=1 is a factor over the run's own level and must be above 1"):
        HealthConfig(**{field: 1.0})
    assert getattr(HealthConfig(**{field: 0.0}), field) == 0.0  # off


@pytest.fixture(scope="module")
def knowing_policy_dir(tmp_path_factory):
    """A saved tiny policy that answers its four prompts right (greedy), and those prompts."""
    from tiny import overfit, tiny_model, tiny_tokenizer

    pairs = [(f"what is {a} + {b} ?", f"#### {a + b}") for a, b in [(3, 4), (1, 1), (2, 5), (6, 2)]]
    root = tmp_path_factory.mktemp("knowing")
    tok = tiny_tokenizer()
    model = tiny_model(tok, "llama", seed=0, hidden=16)
    overfit(model, tok, pairs)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    prompts = pl.DataFrame({"id": [f"k{i}" for i in range(len(pairs))], "prompt": [p for p, _ in pairs],
                            "answer": [c.split()[-1] for _, c in pairs]})
    return root, prompts


def test_a_run_at_an_absurd_learning_rate_notes_the_held_out_accuracy_it_lost(knowing_policy_dir, tmp_path,
                                                                               one_torch_thread):
    """A real run: a policy that answers its held-out prompts right, two GRPO steps at learning rate 1 (finite, and
    ruinous), then greedy accuracy 0: train_grpo's notes (the train manifest's) name the loss and the fix. At the
    default rate the same run keeps its accuracy and earns no note."""
    policy, prompts = knowing_policy_dir

    def alternate(completions, **_):  # one rollout of each group rewarded, the other not: the gradient is not zero
        return [float(i % 2) for i in range(len(completions))]

    def train(rate: float) -> dict:
        cfg = TrainConfig(num_generations=2, max_completion_length=4, max_steps=2, eval_every=2, learning_rate=rate,
                          temperature=1.0)
        return train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / f"rl{rate:g}", prompts_per_step=2,
                          seed=0, extra_rewards=[alternate], eval_sets={"h": prompts})

    wrecked, sane = train(1.0), train(TrainConfig().learning_rate)
    assert [(r["step"], r["greedy"]) for r in wrecked["curve"]] == [(0, 1.0), (2, 0.0)], wrecked["curve"]
    assert all(math.isfinite(h["grad_norm"]) for h in wrecked["log"])  # every number finite: FiniteWeights let it be
    assert any("held-out set 'h': in-training greedy accuracy fell from 1 at step 0 to 0 at step 2 (4 problems)" in n
               and "lower train.learning_rate (now 1, e.g. 0.1)" in n for n in wrecked["notes"]), wrecked["notes"]
    assert [(r["step"], r["greedy"]) for r in sane["curve"]] == [(0, 1.0), (2, 1.0)] and sane["notes"] == []


def test_a_run_without_reward_spread_notes_it(tiny_policy_dir, tmp_path, one_torch_thread):
    """A run whose reward never differs within a group (the smoke config's: reward 0 everywhere) took no gradient
    from it; train_grpo's notes, which the train stage keeps in its manifest and logs as warnings, say so."""
    policy, prompts = tiny_policy_dir
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=2)
    run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert [h["frac_reward_zero_std"] for h in run["log"]] == [1.0, 1.0]  # the premise: the tiny LM never answers
    assert any("no group had a reward spread on 2 of 2 steps" in n for n in run["notes"]), run["notes"]


def test_a_dapo_run_that_runs_out_of_rounds_notes_it(tiny_policy_dir, tmp_path, one_torch_thread):
    """Under DAPO the same run (no reward spread anywhere) uses every extra round on every generation batch and
    trains on no group: train_grpo's notes, which reach the train manifest, say so."""
    policy, prompts = tiny_policy_dir
    cfg = TrainConfig(algorithm="dapo", num_generations=2, max_completion_length=3, max_steps=2,
                      dynamic_sampling_max_rounds=1)
    run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert [h["dynamic_sampling/filled_groups"] for h in run["log"]] == [2.0, 2.0]  # the premise
    assert any("rounds on 2 of 2 generation batches, leaving 4 groups" in n and "2 optimizer steps made no update"
               in n for n in run["notes"]), run["notes"]


def test_a_step_leaving_non_finite_weights_fails_the_run_and_saves_no_policy(tiny_policy_dir, tmp_path,
                                                                              one_torch_thread):
    """An overflow on a run's last step (here: a weight set to nan after the second optimizer step) published an
    all-NaN policy as a successful train artifact: the run now fails at that step, naming it and the fix, and
    saves nothing."""
    import torch
    from transformers import TrainerCallback

    policy, prompts = tiny_policy_dir

    class Overflow(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kw):
            if state.global_step == 1:  # the second optimizer step (global_step counts it after this event)
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("nan")

    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=2, learning_rate=1e-4)
    with pytest.raises(ValueError, match=r"not finite after optimizer step 2 \(learning rate 0.0001\).*not saving it.*"
                                         r"lower train.learning_rate \(e.g. 1e-05\)"):
        train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0,
                   callbacks=[Overflow()])
    assert not list((tmp_path / "rl").glob("*.safetensors"))


def test_a_step_sink_gets_each_step_and_evaluation_as_measured_and_progress_off_logs_lines(
        tiny_policy_dir, tmp_path, one_torch_thread, caplog):
    """Nothing of a training run left it before its end (MLflow got the whole history at once), and with
    runtime.progress off a log file said nothing from '[train:saerl:0] computing' to its end. Inside step_sink each
    step's metrics (as log.parquet holds them) and each in-training evaluation reach the sink as they are measured
    (the probe, at each step's end, sees the steps before it and this step's evaluation); each evaluation is an INFO
    line; and an INFO progress line follows the first and the last step (the run is shorter than PROGRESS_LOG_S)."""
    import logging

    from transformers import TrainerCallback

    from saerl.rl import STREAM_ONLY_METRICS, step_sink

    policy, prompts = tiny_policy_dir
    got: list[tuple[int, dict[str, float]]] = []
    seen: dict[int, list[tuple[int, str]]] = {}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            seen[state.global_step] = [(step, next(iter(v))) for step, v in got]

    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=3, eval_every=2)
    with caplog.at_level(logging.INFO, logger="saerl.rl"), step_sink(lambda step, values: got.append((step, values))):
        run = train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0,
                         eval_sets={"h": prompts.head(4)}, progress=False, label="saerl:0", callbacks=[Probe()])
    steps = [(s, v) for s, v in got if "eval/h/greedy" not in v]
    evals = [(s, v["eval/h/greedy"]) for s, v in got if "eval/h/greedy" in v]
    assert steps == [(row["step"], {k: float(v) for k, v in row.items() if k != "step" and k not in STREAM_ONLY_METRICS
                                    and v is not None}) for row in run["log"]]
    assert evals == [(r["step"], r["greedy"]) for r in run["curve"]] and [s for s, _ in evals] == [0, 2, 3]
    # at step 2's end: step 0's evaluation, step 1's metrics and step 2's evaluation (measured at its end, before its
    # log); at step 3's end step 2's metrics too; step 3's own come after its end (its log)
    assert [s for s, _ in seen[2]] == [0, 1, 2] and [s for s, _ in seen[3]] == [0, 1, 2, 2], seen
    lines = [r.getMessage() for r in caplog.records if r.name == "saerl.rl"]
    assert [ln for ln in lines if ln.startswith("train saerl:0 step ")] == [
        f"train saerl:0 step {r['step']}: h greedy {r['greedy']:.3f} (4 problems, {r['seconds']:.1f} s)"
        for r in run["curve"]]
    progress = [ln for ln in lines if ln.startswith("train saerl:0: step ")]
    assert [ln.split(",")[0] for ln in progress] == ["train saerl:0: step 1/3", "train saerl:0: step 3/3"], lines
    assert all(" s/step, ETA " in ln and ", reward " in ln for ln in progress)
    assert progress[-1].split("ETA ")[1].startswith("0 s")


def test_the_progress_line_comes_every_period_with_the_mean_reward_since_the_last(caplog):
    """ProgressLog on a clock it is given: a line after the first step, then once PROGRESS_LOG_S has passed, then
    after the last step; s/step since the last line, ETA from the mean step time, the mean reward since the last."""
    import logging
    from types import SimpleNamespace

    from saerl.rl import ProgressLog

    now = [1000.0]
    bar = ProgressLog("saerl:0", every_s=60.0, clock=lambda: now[0])
    state = SimpleNamespace(global_step=0, max_steps=10, log_history=[], is_world_process_zero=True)
    bar.on_train_begin(None, state, None)
    with caplog.at_level(logging.INFO, logger="saerl.rl"):
        for step in range(1, 11):
            now[0] += 20.0
            state.global_step = step
            state.log_history.append({"loss": 0.0, "reward": step / 10, "step": step})
            bar.on_log(None, state, None)
        state.log_history.append({"train_runtime": 200.0, "step": 10})  # transformers' summary: no line
        bar.on_log(None, state, None)
    assert [r.getMessage() for r in caplog.records] == [
        "train saerl:0: step 1/10, 20 s/step, ETA 3 m 00 s, reward 0.1",
        "train saerl:0: step 4/10, 20 s/step, ETA 2 m 00 s, reward 0.3",  # steps 2-4: 60 s since the last line
        "train saerl:0: step 7/10, 20 s/step, ETA 1 m 00 s, reward 0.6",
        "train saerl:0: step 10/10, 20 s/step, ETA 0 s, reward 0.9"]


def test_without_a_step_sink_no_live_callback_is_added(tiny_policy_dir, tmp_path, one_torch_thread, monkeypatch):
    """Outside step_sink (a run without tracking, a benchmark) the trainer gets no LiveMetrics callback."""
    import saerl.rl as rl

    made = []
    monkeypatch.setattr(rl, "LiveMetrics", lambda sink: made.append(sink))
    policy, prompts = tiny_policy_dir
    cfg = TrainConfig(num_generations=2, max_completion_length=3, max_steps=1)
    train_grpo(policy, prompts, prompts["id"].to_list(), cfg, tmp_path / "rl", prompts_per_step=2, seed=0)
    assert made == []


def test_a_wall_clock_step_during_training_changes_no_recorded_seconds(stepped_wall_clock, monkeypatch, caplog):
    """Training seconds (train_seconds in the manifest and MLflow, 'seconds' in each checkpoint, which a resumed run
    carries on), in-training evaluation seconds and the progress line's rate were wall-clock spans: NTP stepping the
    clock back an hour after 1 s of training recorded -3599 s, forward 2 h stopped a 1 h time limit. They are spans
    of the monotonic clock now."""
    import logging
    import time
    from types import SimpleNamespace

    from saerl import policy_lm
    from saerl.rl import EvalCallback, ProgressLog, _TimeLimit

    clock = stepped_wall_clock("saerl.rl")
    control = SimpleNamespace(should_training_stop=False)
    limit = _TimeLimit(limit_s=3600.0, before=10.0)
    limit.on_train_begin(None, None, control)
    clock.step(-3600.0)
    limit.on_step_end(None, None, control)
    assert 10.0 <= limit.seconds < 70.0 and not control.should_training_stop
    clock.step(7200.0)
    limit.on_step_end(None, None, control)
    assert 10.0 <= limit.seconds < 70.0 and not control.should_training_stop

    def generate(model, tok, prompts, *a, **k):
        clock.step(-3600.0)  # mid-evaluation
        return policy_lm.Completions(["#### 1"] * len(prompts), [2] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(policy_lm, "generate", generate)
    evals = EvalCallback({"h": pl.DataFrame({"id": ["a"], "prompt": ["p"], "answer": ["1"]})}, None, 1, 4, 8)
    evals._run(SimpleNamespace(training=False), 0)
    assert 0.0 <= evals.rows[0]["seconds"] < 60.0, evals.rows

    bar = ProgressLog("saerl:0", every_s=60.0)
    state = SimpleNamespace(global_step=0, max_steps=10, log_history=[], is_world_process_zero=True)
    bar.on_train_begin(None, state, None)
    clock.step(7200.0)
    time.sleep(0.01)
    state.global_step = 1
    state.log_history.append({"loss": 0.0, "reward": 0.5, "step": 1})
    with caplog.at_level(logging.INFO, logger="saerl.rl"):
        bar.on_log(None, state, None)
    line = caplog.records[-1].getMessage()
    assert line.startswith("train saerl:0: step 1/10, ") and " h " not in line and "ETA 0 s" in line, line


def test_training_notes_prompts_past_a_rotary_policys_context_before_it_trains(tiny_policy_dir, tmp_path,
                                                                               monkeypatch, caplog):
    """Lengths audit F3: training worked out that its prompts do not fit the policy's context before it trained, but
    logged it only with the run's result, so a crash lost it. The note, naming the prompts' ids, is logged before
    the trainer is built, and it is returned with the run's notes (the manifest's)."""
    policy, prompts = tiny_policy_dir  # a Llama of 64 rotary positions; each prompt is 8 tokens chat-templated

    class NeverBuilt:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("the trainer was built")

    monkeypatch.setattr("saerl.rl._trainer_class", lambda: NeverBuilt)
    cfg = TrainConfig(num_generations=2, max_completion_length=60, max_steps=2)
    with caplog.at_level("WARNING", logger="saerl.rl"), pytest.raises(RuntimeError, match="the trainer was built"):
        train_grpo(policy, prompts.head(4), prompts["id"].head(4).to_list(), cfg, tmp_path / "rl",
                   prompts_per_step=2, seed=0)
    (note,) = [r.getMessage() for r in caplog.records if "context" in r.getMessage()]
    assert note.startswith("train: 4 of 4 training prompts, chat-templated, fit the policy's 64-token context but "
                           "leave less than train.max_completion_length=60 tokens for a completion: 'p00' (8 tokens)")
    assert "lower train.max_completion_length to 56 or less" in note


def test_a_learned_position_policy_whose_prompts_overflow_is_refused_before_training(tmp_path, one_torch_thread):
    """Lengths audit F1b: a GPT-2-style policy (learned positions) whose prompts plus completions overflow its
    positions failed inside trl's first evaluation with 'IndexError: index out of range in self'. It is refused
    before the trainer is built, naming the ids, the limit and the fixes."""
    from tiny import tiny_policy, tiny_tokenizer
    from transformers import AutoModelForCausalLM, GPT2Config

    _, prompts = tiny_policy(tmp_path / "llama")
    tok = tiny_tokenizer()
    conf = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(conf).save_pretrained(tmp_path / "gpt")
    tok.save_pretrained(tmp_path / "gpt")
    cfg = TrainConfig(num_generations=2, max_completion_length=12, max_steps=2)
    with pytest.raises(ValueError, match=r"^4 of 4 training prompts, chat-templated, plus "
                                         r"train.max_completion_length=12 completion tokens do not fit the policy's 16 "
                                         r"positions: 'p00' \(8 tokens\), 'p01' \(8 tokens\), 'p02' \(8 tokens\) and 1 "
                                         r"more\. .*learned positions.*data.max_prompt_chars=.*lower "
                                         r"train.max_completion_length to 8 or less"):
        train_grpo(tmp_path / "gpt", prompts.head(4), prompts["id"].head(4).to_list(), cfg, tmp_path / "rl",
                   prompts_per_step=2, seed=0)
