"""DAPO on top of trl's GRPOTrainer: clip-higher, token-level loss, and dynamic sampling.

DAPO (arXiv 2503.14476) = four changes to GRPO. Two are trl settings, applied with :func:`dapo_overrides`:
clip-higher (``epsilon_high`` 0.28 above ``epsilon`` 0.2) and the token-level loss (``loss_type="dapo"``).
Overlong reward shaping is trl's soft overlong punishment reward with, optionally, trl's overlong filtering
(``train.overlong_buffer`` and ``train.mask_truncated_completions``, wired in ``saerl.rl``). The fourth, **dynamic
sampling**, trl 1.16 does not do ("not supported" in its docs); :func:`dynamic_sampling_trainer` adds it.

Dynamic sampling. A group whose rollouts all get the same reward (all right or all wrong) has zero advantage:
it carries no policy gradient, yet it takes a slot in the batch. DAPO drops such groups and generates for
fresh prompts until the batch is full of groups with a reward spread.

The seam in trl 1.16. ``GRPOTrainer._prepare_inputs`` calls ``_generate_and_score_completions(inputs)`` once
per generation batch (every ``steps_per_generation * num_iterations`` steps) with the list of dataset rows
the dataloader gave (each prompt ``num_generations`` times in a row); it then shuffles the returned dict of
tensors and splits it into the per-step batches the loss sees. The subclass overrides only
``_generate_and_score_completions`` (training mode; evaluation is untouched) and ``_calculate_rewards``
(to keep the per-function rewards trl computes inside, for the zero-spread test), and ``_compute_loss`` only
for its metrics (below):

1. draw the next prompts from the ordered prompt stream, generate and score them with trl's own code;
2. keep the groups with a reward spread (trl's own test: ``std`` of the weighted reward sum in the group
   is not close to 0, unscorable rows ignored), drop the others. With ``spread_reward`` named (``saerl.rl``
   names its correctness reward) the test reads that reward alone: DAPO keeps a group when some but not all of
   its answers are right (paper, eq. 11), so a spread in a format or length reward alone does not keep it;
3. while fewer groups are kept than the batch holds and at most ``max_rounds`` extra rounds were run, draw
   exactly as many fresh prompts as groups are missing, and repeat;
4. return the kept groups, re-padded into one batch of the usual size. If the rounds run out first, the
   batch is filled up with dropped groups in stream order, their completions masked out of the loss
   (:func:`mask_out`: no loss terms, not counted in the token-level normaliser, so the step's loss is the
   token mean over the kept groups alone, as DAPO trains on the groups it has), and
   ``dynamic_sampling/filled_groups`` says how many. An optimizer step with no group kept at all makes no
   update (``dynamic_sampling/skipped_updates``): its gradient is 0, and AdamW's momentum alone would still
   move the weights.

The prompt stream. Prompts are read in the order of the trainer's own train sampler (for
``saerl.rl``'s ordered trainer: the curriculum order), one entry per prompt with the sampler's
``num_generations`` and ``num_iterations`` repeats removed, epoch after epoch. The trainer keeps its own
cursor in that stream, so every prompt drawn is either trained on or dropped, in stream order, and a
curriculum is still read front to back. With ``clusters`` (refills by cluster) a refill takes the next prompt of
a dropped prompt's cluster within the stream's current pass, out of order, and the prompts it passed over are
drawn next. The rows the dataloader hands over only pace the steps; their
content is not used (the dataloader cannot be asked for more rows mid-step, and it reads one batch ahead).
A run with dynamic sampling therefore consumes more prompts than ``steps * prompts_per_step``: give it a
longer stream (the cursor wraps to the start when the stream ends: ``dynamic_sampling/stream_epoch``).

Every prompt drawn is recorded in the trainer's ``dynamic_sampling_drawn``: (dataset index, had a reward
spread, training step), in stream order; the prompts trained on are those with True. The step is the first
optimizer step of the generation batch the prompt was drawn for (``global_step + 1`` when it was generated;
with ``steps_per_generation`` > 1 the generation batch's groups are split over that many steps in stream
order, shuffled within each step: ``saerl.rl.shuffle_within_steps``).

Metrics (trl's ``_metrics``, averaged per logging step like trl's own): ``dynamic_sampling/kept_groups``,
``dynamic_sampling/dropped_groups``, ``dynamic_sampling/rounds`` (generation rounds in the step, 1 = no
refill), ``dynamic_sampling/filled_groups``, ``dynamic_sampling/prompts_drawn``, ``dynamic_sampling/stream_epoch``.
trl logs its own generation metrics (``reward``, ``frac_reward_zero_std``, completion lengths...) once per
generation call; the refill rounds of one generation batch are merged into one entry over every rollout
generated for it (:func:`merge_round_metrics`), so a round of two prompts weighs less than one of sixteen.
trl's loss-time token metrics (``entropy``, ``clip_ratio/*``, ``kl``) skip a loss pass whose rows are all filler
groups (:func:`blank_token_metrics`; trl would log 0 for it), so they average the kept groups' tokens alone.

Resume. :meth:`dynamic_sampling_state` is what a checkpoint must keep of the stream (the prompts drawn so far,
those passed over by refills by cluster, and the cursor: how many prompts were taken from the stream; ``saerl.rl`` writes it into every checkpoint as :data:`STATE_FILE`), and
:meth:`restore_dynamic_sampling` puts a fresh trainer back at that point, so a resumed run draws the prompts
the killed one would have drawn next. With ``steps_per_generation`` > 1 a checkpoint inside a generation batch
resumes with a fresh generation batch (trl does not keep its buffered rollouts), drawn from the cursor on.

Limits: one process (groups are split across processes in multi-GPU trl, so dropping would need a
cross-process exchange); text-only prompts; a map-style dataset.
With ``scale_rewards="batch"`` the advantage scale is the std of each generation round, not of the final batch.
"""

from __future__ import annotations

import logging
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from saerl.config import TrainConfig

log = logging.getLogger(__name__)

DAPO_EPSILON_HIGH = 0.28  # DAPO's clip-higher upper bound (paper, section 3.1), used when the config sets none
METRIC = "dynamic_sampling/"
STATE_FILE = "saerl_dynamic_sampling.json"  # the prompt stream's position, inside each trainer checkpoint
# Batch keys and how they are padded when groups from several generation rounds are put together.
LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
RIGHT_PADDED = {"completion_ids": "pad", "completion_mask": 0, "tool_mask": 1, "old_per_token_logps": 0.0,
                "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "importance_sampling_ratio": 0.0}
PER_ROW = ("advantages",)
# trl's loss-time metrics that are means over a micro-batch's loss tokens: trl logs 0 for one without any (a pass
# of filler groups alone), which would pull the step's average down; such a pass logs NaN instead (trl skips it).
TOKEN_METRICS = ("entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                 "clip_ratio/low_min", "clip_ratio/high_max", "cispo_clip_ratio", "vespo/phi_seq_mean")


def dapo_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """GRPOConfig fields DAPO sets: token-level loss and clip-higher (the config's epsilon_high when given,
    else DAPO's 0.28). Dynamic sampling is not a GRPOConfig field: see :func:`dynamic_sampling_trainer`.
    Merge into the GRPOConfig kwargs (the keys are already there): ``kwargs.update(dapo_overrides(cfg))``."""
    return {"loss_type": "dapo", "epsilon_high": cfg.epsilon_high if cfg.epsilon_high is not None else DAPO_EPSILON_HIGH}


def group_has_spread(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per group of `group_size` consecutive rows: does the weighted reward sum vary (trl's own zero-std test,
    with rows no reward function scored left out; a group with fewer than two scored rows has no spread)?
    in: rewards [rows, functions] (NaN = not scored), weights [functions], group size; out: bool [groups]."""
    from trl.trainer.utils import nanstd

    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    std = nanstd(total.view(-1, group_size), dim=1)
    return ~torch.isnan(std) & ~torch.isclose(std, torch.zeros_like(std))


def select_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The given rows (a bool mask or indices) of every per-row tensor of a trl batch; scalars kept as they are."""
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.ndim > 0 else v for k, v in batch.items()}


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    """`t` [rows, w] widened to `width` columns with `value` on the left or right."""
    extra = width - t.size(1)
    if extra == 0:
        return t
    fill = torch.full((t.size(0), extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def mask_out(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with every completion token masked out of the loss (completion_mask 0): rows that only fill
    the batch to its size, so they neither add loss terms nor count in the token-level normaliser."""
    return {**batch, "completion_mask": torch.zeros_like(batch["completion_mask"])}


def blank_token_metrics(metrics: dict[str, list[float]], before: dict[str, int]) -> None:
    """Set to NaN, in place, the :data:`TOKEN_METRICS` entries trl appended to `metrics` since `before` (their
    lengths before one loss pass over a batch with no loss tokens): trl's log averages a step's passes leaving
    NaN out, so a pass with nothing to measure neither counts as 0 nor shows a step without tokens as 0."""
    for key in TOKEN_METRICS:
        values = metrics.get(key, [])
        values[before.get(key, 0):] = [float("nan")] * (len(values) - before.get(key, 0))


def loss_tokens(batch: dict[str, Any]) -> torch.Tensor:
    """The mask of a trl batch's completion tokens the loss counts: completion_mask, times tool_mask when present."""
    mask = batch["completion_mask"]
    return mask if "tool_mask" not in batch else mask * batch["tool_mask"]


def concat_batches(parts: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """One trl batch from several (rows of different generation rounds): prompts left-padded and completions
    right-padded to the widest part, per-row values concatenated, num_items_in_batch recounted.
    in: batches with the same keys, pad token id; out: the merged batch. Unknown tensor keys (images) raise."""
    parts = [p for p in parts if p["prompt_ids"].size(0) > 0] or parts[:1]
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if key == "num_items_in_batch" or values[0] is None:
            continue
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            left = key in LEFT_PADDED
            pad = (LEFT_PADDED if left else RIGHT_PADDED)[key]
            pad_value = pad_token_id if pad == "pad" else pad
            if values[0].ndim == 2:
                width = max(v.size(1) for v in values)
                values = [_pad_to(v, width, pad_value, left) for v in values]
            out[key] = torch.cat(values, dim=0)
        elif key in PER_ROW:
            out[key] = torch.cat(values, dim=0)
        else:
            raise NotImplementedError(f"dynamic sampling does not know how to merge batch key {key!r} (text-only)")
    out["num_items_in_batch"] = loss_tokens(out).sum()
    return out


def _merge_values(key: str, values: list[float], rollouts: list[int], clipped: list[float] | None) -> float:
    """One value for metric `key` from its per-round `values`: min/max of min/max keys (of terminated lengths,
    over the rounds that had a terminated rollout: trl logs 0 for a round without one); a terminated-length
    mean weighted by each round's terminated rollouts (rollouts x (1 - clipped ratio)); else weighted by rollouts."""
    if key.endswith(("min_terminated_length", "max_terminated_length")) and clipped is not None:
        values = [v for v, c in zip(values, clipped, strict=True) if c < 1.0] or [0.0]
    if key.endswith(("min_length", "min_terminated_length", "/min", "_min")):
        return min(values)
    if key.endswith(("max_length", "max_terminated_length", "/max", "_max")):
        return max(values)
    w = torch.tensor(rollouts, dtype=torch.float64)
    if key.endswith("mean_terminated_length") and clipped is not None:
        w = w * (1.0 - torch.tensor(clipped, dtype=torch.float64))
    v = torch.tensor(values, dtype=torch.float64)
    return float((v * w).sum() / w.sum()) if float(w.sum()) > 0 else 0.0


def merge_round_metrics(metrics: dict[str, list[float]], before: dict[str, int], rollouts: list[int],
                        rewards_per_func: torch.Tensor, weights: torch.Tensor, func_names: list[str]) -> None:
    """Merge, in place, the entries trl appended to `metrics` during one generation batch's len(`rollouts`)
    refill rounds into one entry per key, over all the rollouts generated (`rollouts[r]` in round r).
    Reward statistics are recomputed exactly from every round's `rewards_per_func` [rows, functions] (NaN =
    not scored) as trl computes them for one round; other keys are combined by :func:`_merge_values`. A key
    that did not gain exactly one entry per round is left as it is. in: trl's metric lists, their lengths
    before the first round, rollouts per round, the rounds' rewards stacked, reward weights and names."""
    from trl.trainer.utils import nanstd

    n = len(rollouts)
    if n < 2:
        return
    new = {k: v[before.get(k, 0):] for k, v in metrics.items() if len(v) - before.get(k, 0) == n}
    merged = {k: _merge_values(k, v, rollouts, new.get("completions/clipped_ratio")) for k, v in new.items()}
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    exact = {"reward": torch.nanmean(total).item(), "reward_std": nanstd(total).item()}
    for i, name in enumerate(func_names):
        exact[f"rewards/{name}/mean"] = torch.nanmean(rewards_per_func[:, i]).item()
        exact[f"rewards/{name}/std"] = nanstd(rewards_per_func[:, i]).item()
    merged.update({k: v for k, v in exact.items() if k in merged})
    for k, value in merged.items():
        metrics[k][before.get(k, 0):] = [value]


def take_next(ahead: list[int], pull: Callable[[], int], clusters: Sequence[int | None] | None, cluster: int | None,
              can_pull: Callable[[], bool]) -> int:
    """The next prompt of the stream, or of `cluster` in it: the first of `ahead` (prompts passed over before, in
    stream order) or of the stream (`pull`) that is of `cluster`. Prompts of other clusters met on the way go to
    the end of `ahead`, to be drawn before the stream's next; the search stops where `can_pull` says no (the end of
    the stream's current pass: beyond it the order starts again, with prompts trained on already, the dropped one
    among them), and then the next prompt of any cluster is taken. `cluster` None (or no `clusters`): the next
    prompt of any cluster. in: the passed-over list (changed in place), the stream's next, clusters per dataset
    index, the cluster wanted, whether the search may read on; out: a dataset index."""
    if cluster is not None and clusters is not None:
        for pos, i in enumerate(ahead):
            if clusters[i] == cluster:
                return ahead.pop(pos)
        while can_pull():
            i = pull()
            if clusters[i] == cluster:
                return i
            ahead.append(i)
    return ahead.pop(0) if ahead else pull()


def dynamic_sampling_trainer(base_cls: type, max_rounds: int, spread_reward: str | None = None,
                             clusters: Sequence[int | None] | None = None) -> type:
    """A subclass of the GRPOTrainer class `base_cls` (e.g. saerl.rl's ordered trainer) with DAPO dynamic
    sampling: groups without reward spread are replaced by groups of the next prompts of the same ordered
    stream, with at most `max_rounds` extra generation rounds per generation batch. `base_cls` is not changed.
    The spread is that of the reward function named `spread_reward` (its ``__name__``), or of the weighted sum of
    all of them when None (no group with a zero advantage is kept). With `clusters` (the cluster of each
    dataset row's prompt; None for a row without one) a dropped group is replaced by the next prompt of the
    stream from the dropped prompt's cluster (:func:`take_next`), so a refilled batch keeps the curriculum's
    cluster mix; without, by the next prompts of any cluster.
    in: trainer class, extra rounds (0 = only drop: fill with the dropped groups), reward name, clusters per
    dataset row; out: the subclass."""
    if max_rounds < 0:
        raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
    row_clusters = list(clusters) if clusters is not None else None

    class DynamicSamplingTrainer(base_cls):  # type: ignore[valid-type, misc]
        """GRPO trainer whose training batches hold only groups with a reward spread (DAPO dynamic sampling)."""

        dynamic_sampling_max_rounds = max_rounds

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.accelerator.num_processes > 1:
                raise NotImplementedError("dynamic sampling here runs in one process (trl splits groups across processes)")
            if not hasattr(self.train_dataset, "__getitem__"):
                raise NotImplementedError("dynamic sampling needs a map-style train dataset")
            data = self.train_dataset
            self._ds_rows = self._remove_unused_columns(data, "training") if hasattr(data, "column_names") else data
            self.dynamic_sampling_drawn: list[tuple[int, bool, int]] = []  # (dataset index, had a spread, step), in order
            if row_clusters is not None and len(row_clusters) != len(data):
                raise ValueError(f"clusters has {len(row_clusters)} entries for a train dataset of {len(data)} rows")
            self._ds_stream: Iterator[int] | None = None
            self._ds_pass_left: int | None = None  # prompts left in the stream's current pass (None: not begun)
            self._ds_ahead: list[int] = []  # prompts a same-cluster refill passed over, drawn before the stream's next
            self._ds_epoch = 0
            self._ds_rewards: torch.Tensor | None = None
            self._ds_warned = False
            self._ds_step_tokens = False  # did a loss pass of the current optimizer step have a loss token?
            names = list(self.reward_func_names)
            if spread_reward is not None and spread_reward not in names:
                raise ValueError(f"dynamic sampling reads the spread of reward {spread_reward!r}, which is not among "
                                 f"the trainer's reward functions {names}")
            self._ds_column = None if spread_reward is None else names.index(spread_reward)

        def _spread(self, rewards: torch.Tensor) -> torch.Tensor:
            """Per group of this round: does the spread reward (or the weighted sum) vary? in: rewards [rows,
            functions]; out: bool [groups]."""
            if self._ds_column is None:
                return group_has_spread(rewards, self.reward_weights, self.num_generations)
            col = self._ds_column
            return group_has_spread(rewards[:, col : col + 1], torch.ones(1), self.num_generations)

        def _prompt_stream(self) -> Iterator[int]:
            """Dataset indices in the train sampler's order, one per prompt, epoch after epoch."""
            g = self.num_generations
            per_batch = self.args.generation_batch_size // g
            span = per_batch * g * self.num_iterations * self.args.steps_per_generation
            sampler = self._get_train_sampler(self.train_dataset)
            while True:
                idx = list(sampler)
                if len(idx) < span:
                    raise ValueError(f"the train sampler yields {len(idx)} indices, fewer than one generation batch ({span})")
                starts = range(0, len(idx) - span + 1, span)
                left = len(starts) * per_batch
                for start in starts:
                    block = idx[start : start + per_batch * g : g]
                    if idx[start : start + per_batch * g] != [i for i in block for _ in range(g)]:
                        raise ValueError("the train sampler does not repeat each prompt num_generations times in a row")
                    for i in block:
                        left -= 1
                        self._ds_pass_left = left
                        yield i
                self._ds_epoch += 1

        def _pull(self) -> int:
            """The stream's next prompt (dataset index)."""
            if self._ds_stream is None:
                self._ds_stream = self._prompt_stream()
            return next(self._ds_stream)

        def _draw(self, n_prompts: int, like: list[int] | None = None) -> tuple[list[int], list[dict[str, Any]]]:
            """The next `n_prompts` prompts: the stream's (after any a same-cluster refill passed over), or, with
            `like` (dataset indices of the dropped prompts, one per prompt wanted) and clusters, the next of each
            one's cluster. out: (dataset indices, rows with each prompt num_generations times in a row, as the
            dataloader gives them)."""
            wanted = [None] * n_prompts if like is None or row_clusters is None else [row_clusters[i] for i in like]
            idx = [take_next(self._ds_ahead, self._pull, row_clusters, c, lambda: self._ds_pass_left != 0)
                   for c in wanted]
            return idx, [dict(self._ds_rows[i]) for i in idx for _ in range(self.num_generations)]

        def dynamic_sampling_state(self) -> dict[str, Any]:
            """What a checkpoint keeps of the prompt stream (JSON-ready): cursor (prompts taken from the stream so
            far: each one drawn or passed over), ahead (those a same-cluster refill passed over, not drawn yet) and
            drawn (each as [dataset index, had a spread, step], in the order drawn)."""
            cursor = len(self.dynamic_sampling_drawn) + len(self._ds_ahead)
            return {"cursor": cursor, "ahead": list(self._ds_ahead),
                    "drawn": [list(d) for d in self.dynamic_sampling_drawn]}

        def restore_dynamic_sampling(self, state: dict[str, Any]) -> None:
            """Put the prompt stream back where `state` (:meth:`dynamic_sampling_state` of a checkpoint) left it:
            the drawn record restored and the cursor moved past the prompts drawn before. Raises ValueError when
            they are not the head of this trainer's stream (the order or the prompts changed since it was saved)."""
            try:
                drawn = [(int(i), bool(s), int(step)) for i, s, step in state["drawn"]]
                ahead = [int(i) for i in state.get("ahead", [])]  # a state saved before refills by cluster: none
                cursor = int(state["cursor"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"bad dynamic-sampling state ({type(e).__name__}: {e}); expected "
                                 "{'cursor': int, 'ahead': [index, ...], 'drawn': [[index, spread, step], ...]}") from e
            if cursor != len(drawn) + len(ahead):
                raise ValueError(f"dynamic-sampling state: cursor {cursor} but {len(drawn)} prompts drawn and "
                                 f"{len(ahead)} passed over")
            self._ds_epoch, self._ds_pass_left = 0, None
            self._ds_stream = self._prompt_stream()
            head = [self._pull() for _ in range(cursor)]
            in_order = row_clusters is None  # stream refills draw in stream order: the head must be the drawn list
            if (head != [i for i, _, _ in drawn]) if in_order else Counter(head) != Counter([i for i, _, _ in drawn] + ahead):
                raise ValueError("the checkpoint's drawn prompts are not the head of this run's prompt stream: the "
                                 "order or the prompts changed since it was saved; delete the checkpoints to start over")
            self.dynamic_sampling_drawn, self._ds_ahead = drawn, ahead

        def _calculate_rewards(self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any],
                               completion_ids_list: list[list[int]]) -> torch.Tensor:
            """trl's rewards [rows, reward functions], kept for the zero-spread test of this round."""
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._ds_rewards = rewards
            return rewards

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
            """trl's loss; a training pass whose rows are all masked out (filler groups alone) logs no token
            metrics (:func:`blank_token_metrics`) instead of trl's 0, and is noted for :meth:`create_optimizer`."""
            metrics = self._metrics["train"]
            before = {k: len(v) for k, v in metrics.items()}
            loss = super()._compute_loss(model, inputs)
            if self.model.training:
                if bool(loss_tokens(inputs).any()):
                    self._ds_step_tokens = True
                else:
                    blank_token_metrics(metrics, before)
            return loss

        def create_optimizer(self, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
            """trl's optimizer, whose step does nothing for an optimizer step whose loss passes had no loss token
            (every group a filler: the rounds found no reward spread). Its gradient is 0, but AdamW would still
            move the weights along its momentum (and decay them); DAPO takes no step without a group to learn
            from. The step still counts towards max_steps (the run's budget), and the learning-rate schedule
            goes on; ``dynamic_sampling/skipped_updates`` logs 1 for such a step, else 0."""
            opt = super().create_optimizer(*args, **kwargs)
            if getattr(opt, "_saerl_skips_empty_steps", False):
                return opt
            step = opt.step

            def guarded(_opt: Any, *a: Any, **kw: Any) -> Any:  # a method: torch's LR scheduler rebinds its __func__
                learn, self._ds_step_tokens = self._ds_step_tokens, False
                self._metrics["train"][METRIC + "skipped_updates"].append(float(not learn))
                return step(*a, **kw) if learn else None

            opt.step = types.MethodType(guarded, opt)
            opt._saerl_skips_empty_steps = True
            return opt

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            """trl's generation batch, with dynamic sampling while training: generate and score the batch's
            groups, keep those with reward spread (:meth:`_spread`), and refill the dropped ones from the stream
            (:meth:`_draw`, by cluster when given) for up to max_rounds extra rounds; a batch still short is filled
            with dropped groups whose loss is masked out (:func:`mask_out`). The round metrics are merged as one
            step's (:func:`merge_round_metrics`). Evaluation batches pass through unchanged.
            in: the generation batch's inputs (num_generations rows per prompt); out: trl's batch dict."""
            if not self.model.training:
                return super()._generate_and_score_completions(inputs)
            g = self.num_generations
            want = len(inputs) // g
            kept: list[dict[str, Any]] = []
            spare: list[dict[str, Any]] = []
            n_kept = n_dropped = drawn = rounds = 0
            metrics = self._metrics["train"]
            before = {k: len(v) for k, v in metrics.items()}
            round_rollouts: list[int] = []
            round_rewards: list[torch.Tensor] = []
            dropped: list[int] = []  # dataset indices of the groups dropped so far, the ones a refill replaces
            while n_kept < want and rounds <= self.dynamic_sampling_max_rounds:
                need = want - n_kept
                idx, batch = self._draw(need, dropped[-need:] if rounds else None)
                out = super()._generate_and_score_completions(batch)
                spread = self._spread(self._ds_rewards)
                round_rollouts.append(need * g)
                round_rewards.append(self._ds_rewards)
                step = self.state.global_step + 1
                self.dynamic_sampling_drawn += [(i, s, step) for i, s in zip(idx, spread.tolist(), strict=True)]
                rows = spread.repeat_interleave(g).to(out["advantages"].device)
                kept.append(select_rows(out, rows))
                spare.append(select_rows(out, ~rows))
                n_kept += int(spread.sum())
                n_dropped += int((~spread).sum())
                dropped += [i for i, s in zip(idx, spread.tolist(), strict=True) if not s]
                drawn += need
                rounds += 1
            filled = want - n_kept
            parts = kept
            if filled:
                fill = mask_out(select_rows(concat_batches(spare, self._tokenizer.pad_token_id), torch.arange(filled * g)))
                parts = [*kept, fill]
                if not self._ds_warned:
                    log.warning("dynamic sampling: %d of %d groups had no reward spread after %d rounds; filled with "
                                "groups masked out of the loss (logged as dynamic_sampling/filled_groups)", filled, want, rounds)
                    self._ds_warned = True
            merge_round_metrics(metrics, before, round_rollouts, torch.cat(round_rewards), self.reward_weights,
                                list(self.reward_func_names))
            for name, value in (("kept_groups", n_kept), ("dropped_groups", n_dropped), ("rounds", rounds),
                                ("filled_groups", filled), ("prompts_drawn", drawn), ("stream_epoch", self._ds_epoch)):
                metrics[METRIC + name].append(float(value))
            return concat_batches(parts, self._tokenizer.pad_token_id)

    DynamicSamplingTrainer.__name__ = DynamicSamplingTrainer.__qualname__ = f"DynamicSampling{base_cls.__name__}"
    return DynamicSamplingTrainer
