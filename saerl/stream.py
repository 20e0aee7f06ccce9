"""The prompt stream a training run reads, in order: how long it is (:func:`stream_length`,
:func:`train_stream_length`) and which prompt each of its places reads (:func:`training_order`).

The train stage (saerl.rl.train_grpo, saerl.runners.arm_order_frame) and `saerl export` (saerl.export) build the
stream from these same functions, so an export is exactly the stream a run trains on. This module imports no
training library (torch, transformers, trl): an export of a run's order loads none of them.
"""

from __future__ import annotations

import random

from saerl.config import TrainConfig


def stream_length(steps: int, prompts_per_step: int, steps_per_generation: int, extra_rounds: int = 0) -> int:
    """Prompts the training stream must hold for `steps` optimizer steps: whole generation batches (trl
    generates for `steps_per_generation` steps at once and :class:`saerl.rl.OrderSampler` yields only whole
    batches, so a partial last batch would be dropped and training would re-read the head of the order), times
    1 + `extra_rounds` of DAPO dynamic sampling. in: steps, prompts per step, steps per generation, extra
    rounds; out: prompts."""
    if steps < 1 or prompts_per_step < 1 or steps_per_generation < 1 or extra_rounds < 0:
        raise ValueError(f"stream_length needs steps, prompts_per_step, steps_per_generation >= 1 and extra_rounds "
                         f">= 0; got {steps}, {prompts_per_step}, {steps_per_generation}, {extra_rounds}")
    generations = -(-steps // steps_per_generation)
    return generations * steps_per_generation * prompts_per_step * (1 + extra_rounds)


def train_stream_length(cfg: TrainConfig, prompts_per_step: int, steps: int | None = None) -> int:
    """Prompts :func:`saerl.rl.train_grpo`'s stream holds for `steps` (default cfg.max_steps) optimizer steps of
    `cfg`: :func:`stream_length`, with every refill round of DAPO's dynamic sampling under algorithm dapo."""
    extra = cfg.dynamic_sampling_max_rounds if cfg.algorithm == "dapo" else 0
    return stream_length(steps or cfg.max_steps, prompts_per_step, cfg.steps_per_generation, extra)


def training_order(ids: list[str], order: list[str] | None, n_needed: int, seed: int) -> list[str]:
    """The id sequence to train on: `order` (repeated if shorter than needed), or, when None, seeded shuffles
    of all ids epoch after epoch (vanilla). in: all ids, order, prompts needed, seed; out: n_needed ids."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n_needed:
        if order is None:
            epoch = list(ids)
            rng.shuffle(epoch)
        else:
            epoch = list(order)
        if not epoch:
            raise ValueError("empty training order")
        out += epoch
    return out[:n_needed]
