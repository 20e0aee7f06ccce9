"""GRPO through trl, reading prompts in a given order (train stage).

:func:`train_grpo` trains a saved policy on prompts in exactly the order given (a curriculum), or, with
``order=None``, in a seeded shuffle (vanilla GRPO). trl's own sampler shuffles; :class:`OrderedGRPOTrainer`
replaces it with :class:`OrderSampler`, which yields each prompt ``num_generations`` times in a row, batch by
batch, in our order. The reward is 1.0 when the completion's final answer (``#### N``) equals the gold answer,
judged in process for plain-integer golds (the testbed's) and by :func:`saerl.verify.verify_batch` otherwise.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from torch.utils.data import Sampler
from transformers import TrainerCallback

from saerl.config import TrainConfig
from saerl.verify import extract_final_answer, verify_batch

_INT = re.compile(r"[+-]?\d+")


class OrderSampler(Sampler[int]):
    """Dataset indices 0..n-1 in order, each repeated `repeat` times in a row; every block of `batch` prompts is
    yielded `block_repeats` times (trl reuses one generation batch for num_iterations * steps_per_generation).
    in: n prompts, group size, prompts per generation batch, block repeats; out: an index stream."""

    def __init__(self, n: int, repeat: int, batch: int, block_repeats: int = 1) -> None:
        self.n, self.repeat, self.batch, self.block_repeats = n, repeat, batch, block_repeats

    def __iter__(self) -> Iterator[int]:
        for start in range(0, self.n - self.batch + 1, self.batch):
            block = range(start, start + self.batch)
            for _ in range(self.block_repeats):
                for i in block:
                    yield from [i] * self.repeat

    def __len__(self) -> int:
        return (self.n // self.batch) * self.batch * self.repeat * self.block_repeats


def _trainer_class() -> type:
    """GRPOTrainer with our sampler (trl is imported lazily: the import costs seconds)."""
    from trl import GRPOTrainer

    class OrderedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that reads the train dataset in its stored order (no shuffling)."""

        def _get_train_sampler(self, dataset: Any = None) -> Sampler:
            data = self.train_dataset if dataset is None else dataset
            return OrderSampler(len(data), self.num_generations, self.args.generation_batch_size // self.num_generations,
                                self.num_iterations * self.args.steps_per_generation)

    return OrderedGRPOTrainer


def completion_text(completion: Any) -> str:
    """The text of a trl completion (a string, or a list of chat messages)."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def is_correct(texts: list[str], golds: list[str]) -> list[bool]:
    """Whether each text's final answer (``#### X``) equals its gold. A plain-integer gold is compared in
    process (the prediction must be a plain integer too); any other gold goes to `saerl.verify.verify_batch`.
    in: completions, golds; out: flags."""
    out: list[bool | None] = []
    for text, gold in zip(texts, golds, strict=True):
        pred = extract_final_answer(text)
        if _INT.fullmatch(gold.strip()):
            out.append(pred is not None and _INT.fullmatch(pred) is not None and int(pred) == int(gold))
        else:
            out.append(None)
    slow = [i for i, flag in enumerate(out) if flag is None]
    if slow:
        res = verify_batch([texts[i] for i in slow], [golds[i] for i in slow])
        for i, r in zip(slow, res, strict=True):
            out[i] = r.status == "correct"
    return [bool(flag) for flag in out]


def correctness_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """trl reward function: 1.0 when the final answer equals the gold `answer` column, else 0.0."""
    return [float(ok) for ok in is_correct([completion_text(c) for c in completions], answer)]


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


class _TimeLimit(TrainerCallback):
    """Stop training once `limit_s` seconds of training have passed, and record per-step wall time."""

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s, self.start, self.seconds = limit_s, 0.0, 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seconds = time.time() - self.start
        if self.limit_s is not None and self.seconds >= self.limit_s:
            control.should_training_stop = True


def grpo_config(cfg: TrainConfig, out_dir: Path, prompts_per_step: int, max_steps: int, seed: int) -> Any:
    """trl GRPOConfig from our TrainConfig: fp32 on CPU, constant lr, no shuffling, no checkpoints."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out_dir), learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=prompts_per_step * cfg.num_generations, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
        beta=cfg.beta, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, max_steps=max_steps, num_iterations=1, logging_steps=1, save_strategy="no",
        report_to=[], bf16=False, use_cpu=not torch.cuda.is_available(), disable_dropout=True, seed=seed,
        shuffle_dataset=False, mask_truncated_completions=False, log_completions=False, dataloader_num_workers=0,
    )


def train_grpo(model_dir: str | Path, prompts: pl.DataFrame, order: list[str] | None, cfg: TrainConfig,
               out_dir: str | Path, *, prompts_per_step: int, seed: int = 0, max_steps: int | None = None,
               time_limit_s: float | None = None, callbacks: list[Any] | None = None,
               extra_rewards: list[Any] | None = None) -> dict[str, Any]:
    """GRPO from the policy saved in `model_dir` on `prompts` (id, prompt, answer) read in `order` (ids; None =
    seeded shuffle, the vanilla baseline). Saves the final policy (+ tokenizer) to `out_dir`. `extra_rewards`
    are trl reward functions added to the correctness reward (they see the `id` and `answer` columns).
    in: policy folder, prompts, order, config, output folder, prompts per step, seed, optional step/time limits;
    out: {model_dir, steps, seconds, log (trl's per-step metrics), order (ids in the order trained)}."""
    from saerl.policy_lm import load_policy

    steps = max_steps or cfg.max_steps
    model, tok = load_policy(model_dir)
    seq = training_order(prompts["id"].to_list(), order, steps * prompts_per_step, seed)
    by_id = {r["id"]: r for r in prompts.select("id", "prompt", "answer").iter_rows(named=True)}
    rows = [by_id[i] for i in seq]
    data = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
        "answer": [r["answer"] for r in rows],
        "id": [r["id"] for r in rows],
    })
    timer = _TimeLimit(time_limit_s)
    torch.manual_seed(seed)
    trainer = _trainer_class()(
        model=model, reward_funcs=[correctness_reward, *(extra_rewards or [])], args=grpo_config(cfg, Path(out_dir), prompts_per_step, steps, seed),
        train_dataset=data, processing_class=tok, callbacks=[timer, *(callbacks or [])],
    )
    trainer.train()
    out = Path(out_dir)
    trainer.model.save_pretrained(out)
    from saerl.policy_lm import save_tokenizer

    save_tokenizer(tok, out)
    return {"model_dir": str(out), "steps": trainer.state.global_step, "seconds": round(timer.seconds, 1),
            "log": [h for h in trainer.state.log_history if "loss" in h or "reward" in h],
            "order": seq[: trainer.state.global_step * prompts_per_step]}
