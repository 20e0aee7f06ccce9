"""Measured difficulty (label stage): the policy's pass rate over n sampled rollouts on the labelled subset.

Difficulty labels come from the data when it has them (a testbed level, a MATH-style level). Otherwise they
are measured, as AdaRFT does: sample `score.label_rollouts` completions per labelled prompt as RL samples them
(train.temperature, train.top_k), verify each final answer (bounded by train.verify_timeout_s, as the reward
is), and record the pass rate. Verifier failures (timeouts, errors) are counted on their own and are not
rollouts that passed.

The stage is resumable like extraction and encoding: the labelled subset is cut into chunks of
`score.label_chunk_rows` prompts; each finished chunk's table is written atomically into the build's partial
folder and recorded in its chunk log, and a rerun after a kill skips the recorded chunks. Chunk c samples
with its own seed derived from (`score.seed`, c), so a resumed run writes the same labels as an
uninterrupted one. The subset is cut in id order, so the same prompts in another file order get the same labels.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from saerl.activation_store import chunk_ranges
from saerl.artifacts import ChunkLog, write_file_atomic, write_json_atomic
from saerl.config import ModelConfig, PipelineConfig, ScoreConfig, stable_hash
from saerl.property_models import seeded_subset

LABELS = "labels.parquet"
PARTS_DIR = "label_parts"  # in the chunk log's folder: one finished chunk's table each, dropped with the log at publish
# n_cut: the prompt's rollouts cut at the generation limit (train.max_completion_length) before they ended, each
# scored as its answer reads (a cut rollout rarely wrote one): counted so a limit that cuts solutions is seen
SCHEMA = {"id": pl.String, "pass_rate": pl.Float64, "n_correct": pl.Int64, "n_failed": pl.Int64, "rollouts": pl.Int64,
          "n_cut": pl.Int64}
LIMIT_FIELD = "train.max_completion_length"  # the field that bounds label rollouts (saerl.runners.compute_label)
FIT_WHAT = "labelled prompts"  # what the context check's notes and refusal call the prompts (:func:`label_fit_notes`)
# in PARTS_DIR: the context check's notes with the fingerprint they were found under, so a resumed build that has no
# chunk left to measure (and loads no policy) still reports them
FIT_NOTES = "fit_notes.json"
# The share of labelled prompts at one end of the pass-rate scale (never solved, or always solved) at or above which the
# label stage notes that measured difficulty carries little signal: the difficulty model then learns from the few
# prompts left in between (GSM8K through the testbed LM: 57 of 60 never solved; ASDiv: 51 of 58).
SATURATED_LABEL_SHARE = 0.8


log = logging.getLogger("saerl.labels")


class Measured(NamedTuple):
    """What :func:`measure_labels` returns: the labels table, its summary (n_prompts, chunks_run, chunks_skipped,
    seconds) and the context check's notes (:func:`label_fit_notes`; [] when every prompt fits)."""

    labels: pl.DataFrame
    summary: dict[str, Any]
    fit_notes: list[str]


def needs_measured_labels(cfg: PipelineConfig) -> bool:
    """True when difficulty must be measured: asked for, or 'auto' with no difficulty column mapped."""
    src = cfg.score.difficulty_source
    has_column = cfg.data.difficulty is not None  # ingest keeps only mapped label columns
    return src == "measured" or (src == "auto" and not has_column)


def labelled_subset(prompts: pl.DataFrame, fraction: float, seed: int, cap: int | None = None) -> pl.DataFrame:
    """The prompts to label: the data's `labelled` flag when present, else a seeded, order-free draw of
    `fraction` of them, at most `cap` (score.label_max)."""
    if "labelled" in prompts.columns:
        return prompts.filter(pl.col("labelled").fill_null(False))
    return prompts.filter(pl.Series(seeded_subset(prompts["id"].to_numpy(), fraction, seed, cap)))


def pass_rates(model: Any, tok: Any, prompts: pl.DataFrame, rollouts: int, temperature: float,
               max_new_tokens: int, batch: int, seed: int, top_k: int = 0,
               verify_timeout_s: float | None = None) -> pl.DataFrame:
    """Sample `rollouts` completions per prompt (id, prompt, answer) with a loaded policy at `temperature` and
    `top_k` (0 = off), as RL samples, and verify them, each check bounded by `verify_timeout_s` (None = the
    verifier's default).

    Returns id (as text, whatever the prompts' id type: the score stage casts it back), pass_rate
    (correct / rollouts), n_correct, n_failed (verifier timeouts/errors), rollouts, n_cut (rollouts cut at
    `max_new_tokens` before they ended).
    """
    from saerl.policy_lm import generate
    from saerl.verify import verify_batch

    ids, texts, golds = (prompts["id"].cast(pl.String).to_list(), prompts["prompt"].to_list(),
                         prompts["answer"].to_list())
    out = generate(model, tok, texts * rollouts, max_new_tokens, batch, temperature, seed, top_k=top_k)
    timeout = {} if verify_timeout_s is None else {"timeout_s": verify_timeout_s}
    results = verify_batch(out.texts, golds * rollouts, **timeout)
    n = len(ids)
    correct = [sum(results[j * n + i].correct for j in range(rollouts)) for i in range(n)]
    failed = [sum(results[j * n + i].status in ("timeout", "error") for j in range(rollouts)) for i in range(n)]
    cut = [sum(not out.ended[j * n + i] for j in range(rollouts)) for i in range(n)]
    return pl.DataFrame({"id": ids, "pass_rate": [c / rollouts for c in correct], "n_correct": correct,
                         "n_failed": failed, "rollouts": [rollouts] * n, "n_cut": cut}, schema=SCHEMA)


def cut_share(labels: pl.DataFrame) -> float:
    """The share of all label rollouts cut at the generation limit (n_cut over rollouts; 0.0 for no rollouts, or a
    table written before n_cut existed). in: labels (n_cut, rollouts per prompt); out: the share in [0, 1]."""
    if "n_cut" not in labels.columns:
        return 0.0
    total = int(labels["rollouts"].sum())
    return int(labels["n_cut"].sum()) / total if total else 0.0


def cut_notes(labels: pl.DataFrame, limit: int, share: float) -> list[str]:
    """The label stage's note when more than `share` (health.truncated_share) of its rollouts were cut at the
    generation limit: a cut rollout rarely wrote its answer, so it counts as a failure and measured difficulty reads
    "does the policy finish within `limit` tokens" (long solutions, often the hard problems, look unsolvable).
    in: labels (n_cut, rollouts per prompt), the limit (train.max_completion_length), the share; out: [note] or []."""
    cut = cut_share(labels)
    if cut <= share:
        return []
    prompts = int((labels["n_cut"] > 0).sum())
    return [f"{cut:.0%} of the label rollouts ({int(labels['n_cut'].sum())} of {int(labels['rollouts'].sum())}, "
            f"in {prompts} of {labels.height} prompts) were cut at {LIMIT_FIELD}={limit} tokens before they "
            f"ended (over health.truncated_share={share:g}): a cut rollout counts as a failure, so measured "
            f"difficulty says which prompts the policy finishes within {limit} tokens, not which it solves; raise "
            f"{LIMIT_FIELD} (labels.parquet's n_cut counts each prompt's cut rollouts)"]


def pass_rate_profile(labels: pl.DataFrame) -> tuple[str, bool]:
    """What a person should know of measured pass rates before trusting a difficulty order built on them: how many
    prompts the policy never solved and always solved, and the mean; and whether every prompt has the same rate
    (then there is no difficulty to learn: a policy that cannot do the data, e.g. the testbed LM on real text).
    in: labels (pass_rate per prompt); out: (text, all equal)."""
    rates = labels["pass_rate"].drop_nulls().drop_nans()
    n = rates.len()
    if n == 0:
        return "no pass rates measured", True
    never, always = int((rates == 0).sum()), int((rates == 1).sum())
    text = (f"pass rates of {n} prompts: {never} never solved, {always} always solved, "
            f"{n - never - always} in between, mean {float(rates.mean()):.3f}")
    return text, bool(rates.min() == rates.max())


def unsolved_cut(labels: pl.DataFrame, limit: int | None) -> str:
    """What a never-solved note adds when rollouts of the never-solved prompts were cut at the generation limit:
    the share cut, and that truncation, not the policy, may explain them ("" when none was, no `limit` is given, or
    the table predates n_cut). in: labels (pass_rate, n_cut, rollouts per prompt), train.max_completion_length; out:
    text to put before the note's fixes."""
    if limit is None or "n_cut" not in labels.columns:
        return ""
    unsolved = labels.filter(pl.col("pass_rate") == 0.0)
    total = int(unsolved["rollouts"].sum())
    cut = int(unsolved["n_cut"].sum())
    if not cut:
        return ""
    return (f"; {cut / total:.0%} of their rollouts ({cut} of {total}) were cut at {LIMIT_FIELD}={limit} tokens "
            f"before they ended, so truncation, not the policy, may explain them: raise {LIMIT_FIELD} first")


def saturation_notes(labels: pl.DataFrame, model: str, rollouts: int,
                     share: float = SATURATED_LABEL_SHARE, limit: int | None = None) -> list[str]:
    """Notes for the label stage's manifest and log when measured pass rates carry little difficulty signal: at least
    `share` of the labelled prompts were never solved (pass rate 0), or always solved (pass rate 1), by the policy.
    Given the rollouts' limit (train.max_completion_length), the never-solved note says the share of those prompts'
    rollouts cut at it (:func:`unsolved_cut`). in: labels (pass_rate per prompt; n_cut, rollouts), the policy
    measured (model.name_or_path), rollouts per prompt (score.label_rollouts), the share, the limit; out: one note
    per end that holds the share ([] when neither does, or no pass rate was measured)."""
    rates = labels["pass_rate"].drop_nulls().drop_nans()
    n = rates.len()
    notes = []
    for value, what, fix in ((0.0, "never solved", "use a stronger policy (model.name_or_path)"),
                             (1.0, "always solved", "use a policy the data still challenges (model.name_or_path)")):
        count = int((rates == value).sum())
        cut = unsolved_cut(labels, limit) if value == 0.0 else ""
        if n and count / n >= share:
            notes.append(f"{count} of {n} labelled prompts ({count / n:.0%}) were {what} by the policy "
                         f"(model.name_or_path={model}) in {rollouts} rollouts each: measured difficulty carries "
                         f"little signal, so the difficulty model has little to learn from{cut}; {fix}, a difficulty "
                         "column (data.difficulty, score.difficulty_source=column), or more score.label_rollouts")
    return notes


def chunk_seed(seed: int, chunk: int) -> int:
    """The sampling seed of chunk `chunk` of the labelled subset, derived from (score.seed, chunk) alone: a
    chunk's rollouts never depend on which chunks ran before it in the process."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def label_fingerprint(ids: list[str], cfg: ScoreConfig, temperature: float, max_new_tokens: int, top_k: int = 0,
                      verify_timeout_s: float | None = None) -> str:
    """What every recorded chunk of a partial label build must share: the subset's ids and the sampling and
    verifying settings."""
    return stable_hash({"ids": ids, "rollouts": cfg.label_rollouts, "batch": cfg.label_batch, "seed": cfg.seed,
                        "chunk_rows": cfg.label_chunk_rows, "temperature": temperature,
                        "max_new_tokens": max_new_tokens, "top_k": top_k, "verify_timeout_s": verify_timeout_s})


def label_fit_notes(model: Any, tok: Any, prompts: pl.DataFrame, limit: int) -> list[str]:
    """Whether the labelled prompts, chat-templated, leave `limit` (train.max_completion_length) tokens of the loaded
    policy's positions for a rollout (saerl.policy_lm.context_fit_notes on the loaded model's config and tokenizer,
    as the heldout stage checks its sets): a policy with learned positions they overflow is refused with a ValueError
    naming their ids, before it generates; a rotary one gets notes. in: the loaded policy and tokenizer, the prompts
    (id, prompt; named in their order), the limit; out: notes ([] when all fit)."""
    from saerl.policy_lm import context_fit_notes, model_context

    return context_fit_notes(tok, model_context(model.config), [str(p) for p in prompts["prompt"].to_list()],
                             [str(i) for i in prompts["id"].to_list()], limit, LIMIT_FIELD, FIT_WHAT)


def saved_fit_notes(parts: Path, fingerprint: str) -> list[str]:
    """The context check's notes a build saved in its parts folder (FIT_NOTES) under this fingerprint ([] when there
    are none, they are unreadable, or were found for other prompts or settings). in: the parts folder, the
    fingerprint; out: notes."""
    try:
        saved = json.loads((parts / FIT_NOTES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return []
    return [str(n) for n in saved.get("notes", [])]


def measure_labels(model_dir: str | Path, prompts: pl.DataFrame, cfg: ScoreConfig, temperature: float,
                   max_new_tokens: int, out_dir: str | Path, chunk_log: ChunkLog,
                   model_cfg: ModelConfig | None = None, progress: bool = True,
                   on_chunk_done: Callable[[int], None] | None = None, top_k: int = 0,
                   verify_timeout_s: float | None = None, device: str = "cpu") -> Measured:
    """The label stage, resumable. The subset `prompts` (id, prompt, answer) is cut into chunks of
    cfg.label_chunk_rows rows; chunk c is measured by :func:`pass_rates` (sampling at `temperature` and `top_k`,
    checks bounded by `verify_timeout_s`, the policy on `device`) with seed chunk_seed(cfg.seed, c),
    written atomically to label_parts/<c>.parquet in the chunk log's folder and recorded in `chunk_log` (then
    `on_chunk_done(c)` runs). The subset is measured in id order (as text), whatever order it comes in: a prompt's
    rollouts are sampled from its chunk's seed beside the prompts of its batch, so a file of the same rows in another
    order measured other pass rates (session 46). Chunks the log records with this fingerprint, whose table is
    there, are skipped: a killed run redoes only unfinished chunks. Finally every chunk's table, in order, becomes
    out_dir/labels.parquet.
    The parts stay with the chunk log, which publishing drops (ArtifactStore.publish), so a run killed between
    writing labels.parquet and publishing redoes no chunk. The policy is loaded only when a chunk is left to do, and
    once loaded, before it generates, its config and tokenizer check the prompts against its positions
    (:func:`label_fit_notes`: a learned-position policy they overflow is refused with a ValueError); the notes are
    logged as warnings and saved with the parts (FIT_NOTES), so a resume with nothing left to measure reports them
    too. Returns :class:`Measured` (labels, summary: n_prompts, chunks_run, chunks_skipped, seconds; the notes)."""
    from saerl.policy_lm import load_policy

    parts = chunk_log.folder / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    legacy = Path(out_dir) / PARTS_DIR  # where a build interrupted before session 28 kept its tables: moved, so its
    if legacy.is_dir():  # finished chunks (GPU time on real data) are not measured again nor published in the artifact
        for table in legacy.glob("*.parquet"):
            os.replace(table, parts / table.name)
        shutil.rmtree(legacy)
    given = prompts  # the context check names the prompts in the order they came in
    prompts = prompts.sort(pl.col("id").cast(pl.String))
    fp = label_fingerprint(prompts["id"].cast(pl.String).to_list(), cfg, temperature, max_new_tokens, top_k,
                           verify_timeout_s)
    ranges = chunk_ranges(prompts.height, cfg.label_chunk_rows)
    chunk_log.plan(len(ranges), fp)  # for saerl status: how many chunks of how many are measured

    def part(c: int) -> Path:
        return parts / f"{c}.parquet"

    todo = [c for c in range(len(ranges))
            if not (chunk_log.get(c).get("fingerprint") == fp and part(c).is_file())]
    started = time.perf_counter()
    if todo:
        model, tok = load_policy(model_dir, model_cfg, device=device)
        fit = label_fit_notes(model, tok, given, max_new_tokens)  # before generating: may refuse the policy
        write_json_atomic(parts / FIT_NOTES, {"fingerprint": fp, "notes": fit})
    else:
        model, tok, fit = None, None, saved_fit_notes(parts, fp)
    for note in fit:
        log.warning("label: %s", note)
    for c in tqdm(todo, desc="label", unit="chunk", disable=not progress):
        lo, hi = ranges[c]
        table = pass_rates(model, tok, prompts.slice(lo, hi - lo), cfg.label_rollouts, temperature, max_new_tokens,
                           cfg.label_batch, chunk_seed(cfg.seed, c), top_k, verify_timeout_s)
        write_file_atomic(part(c), table.write_parquet)
        chunk_log.mark(c, fingerprint=fp, rows=table.height)
        if on_chunk_done is not None:
            on_chunk_done(c)
    frames = [pl.read_parquet(part(c), glob=False) for c in range(len(ranges))]
    labels = pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)
    write_file_atomic(Path(out_dir) / LABELS, labels.write_parquet)
    summary = {"n_prompts": labels.height, "chunks_run": len(todo), "chunks_skipped": len(ranges) - len(todo),
               "seconds": round(time.perf_counter() - started, 3)}
    return Measured(labels, summary, fit)
