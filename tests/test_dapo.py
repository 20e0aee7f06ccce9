"""DAPO: the GRPOConfig overrides, and dynamic sampling as a subclass of the ordered GRPO trainer."""

import json

import pytest
import torch
from datasets import Dataset
from tiny import tiny_model, tiny_tokenizer

from saerl import dapo
from saerl.config import TrainConfig
from saerl.dapo import STATE_FILE, concat_batches, dapo_overrides, dynamic_sampling_trainer, group_has_spread
from saerl.rl import _trainer_class, grpo_config

G, PROMPTS_PER_STEP = 2, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dapo_overrides():
    assert dapo_overrides(TrainConfig()) == {"loss_type": "dapo", "epsilon_high": 0.28}
    assert dapo_overrides(TrainConfig(epsilon_high=0.3, loss_type="grpo")) == {"loss_type": "dapo", "epsilon_high": 0.3}


def test_group_has_spread_matches_trl_zero_std_rule():
    nan = float("nan")
    rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.0], [0.0], [nan], [1.0]])
    assert group_has_spread(rewards, torch.ones(1), 2).tolist() == [False, True, False, False]
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.0, 0.5]])  # the weighted sum decides
    assert group_has_spread(two, torch.tensor([1.0, 1.0]), 2).tolist() == [False, True]


def test_concat_batches_pads_prompts_left_and_completions_right():
    a = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]), "completion_ids": torch.tensor([[7, 8, 9]]),
         "completion_mask": torch.tensor([[1, 1, 1]]), "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(3)}
    b = {"prompt_ids": torch.tensor([[4, 5, 6]]), "prompt_mask": torch.tensor([[1, 1, 1]]), "completion_ids": torch.tensor([[7]]),
         "completion_mask": torch.tensor([[1]]), "advantages": torch.tensor([-0.5]), "num_items_in_batch": torch.tensor(1)}
    m = concat_batches([a, b], pad_token_id=0)
    assert m["prompt_ids"].tolist() == [[0, 5, 6], [4, 5, 6]] and m["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert m["completion_ids"].tolist() == [[7, 8, 9], [7, 0, 0]] and m["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m["advantages"].tolist() == [0.5, -0.5] and int(m["num_items_in_batch"]) == 4
    # tool tokens (tool_mask 0) are no loss tokens: the count leaves them out (loss_tokens); padding is masked by
    # completion_mask whatever tool_mask's pad
    tools = concat_batches([{**a, "tool_mask": torch.tensor([[1, 0, 1]])}, {**b, "tool_mask": torch.tensor([[0]])}], 0)
    assert tools["tool_mask"].tolist() == [[1, 0, 1], [0, 1, 1]]
    assert int(tools["num_items_in_batch"]) == int((tools["completion_mask"] * tools["tool_mask"]).sum()) == 2
    with pytest.raises(NotImplementedError, match="pixel_values"):
        concat_batches([{**a, "pixel_values": torch.zeros(1, 3)}], 0)


def tiny_policy():
    tok = tiny_tokenizer()
    return tiny_model(tok, "qwen2", seed=0, hidden=16), tok


def run(trainer_cls, kinds, tmp_path, steps=2, num_iterations=1, save_every=0, resume=None, micro_batches=1, extra=()):
    """Train `steps` steps on prompts p00, p01, ... whose reward (the function named "reward") is flat ("flat":
    all 1, "zero": all 0) or spread ("spread": 0/1 alternating within the group), plus the `extra` reward
    functions (weight 1), saving a checkpoint every `save_every` steps, or resuming from the checkpoint `resume`
    (its dynamic-sampling state in STATE_FILE), each step in `micro_batches` loss passes.
    out: (reward calls' ids, loss batches, trl log, trainer)."""
    calls, losses = [], []

    def reward(completions, id, kind, **_):  # noqa: A002 - trl passes dataset columns by name
        calls.append(list(id))
        return [1.0 if k == "flat" else 0.0 if k == "zero" else float(j % 2) for j, k in enumerate(kind)]

    class Recording(trainer_cls):
        def _compute_loss(self, model, inputs):
            losses.append({k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            return super()._compute_loss(model, inputs)

    ids = [f"p{i:02d}" for i in range(len(kinds))]
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": "what is 1 + 1 ?"}]] * len(ids), "id": ids,
                              "kind": kinds, "answer": ["2"] * len(ids)})
    cfg = TrainConfig(num_generations=G, max_completion_length=3, max_steps=steps, save_every=save_every,
                      micro_batches=micro_batches)
    args = grpo_config(cfg, tmp_path, PROMPTS_PER_STEP, steps, seed=0)
    for key, value in {**dapo_overrides(cfg), "num_iterations": num_iterations}.items():
        setattr(args, key, value)
    model, tok = tiny_policy()
    args.reward_weights = [1.0] * (1 + len(extra))
    trainer = Recording(model=model, reward_funcs=[reward, *extra], args=args, train_dataset=data, processing_class=tok)
    if resume is not None:
        trainer.restore_dynamic_sampling(json.loads((resume / STATE_FILE).read_text()))
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return calls, losses, [h for h in trainer.state.log_history if "loss" in h], trainer


def test_dynamic_sampling_reads_the_named_reward_alone(tmp_path):
    """DAPO keeps a group when some but not all of its answers are right (paper, eq. 11): with spread_reward naming
    the correctness reward, a spread in another reward (here a stand-in for a length penalty) does not keep a group
    whose answers are all wrong; without it the weighted sum decides (trl's zero-advantage test). A name that is
    not among the trainer's rewards is refused."""
    def length(completions, **_):
        return [float(j % 2) for j in range(len(completions))]

    base = _trainer_class()
    by_correctness = run(dynamic_sampling_trainer(base, max_rounds=0, spread_reward="reward"), ["zero"] * 4,
                         tmp_path / "named", steps=1, extra=[length])[2][0]
    by_sum = run(dynamic_sampling_trainer(base, max_rounds=0), ["zero"] * 4, tmp_path / "sum", steps=1, extra=[length])[2][0]
    assert (by_correctness["dynamic_sampling/kept_groups"], by_correctness["dynamic_sampling/filled_groups"]) == (0.0, 2.0)
    assert (by_sum["dynamic_sampling/kept_groups"], by_sum["dynamic_sampling/filled_groups"]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="reward 'nope', which is not among the trainer's reward functions"):
        run(dynamic_sampling_trainer(base, max_rounds=0, spread_reward="nope"), ["zero"] * 4, tmp_path / "bad", steps=1)


def test_dynamic_sampling_refills_in_stream_order_and_keeps_no_flat_group(tmp_path):
    base = _trainer_class()
    kinds = ["spread", "flat", "zero", "spread", "flat", "spread", "spread", "spread", "spread", "spread"]
    calls, losses, logs, trainer = run(dynamic_sampling_trainer(base, max_rounds=3), kinds, tmp_path)
    # step 1: p00 p01 -> p01 flat, draw p02 -> zero, draw p03; step 2: p04 p05 -> p04 flat, draw p06
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2, ["p03"] * 2, ["p04"] * 2 + ["p05"] * 2, ["p06"] * 2]
    assert len(losses) == 2
    for batch in losses:  # every row of the batch the loss sees has a nonzero advantage: no flat group left
        assert batch["advantages"].shape == (G * PROMPTS_PER_STEP,) and (batch["advantages"] != 0).all()
        assert int(batch["num_items_in_batch"]) == int(batch["completion_mask"].sum())
    assert [h["dynamic_sampling/rounds"] for h in logs] == [3.0, 2.0]
    assert [h["dynamic_sampling/dropped_groups"] for h in logs] == [2.0, 1.0]
    assert [h["dynamic_sampling/kept_groups"] for h in logs] == [2.0, 2.0]
    assert [h["dynamic_sampling/filled_groups"] for h in logs] == [0.0, 0.0]
    assert trainer.dynamic_sampling_drawn == [(0, True, 1), (1, False, 1), (2, False, 1), (3, True, 1), (4, False, 2),
                                              (5, True, 2), (6, True, 2)]
    # trl's reward metrics cover every rollout generated for the step, each round weighted by its rollouts:
    # step 1 = 4 rollouts at .75, 2 at 0, 2 at .5 (the rounds' unweighted mean would be .417); step 2 = 4 at .75, 2 at .5
    assert [h["reward"] for h in logs] == pytest.approx([0.5, 4 / 6])
    assert [h["frac_reward_zero_std"] for h in logs] == pytest.approx([0.5, 1 / 3])


def test_merge_round_metrics_weights_rounds_by_rollouts():
    nan = float("nan")
    metrics = {"reward": [9.0, 0.75, 0.0], "completions/min_length": [2.0, 5.0], "completions/max_length": [3.0, 7.0],
               "completions/clipped_ratio": [0.5, 1.0], "completions/mean_terminated_length": [4.0, 0.0],
               "frac_reward_zero_std": [0.5, 1.0], "num_tokens": [80.0]}
    before = {"reward": 1, "num_tokens": 1}  # one entry of an earlier step, kept; num_tokens is set, not appended
    rewards = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0], [nan]])  # round 1: 4 rows, round 2: 2 rows
    dapo.merge_round_metrics(metrics, before, [4, 2], rewards, torch.ones(1), ["correct"])
    assert metrics["reward"] == [9.0, pytest.approx(3 / 5)]  # the unscored row is left out, as trl does
    assert metrics["completions/min_length"] == [2.0] and metrics["completions/max_length"] == [7.0]
    assert metrics["completions/clipped_ratio"] == [pytest.approx(4 / 6)]
    assert metrics["completions/mean_terminated_length"] == [4.0]  # round 2 had no terminated rollout
    assert metrics["frac_reward_zero_std"] == [pytest.approx(4 / 6)] and metrics["num_tokens"] == [80.0]
    one = {"reward": [0.25]}
    dapo.merge_round_metrics(one, {}, [4], rewards[:4], torch.ones(1), ["correct"])
    assert one == {"reward": [0.25]}  # one round: trl's entry stands


def test_merge_round_metrics_takes_min_and_max_of_terminated_lengths():
    """The terminated-length min/max of a refilled step are the min/max over its rounds (not a weighted mean of
    them); a round in which every rollout was cut logs trl's placeholder 0 and is left out."""
    metrics = {"completions/min_terminated_length": [4.0, 6.0, 0.0], "completions/max_terminated_length": [5.0, 9.0, 0.0],
               "completions/clipped_ratio": [0.5, 0.0, 1.0]}
    dapo.merge_round_metrics(metrics, {}, [4, 2, 2], torch.zeros(8, 1), torch.ones(1), ["correct"])
    assert metrics["completions/min_terminated_length"] == [4.0]
    assert metrics["completions/max_terminated_length"] == [9.0]
    none = {"completions/min_terminated_length": [0.0, 0.0], "completions/clipped_ratio": [1.0, 1.0]}
    dapo.merge_round_metrics(none, {}, [2, 2], torch.zeros(4, 1), torch.ones(1), ["correct"])
    assert none["completions/min_terminated_length"] == [0.0]


def test_dynamic_sampling_gives_up_after_max_rounds_and_fills(tmp_path):
    base = _trainer_class()
    calls, losses, logs, _ = run(dynamic_sampling_trainer(base, max_rounds=1), ["flat"] * 8, tmp_path, steps=1)
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2 + ["p03"] * 2]
    assert losses[0]["advantages"].shape == (G * PROMPTS_PER_STEP,) and (losses[0]["advantages"] == 0).all()
    h = logs[0]
    assert (h["dynamic_sampling/rounds"], h["dynamic_sampling/kept_groups"], h["dynamic_sampling/filled_groups"]) == (2, 0, 2)
    assert int(losses[0]["completion_mask"].sum()) == 0 and int(losses[0]["num_items_in_batch"]) == 0


def test_filled_groups_are_masked_out_of_the_loss_and_its_normaliser(tmp_path):
    """A batch the rounds could not fill with spread groups trains on its kept groups alone: the filler rows'
    completions are masked out, so the token-level loss is the mean over the kept group's tokens (DAPO)."""
    base = _trainer_class()
    calls, losses, logs, _ = run(dynamic_sampling_trainer(base, max_rounds=1), ["spread"] + ["flat"] * 7, tmp_path, steps=1)
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2]
    assert (logs[0]["dynamic_sampling/kept_groups"], logs[0]["dynamic_sampling/filled_groups"]) == (1, 1)
    batch = losses[0]
    kept, filler = batch["advantages"] != 0, batch["advantages"] == 0
    assert int(kept.sum()) == G and int(filler.sum()) == G
    assert int(batch["completion_mask"][filler].sum()) == 0 < int(batch["completion_mask"][kept].sum())
    assert int(batch["num_items_in_batch"]) == int(batch["completion_mask"][kept].sum())


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_step_of_filler_groups_alone_logs_no_token_metrics(tmp_path, micro_batches):
    """Every group flat and the rounds spent: the step trains on no token, so trl's token means (entropy, clip
    ratios) have nothing to measure; they are logged as missing, not as an entropy of 0."""
    cls = dynamic_sampling_trainer(_trainer_class(), max_rounds=1)
    _, losses, logs, _ = run(cls, ["flat"] * 8, tmp_path, steps=1, micro_batches=micro_batches)
    assert len(losses) == micro_batches and all(int(b["completion_mask"].sum()) == 0 for b in losses)
    assert logs[0]["dynamic_sampling/filled_groups"] == 2
    assert logs[0]["entropy"] is None and logs[0]["clip_ratio/region_mean"] is None


def test_a_pass_of_filler_groups_alone_does_not_dilute_the_steps_entropy(tmp_path):
    """One row per loss pass: two passes hold the kept group's rollouts, two only masked filler rows. The step's
    entropy is the kept rollouts', as in one pass, not half of it (trl logged 0 for each empty pass)."""
    cls = dynamic_sampling_trainer(_trainer_class(), max_rounds=1)
    kinds = ["spread"] + ["flat"] * 7
    _, _, logs1, _ = run(cls, kinds, tmp_path / "one", steps=1)
    _, passes, logs4, _ = run(cls, kinds, tmp_path / "four", steps=1, micro_batches=4)
    tokens = [int(b["completion_mask"].sum()) for b in passes]
    assert len(passes) == 4 and tokens.count(0) == 2 and len(set(tokens) - {0}) == 1  # kept rows of one length
    assert logs4[0]["entropy"] == pytest.approx(logs1[0]["entropy"], rel=1e-4) and logs1[0]["entropy"] > 0


def test_a_step_without_a_kept_group_leaves_the_weights_as_they_are(tmp_path):
    """Step 2's groups are all flat and no refill round is allowed: its gradient is 0, and AdamW's momentum from
    step 1 would still move the weights; the step makes no update (logged as skipped), steps 1 and 3 do."""
    from transformers import TrainerCallback

    weights: list[torch.Tensor] = []

    class Snapshots(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **_):
            weights.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))

        on_step_end = on_train_begin

    class Watched(dynamic_sampling_trainer(_trainer_class(), max_rounds=0)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Snapshots())

    _, _, logs, _ = run(Watched, ["spread"] * 2 + ["flat"] * 2 + ["spread"] * 2, tmp_path, steps=3)
    assert [h["dynamic_sampling/kept_groups"] for h in logs] == [2.0, 0.0, 2.0]
    assert [h["dynamic_sampling/skipped_updates"] for h in logs] == [0.0, 1.0, 0.0]
    assert not torch.equal(weights[1], weights[0]) and not torch.equal(weights[3], weights[2])
    assert torch.equal(weights[2], weights[1])


def test_blank_token_metrics_sets_only_the_new_token_means_to_nan():
    metrics = {"entropy": [2.0, 0.0], "clip_ratio/low_mean": [0.0], "reward": [0.5], "entropy_coef": [0.1]}
    dapo.blank_token_metrics(metrics, {"entropy": 1, "reward": 0})
    assert metrics["entropy"][0] == 2.0 and torch.isnan(torch.tensor(metrics["entropy"][1]))
    assert torch.isnan(torch.tensor(metrics["clip_ratio/low_mean"][0]))
    assert metrics["reward"] == [0.5] and metrics["entropy_coef"] == [0.1]


def test_stream_skips_sampler_repeats_and_wraps_around(tmp_path):
    """num_iterations 2: one generation per two steps; the sampler's block repeats are not prompts."""
    base = _trainer_class()
    calls, losses, logs, trainer = run(dynamic_sampling_trainer(base, max_rounds=2), ["flat", "spread", "spread", "spread"],
                                       tmp_path, steps=3, num_iterations=2)
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2, ["p03"] * 2 + ["p00"] * 2, ["p01"] * 2]
    assert len(losses) == 3 and all((b["advantages"] != 0).all() for b in losses)
    assert [h["dynamic_sampling/stream_epoch"] for h in logs if "dynamic_sampling/stream_epoch" in h] == [0.0, 1.0]


def test_resumed_run_continues_the_prompt_stream_where_the_checkpoint_left_it(tmp_path):
    """A run resumed from a checkpoint draws the prompts the uninterrupted run drew next (not the head of the
    order again) and keeps the prompts drawn before the checkpoint."""
    cls = dynamic_sampling_trainer(_trainer_class(), max_rounds=3)
    kinds = ["spread", "flat", "zero", "spread", "flat", "spread", "spread", "spread", "spread", "spread"]
    full_calls, _, _, full = run(cls, kinds, tmp_path / "full", steps=2)
    _, _, _, first = run(cls, kinds, tmp_path / "cut", steps=1, save_every=1)
    ckpt = tmp_path / "cut" / "checkpoint-1"
    (ckpt / STATE_FILE).write_text(json.dumps(first.dynamic_sampling_state()))
    calls, losses, logs, resumed = run(cls, kinds, tmp_path / "cut", steps=2, resume=ckpt)
    assert calls == full_calls[3:] == [["p04"] * 2 + ["p05"] * 2, ["p06"] * 2]
    assert resumed.dynamic_sampling_drawn == full.dynamic_sampling_drawn
    assert len(losses) == 1 and [(h["step"], h["dynamic_sampling/kept_groups"]) for h in logs] == [(1, 2.0), (2, 2.0)]
    moved = {"cursor": 1, "drawn": [[5, True, 1]]}  # not the head of this stream
    with pytest.raises(ValueError, match="not the head of this run's prompt stream"):
        resumed.restore_dynamic_sampling(moved)
    with pytest.raises(ValueError, match="cursor 2 but 1 prompts drawn"):
        resumed.restore_dynamic_sampling({"cursor": 2, "drawn": [[0, True, 1]]})


def test_plain_ordered_grpo_is_unaffected(tmp_path):
    base = _trainer_class()
    assert base._generate_and_score_completions is base.__mro__[1]._generate_and_score_completions  # trl's own
    dynamic_sampling_trainer(base, max_rounds=2)
    assert "_generate_and_score_completions" not in base.__dict__ and "_calculate_rewards" not in base.__dict__
    kinds = ["spread", "flat", "zero", "spread", "flat", "spread"]
    calls, losses, logs, _ = run(base, kinds, tmp_path)
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2 + ["p03"] * 2]  # one generation per step, in order
    assert all((b["advantages"] == 0).sum() == 2 for b in losses)  # the flat group stays in the batch
    assert not any(k.startswith("dynamic_sampling/") for h in logs for k in h)


def test_take_next_finds_the_next_prompt_of_a_cluster_and_keeps_what_it_passed_over():
    from saerl.dapo import take_next

    clusters = [0, 1, 0, 0, 1, 2, 0]
    stream = iter(range(len(clusters)))
    left = {"n": len(clusters)}  # prompts left in the stream's pass

    def pull() -> int:
        left["n"] -= 1
        return next(stream)

    def more() -> bool:
        return left["n"] > 0

    ahead: list[int] = []
    assert take_next(ahead, pull, clusters, 1, more) == 1 and ahead == [0]
    assert take_next(ahead, pull, clusters, 1, more) == 4 and ahead == [0, 2, 3]
    assert take_next(ahead, pull, clusters, 0, more) == 0 and ahead == [2, 3], "the passed-over first"
    assert take_next(ahead, pull, clusters, None, more) == 2 and ahead == [3]
    assert take_next(ahead, pull, clusters, 7, more) == 3 and ahead == [5, 6], "none left in the pass: the next"
    assert take_next(ahead, pull, None, 1, more) == 5 and ahead == [6], "no clusters: the next in order"


def test_a_refill_by_cluster_never_reads_past_the_pass_into_prompts_trained_on(tmp_path):
    """The search for a cluster's next prompt read on into the stream's next pass, which starts the order again: with
    one prompt of its cluster in the order, a dropped prompt was replaced by itself. It stops at the pass's end and
    takes the next prompt of any cluster."""
    kinds = ["flat", "spread", "spread", "spread", "spread", "spread", "spread", "spread"]
    cls = dynamic_sampling_trainer(_trainer_class(), max_rounds=3, clusters=[0, 1, 1, 1, 1, 1, 1, 1])
    calls, _, _, trainer = run(cls, kinds, tmp_path, steps=1)
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2], "no prompt of cluster 0 is left: the next of any"
    assert [i for i, _, _ in trainer.dynamic_sampling_drawn] == [0, 1, 2]


def test_refills_by_cluster_replace_a_dropped_group_with_its_clusters_next_prompt_and_resume(tmp_path):
    """DAPO refilled a step with the next prompts of the order, which belong to the next curriculum batch: the
    demo's cluster-first batches trained at a .55 share of their home cluster against .78 designed. With clusters,
    a dropped prompt is replaced by the next prompt of its own cluster; the prompts passed over come next; a run
    resumed from a checkpoint continues as the uninterrupted run."""
    kinds = ["spread", "flat", "spread", "spread", "spread", "spread", "spread", "spread", "spread", "spread"]
    clusters = [0, 1, 0, 0, 1, 0, 1, 0, 1, 0]
    by_cluster = dynamic_sampling_trainer(_trainer_class(), max_rounds=3, clusters=clusters)
    calls, losses, logs, trainer = run(by_cluster, kinds, tmp_path / "c", steps=2)
    # step 1: p00 (0) p01 (1, flat) -> the next of cluster 1 is p04 (p02, p03 passed over); step 2: p02 p03
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p04"] * 2, ["p02"] * 2 + ["p03"] * 2]
    assert all((b["advantages"] != 0).all() for b in losses)
    assert [i for i, spread, _ in trainer.dynamic_sampling_drawn if spread] == [0, 4, 2, 3]
    plain = run(dynamic_sampling_trainer(_trainer_class(), max_rounds=3), kinds, tmp_path / "s", steps=2)[0]
    assert plain[1] == ["p02"] * 2, "without clusters: the stream's next"
    _, _, _, first = run(by_cluster, kinds, tmp_path / "cut", steps=1, save_every=1)
    state = first.dynamic_sampling_state()
    assert state["cursor"] == 5 and state["ahead"] == [2, 3]
    ckpt = tmp_path / "cut" / "checkpoint-1"
    (ckpt / STATE_FILE).write_text(json.dumps(state))
    resumed_calls, _, _, resumed = run(by_cluster, kinds, tmp_path / "cut", steps=2, resume=ckpt)
    assert resumed_calls == calls[2:] and resumed.dynamic_sampling_drawn == trainer.dynamic_sampling_drawn
    with pytest.raises(ValueError, match="cursor 5 but 3 prompts drawn and 1 passed over"):
        resumed.restore_dynamic_sampling({**state, "ahead": [2]})
    with pytest.raises(ValueError, match="clusters has 3 entries for a train dataset of 10 rows"):
        run(dynamic_sampling_trainer(_trainer_class(), max_rounds=3, clusters=[0, 1, 0]), kinds, tmp_path / "x")


def test_a_second_refill_round_replaces_the_groups_the_first_refill_dropped(tmp_path):
    """Each refill round draws by the clusters of the groups dropped in the round before (the newest drops),
    not of the first round's, which the first refill already replaced: a cluster-1 refill without spread is
    replaced by cluster 1's next prompt, not by another of cluster 0."""
    kinds = ["flat", "flat", "spread", "flat", "spread", "spread", "spread", "spread", "spread", "spread"]
    cls = dynamic_sampling_trainer(_trainer_class(), max_rounds=3, clusters=[0, 1] * 5)
    calls, _, _, trainer = run(cls, kinds, tmp_path, steps=1)
    # round 0: p00 (0) p01 (1) both flat; round 1: p02 (0) kept, p03 (1) flat; round 2: cluster 1's next, p05
    assert calls == [["p00"] * 2 + ["p01"] * 2, ["p02"] * 2 + ["p03"] * 2, ["p05"] * 2]
    assert [i for i, spread, _ in trainer.dynamic_sampling_drawn if spread] == [2, 5]
