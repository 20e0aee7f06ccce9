"""GRPO through trl, reading prompts in a given order (train stage).

:func:`train_grpo` trains a saved policy on prompts in exactly the order given (a curriculum), or, with
``order=None``, in a seeded shuffle (vanilla GRPO). trl's own sampler shuffles; :class:`OrderedGRPOTrainer`
replaces it with :class:`OrderSampler`, which yields each prompt ``num_generations`` times in a row, batch by
batch, in our order. The reward is 1.0 when the completion's final answer (``#### N``) equals the gold answer,
judged as :func:`saerl.verify.verify_batch` judges it (plain numbers in process, anything else by math-verify).
"""

from __future__ import annotations

import ast
import contextvars
import functools
import json
import logging
import math
import os
import shutil
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import torch
from datasets import Dataset
from torch.utils.data import Sampler
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from saerl.answers import BOXED, judge_held_out
from saerl.artifacts import write_file_atomic
from saerl.checkpoints import CURVE_FILE, checkpoint_folders, checkpoint_step, is_complete, last_checkpoint
from saerl.config import HealthConfig, ModelConfig, TrainConfig
from saerl.stream import train_stream_length, training_order
from saerl.terminal import filtered
from saerl.train_env import configured_environment, in_configured_environment, is_saerl_rank
from saerl.verify import extract_final_answer, verify_batch

log = logging.getLogger("saerl.rl")
# trl loss types normalised by the loss tokens of the batch, which a masked (cut-off) rollout does not count in;
# the others average over rollouts, where it counts as a zero
TOKEN_NORMALISED_LOSSES = ("dapo", "bnpo")
CORRECTNESS = "correctness"  # the correctness reward's name (CorrectnessReward.__name__), which trl logs it by


class OrderSampler(Sampler[int]):
    """Dataset indices 0..n-1 in order, each repeated `repeat` times in a row; every block of `batch` prompts (a
    generation batch: `steps` optimizer steps' prompts) is yielded `block_repeats` times (trl reuses one generation
    batch for num_iterations * steps_per_generation). With `processes` > 1, accelerate hands process r the r-th of
    `processes` equal contiguous parts of each block, which trl splits into its `steps` steps in turn: the block is
    laid out process by process, then step by step, so that each process's k-th part holds its share of the k-th
    step's prompts (whole groups: a step's prompts must divide by `processes`), and optimizer step k trains on the
    k-th batch of the order across all processes, as in one. in: n prompts, group size, prompts per generation
    batch, block repeats, processes, steps per generation batch; out: an index stream."""

    def __init__(self, n: int, repeat: int, batch: int, block_repeats: int = 1, processes: int = 1,
                 steps: int = 1) -> None:
        if batch % steps or (batch // steps) % processes:
            raise ValueError(f"a generation batch of {batch} prompts over {steps} steps does not give each of "
                             f"{processes} processes whole groups of a step: the prompts per step "
                             "(curriculum.batch_size) must divide by train.num_processes")
        self.n, self.repeat, self.batch, self.block_repeats = n, repeat, batch, block_repeats
        self.processes, self.steps = processes, steps

    def block(self, start: int) -> list[int]:
        """The prompts of the generation batch from `start` in the order processes receive them (see the class).
        in: the first prompt's index; out: indices, each once."""
        per_step = self.batch // self.steps
        share = per_step // self.processes
        return [start + s * per_step + r * share + i
                for r in range(self.processes) for s in range(self.steps) for i in range(share)]

    def __iter__(self) -> Iterator[int]:
        for start in range(0, self.n - self.batch + 1, self.batch):
            block = self.block(start)
            for _ in range(self.block_repeats):
                for i in block:
                    yield from [i] * self.repeat

    def __len__(self) -> int:
        return (self.n // self.batch) * self.batch * self.repeat * self.block_repeats


def shuffle_within_steps(batch: dict[str, Any], steps: int) -> dict[str, Any]:
    """A generation batch's rows shuffled within each of its `steps` consecutive equal parts, not across them
    (trl's shuffle_sequence_dict on each part; a 0-dim tensor such as num_items_in_batch kept as it is). trl
    shuffles the whole generation batch before splitting it into its steps, so with steps_per_generation > 1
    every step would train on rows of every curriculum batch of the generation batch; shuffled part by part,
    step k trains on the k-th batch of the order. in: trl's batch dict (rows in order), steps; out: the dict."""
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    parts = [shuffle_sequence_dict(p) for p in split_tensor_dict(batch, steps)]

    def join(key: str) -> Any:
        v = batch[key]
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return torch.cat([p[key] for p in parts])
        return [x for p in parts for x in p[key]]

    return {k: join(k) for k in batch}


def step_token_counts(chunks: list[dict[str, Any]], steps: int,
                      total: Callable[[torch.Tensor], torch.Tensor] = lambda count: count) -> None:
    """Give each optimizer step's micro-batches their own step's loss-token count. trl's token-level losses (dapo)
    divide by num_items_in_batch x gradient_accumulation / steps_per_generation, with num_items_in_batch the
    count of the whole generation batch: every step got the mean count, which only the shuffle across steps made
    right on average. With each step on its own rows (:func:`shuffle_within_steps`; under DAPO the kept groups
    come first, the filler last), a step's loss is its own token mean only when num_items_in_batch is `steps`
    times its own count (summed over processes by `total`, as trl gathers its count). in: the generation batch's
    micro-batches in step order (trl's _buffered_inputs), steps, the sum over processes; changes them in place."""
    from saerl.dapo import loss_tokens

    per_step = len(chunks) // steps
    for s in range(steps):
        part = chunks[s * per_step:(s + 1) * per_step]
        count = total(sum(loss_tokens(c).sum() for c in part))
        for c in part:
            if isinstance(c.get("num_items_in_batch"), torch.Tensor):
                c["num_items_in_batch"] = torch.as_tensor(count * steps, device=c["num_items_in_batch"].device)


_SHUFFLE_STEPS: contextvars.ContextVar[int] = contextvars.ContextVar("saerl_shuffle_steps", default=1)


def _steps_aware_shuffle(original: Any) -> Any:
    """trl's shuffle_sequence_dict, or :func:`shuffle_within_steps` while an ordered trainer's _prepare_inputs sets
    _SHUFFLE_STEPS above 1 in this thread (a context variable: trainers in other threads are not affected)."""
    def shuffle(batch: Any) -> Any:
        steps = _SHUFFLE_STEPS.get()
        return shuffle_within_steps(batch, steps) if steps > 1 else original(batch)

    shuffle.saerl_steps_aware = True  # type: ignore[attr-defined]
    return shuffle


def _trainer_class() -> type:
    """GRPOTrainer with our sampler (trl is imported lazily: the import costs seconds)."""
    import trl.trainer.grpo_trainer as grpo_module
    from trl import GRPOTrainer

    if not getattr(grpo_module.shuffle_sequence_dict, "saerl_steps_aware", False):  # trl 1.16 calls it by this name
        grpo_module.shuffle_sequence_dict = _steps_aware_shuffle(grpo_module.shuffle_sequence_dict)

    class OrderedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that reads the train dataset in its stored order (no shuffling), one batch of the order
        per optimizer step also when a generation batch spans several steps (:func:`shuffle_within_steps`)."""

        def _get_train_sampler(self, dataset: Any = None) -> Sampler:
            data = self.train_dataset if dataset is None else dataset
            return OrderSampler(len(data), self.num_generations, self.args.generation_batch_size // self.num_generations,
                                self.num_iterations * self.args.steps_per_generation, self.accelerator.num_processes,
                                self.args.steps_per_generation // self.args.gradient_accumulation_steps)

        def _prepare_inputs(self, generation_batch: Any) -> Any:
            """trl's, with its shuffle of a new generation batch confined to each optimizer step's rows (trl's
            steps_per_generation counts micro-batches: steps = it / gradient_accumulation_steps) and each step's
            token count its own (:func:`step_token_counts`)."""
            steps = self.args.steps_per_generation // self.args.gradient_accumulation_steps
            if steps == 1 or not self.model.training:
                return super()._prepare_inputs(generation_batch)
            fresh = self._buffered_inputs is None or self._step % (self.args.steps_per_generation * self.num_iterations) == 0
            token = _SHUFFLE_STEPS.set(steps)
            try:
                inputs = super()._prepare_inputs(generation_batch)
            finally:
                _SHUFFLE_STEPS.reset(token)
            if fresh:  # in place: `inputs` is one of them
                step_token_counts(self._buffered_inputs, steps, lambda count: self.accelerator.gather(count).sum())
            return inputs

    return OrderedGRPOTrainer


def completion_text(completion: Any) -> str:
    """The text of a trl completion (a string, or a list of chat messages)."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def judge(texts: list[str], golds: list[str], timeout_s: float = 5.0) -> list[str]:
    """The verifier's status of each text's final answer (``#### X`` or ``\\boxed{X}``) against its gold:
    correct / wrong / no_answer / timeout / error, exactly as the final evaluation judges it: through
    `saerl.verify.verify_batch`, which decides what it can in this process and sends the rest to its worker
    pool, each bounded by `timeout_s`. in: completions, golds, timeout; out: statuses."""
    return [r.status for r in verify_batch(texts, golds, timeout_s)]


def is_correct(texts: list[str], golds: list[str]) -> list[bool]:
    """Whether each text's final answer equals its gold (see :func:`judge`). in: completions, golds; out: flags."""
    return [status == "correct" for status in judge(texts, golds)]


class CorrectnessReward:
    """trl reward function: 1.0 when the final answer equals the gold `answer` column, else 0.0, counting the
    verifier's failures (timeouts/errors: scored 0 and counted, never silently). in: completions, answers;
    out: rewards."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.__name__ = CORRECTNESS
        self.timeout_s = timeout_s
        self.checked = 0
        self.failures = 0

    def __call__(self, completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        statuses = judge([completion_text(c) for c in completions], answer, self.timeout_s)
        self.checked += len(statuses)
        self.failures += sum(s in ("timeout", "error") for s in statuses)
        return [float(s == "correct") for s in statuses]


def cut_off(ids: Sequence[int], limit: int, stops: Collection[int]) -> bool:
    """Whether a rollout's token ids were cut off at the length limit: `limit` tokens or more, the last not a stop
    id (a rollout that stopped on its own is shorter, or ends on its stop id at the limit; trl's
    completions/clipped_ratio counts the same rollouts). in: completion ids, train.max_completion_length, the
    policy's stop ids; out: flag."""
    return len(ids) >= limit and (not ids or ids[-1] not in stops)


def format_reward(completions: list[Any], completion_ids: list[list[int]] | None = None, *,
                  max_completion_length: int | None = None, stop_ids: Collection[int] = (), **_: Any) -> list[float]:
    """trl reward function: 1.0 when the completion states a final answer the verifier can read
    (``#### X`` or ``\\boxed{X}``) and was not cut off at `max_completion_length` (:func:`cut_off`, on the
    `completion_ids` trl passes every reward function: a cut-off rollout earned the format reward for an answer
    it had not finished), else 0.0. Without ids or a limit, the text alone decides.
    in: completions, their token ids, the limit, the policy's stop ids; out: rewards."""
    ended = ([not cut_off(i, max_completion_length, stop_ids) for i in completion_ids]
             if completion_ids is not None and max_completion_length is not None else [True] * len(completions))
    return [float(done and extract_final_answer(completion_text(c)) is not None)
            for c, done in zip(completions, ended, strict=True)]


def reward_functions(cfg: TrainConfig, correctness: Any, extra: list[Any] | None = None,
                     stop_ids: Collection[int] = ()) -> tuple[list[Any], list[float]]:
    """trl reward functions and their weights, in this order: `correctness` (weight 1), :func:`format_reward`
    (cfg.format_reward) when on, for rollouts not cut off at cfg.max_completion_length (`stop_ids`: the policy's,
    which end a rollout), DAPO's soft overlong punishment when cfg.overlong_buffer is on (weight 1: trl's
    ``get_soft_overlong_punishment``: 0 up to max_completion_length - overlong_buffer tokens, then falling linearly
    to -1 at max_completion_length), then the `extra` functions (weight 1 each).
    in: train config, the correctness reward, extra reward functions, stop ids; out: (functions, weights)."""
    funcs: list[Any] = [correctness]
    weights = [1.0]
    if cfg.format_reward > 0:  # a partial keeps the name trl logs it by: rewards/format_reward/mean
        funcs.append(functools.partial(format_reward, max_completion_length=cfg.max_completion_length,
                                       stop_ids=frozenset(stop_ids)))
        weights.append(cfg.format_reward)
    if cfg.overlong_buffer > 0:
        from trl.rewards import get_soft_overlong_punishment

        funcs.append(get_soft_overlong_punishment(cfg.max_completion_length, cfg.overlong_buffer))
        weights.append(1.0)
    extra = extra or []
    return [*funcs, *extra], [*weights, *[1.0] * len(extra)]


class _TimeLimit(TrainerCallback):
    """Stop training once `limit_s` seconds of training have passed, counting the `before` seconds a resumed run's
    checkpoint had trained, and record the seconds so far at each step end (:attr:`seconds`). Where several
    processes train together, each has its own clock: they stop at the step where any of them is over the limit
    (:func:`sum_over_processes`), so all of them end, and evaluate a last time (:class:`EvalCallback`), at one step."""

    def __init__(self, limit_s: float | None, before: float = 0.0) -> None:
        self.limit_s, self.before, self.start, self.seconds = limit_s, before, time.monotonic(), before

    def elapsed(self) -> float:
        """Seconds of training so far: those before the resume plus those since this run began training (a monotonic
        clock: a wall-clock step, NTP or a resumed VM, made them negative or hours long, and a resume carried that on)."""
        return self.before + time.monotonic() - self.start

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seconds = self.elapsed()
        if self.limit_s is not None and sum_over_processes([float(self.seconds >= self.limit_s)])[0] > 0:
            control.should_training_stop = True


BAR_FIGURES = ("reward", "loss", "completions/mean_length")  # a step's figures on the training bar
BAR_PREFIX = "train"  # the training bar's description: 'train <label>' (the runner's label is '<arm>:<seed>')


def bar_description(label: str) -> str:
    """The training bar's description: 'train <label>' ('train saerl:0'), or 'train' without a label.
    in: the run's label ('' = none); out: text."""
    return f"{BAR_PREFIX} {label}" if label else BAR_PREFIX


class StepBar(ProgressCallback):
    """transformers' training progress bar, described by `desc` (:func:`bar_description`: which arm and seed the
    bar is, as the runs of a stage draw theirs one after another), with the last step's reward, loss and mean
    completion length as its postfix, instead of the dict of every logged metric it (and, without a bar,
    PrinterCallback) prints each step: those go to log.parquet and MLflow."""

    def __init__(self, desc: str = BAR_PREFIX) -> None:
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """ProgressCallback's bar, described from its first frame: set after the parent drew it, the description
        came only with the second frame, so a log file's first one said nothing of whose bar it was."""
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.desc, dynamic_ncols=True)
        self.current_step = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k.split("/")[-1]: f"{logs[k]:.3g}" for k in BAR_FIGURES if isinstance(logs.get(k), int | float)}
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


PROGRESS_LOG_S = 60.0  # with runtime.progress off, at most one INFO progress line per this many seconds of training
# (and one after the first and the last step): a heartbeat in a log file, where no bar is drawn


class ProgressLog(TrainerCallback):
    """With no progress bar (runtime.progress off), an INFO line after the first optimizer step, then once at least
    `every_s` seconds (PROGRESS_LOG_S) have passed since the last line, and after the last step: 'train saerl:0:
    step 40/200, 12.1 s/step, ETA 32 min, reward 0.41' (seconds per step since the last line, in-training
    evaluations included; the ETA from the mean step time of this process's training; the mean reward of the steps
    since the last line). A log file then says a run is alive and how far it is, where it printed nothing from
    '[train:saerl:0] computing' to its end. in: the run's label (:func:`bar_description`), the period (None:
    PROGRESS_LOG_S), the clock (seconds; None: time.monotonic, as its spans are rates and an ETA, not times of day)."""

    def __init__(self, label: str = "", every_s: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.desc, self.every_s = bar_description(label), every_s or PROGRESS_LOG_S
        self.clock = clock or time.monotonic
        self.start = self.last_t = self.clock()
        self.first_step = self.last_step = 0
        self.rewards: list[float] = []
        self.lines = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = self.last_t = self.clock()
        self.first_step = self.last_step = state.global_step  # a resumed run starts at its checkpoint's step
        self.rewards, self.lines = [], 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        row = state.log_history[-1] if state.log_history else {}
        if not state.is_world_process_zero or not is_step_row(row):
            return
        if isinstance(row.get("reward"), int | float) and math.isfinite(row["reward"]):
            self.rewards.append(float(row["reward"]))
        now, step = self.clock(), state.global_step
        if self.lines and now - self.last_t < self.every_s and step < state.max_steps:
            return
        log.info("%s", self.line(step, state.max_steps, now))
        self.last_t, self.last_step, self.rewards, self.lines = now, step, [], self.lines + 1

    def line(self, step: int, max_steps: int, now: float) -> str:
        """The progress line at optimizer `step` of `max_steps`, at time `now`. in: step, max steps, epoch seconds."""
        from saerl.status import format_duration

        per_step = (now - self.last_t) / max(1, step - self.last_step)
        mean = (now - self.start) / max(1, step - self.first_step)
        reward = f", reward {sum(self.rewards) / len(self.rewards):.3g}" if self.rewards else ""
        return (f"{self.desc}: step {step}/{max_steps}, {per_step:.3g} s/step, "
                f"ETA {format_duration(max(0, max_steps - step) * mean)}{reward}")


def quiet_logs(trainer: Any, progress: bool, label: str = "") -> None:
    """Replace the trainer's per-step printing of its log dict (ProgressCallback's, or PrinterCallback's without a
    bar) with :class:`StepBar` described by `label` (:func:`bar_description`) when `progress` (runtime.progress),
    else with an INFO line now and then (:class:`ProgressLog`)."""
    for cb in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(StepBar(bar_description(label)) if progress else ProgressLog(label))


StepSink = Callable[[int, dict[str, float]], None]  # (optimizer step, {metric: value}): one step's points, as measured
_STEP_SINK: contextvars.ContextVar[StepSink | None] = contextvars.ContextVar("saerl_step_sink", default=None)


@contextmanager
def step_sink(sink: StepSink | None) -> Iterator[None]:
    """For the block, every training run :func:`train_grpo` runs in this thread (or a context copied from it) hands
    each step's metrics (:class:`LiveMetrics`) and each in-training evaluation (:class:`EvalCallback`) to `sink` as
    they are measured (saerl.tracking.live_metrics sends them to the stage run's MLflow run); None: to no one. The
    run's outputs are the same either way. in: the sink; out: a context."""
    token = _STEP_SINK.set(sink)
    try:
        yield
    finally:
        _STEP_SINK.reset(token)


def current_sink() -> StepSink | None:
    """The step sink of this thread's :func:`step_sink` block, or None (saerl.distributed hands it a run's points
    from the processes that train it). out: the sink."""
    return _STEP_SINK.get()


def is_step_row(row: dict[str, Any]) -> bool:
    """Is a row of the trainer's log history an optimizer step's metrics (log.parquet holds those alone), not the
    summary transformers logs at the end of training (train_runtime, train_loss)? in: a log_history row."""
    return "loss" in row or "reward" in row


def step_values(row: dict[str, Any]) -> dict[str, float]:
    """The metrics of a step row as log.parquet and MLflow hold them: every number but 'step' and the
    STREAM_ONLY_METRICS, a metric trl logged as None (no valid value) left out (saerl.tracking.step_points reads
    the same from log.parquet). in: a log_history row; out: {name: value}."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and k not in STREAM_ONLY_METRICS and isinstance(v, int | float)}


class LiveMetrics(TrainerCallback):
    """Hands each optimizer step's metrics (:func:`step_values` of its log row) to `sink` as soon as the trainer
    logs them (after the step and its evaluation, before its checkpoint), on the main process only."""

    def __init__(self, sink: StepSink) -> None:
        self.sink = sink

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        row = state.log_history[-1] if state.log_history else {}
        if state.is_world_process_zero and is_step_row(row):
            self.sink(int(row.get("step", state.global_step)), step_values(row))


@contextmanager
def own_precision(model: Any) -> Iterator[None]:
    """The model's own forward, in its weights' precision, while the block runs. With train.bf16 (a GPU) the
    Trainer has accelerate wrap the policy's forward in bf16 autocast on the model object itself (model.forward
    replaced, the original kept as model._original_forward), so the in-training evaluation generated in bf16 while
    the heldout and label stages load the same weights in float32: the learning curve (and the steps-to-target read
    from it) and the comparison table measured one policy at two precisions (on the testbed LM, 63 of 300 greedy
    completions and 6 verdicts differed). A model without the wrapper is left as it is. in: the model; out: a
    context."""
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield
        return
    wrapped = model.__dict__.get("forward")
    model.forward = original
    try:
        yield
    finally:
        if wrapped is None:
            del model.forward
        else:
            model.forward = wrapped


# trl's per-step metrics the health checks read (saerl.rl.health_notes)
ENTROPY, CLIPPED, ZERO_STD, KL = "entropy", "completions/clipped_ratio", "frac_reward_zero_std", "kl"
REWARD, GRAD_NORM, MEAN_LENGTH = "reward", "grad_norm", "completions/mean_length"
FILLED = "dynamic_sampling/filled_groups"  # DAPO: groups still without a reward spread when the rounds ran out
SKIPPED = "dynamic_sampling/skipped_updates"  # DAPO: 1 for an optimizer step with no group kept (no update)
NON_FINITE_METRICS = ("loss", "grad_norm")  # a step logging either as nan/inf trained on garbage


def first_non_finite(log_rows: list[dict[str, Any]]) -> tuple[int, str, float] | None:
    """The first logged step whose loss or grad_norm is nan or inf (transformers logs them as they are:
    grpo_config turns its logging_nan_inf_filter off). in: trl's per-step log rows; out: (step, metric, value) or
    None."""
    for row in log_rows:
        for name in NON_FINITE_METRICS:
            value = row.get(name)
            if isinstance(value, int | float) and not math.isfinite(value):
                return int(row.get("step", 0)), name, float(value)
    return None


def _series(log_rows: list[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    """(step, value) of each logged step that has a finite `name` metric. in: log rows, metric; out: pairs."""
    return [(int(r.get("step", 0)), float(r[name])) for r in log_rows
            if isinstance(r.get(name), int | float) and math.isfinite(r[name])]


def reward_metric(name: str) -> str:
    """The per-step metric trl logs a reward function's mean under: rewards/<name>/mean (unweighted)."""
    return f"rewards/{name}/mean"


_Row = TypeVar("_Row")  # one logged step's item, of whatever shape a health check reads


def _tail(rows: list[_Row], share: float) -> list[_Row]:
    """The last `share` of a run's logged steps, at least one (health.tail_share). in: per-step items, share."""
    return rows[-max(1, round(len(rows) * share)):]


def _head(rows: list[_Row], share: float) -> list[_Row]:
    """The first `share` of a run's logged steps, at least one (what :func:`_tail`'s last steps are compared with).
    in: per-step items, share."""
    return rows[:max(1, round(len(rows) * share))]


def _mean(pairs: list[tuple[int, float]]) -> float:
    """The mean value of (step, value) pairs (at least one). in: pairs; out: mean."""
    return sum(v for _, v in pairs) / len(pairs)


def _steps(pairs: list[tuple[int, float]]) -> str:
    """'steps 46-60' (or 'step 7') for the (step, value) pairs a mean was taken over. in: pairs; out: text."""
    first, last = pairs[0][0], pairs[-1][0]
    return f"step {first}" if first == last else f"steps {first}-{last}"


def _fix_learning_rate(cfg: TrainConfig) -> str:
    """The fix a finite but ruinous update calls for, with the run's settings. in: train config; out: text."""
    warmup = f" or lengthen train.warmup_steps (now {cfg.warmup_steps})" if cfg.warmup_steps else " or add train.warmup_steps"
    return f"lower train.learning_rate (now {cfg.learning_rate:g}, e.g. {cfg.learning_rate / 10:g}){warmup}"


def reward_collapse_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on a reward collapse: the mean reward over the last h.tail_share of the steps below its mean over the
    first h.tail_share by more than h.reward_drop_share of it, the early mean being at least h.reward_floor (the run
    unlearned what it knew: a learning rate too high wrecks a policy while every number stays finite).
    in: log rows, train config, thresholds; out: the note or None (off at reward_drop_share 0)."""
    rewards = _series(log_rows, REWARD)
    if h.reward_drop_share <= 0 or not rewards:
        return None
    early, late = _head(rewards, h.tail_share), _tail(rewards, h.tail_share)
    before, after = _mean(early), _mean(late)
    if before <= 0 or before < h.reward_floor or before - after <= h.reward_drop_share * before:
        return None
    return (f"the mean reward fell from {before:.3g} over the first {len(early)} steps ({_steps(early)}) to {after:.3g} "
            f"over the last {len(late)} ({_steps(late)}), {(before - after) / before:.0%} of it (over "
            f"health.reward_drop_share={h.reward_drop_share:g}): the run unlearned what it knew, as a finite but too "
            f"large update does; {_fix_learning_rate(cfg)}. A curriculum order trains on harder prompts later, so "
            "part of such a fall can be the order's: the held-out accuracy tells them apart")


def eval_drop_notes(curve: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> list[str]:
    """The notes on held-out accuracy lost in training: per set of the in-training evaluation (rows: step, set,
    greedy, n), its last point below its first (step 0) by more than h.eval_drop, with the first evaluation that
    was. in: curve rows, train config, thresholds; out: one note per set that lost it ([] at eval_drop 0)."""
    if h.eval_drop <= 0:
        return []

    def over(drop: float) -> bool:  # more than h.eval_drop, a drop equal to it up to float error not (0.56 - 0.51)
        return drop > h.eval_drop and not math.isclose(drop, h.eval_drop)

    notes = []
    for name in dict.fromkeys(r["set"] for r in curve):
        points = sorted((r for r in curve if r["set"] == name), key=lambda r: r["step"])
        first, last = points[0], points[-1]
        drop = first["greedy"] - last["greedy"]
        if last["step"] <= first["step"] or not over(drop):
            continue
        below = next(r for r in points if over(first["greedy"] - r["greedy"]))
        notes.append(f"held-out set {name!r}: in-training greedy accuracy fell from {first['greedy']:.3g} at step "
                     f"{first['step']} to {last['greedy']:.3g} at step {last['step']} ({last['n']} problems), "
                     f"{drop * 100:.1f} points (over health.eval_drop={h.eval_drop:g}; first more than that below at "
                     f"step {below['step']}: {below['greedy']:.3g}): training made the policy worse on problems it "
                     f"did not train on, and the heldout stage evaluates this final policy; {_fix_learning_rate(cfg)}")
    return notes


def grad_spike_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on grad-norm spikes: the steps whose grad_norm (before clipping) is above h.grad_spike_factor times
    the run's median over the steps that had a gradient (grad_norm > 0), with the first and the largest.
    in: log rows, train config, thresholds; out: the note or None (off at grad_spike_factor 0)."""
    norms = [(s, v) for s, v in _series(log_rows, GRAD_NORM) if v > 0]
    if h.grad_spike_factor <= 0 or not norms:
        return None
    median = statistics.median(v for _, v in norms)
    spikes = [(s, v) for s, v in norms if v > h.grad_spike_factor * median]
    if not spikes:
        return None
    top = max(spikes, key=lambda x: x[1])
    clipped = sum(v > cfg.max_grad_norm for _, v in spikes)
    return (f"grad_norm was above health.grad_spike_factor={h.grad_spike_factor:g} times the run's median "
            f"({median:.3g}) on {len(spikes)} of {len(norms)} steps with a gradient (first step {spikes[0][0]}: "
            f"{spikes[0][1]:.3g}; max {top[1]:.3g} at step {top[0]}; {clipped} clipped to train.max_grad_norm="
            f"{cfg.max_grad_norm:g}): the loss turned steep there, and a step that large can throw the policy off what "
            f"it learned (watch the reward and held-out accuracy after it); lower train.max_grad_norm or "
            f"{_fix_learning_rate(cfg).removeprefix('lower ')}")


def length_change_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on a completion-length blow-up or collapse: the mean completion length over the last h.tail_share
    of the steps above h.length_factor times its mean over the first h.tail_share, or below 1/h.length_factor of
    it. in: log rows, train config, thresholds; out: the note or None (off at length_factor 0)."""
    lengths = _series(log_rows, MEAN_LENGTH)
    if h.length_factor <= 0 or not lengths:
        return None
    early, late = _head(lengths, h.tail_share), _tail(lengths, h.tail_share)
    before, after = _mean(early), _mean(late)
    if before <= 0 or 1 / h.length_factor <= after / before <= h.length_factor:
        return None
    change = (f"the mean completion length went from {before:.3g} tokens over the first {len(early)} steps "
              f"({_steps(early)}) to {after:.3g} over the last {len(late)} ({_steps(late)}), {after / before:.2g}x "
              f"(beyond health.length_factor={h.length_factor:g})")
    if after > before:
        cut = dict(_series(log_rows, CLIPPED))
        late_cut = [cut[s] for s, _ in late if s in cut]
        share = f"; {sum(late_cut) / len(late_cut):.0%} cut off at train.max_completion_length=" \
                f"{cfg.max_completion_length} over those steps" if late_cut else ""
        return (f"{change}: the answers blew up (rambling or degenerate repetition, which a too large update "
                f"drives{share}); {_fix_learning_rate(cfg)}")
    return (f"{change}: the answers collapsed (the policy learned to stop early, or to emit next to nothing); "
            f"{_fix_learning_rate(cfg)}, or look for a reward that pays for short answers")


def format_only_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on format-reward hacking: with cfg.format_reward on, over the last h.tail_share of the steps that
    logged both rewards, the format reward's mean above the correctness reward's by more than
    h.format_only_share (that share of rollouts was rewarded for a readable final answer alone). in: log rows, train
    config, thresholds; out: the note or None."""
    fmt, right = _series(log_rows, reward_metric(format_reward.__name__)), dict(_series(log_rows, reward_metric(CORRECTNESS)))
    both = [(s, v, right[s]) for s, v in fmt if s in right]
    if cfg.format_reward <= 0 or not both:
        return None
    tail = _tail(both, h.tail_share)
    f_mean, c_mean = (sum(x[i] for x in tail) / len(tail) for i in (1, 2))
    if f_mean - c_mean <= h.format_only_share:
        return None
    return (f"over the last {len(tail)} steps the format reward averaged {f_mean:.3g} and correctness {c_mean:.3g}: "
            f"{f_mean - c_mean:.0%} of rollouts earned reward for a readable final answer alone, not a right one "
            f"(over health.format_only_share={h.format_only_share:g}), so the policy can raise its reward without "
            f"solving more; lower train.format_reward (now {cfg.format_reward:g}) or set it to 0 (off)")


def exhausted_rounds_note(log_rows: list[dict[str, Any]], cfg: TrainConfig) -> str | None:
    """The note on DAPO's dynamic sampling running out of rounds: the generation batches that still held groups
    without a reward spread after cfg.dynamic_sampling_max_rounds extra rounds (filled with groups masked out of the
    loss: dynamic_sampling/filled_groups), and the optimizer steps that made no update for want of any group
    (dynamic_sampling/skipped_updates). in: log rows, train config; out: the note or None (GRPO, or never ran out)."""
    filled = [v for _, v in _series(log_rows, FILLED)]
    short = [v for v in filled if v > 0]
    if cfg.algorithm != "dapo" or not short:
        return None
    skipped = sum(v >= 1.0 for _, v in _series(log_rows, SKIPPED))
    idle = f"; {skipped} optimizer steps made no update (no group to learn from)" if skipped else ""
    return (f"DAPO's dynamic sampling ran out of its train.dynamic_sampling_max_rounds="
            f"{cfg.dynamic_sampling_max_rounds} extra rounds on {len(short)} of {len(filled)} generation batches, "
            f"leaving {sum(short):g} groups without a reward spread (filled in, masked out of the loss: those steps "
            f"trained on fewer groups){idle}; raise train.dynamic_sampling_max_rounds, or train on prompts "
            "nearer the policy's level (all-wrong groups: curriculum.max_difficulty_quantile below 1 leaves out the "
            "predicted out-of-reach tail)")


def health_notes(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig, reward_checks: int = 0,
                 verifier_failures: int = 0, curve: list[dict[str, Any]] | None = None) -> list[str]:
    """Plain-language notes on a training run's health from trl's per-step log, by the thresholds `h`
    (:class:`saerl.config.HealthConfig`): a non-finite loss or grad_norm (its first step), entropy collapse over
    the last steps, rollouts cut off at max_completion_length, steps without any reward spread (no learning
    signal), reward checks the verifier failed, (beta > 0) KL to the reference above its bound, reward earned from
    the format alone (:func:`format_only_note`) and, under DAPO, dynamic sampling out of rounds
    (:func:`exhausted_rounds_note`, whenever it happened); then what a finite but ruinous update (a learning rate
    too high) leaves, which none of those names as such: a reward collapse (:func:`reward_collapse_note`), held-out
    accuracy lost in training (:func:`eval_drop_notes`, from the in-training evaluation `curve`), grad-norm spikes
    (:func:`grad_spike_note`) and a completion-length blow-up or collapse (:func:`length_change_note`).
    in: log rows (step, metric: value), train config, health thresholds, the reward's checks and verifier
    failures, the in-training evaluation's rows (step, set, greedy, n; None = none); out: notes ([] for a healthy
    run)."""
    notes = [n for n in (_non_finite_note(log_rows, cfg), _entropy_note(log_rows, h),
                         _truncation_note(log_rows, cfg, h), _no_signal_note(log_rows, h),
                         _verifier_note(reward_checks, verifier_failures, h), _kl_note(log_rows, cfg, h),
                         format_only_note(log_rows, cfg, h), exhausted_rounds_note(log_rows, cfg),
                         reward_collapse_note(log_rows, cfg, h)) if n]
    notes += eval_drop_notes(curve or [], cfg, h)
    return notes + [n for n in (grad_spike_note(log_rows, cfg, h), length_change_note(log_rows, cfg, h)) if n]


def _non_finite_note(log_rows: list[dict[str, Any]], cfg: TrainConfig) -> str | None:
    """The note on a non-finite loss or grad_norm: its first step (:func:`first_non_finite`). in: log rows, train
    config; out: the note or None."""
    bad = first_non_finite(log_rows)
    if bad is None:
        return None
    return (f"{bad[1]} was {bad[2]} at step {bad[0]}: the update was not finite (numerical overflow); lower "
            f"train.learning_rate (now {cfg.learning_rate:g})")


def _entropy_note(log_rows: list[dict[str, Any]], h: HealthConfig) -> str | None:
    """The note on entropy collapse: the policy's mean entropy over the last h.tail_share of the steps under
    h.entropy_floor. in: log rows, thresholds; out: the note or None (off at entropy_floor 0)."""
    entropy = _series(log_rows, ENTROPY)
    if not entropy or h.entropy_floor <= 0:
        return None
    tail = _tail(entropy, h.tail_share)
    mean = sum(v for _, v in tail) / len(tail)
    if mean >= h.entropy_floor:
        return None
    return (f"policy entropy fell from {entropy[0][1]:.3g} (step {entropy[0][0]}) to {mean:.3g} "
            f"nats/token over the last {len(tail)} steps, under health.entropy_floor="
            f"{h.entropy_floor:g}: the policy collapsed (a group's rollouts are near-identical, so GRPO "
            "has no spread to learn from); lower train.learning_rate or raise train.beta")


def _truncation_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on rollouts cut off at train.max_completion_length: their share over all steps above
    h.truncated_share, with the learning-rate fix too where the share was at most h.truncated_share over the first
    h.tail_share of the steps and above it over the last (the answers grew while training). in: log rows, train
    config, thresholds; out: the note or None."""
    clipped = _series(log_rows, CLIPPED)
    if not clipped:
        return None
    share = sum(v for _, v in clipped) / len(clipped)
    early, late = _mean(_head(clipped, h.tail_share)), _mean(_tail(clipped, h.tail_share))
    grew = (f"; or, since only {early:.0%} were cut off over the first steps and {late:.0%} over the last (the "
            f"answers grew while training, as a too large update makes them), {_fix_learning_rate(cfg)}"
            if early <= h.truncated_share < late else "")
    if share <= h.truncated_share:
        return None
    return (f"{share:.0%} of rollouts hit train.max_completion_length={cfg.max_completion_length} and "
            f"were cut off (over health.truncated_share={h.truncated_share:g}): a cut-off answer "
            f"has no final answer to reward; raise train.max_completion_length{grew}")


def _no_signal_note(log_rows: list[dict[str, Any]], h: HealthConfig) -> str | None:
    """The note on steps without a learning signal: the share of steps on which no group had a reward spread
    (frac_reward_zero_std = 1) above h.no_signal_share, with the mean reward. in: log rows, thresholds; out: the
    note or None."""
    steps = len(log_rows)
    flat = [s for s, v in _series(log_rows, ZERO_STD) if v >= 1.0]
    if not steps or len(flat) / steps <= h.no_signal_share:
        return None
    rewards = _series(log_rows, "reward")
    level = f"; mean reward {sum(v for _, v in rewards) / len(rewards):.3g}" if rewards else ""
    return (f"no group had a reward spread on {len(flat)} of {steps} steps (frac_reward_zero_std = 1{level}): "
            "every advantage was 0, so those steps did not learn from the reward (the prompts are all too "
            "hard or all too easy for the policy, or its answers are cut off or unreadable)")


def _verifier_note(reward_checks: int, verifier_failures: int, h: HealthConfig) -> str | None:
    """The note on reward checks the verifier failed (timed out or erred, scored 0): their share above
    h.verifier_failure_share. in: the reward's checks and failures, thresholds; out: the note or None (no check)."""
    if not reward_checks or verifier_failures / reward_checks <= h.verifier_failure_share:
        return None
    return (f"{verifier_failures} of {reward_checks} reward checks ({verifier_failures / reward_checks:.0%}) "
            "timed out or erred and were scored 0: the reward was noise there; raise train.verify_timeout_s")


def _kl_note(log_rows: list[dict[str, Any]], cfg: TrainConfig, h: HealthConfig) -> str | None:
    """The note on drift from the reference policy: with train.beta > 0, the steps whose KL exceeded h.kl_bound
    (how many, the first and the largest). in: log rows, train config, thresholds; out: the note or None."""
    if cfg.beta <= 0:
        return None
    over = [(s, v) for s, v in _series(log_rows, KL) if v > h.kl_bound]
    if not over:
        return None
    return (f"KL to the reference policy exceeded health.kl_bound={h.kl_bound:g} nats/token on "
            f"{len(over)} of {len(log_rows)} steps (first step {over[0][0]}: {over[0][1]:.3g}; max "
            f"{max(v for _, v in over):.3g}): the policy drifted far from where it started; raise "
            "train.beta or lower train.learning_rate")


def finite_weights(model: Any) -> bool:
    """Whether every parameter of `model` is finite (one device sync). in: a torch model; out: flag."""
    checks = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(checks).all()) if checks else True


def non_finite_error(step: int, cfg: TrainConfig, log_rows: list[dict[str, Any]]) -> ValueError:
    """The error a run whose weights turned non-finite fails with: the step, the first non-finite loss/grad_norm
    logged (if any) and the fix. in: the optimizer step, train config, log rows so far; out: the error."""
    bad = first_non_finite(log_rows)
    first = f"; {bad[1]} was first {bad[2]} at step {bad[0]}" if bad is not None else ""
    return ValueError(f"the policy's weights are not finite after optimizer step {step} (learning rate "
                      f"{cfg.learning_rate:g}{first}); not saving it. Fix: lower train.learning_rate (e.g. "
                      f"{cfg.learning_rate / 10:g}) or add train.warmup_steps")


class FiniteWeights(TrainerCallback):
    """Stop training with :func:`non_finite_error` as soon as an optimizer step leaves a non-finite weight (an
    overflow), before the next rollouts sample from it (torch's 'probability tensor contains either inf, nan' named
    neither the step nor the cause) and before a checkpoint saves it."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if model is not None and not finite_weights(model):
            raise non_finite_error(state.global_step, self.cfg, state.log_history)


class EvalCallback(TrainerCallback):
    """Greedy accuracy on held-out sets before training, every `every` optimizer steps, and after the last
    step (the learning curve steps-to-target reads). Each point is a row of :attr:`rows`:
    step, set, greedy (accuracy), n (problems), seconds (time the evaluation took), failures (verifier
    timeouts/errors, scored wrong and counted); :attr:`problems` holds the same evaluations per problem
    (step, set, id, correct), so a curve can be read on any subset later. Answers are judged as the final
    held-out evaluation judges them (saerl.answers.judge_held_out, bounded by `timeout_s` per answer): as the reward
    judges them under `extraction` 'boxed' (eval.answer_extraction's default), and under 'boxed_or_last' an unboxed
    answer read as the final evaluation reads it (the reward never reads so).
    Where several processes train together (train.num_processes), each generates and judges its share of each set
    (:func:`share`) and the per-problem results are gathered back into the set's order (:func:`gather_shares`), so
    every process holds the rows and problems one process would; every process must evaluate at the same steps,
    which the schedule below (the same global step, the same resumed curve in each) and :class:`_TimeLimit`'s agreed
    stop ensure.
    Each evaluation is logged at INFO as it ends ('train saerl:0 step 40: heldout greedy 0.214 (100 problems,
    38.2 s)': a long one is not mistaken for a hang) and handed to `sink` (:func:`step_sink`) as the metric
    'eval/<set>/greedy' at its step, as it is measured.
    in: {set name: frame (id, prompt, answer)}, tokenizer, period, generation limit and batch, verifier timeout,
    the run's label (:func:`bar_description`), the sink (None: none), eval.answer_extraction."""

    def __init__(self, sets: dict[str, pl.DataFrame], tok: Any, every: int, max_new_tokens: int, batch: int,
                 timeout_s: float = 5.0, label: str = "", sink: StepSink | None = None,
                 extraction: str = BOXED) -> None:
        self.sets, self.tok, self.every, self.extraction = sets, tok, every, extraction
        self.max_new_tokens, self.batch, self.timeout_s = max_new_tokens, batch, timeout_s
        self.desc, self.sink = bar_description(label), sink
        self.rows: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.last_step = -1

    def _run(self, model: Any, step: int) -> None:
        from saerl import policy_lm

        was_training = model.training
        rank, processes = process_share()
        for name, df in self.sets.items():
            t0 = time.monotonic()
            prompts, answers = (share(df[c].to_list(), rank, processes) for c in ("prompt", "answer"))
            with own_precision(model):  # as the heldout stage loads and reads the same weights
                out = policy_lm.generate(model, self.tok, prompts, self.max_new_tokens, self.batch)
            results, _ = judge_held_out(out.texts, [str(a) for a in answers], self.timeout_s, self.extraction,
                                        out.ended)  # a cut completion is not read by its last number
            statuses = gather_shares([r.status for r in results], f"step {step} set {name}")
            ok = [s == "correct" for s in statuses]
            self.rows.append({"step": step, "set": name, "greedy": sum(ok) / max(1, len(ok)), "n": len(ok),
                              "seconds": round(time.monotonic() - t0, 3),
                              "failures": sum(s in ("timeout", "error") for s in statuses)})
            self._measured(self.rows[-1])
            if "id" in df.columns:
                self.problems += [{"step": step, "set": name, "id": str(i), "correct": c}
                                  for i, c in zip(df["id"].to_list(), ok, strict=True)]
        self.last_step = step
        if was_training:
            model.train()

    def _measured(self, row: dict[str, Any]) -> None:
        """Say one evaluation's result (an INFO line) and hand it to the sink. in: its curve row."""
        failed = f", {row['failures']} verifier failures" if row["failures"] else ""
        log.info("%s step %d: %s greedy %.3f (%d problems, %.1f s%s)", self.desc, row["step"], row["set"],
                 row["greedy"], row["n"], row["seconds"], failed)
        if self.sink is not None:
            self.sink(row["step"], {f"eval/{row['set']}/greedy": float(row["greedy"])})

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        # step 0, or a resumed run's step when it is on the schedule and was not measured before the checkpoint
        # (a checkpoint between two eval points gets none: the curve is the uninterrupted run's)
        if self.sets and self.last_step != state.global_step and state.global_step % self.every == 0:
            self._run(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.sets and state.global_step % self.every == 0:
            self._run(model, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.sets and self.last_step != state.global_step:
            self._run(model, state.global_step)


RUN_FILE = "saerl_run.json"  # the reward's checks and verifier failures and the training seconds so far, likewise


def _write_json(path: Path, obj: Any) -> None:
    """`obj` as JSON at `path`, atomically (temp file + rename): a reader sees the whole file or none of it."""
    write_file_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj), encoding="utf-8"))


class CurveCheckpoint(TrainerCallback):
    """Saves the eval callback's rows and per-problem results into every trainer checkpoint
    (``checkpoint-<N>/saerl_curve.json``), so a resumed run keeps the learning curve measured before it was
    killed; before it, the JSON files of `states` ({file name: function returning the state to keep}, e.g.
    DAPO's prompt stream). Every file is written atomically and the curve file last: it marks the checkpoint
    complete (:func:`saerl.checkpoints.last_checkpoint`), so a run killed while saving resumes from the checkpoint
    before. Only then are older checkpoints pruned to the newest `keep` complete ones (:func:`prune_checkpoints`; None =
    keep all): the trainer itself prunes nothing (:func:`grpo_config`), since it would prune before our files
    land and a kill in between would leave no complete checkpoint."""

    def __init__(self, evals: EvalCallback, folder: Path, states: dict[str, Any] | None = None,
                 keep: int | None = None) -> None:
        self.evals, self.folder, self.states, self.keep = evals, Path(folder), dict(states or {}), keep

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ckpt = self.folder / f"checkpoint-{state.global_step}"
        states = {name: get_state() for name, get_state in self.states.items()}  # in every process: one may sum them
        wait_for_all()  # several processes: each has written its own files of the checkpoint (its RNG state)
        if ckpt.is_dir() and state.is_world_process_zero:  # the first process alone writes, marks and prunes
            for name, value in states.items():
                _write_json(ckpt / name, value)
            _write_json(ckpt / CURVE_FILE, {"rows": self.evals.rows, "problems": self.evals.problems})
            if self.keep is not None:
                prune_checkpoints(self.folder, self.keep, ckpt)


def save_period(save_every: int, steps_per_generation: int) -> int:
    """Optimizer steps between resumable checkpoints: `save_every` rounded up to whole generation batches. trl
    generates once per `steps_per_generation` steps and keeps the completions in memory only, so a run resumed
    inside a generation batch would generate that batch again (training on it for extra steps) and then miss
    part of the next one. in: train.save_every (> 0), train.steps_per_generation; out: steps."""
    return -(-save_every // steps_per_generation) * steps_per_generation


def prune_checkpoints(folder: Path, keep: int, newest: Path) -> None:
    """Remove from `folder` the complete checkpoints older than the `keep` newest complete ones, and the
    incomplete ones (left by a kill while saving) older than `newest`, the checkpoint just completed, which
    stays whatever `keep` says. A removed checkpoint loses its curve file first, so one half removed by a kill is
    never taken for complete. in: checkpoint folder, train.keep_checkpoints, the newest complete checkpoint."""
    ckpts = sorted(checkpoint_folders(folder), key=checkpoint_step, reverse=True)
    kept = {newest, *[c for c in ckpts if is_complete(c)][:keep]}
    for c in ckpts:
        if c not in kept and (is_complete(c) or checkpoint_step(c) < checkpoint_step(newest)):
            (c / CURVE_FILE).unlink(missing_ok=True)
            shutil.rmtree(c, ignore_errors=True)


# trl 1.16 calls transformers 5's old gradient-checkpointing names (is_gradient_checkpointing, ..._enable/_disable)
# every step, which warn FutureWarnings a user cannot act on (their setting is train.activation_checkpointing)
# transformers' per-step figures that count the stream the trainer reads (the order repeated to fill the run, and
# under DAPO padded for its extra rounds), not passes over the pool: 'epoch' read 1.0 at the end of a run that saw
# 1,600 of 1,957 prompts. Left out of log.parquet and MLflow.
STREAM_ONLY_METRICS = ("epoch",)
TRL_DEPRECATIONS = r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated"


def micro_batch(completions: int, parts: int, processes: int = 1) -> int:
    """Completions per forward/backward pass of one process when a step's `completions` are shared by `processes`
    training processes (train.num_processes), each taking its share in `parts` passes (train.micro_batches);
    ValueError naming the settings when `parts` x `processes` does not divide them."""
    if parts < 1 or processes < 1 or completions % (parts * processes):
        among = f" x train.num_processes={processes}" if processes > 1 else ""
        raise ValueError(f"train.micro_batches={parts}{among} does not divide a step's {completions} completions "
                         "(prompts per step x train.num_generations): pick a divisor")
    return completions // (parts * processes)


def world_size() -> int:
    """How many processes train together: the WORLD_SIZE saerl's torchrun gives each of its ranks
    (saerl.train_env.is_saerl_rank), 1 in any other process, whatever WORLD_SIZE it inherited (a stale one is
    ignored, as training ignores it: saerl.train_env). in: the environment; out: processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) if is_saerl_rank() else 1


def process_rank() -> int:
    """This process's rank among those training together: torchrun's RANK in a rank saerl started, 0 in any other
    process (likewise). in: the environment; out: the rank."""
    return int(os.environ.get("RANK", "0")) if is_saerl_rank() else 0


def _distributed() -> Any:
    """torch.distributed when a process group of more than one process is up (the Trainer sets it up under
    torchrun), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def sum_over_processes(values: Sequence[float]) -> list[float]:
    """`values` summed element-wise over every process training together (all_reduce; on nccl through this rank's
    GPU); as they are in one process. Every process must call it at the same point. in: numbers; out: the sums."""
    dist = _distributed()
    if dist is None:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


_Item = TypeVar("_Item")  # one item of a list the processes share (share, merge_shares)


def process_share() -> tuple[int, int]:
    """This process's rank and the processes training together, by torch.distributed's process group (the Trainer
    sets it up under torchrun); (0, 1) in one process. out: (rank, processes)."""
    dist = _distributed()
    return (0, 1) if dist is None else (dist.get_rank(), dist.get_world_size())


def share(items: Sequence[_Item], rank: int, processes: int) -> list[_Item]:
    """The items process `rank` of `processes` takes of a list shared among them: every processes-th from its rank
    on (rows rank, rank + processes, ...; sets sorted by anything are split evenly); all of them in one process.
    :func:`merge_shares` puts the shares' results back in order. in: the items, rank, processes; out: its share."""
    return list(items[rank::processes])


def merge_shares(parts: Sequence[Sequence[_Item]]) -> list[_Item]:
    """The results of every process's :func:`share` (parts[r]: rank r's, in its share's order) in the items' order;
    ValueError where a part's length is not that of a share of the whole. in: the parts, by rank; out: one list."""
    processes, total = len(parts), sum(len(p) for p in parts)
    sizes = [len(p) for p in parts]
    if sizes != [len(range(r, total, processes)) for r in range(processes)]:
        raise ValueError(f"the processes' shares hold {sizes} results, not shares of {total} items")
    return [parts[i % processes][i // processes] for i in range(total)]


def gather_shares(mine: Sequence[_Item], what: str) -> list[_Item]:
    """Every process's results of its :func:`share` of a list, gathered (all_gather_object: gloo, or nccl through
    this rank's GPU) and merged back into the list's order (:func:`merge_shares`), in every process; `mine` as a
    list in one process. Every process must call it at the same point; `what` names that point (the step and set),
    and processes that reached different points raise a RuntimeError naming both. in: this process's results, the
    point; out: all the results."""
    dist = _distributed()
    if dist is None:
        return list(mine)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (what, list(mine)))
    points = [p[0] for p in parts]
    if len(set(points)) > 1:
        raise RuntimeError(f"the training processes gathered different evaluations ({points}, by rank): their "
                           "in-training evaluation schedules diverged")
    return merge_shares([p[1] for p in parts])


def wait_for_all() -> None:
    """Wait until every process training together reaches this point (a barrier); nothing in one process."""
    dist = _distributed()
    if dist is not None:
        dist.barrier()


def grpo_config(cfg: TrainConfig, out_dir: Path, prompts_per_step: int, max_steps: int, seed: int,
                device: str = "auto", progress: bool = True, stop_token_ids: list[int] | None = None,
                trust_remote_code: bool = False) -> Any:
    """trl GRPOConfig from our TrainConfig: on `device` (runtime.device: 'auto' = CUDA when there is one; trl
    would otherwise take a GPU whatever the config says), with a progress bar only when `progress`
    (runtime.progress), fp32 on CPU (bf16 on CUDA when cfg.bf16; an ACCELERATE_MIXED_PRECISION or other accelerate
    setting in the environment is ignored: saerl.train_env.configured_environment), constant lr after
    cfg.warmup_steps of linear warmup, the gradient's norm clipped to cfg.max_grad_norm, no shuffling; a step's
    prompts_per_step x num_generations completions in cfg.micro_batches forward/backward passes (gradient
    accumulation: trl's steps_per_generation counts passes, cfg's counts optimizer steps); resumable trainer
    checkpoints (model as safetensors + optimizer, scheduler and RNG states) in `out_dir` every
    cfg.save_every steps rounded up to whole generation batches (:func:`save_period`; none when 0), none
    pruned by the trainer (:class:`CurveCheckpoint` keeps the last cfg.keep_checkpoints);
    for algorithm "dapo" the DAPO settings of :func:`saerl.dapo.dapo_overrides` (token-level loss,
    clip-higher); DAPO's overlong filtering when cfg.mask_truncated_completions; the reward weights of
    :func:`reward_functions` (without extra functions); with cfg.use_vllm, vLLM's rollouts stop at
    `stop_token_ids` (the policy's :func:`saerl.policy_lm.stop_ids`, as trl's own generate stops); the policy's
    model.trust_remote_code, which trl passes to what it loads itself (vLLM's engine, the reference model)."""
    from trl import GRPOConfig

    from saerl.activations import pick_device
    from saerl.dapo import dapo_overrides

    cuda = torch.cuda.is_available() and pick_device(device).type == "cuda"
    micro = micro_batch(prompts_per_step * cfg.num_generations, cfg.micro_batches, world_size())

    kw: dict[str, Any] = dict(
        output_dir=str(out_dir), learning_rate=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type="constant_with_warmup" if cfg.warmup_steps else "constant", warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=cfg.micro_batches,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
        beta=cfg.beta, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, max_steps=max_steps, num_iterations=1, logging_steps=1,
        steps_per_generation=cfg.steps_per_generation * cfg.micro_batches,  # trl counts micro-batches here
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=save_period(cfg.save_every or 1, cfg.steps_per_generation),
        save_total_limit=None, save_only_model=False,  # CurveCheckpoint prunes, once a checkpoint is complete
        report_to=[], disable_tqdm=not progress, bf16=False, use_cpu=not cuda, disable_dropout=True, seed=seed,
        activation_checkpointing=cfg.activation_checkpointing,
        shuffle_dataset=False, mask_truncated_completions=cfg.mask_truncated_completions, log_completions=False, dataloader_num_workers=0,
        trust_remote_code=trust_remote_code,
        logging_nan_inf_filter=False,  # a non-finite loss is logged as it is (health_notes reads it)
    )
    if cuda and cfg.bf16:
        kw["bf16"] = True
    if cfg.use_vllm:  # trl's vLLM reads stop ids from the checkpoint's files, not the policy's generation_config
        kw.update(use_vllm=True, vllm_mode="colocate",
                  generation_kwargs={"stop_token_ids": stop_token_ids} if stop_token_ids else None)
    if cfg.algorithm == "dapo":
        kw.update(dapo_overrides(cfg))
    if cfg.mask_truncated_completions and kw["loss_type"] not in TOKEN_NORMALISED_LOSSES:
        log.warning("train.mask_truncated_completions with loss_type %s: a rollout cut off at the limit still counts "
                    "in the mean over rollouts, so each step's gradient shrinks with its share of cut-off rollouts; "
                    "DAPO's overlong filtering assumes a token-level loss (train.loss_type=dapo or bnpo)", kw["loss_type"])
    kw["reward_weights"] = reward_functions(cfg, None)[1]
    with configured_environment():  # TrainingArguments reads ACCELERATE_MIXED_PRECISION and the ranks' variables
        return GRPOConfig(**kw)


def reference_model_kwargs(model_cfg: ModelConfig | None) -> dict[str, Any]:
    """from_pretrained arguments for the KL reference model trl loads itself (train.beta > 0) from the policy's
    name (GRPOConfig.model_init_kwargs): the pinned revision, model.trust_remote_code, safetensors only and
    model.hub_kernels, as :func:`saerl.policy_lm.load_policy` loaded the policy. in: model config (None =
    defaults); out: kwargs."""
    from saerl.activations import weights_kwargs

    return weights_kwargs(model_cfg or ModelConfig())


def _keep_dynamic_sampling(trainer: Any, saving: CurveCheckpoint, resume: Path | None, ckpt_dir: Path) -> None:
    """DAPO: save the prompt stream's position (:data:`saerl.dapo.STATE_FILE`) with every checkpoint, and on
    resume put the stream back where `resume` left it (its cursor and the prompts drawn before the kill).
    in: the dynamic-sampling trainer, its checkpoint callback, the checkpoint resumed from (or None), the folder."""
    from saerl.dapo import STATE_FILE

    saving.states[STATE_FILE] = trainer.dynamic_sampling_state
    if resume is None:
        return
    if not (resume / STATE_FILE).exists():
        raise ValueError(f"checkpoint {resume} has no {STATE_FILE} (saved by a GRPO run or an older version), so "
                         f"its dynamic-sampling stream cannot resume: delete {ckpt_dir} to train from the start")
    trainer.restore_dynamic_sampling(json.loads((resume / STATE_FILE).read_text(encoding="utf-8")))


TRAINER_LOGGER = "transformers.trainer"  # the logger of transformers' Trainer, which warns of missing keys on resume
MISSING_KEYS = "There were missing keys in the checkpoint model loaded: "  # how that warning starts (a list follows)


def tied_twins(model: Any) -> dict[str, set[str]]:
    """For each parameter name of `model` that names a tied weight, the other names of the same tensor (a head tied
    to its embeddings: {'lm_head.weight': {'model.embed_tokens.weight'}, and back}). A checkpoint stores a tied
    tensor once, under one of its names. in: a torch module; out: {name: the other names}."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {n: set(group) - {n} for group in names.values() if len(group) > 1 for n in group}


def missing_keys(message: str) -> list[str] | None:
    """The keys transformers' resume warning (MISSING_KEYS) lists, or None for any other message.
    in: a log message; out: the keys."""
    if not message.startswith(MISSING_KEYS):
        return None
    try:
        keys = ast.literal_eval(message.removeprefix(MISSING_KEYS).rstrip("."))
    except (ValueError, SyntaxError):
        return None
    return [str(k) for k in keys] if isinstance(keys, list | tuple) else None


class TiedKeysFilter(logging.Filter):
    """Drops transformers' "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" on a resume
    where every missing key names a weight tied to one the checkpoint holds (`twins`: :func:`tied_twins`): the
    testbed LM ties its head to its embeddings, and its checkpoints store the tensor once, as the embeddings; loaded
    into them, it is the head too (checked: after a resume the head is the embeddings' tensor, with the checkpoint's
    values). It read like a corrupt checkpoint in the middle of every resume. Any other missing key is warned."""

    def __init__(self, twins: dict[str, set[str]]) -> None:
        super().__init__()
        self.twins = twins

    def filter(self, record: logging.LogRecord) -> bool:
        """in: a record; out: False for the warning whose missing keys are all tied to a key it does not list."""
        keys = missing_keys(record.getMessage())
        return not keys or not all(self.twins.get(k, set()) - set(keys) for k in keys)


@contextmanager
def tied_keys_quiet(model: Any) -> Iterator[None]:
    """:class:`TiedKeysFilter` for `model` on transformers' Trainer logger for the block (a training run).
    in: the model trained; out: a context."""
    with filtered(TRAINER_LOGGER, TiedKeysFilter(tied_twins(model))):
        yield


class _HubBars:
    """Which blocks of :func:`hub_bars_off` are open, and whether transformers' bars were on before the first."""

    lock = threading.Lock()
    depth = 0
    were_on = True


@contextmanager
def hub_bars_off() -> Iterator[None]:
    """transformers' own progress bars off for the block (a training run): its "Writing model shards" bar at each
    checkpoint, drawn below the training bar, wrote cursor-up codes (ESC[A) into a log file and the middle of the
    training bar's line. saerl's training bar is tqdm's own, not affected. Blocks may overlap (training runs in the
    threads of one process): the first to open turns them off, the last to close puts back what the first found
    (off already under runtime.progress=false: saerl.pipeline.quiet_libraries)."""
    from transformers.utils import logging as hf_logging

    with _HubBars.lock:
        if _HubBars.depth == 0:
            _HubBars.were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        _HubBars.depth += 1
    try:
        yield
    finally:
        with _HubBars.lock:
            _HubBars.depth -= 1
            if _HubBars.depth == 0 and _HubBars.were_on:
                hf_logging.enable_progress_bar()


def training_fit_notes(tok: Any, context: Any, rows: list[dict[str, Any]], cfg: TrainConfig,
                       eval_sets: dict[str, pl.DataFrame], eval_limit: int) -> list[str]:
    """Whether the policy can read what a training run generates on, before it generates: the training prompts
    (saerl.policy_lm.policy_fit_notes, with train.max_completion_length) and each in-training curve set's problems
    (saerl.policy_lm.context_fit_notes, with the curve's limit, train.max_completion_length). A policy with learned
    positions that any of them would overflow is refused (ValueError naming the ids and the fixes). in: tokenizer,
    the policy's context (saerl.policy_lm.model_context), the training rows (id, prompt) each once, the train
    config, the curve's sets (already cut to train.eval_problems), the curve's limit; out: notes."""
    from saerl.policy_lm import context_fit_notes, policy_fit_notes

    notes = policy_fit_notes(tok, context, [r["prompt"] for r in rows], [r["id"] for r in rows],
                             cfg.max_completion_length)
    for name, df in eval_sets.items():
        ids = df["id"].to_list() if "id" in df.columns else range(df.height)  # (a set without ids: row numbers)
        notes += context_fit_notes(tok, context, [str(p) for p in df["prompt"].to_list()],
                                   [str(i) for i in ids], eval_limit, "train.max_completion_length",
                                   f"problems of the learning curve's set eval.sets.{name}")
    return notes


def _training_rows(prompts: pl.DataFrame, seq: list[str]) -> list[dict[str, Any]]:
    """The prompts row (id, prompt, answer) of each id of the training stream `seq`, in its order (a repeated id
    gives the same row again). Raises ValueError naming how many ids of `seq` no prompt has, and the first of them:
    the order and the prompts come from different runs. in: prompts (id, prompt, answer), the stream's ids;
    out: one row per id of `seq`."""
    by_id = {r["id"]: r for r in prompts.select("id", "prompt", "answer").iter_rows(named=True)}
    missing = [i for i in dict.fromkeys(seq) if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} ids of the training order are not among the prompts (first: {missing[0]!r}); "
                         "the order and the prompts come from different runs: rerun the curriculum stage")
    return [by_id[i] for i in seq]


@dataclass(frozen=True)
class ResumeState:
    """What a resumed run takes back from its checkpoint beside the trainer's own state: the learning curve so far
    (rows, problems: :class:`EvalCallback`'s; last_step, the step of its newest row, -1 for none) and the run file's
    training seconds and reward counts (RUN_FILE; 0 where a checkpoint has none)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    last_step: int = -1
    seconds: float = 0.0
    reward_checks: int = 0
    verifier_failures: int = 0


def _resume_state(resume: Path | None) -> ResumeState:
    """The curve (CURVE_FILE: {rows, problems}, or a bare list of rows from an older version) and the run file
    (RUN_FILE, if there) of checkpoint folder `resume`. in: the checkpoint resumed from, or None (a fresh run);
    out: its ResumeState (a fresh run's: nothing so far)."""
    if resume is None:
        return ResumeState()
    curve = json.loads((resume / CURVE_FILE).read_text(encoding="utf-8"))
    curve = {"rows": curve} if isinstance(curve, list) else curve  # a checkpoint of an older version
    rows = curve.get("rows", [])
    run = json.loads((resume / RUN_FILE).read_text(encoding="utf-8")) if (resume / RUN_FILE).exists() else {}
    return ResumeState(rows, curve.get("problems", []), max((r["step"] for r in rows), default=-1),
                       float(run.get("seconds", 0.0)), int(run.get("reward_checks", 0)),
                       int(run.get("verifier_failures", 0)))


def _drawn_order(seq: list[str], done: int, prompts_per_step: int, steps_per_generation: int) -> list[tuple[str, int]]:
    """GRPO's prompts trained on: the stream's prompts of every generation batch begun in `done` optimizer steps
    (whole batches: a run stopped inside one had generated for all its prompts), each with the first step of its
    batch (trl spreads a batch's rollouts over its steps_per_generation steps). in: the stream's ids, the steps
    done, prompts per step, train.steps_per_generation; out: (id, step) pairs in stream order."""
    per_gen = prompts_per_step * steps_per_generation
    generated = -(-done // steps_per_generation) * per_gen
    return [(i, n // per_gen * steps_per_generation + 1) for n, i in enumerate(seq[:generated])]


def _dapo_drawn_order(seq: list[str], drawn: Sequence[tuple[int, bool, int]]) -> list[tuple[str, int]]:
    """DAPO's prompts trained on: those of the trainer's ``dynamic_sampling_drawn`` (stream index, had a reward
    spread, step) that had a spread. in: the stream's ids, the drawn records; out: (id, step) pairs, in order drawn."""
    return [(seq[i], step) for i, spread, step in drawn if spread]


def _step_log(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """trl's per-step metrics (log.parquet's rows): the optimizer steps' rows of the trainer's log history
    (:func:`is_step_row`), less STREAM_ONLY_METRICS. in: trainer.state.log_history; out: rows."""
    return [{k: v for k, v in h.items() if k not in STREAM_ONLY_METRICS} for h in log_history if is_step_row(h)]


def _chat_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """The trainer's dataset: each training row (id, prompt, answer) as one user turn of chat, its answer as text
    (what the correctness reward checks) and its id (what extra rewards see), in the rows' order."""
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
        "answer": [str(r["answer"]) for r in rows],
        "id": [r["id"] for r in rows],
    })


def _algorithm_trainer(cfg: TrainConfig, spread_reward: str, clusters: dict[str, int | None] | None,
                       seq: list[str]) -> type:
    """The trainer class of cfg.algorithm: GRPO's (:func:`_trainer_class`), under dapo wrapped with dynamic sampling
    (saerl.dapo.dynamic_sampling_trainer: groups without a spread of `spread_reward` dropped and refilled, by
    cluster when `clusters` (id -> cluster) is given). in: train config, the reward's name, clusters or None, the
    stream's ids; out: the class."""
    cls = _trainer_class()
    if cfg.algorithm != "dapo":
        return cls
    from saerl.dapo import dynamic_sampling_trainer

    return dynamic_sampling_trainer(cls, cfg.dynamic_sampling_max_rounds, spread_reward=spread_reward,
                                    clusters=None if clusters is None else [clusters.get(i) for i in seq])


def _save_policy(trainer: Any, tok: Any, out: Path, cfg: TrainConfig) -> None:
    """Write the trained policy and its tokenizer (its own class and settings, as loaded) to `out`, from the first
    process alone where several trained it. Raises the ValueError of :func:`non_finite_error` instead when a weight
    is not finite: a policy of nan/inf weights is never published. in: the trainer after training, the tokenizer,
    the output folder, train config."""
    if not finite_weights(trainer.model):
        raise non_finite_error(trainer.state.global_step, cfg, trainer.state.log_history)
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(out)
        tok.save_pretrained(out)


def _logged_fit_notes(tok: Any, context: Any, rows: list[dict[str, Any]], cfg: TrainConfig,
                      eval_sets: dict[str, pl.DataFrame], eval_limit: int) -> list[str]:
    """:func:`training_fit_notes` of the training stream's rows (each id once), each logged as a warning by the first
    process before training, not with its result: a crash must not lose it. in: tokenizer, the policy's context,
    the stream's rows, train config, the curve's sets, their completion limit; out: the notes."""
    each_once = list({r["id"]: r for r in rows}.values())
    fit = training_fit_notes(tok, context, each_once, cfg, eval_sets, eval_limit)
    for note in fit if process_rank() == 0 else ():
        log.warning("train: %s", note)
    return fit


def _resume_from(ckpt_dir: Path, cfg: TrainConfig, steps: int) -> tuple[Path | None, ResumeState]:
    """The checkpoint a run resumes from (the newest complete one in `ckpt_dir` where cfg.save_every checkpoints,
    :func:`saerl.checkpoints.last_checkpoint`; None: a fresh run), logged, and what it takes back from it
    (:func:`_resume_state`). in: the checkpoint folder, train config, the run's steps; out: (checkpoint, state)."""
    resume = last_checkpoint(ckpt_dir, cfg.steps_per_generation, steps) if cfg.save_every else None
    before = _resume_state(resume)
    if resume is not None:
        log.info("resuming training from %s", resume)
    return resume, before


def _restored_reward(cfg: TrainConfig, before: ResumeState) -> CorrectnessReward:
    """The correctness reward (cfg.verify_timeout_s), holding in the first process the run's counts so far; each
    process counts the rollouts it judges, summed on use. in: train config, the resumed state; out: the reward."""
    reward = CorrectnessReward(cfg.verify_timeout_s)
    if process_rank() == 0:
        reward.checked, reward.failures = before.reward_checks, before.verifier_failures
    return reward


def _training_args(cfg: TrainConfig, ckpt_dir: Path, prompts_per_step: int, steps: int, seed: int, device: str,
                   progress: bool, stops: list[int], model_cfg: ModelConfig | None, weights: list[float]) -> Any:
    """trl's GRPOConfig of a run (:func:`grpo_config`) with the reward weights and, where cfg.beta > 0, the KL
    reference's loading kwargs (:func:`reference_model_kwargs`). in: train config, the checkpoint folder, prompts
    per step, steps, seed, device, progress, stop token ids, model config or None, reward weights; out: the args."""
    args = grpo_config(cfg, ckpt_dir, prompts_per_step, steps, seed, device, progress, stops,
                       trust_remote_code=model_cfg is not None and model_cfg.trust_remote_code)
    args.reward_weights = weights
    if cfg.beta > 0:  # trl loads the reference from the policy's name with these (it warns they are ignored: not so)
        args.model_init_kwargs = reference_model_kwargs(model_cfg)
    return args


def _trainer_callbacks(cfg: TrainConfig, timer: _TimeLimit, evals: EvalCallback, saving: CurveCheckpoint,
                       sink: Any, callbacks: list[Any] | None) -> list[Any]:
    """The trainer's callbacks, in order: the finite-weights check, the time limit, the curve, its checkpointing,
    the live metrics where a step sink is set, then the caller's. in: train config, those callbacks, the sink or
    None, the caller's callbacks or None; out: the list."""
    return [FiniteWeights(cfg), timer, evals, saving, *([LiveMetrics(sink)] if sink else []), *(callbacks or [])]


def _trained_order(trainer: Any, seq: list[str], done: int, prompts_per_step: int,
                   cfg: TrainConfig) -> list[tuple[str, int]]:
    """The prompts a run trained on with their steps: under DAPO those drawn with a reward spread
    (:func:`_dapo_drawn_order`), else the stream's generation batches begun (:func:`_drawn_order`). in: the trainer
    after training, the stream's ids, the steps done, prompts per step, train config; out: (id, step) pairs."""
    if cfg.algorithm == "dapo":
        return _dapo_drawn_order(seq, trainer.dynamic_sampling_drawn)
    return _drawn_order(seq, done, prompts_per_step, cfg.steps_per_generation)


def _run_result(trainer: Any, out: Path, cfg: TrainConfig, health: HealthConfig | None, counts: tuple[int, int],
                drawn: list[tuple[str, int]], seconds: float, evals: EvalCallback, resume: Path | None,
                fit: list[str]) -> dict[str, Any]:
    """:func:`train_grpo`'s result: the policy folder, steps done, training seconds, trl's per-step log, the order
    trained on and its steps, the curve, the checkpoint resumed from, the reward's counts, the fit notes and the
    run's health notes (:func:`health_notes`, `health` None = the defaults). in: the trainer after training, the
    output folder, train config, health thresholds, (reward checks, verifier failures) summed over the processes,
    the (id, step) pairs trained on, the training seconds, the curve callback, the checkpoint resumed from or None,
    the fit notes; out: the result dict."""
    checks, failures = counts
    steps_log = _step_log(trainer.state.log_history)
    health_found = health_notes(steps_log, cfg, health or HealthConfig(), checks, failures, evals.rows)
    return {"model_dir": str(out), "steps": trainer.state.global_step, "seconds": round(seconds, 1),
            "log": steps_log, "order": [i for i, _ in drawn], "order_steps": [step for _, step in drawn],
            "curve": evals.rows, "curve_problems": evals.problems,
            "resumed_from": None if resume is None else checkpoint_step(resume),
            "reward_checks": checks, "verifier_failures": failures, "fit_notes": fit, "notes": health_found}


@in_configured_environment
def train_grpo(model_dir: str | Path, prompts: pl.DataFrame, order: list[str] | None, cfg: TrainConfig,
               out_dir: str | Path, *, prompts_per_step: int, seed: int = 0, max_steps: int | None = None,
               time_limit_s: float | None = None, callbacks: list[Any] | None = None,
               extra_rewards: list[Any] | None = None, eval_sets: dict[str, pl.DataFrame] | None = None,
               eval_max_new_tokens: int | None = None, eval_batch: int = 64, eval_timeout_s: float | None = None,
               eval_extraction: str = BOXED,
               checkpoint_dir: str | Path | None = None, model_cfg: ModelConfig | None = None,
               device: str = "auto", progress: bool = True,
               clusters: dict[str, int | None] | None = None, label: str = "",
               health: HealthConfig | None = None) -> dict[str, Any]:
    """GRPO (or DAPO, by cfg.algorithm) from the policy saved in `model_dir` on `prompts` (id, prompt, answer)
    read in `order` (ids; None = seeded shuffle, the vanilla baseline). Saves the final policy (+ tokenizer)
    to `out_dir`. `extra_rewards` are trl reward functions added to the correctness reward (they see the `id`
    and `answer` columns). With `eval_sets`, greedy held-out accuracy is measured before training, every
    cfg.eval_every steps and at the end, each answer check bounded by `eval_timeout_s` (eval.verify_timeout_s, as
    the final evaluation's; None = cfg.verify_timeout_s, the reward's) and each answer read as `eval_extraction`
    (eval.answer_extraction: saerl.answers; the reward always reads the verifier's boxed answer). With
    cfg.save_every > 0, resumable checkpoints go to `checkpoint_dir` (default `<out_dir>/checkpoints`) every
    cfg.save_every steps (rounded up
    to whole generation batches, :func:`save_period`), and a run that finds one there (it was killed) resumes from the newest: optimizer,
    scheduler, RNG states, data position, learning curve, the reward's counts and the training seconds (which
    `time_limit_s` counts too), and, under DAPO, the prompt stream's cursor and the prompts drawn before.
    Training runs on `device` (runtime.device, see :func:`grpo_config`), with a progress bar showing each step's
    reward, loss and completion length when `progress` (runtime.progress), described 'train <label>' (the runner's
    label is '<arm>:<seed>', so each run's bar says whose it is), else an INFO progress line now and then
    (:class:`ProgressLog`), and no per-step dict printed either way; each in-training evaluation is logged at INFO.
    Inside :func:`step_sink` each step's metrics and evaluations also go to its sink as they are measured.
    transformers' own bars (a checkpoint's "Writing model shards") are off while it trains (:func:`hub_bars_off`),
    and a resume does not warn of the tied head the checkpoint stores as the embeddings (:class:`TiedKeysFilter`).
    The training stream is `order` long enough for whole generation batches (saerl.stream.stream_length); under
    DAPO also for every round of dynamic sampling (times 1 + cfg.dynamic_sampling_max_rounds), where prompts whose
    rollouts are all right or all wrong are dropped (DAPO's rule: the correctness reward alone) and the next ones
    drawn (with `clusters`, id -> cluster: the next of each dropped prompt's cluster, saerl.dapo.take_next), so
    the prompts trained on are drawn from the stream.
    Started by torchrun in several processes (saerl.distributed, train.num_processes; GRPO only), every process
    runs this with the same arguments: each generates and trains on its share of every step's rollouts
    (:class:`OrderSampler`), so a step trains on the same batch of the order as in one process; the reward's counts
    are summed over the processes, and the first process alone writes the policy and the checkpoints' own files.
    in: policy folder, prompts, order, config, output folder, prompts per step, seed, optional step/time limits,
    model config (revision, trust_remote_code; None = no remote code), clusters (id -> cluster, for DAPO's refills
    by cluster: saerl.runners.refill_clusters gives them where train.dynamic_sampling_refill is 'cluster'; None:
    refills read the stream), label (what the progress bar names the run by: :func:`bar_description`), health
    (the thresholds of :func:`health_notes`; None = the defaults);
    out: {model_dir, steps, seconds, log (trl's per-step metrics), order (ids trained on, in order),
    order_steps (the first optimizer step of the generation batch each was generated for: trl spreads a
    generation batch's rollouts over its steps_per_generation steps; under DAPO a generation batch trains on as
    many prompts as it kept groups, filled groups without a reward spread are not in the order),
    curve (eval rows: step, set, greedy, n, seconds, failures), curve_problems (the same per problem: step,
    set, id, correct), resumed_from (step, or None), reward_checks, verifier_failures, fit_notes (whether the
    policy can read the prompts and the curve's problems: :func:`training_fit_notes`, logged before training starts;
    a learned-position policy they overflow is refused then), notes (the run's health: :func:`health_notes`)}.
    A step that leaves a non-finite weight stops the run with a ValueError naming the step and the fix
    (:class:`FiniteWeights`); a non-finite policy is never saved. The trainer is built and trains in
    :func:`saerl.train_env.configured_environment`: accelerate's settings (ACCELERATE_*) and, outside a rank saerl's
    torchrun started, stale WORLD_SIZE / RANK / MASTER_ADDR / MPI variables are ignored, with one warning."""
    from saerl.policy_lm import load_policy, model_context, stop_ids

    steps = max_steps or cfg.max_steps
    eval_sets = eval_sets or {}
    eval_limit = eval_max_new_tokens or cfg.max_completion_length
    model, tok = load_policy(model_dir, model_cfg)
    dapo = cfg.algorithm == "dapo"
    seq = training_order(prompts["id"].to_list(), order, train_stream_length(cfg, prompts_per_step, steps), seed)
    rows = _training_rows(prompts, seq)
    fit = _logged_fit_notes(tok, model_context(model.config), rows, cfg, eval_sets, eval_limit)
    data = _chat_dataset(rows)
    sink = _STEP_SINK.get()  # where each step's metrics go as they are measured (step_sink), if anywhere
    evals = EvalCallback(eval_sets, tok, cfg.eval_every, eval_limit, eval_batch,
                         cfg.verify_timeout_s if eval_timeout_s is None else eval_timeout_s,
                         label=label, sink=sink, extraction=eval_extraction)
    ckpt_dir = Path(checkpoint_dir or Path(out_dir) / "checkpoints")
    resume, before = _resume_from(ckpt_dir, cfg, steps)
    evals.rows, evals.problems, evals.last_step = before.rows, before.problems, before.last_step
    timer = _TimeLimit(time_limit_s, before.seconds)
    reward = _restored_reward(cfg, before)
    stops = stop_ids(model, tok)
    rewards, weights = reward_functions(cfg, reward, extra_rewards, stops)
    torch.manual_seed(seed)
    cls = _algorithm_trainer(cfg, reward.__name__, clusters, seq)
    args = _training_args(cfg, ckpt_dir, prompts_per_step, steps, seed, device, progress, stops, model_cfg, weights)

    def run_state() -> dict[str, Any]:
        checks, failures = sum_over_processes([reward.checked, reward.failures])
        return {"reward_checks": int(checks), "verifier_failures": int(failures), "seconds": timer.elapsed()}

    saving = CurveCheckpoint(evals, ckpt_dir, {RUN_FILE: run_state}, keep=cfg.keep_checkpoints)
    trainer = cls(model=model, reward_funcs=rewards, args=args, train_dataset=data, processing_class=tok,
                  callbacks=_trainer_callbacks(cfg, timer, evals, saving, sink, callbacks))
    quiet_logs(trainer, progress, label)
    if dapo:
        _keep_dynamic_sampling(trainer, saving, resume, ckpt_dir)
    with warnings.catch_warnings(), hub_bars_off(), tied_keys_quiet(trainer.model):
        warnings.filterwarnings("ignore", message=TRL_DEPRECATIONS, category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    out = Path(out_dir)
    _save_policy(trainer, tok, out, cfg)
    checks, failures = (int(n) for n in sum_over_processes([reward.checked, reward.failures]))
    drawn = _trained_order(trainer, seq, trainer.state.global_step, prompts_per_step, cfg)
    return _run_result(trainer, out, cfg, health, (checks, failures), drawn, timer.seconds, evals, resume, fit)
