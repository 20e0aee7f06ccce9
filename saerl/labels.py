"""Measured difficulty (label stage): the policy's pass rate over n sampled rollouts on the labelled subset.

Difficulty labels come from the data when it has them (a testbed level, a MATH-style level). Otherwise they
are measured, as AdaRFT does: sample `score.label_rollouts` completions per labelled prompt at the RL
temperature, verify each final answer, and record the pass rate. Verifier failures (timeouts, errors) are
counted on their own and are not rollouts that passed.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from saerl.config import PipelineConfig
from saerl.property_models import seeded_subset

LABELS = "labels.parquet"


def needs_measured_labels(cfg: PipelineConfig) -> bool:
    """True when difficulty must be measured: asked for, or 'auto' with no difficulty column mapped."""
    src = cfg.score.difficulty_source
    has_column = cfg.data.difficulty is not None  # ingest keeps only mapped label columns
    return src == "measured" or (src == "auto" and not has_column)


def labelled_subset(prompts: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """The prompts to label: the data's `labelled` flag when present, else a seeded, order-free draw."""
    if "labelled" in prompts.columns:
        return prompts.filter(pl.col("labelled").fill_null(False))
    return prompts.filter(pl.Series(seeded_subset(prompts["id"].to_numpy(), fraction, seed)))


def measure_pass_rates(model_dir: str | Path, prompts: pl.DataFrame, rollouts: int, temperature: float,
                       max_new_tokens: int, batch: int, seed: int) -> pl.DataFrame:
    """Sample `rollouts` completions per prompt (id, prompt, answer) and verify them.

    Returns id, pass_rate (correct / rollouts), n_correct, n_failed (verifier timeouts/errors), rollouts.
    """
    from saerl.policy_lm import generate, load_policy
    from saerl.verify import verify_batch

    model, tok = load_policy(model_dir)
    ids, texts, golds = prompts["id"].to_list(), prompts["prompt"].to_list(), prompts["answer"].to_list()
    completions = generate(model, tok, texts * rollouts, max_new_tokens, batch, temperature, seed)
    results = verify_batch(completions, golds * rollouts)
    n = len(ids)
    correct = [sum(results[j * n + i].correct for j in range(rollouts)) for i in range(n)]
    failed = [sum(results[j * n + i].status in ("timeout", "error") for j in range(rollouts)) for i in range(n)]
    return pl.DataFrame({"id": ids, "pass_rate": [c / rollouts for c in correct], "n_correct": correct,
                         "n_failed": failed, "rollouts": [rollouts] * n},
                        schema={"id": pl.String, "pass_rate": pl.Float64, "n_correct": pl.Int64,
                                "n_failed": pl.Int64, "rollouts": pl.Int64})
