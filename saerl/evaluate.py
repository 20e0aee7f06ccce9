"""Held-out evaluation of a policy, steps-to-target, and arm comparisons with honest error bars (evaluate stage).

- :func:`evaluate_policy` / :func:`evaluate_loaded`: per problem, one greedy completion (``sample`` 0) and
  ``k`` sampled ones (``sample`` 1..k at ``cfg.temperature``; k is the set's own eval.sets.NAME.k_samples, else
  eval.k_samples: :func:`saerl.config.set_samples`), each judged by :func:`saerl.verify.verify_batch` on the answer
  eval.answer_extraction reads (:func:`saerl.answers.judge_held_out`; 'boxed_or_last' adds a FALLBACK column).
  A verifier failure keeps its own ``status`` ("timeout"/"error") and counts as not correct.
- :func:`summarize_eval`: greedy pass@1, mean accuracy over the k samples and pass@k per set, with standard
  errors over problems.
- :func:`steps_to_target`: the first eval step at which each arm (its mean curve) and seed reaches a target accuracy;
  :func:`steps_ratio_interval`: a bootstrap interval (seeds and paired problems) of its ratio to the reference;
  :func:`describe_target` / :func:`no_ratio_reason`: what the target is (it is read on the in-training curve's
  problems, train.eval_problems of them, not on the final evaluation's) and why an arm has no ratio, in words.
- :func:`compare_arms` / :func:`format_comparison`: each arm's accuracy and its difference to the reference
  arm, with confidence intervals, and a verdict that says "within noise" when the interval contains 0; the
  verifier failures (timeouts/errors, scored wrong) behind each accuracy (:func:`verifier_failures`). With two or
  more sets, MEAN_OF_SETS averages them with equal weight as independent samples of problems, so a set sharing
  problems with another is left out of it, with a note (:func:`sets_to_average`).
- :func:`with_reachable`: the *reachable* stratum of every set, the problems the starting (base) policy
  solves in at least one of k samples drawn apart from the scored ones. Short RL sharpens what the base policy can already sample (pass@k
  turns into pass@1); it rarely teaches a problem the base policy never solves. So a difference between
  arms is expected there, and the whole set dilutes it by the share of unreachable problems. Read a *gain
  over the base policy* on the stratum with care: the problems the base answers right greedily sit mostly
  in it, so any change of the policy (RL's churn as much as forgetting) loses some of them there and wins
  others outside it, and on ~100 problems the read moves by several points with the probe's draw. Arms
  compared with each other on the stratum share the problems and the churn (docs/testbed.md, session 5).

Error bars. Two sources of noise are separated. *Training seeds*: an arm trained again with another seed lands
elsewhere; with >= 2 seeds per arm this is a t-interval over per-seed accuracies. For a difference between
arms trained on the same seeds (the design: every arm runs every seed of ``train.seeds``, sharing the seed's
initial sampling state and its evaluation draws), at least MIN_PAIRED_SEEDS of them, it is a paired t over the
per-seed differences, so what the seed shares cancels; otherwise Welch's unpaired t. Differences that tie
across seeds (accuracies move in steps of 1/n) would give the paired seed part a variance of exactly 0 from a
handful of seeds, so ties fall back to Welch too, unless the arms gave the same result on every problem and
seed (two identical arms, e.g. when the quality filter removes nothing): then the difference is exactly 0. A
side with one seed (the base policy, evaluated once) counts as fixed and the other side's seed variance still
enters. A side with 2 seeds estimates its seed variance from 1 degree of freedom, and the ``ci_source`` column
says so. Intervals are clipped to the possible range (accuracy 0 to 1, a difference -1 to 1). *Problems*: the
eval set is a finite sample of problems. Every arm is evaluated on the same problems, so the difference is
measured on paired per-problem scores (arm minus reference, problem by problem): far tighter than treating the
two accuracies as independent, because a problem's own difficulty cancels; compare_arms reads both from the
per-sample frame. Their variances add (Welch-Satterthwaite degrees of freedom; slightly conservative, as per-sample
noise enters both parts); with one seed only the problem part is known, and the
``ci_source`` column says whose training-seed variance is and is not included. A difference beyond that interval
when a trained side has one seed says so ("better, 1 seed"): the seed's own effect is not in it, and a retrained
arm moves by it (at a seed spread of 1-2 points, the testbed's, a one-seed "better" or "worse" under no true
difference came 12-13% of the time instead of 5%). A difference whose parts leave no width though the arms are not
identical (opposite differences cancelled in the problems' means over seeds) takes the spread of its (seed,
problem) cells; one seed and one problem give no interval ("no CI").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from saerl.answers import BOXED, BOXED_OR_LAST, FALLBACK, judge_held_out
from saerl.config import EvalConfig, ModelConfig, set_samples
from saerl.data import GOOD_QUALITY

GREEDY = 0  # the `sample` index of the greedy completion; sampled ones are 1..k
FAILED = ("timeout", "error")  # verifier statuses that are failures of the check, not of the model
NO_ANSWER = "no_answer"  # the verifier's status of a completion with no final answer (no '####' nor closed \boxed{})
CUT_WRONG = "cut_wrong"  # the share of completions cut at the generation limit and not scored right (completion_ends)
# how a note names the completions with no answer, per eval.answer_extraction (what its NO_ANSWER status means)
NO_ANSWER_READ = {BOXED: "with no final answer ('####' or \\boxed{})",
                  BOXED_OR_LAST: "with no answer (no \\boxed{} nor '####', and no 'the answer is X' nor any number)"}
BASE_ARM = "base"  # the arm name of the starting policy in eval.parquet (evaluated once, before any RL)
REACHABLE = ":reachable"  # suffix of a set's reachable stratum: problems the base policy solves at least once
PROBE_ARM = "reach_probe"  # the arm name of the starting policy's probe pass (saerl.pipeline.heldout_variants)
REACH_SEED = 1  # seed of the base policy's probe pass that defines the reachable stratum (the scored pass uses 0)
PROBE_STREAM = 1  # spawn key of the probe pass's sample seeds: a stream no scored pass's (no spawn key) reaches
TARGET_RTOL = 1e-9  # an accuracy within this relative tolerance of the target counts as reaching it
Metric = Literal["greedy", "mean_k"]
METRICS: tuple[Metric, ...] = get_args(Metric)  # the metrics the evaluate stage compares the arms on, in order


# ------------------------------------------------------------------------------------------------ generation


def _seed_for(seed: int, sample: int, probe: bool = False) -> int:
    """A torch seed for one sample pass, from (run seed, sample index): sample j is the same whatever k is. The
    probe pass (`probe`) draws from its own stream, the SeedSequence of spawn key (PROBE_STREAM,): its entropy is
    padded and tagged apart from every scored pass's, so no run seed reaches it (the probe at REACH_SEED = 1 drew
    the seeds every training run of seed 1 drew, and a policy RL had barely moved then re-drew the completions
    that chose its reachable stratum: the stratum's gains over the base came from seed 1 alone)."""
    key = (PROBE_STREAM,) if probe else ()
    return int(np.random.SeedSequence([seed, sample], spawn_key=key).generate_state(1)[0])


def select_problems(df: pl.DataFrame, max_problems: int | None) -> pl.DataFrame:
    """At most `max_problems` rows: those with the smallest sha256(id), so every arm and seed sees the same
    problems whatever the row order. in: eval set, cap; out: the (sub)set, original order kept."""
    if max_problems is None or df.height <= max_problems:
        return df
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in df["id"].to_list()]
    keep = set(sorted(range(df.height), key=lambda r: keys[r])[:max_problems])
    return df.filter(pl.Series([r in keep for r in range(df.height)]))


def eval_bar_description(label: str, set_name: str) -> str:
    """A held-out evaluation bar's description: 'evaluate <label> on <set>' ('evaluate saerl:0 on heldout'), or
    'evaluate on <set>' without a label. in: the policy's label ('' = none), the set's name; out: text."""
    return f"evaluate {label} on {set_name}" if label else f"evaluate on {set_name}"


def evaluate_loaded(model: Any, tok: Any, eval_sets: dict[str, pl.DataFrame], cfg: EvalConfig,
                    max_new_tokens: int, seed: int, greedy: bool = True, progress: bool = False,
                    label: str = "", probe: bool = False) -> pl.DataFrame:
    """:func:`evaluate_policy` on an already loaded model and tokenizer. `greedy` False generates the sampled
    completions alone (the base policy's probe pass, whose greedy answers nothing reads: :func:`reachable_ids`),
    saving one generation pass of every problem. `probe` draws the samples from the probe's own seed stream
    (:func:`_seed_for`), apart from every scored pass's. With `progress` (runtime.progress, from the heldout stage)
    a bar per set counts the completions generated, batch by batch (greedy pass, then each sample), described by
    the policy's `label` and the set (:func:`eval_bar_description`)."""
    from saerl import policy_lm

    frames = []
    for name, df in eval_sets.items():
        df = select_problems(df, cfg.max_problems)
        prompts, golds = df["prompt"].to_list(), [str(a) for a in df["answer"].to_list()]
        n = df.height
        passes = range(GREEDY if greedy else GREEDY + 1, set_samples(cfg, name) + 1)  # the sample indices generated
        texts: list[str] = []
        lens: list[int] = []
        ended: list[bool] = []
        samples: list[int] = []
        with tqdm(total=n * len(passes), desc=eval_bar_description(label, name), unit="completion",
                  disable=not progress) as bar:
            for j in passes:
                t, ln, e = policy_lm.generate(model, tok, prompts, max_new_tokens, cfg.batch_size,
                                              0.0 if j == GREEDY else cfg.temperature, _seed_for(seed, j, probe),
                                              on_batch=bar.update)
                texts, lens, ended, samples = texts + t, lens + ln, ended + e, samples + [j] * n
        results, fell_back = judge_held_out(texts, golds * len(passes), cfg.verify_timeout_s, cfg.answer_extraction,
                                            ended)
        extra = {c: df[c].cast(pl.Utf8).to_list() * len(passes) for c in ("difficulty", "topic") if c in df.columns}
        # which answers the fallback read: a column only where it may read any, so 'boxed' writes what it wrote before
        read = {FALLBACK: fell_back} if cfg.answer_extraction != BOXED else {}
        frames.append(pl.DataFrame({
            "set": [name] * len(texts), "id": [str(i) for i in df["id"].to_list()] * len(passes),
            "sample": samples, "correct": [r.correct for r in results], "status": [r.status for r in results],
            "completion_len": lens, "truncated": [not e for e in ended], **extra, **read,
        }, schema_overrides={"sample": pl.Int32, "completion_len": pl.Int32}))
    if not frames:
        raise ValueError("no eval sets given")
    return pl.concat(frames, how="diagonal_relaxed")


def evaluate_policy(model_dir: str | Path, eval_sets: dict[str, pl.DataFrame], cfg: EvalConfig,
                    max_new_tokens: int, seed: int, model_cfg: ModelConfig | None = None,
                    device: str = "auto") -> pl.DataFrame:
    """Per problem and sample: is the policy in `model_dir` right on each held-out set?
    in: saved policy folder (any HF causal LM with a chat template), {set name: frame (id, prompt, answer,
    optional difficulty/topic)}, eval config, generation limit, seed;
    out: one row per (set, id, sample) with sample 0 = greedy and 1..k = sampled at cfg.temperature (k: the set's
    own k_samples, else cfg.k_samples: saerl.config.set_samples), correct, status (the verifier's:
    correct/wrong/no_answer/timeout/error, on the answer cfg.answer_extraction reads: saerl.answers), completion_len
    (tokens, EOS included), truncated (cut at max_new_tokens: no EOS generated), difficulty/topic (as text) where the
    set has them, and under answer_extraction 'boxed_or_last' fallback (the answer had no box nor '####' and was
    read from 'the answer is X' or the last number).
    Deterministic for a seed and batch size (sample j draws from its own seed derived from (seed, j)).
    `model_cfg` says whether the policy's own code may run (model.trust_remote_code; None = no); `device` where it
    runs ('auto': a GPU where there is one, else the CPU; 'cpu'; 'cuda': runtime.device, as the heldout stage
    passes it)."""
    from saerl.policy_lm import load_policy

    model, tok = load_policy(model_dir, model_cfg, device=device)
    return evaluate_loaded(model, tok, eval_sets, cfg, max_new_tokens, seed)


# ----------------------------------------------------------------------------------------------- summaries


def _se(col: str) -> pl.Expr:
    """Standard error of the mean of `col` over rows (NaN with fewer than two rows)."""
    return (pl.col(col).std(ddof=1) / pl.len().cast(pl.Float64).sqrt()).fill_null(float("nan"))


def summarize_eval(df: pl.DataFrame, by: tuple[str, ...] = ("set",)) -> pl.DataFrame:
    """Accuracy per group of an :func:`evaluate_policy` frame.
    in: per-sample frame, grouping columns (e.g. ("set", "difficulty"));
    out: by..., n (problems), greedy (pass@1) and greedy_se, k, mean_k (mean accuracy over the k samples)
    and mean_k_se, pass_k (any of the k right), failures (verifier timeouts/errors, all samples), truncated and
    no_answer (:func:`completion_ends`: the shares of all samples cut at the generation limit, and with no final
    answer). Standard errors are over problems. A null key (a set without difficulty labels) is a group of its own."""
    keys = [*by, "id"]
    # maintain_order: the per-problem rows reach the std in one order every call (it moved by ~1e-16 between calls)
    greedy = (df.filter(pl.col("sample") == GREEDY).group_by(keys, maintain_order=True).agg(pl.col("correct").any().cast(pl.Float64).alias("g"))
              .group_by(by).agg(pl.len().alias("n"), pl.col("g").mean().alias("greedy"), _se("g").alias("greedy_se")))
    sampled = (df.filter(pl.col("sample") > GREEDY).group_by(keys, maintain_order=True)
               .agg(pl.len().alias("k"), pl.col("correct").cast(pl.Float64).mean().alias("m"),
                    pl.col("correct").any().cast(pl.Float64).alias("p"))
               .group_by(by).agg(pl.col("k").max().alias("k"), pl.col("m").mean().alias("mean_k"),
                                 _se("m").alias("mean_k_se"), pl.col("p").mean().alias("pass_k")))
    fails = df.group_by(by).agg(pl.col("status").is_in(FAILED).sum().alias("failures"), *completion_ends(df))
    out = (greedy.join(sampled, on=list(by), how="left", nulls_equal=True)  # a null group ('difficulty') is a group
           .join(fails, on=list(by), how="left", nulls_equal=True))
    return out.with_columns(pl.col("k").fill_null(0)).sort(list(by))


def completion_ends(samples: pl.DataFrame) -> list[pl.Expr]:
    """Aggregations of how a group's completions ended: truncated (the share cut at the generation limit, no end
    token: eval.max_new_tokens; null for a frame without the column), cut_wrong (the share cut there and not scored
    right: a cut completion whose final answer written before the cut is right is scored right, as the verifier
    reads its last box or '####', or the fallback under 'boxed_or_last'; null likewise) and no_answer (the share the
    verifier found no final answer in, NO_ANSWER: under eval.answer_extraction 'boxed_or_last' not even the
    fallback's 'the answer is X' nor a last number; scored wrong). A frame evaluated under 'boxed_or_last' (its
    FALLBACK column) adds fallback: the share whose answer the fallback read (saerl.answers). in: the per-sample frame
    (whose columns decide the expressions); out: the expressions."""
    has_cut = "truncated" in samples.columns
    cut = pl.col("truncated").cast(pl.Float64).mean() if has_cut else pl.lit(None, pl.Float64)
    cut_wrong = ((pl.col("truncated") & ~pl.col("correct")).cast(pl.Float64).mean() if has_cut
                 else pl.lit(None, pl.Float64))
    read = [pl.col(FALLBACK).cast(pl.Float64).mean().alias(FALLBACK)] if FALLBACK in samples.columns else []
    return [cut.alias("truncated"), cut_wrong.alias(CUT_WRONG),
            (pl.col("status") == NO_ANSWER).cast(pl.Float64).mean().alias("no_answer"), *read]


def completion_shares(samples: pl.DataFrame) -> pl.DataFrame:
    """Per set and arm, over every seed and sample (greedy and sampled), the shares :func:`completion_ends` gives.
    in: the per-sample frame (set, arm, correct, status, truncated); out: (set, arm, truncated, cut_wrong, no_answer,
    and fallback under 'boxed_or_last'), sorted."""
    return samples.group_by("set", "arm").agg(*completion_ends(samples)).sort("set", "arm")


def _shares(rows: pl.DataFrame, col: str) -> str:
    """'base 100%, saerl 60%': each arm's share in column `col` of :func:`completion_shares` rows (nulls left out)."""
    return ", ".join(f"{a} {100 * v:.0f}%" for a, v in rows.select("arm", col).iter_rows() if v is not None)


def truncation_notes(shares: pl.DataFrame, threshold: float, limit: int) -> list[str]:
    """A note per held-out set (its reachable stratum, a subset, aside) where some arm's completions were cut at the
    generation limit and not right, or gave no answer, in over `threshold` of its samples
    (eval.truncation_note_share): those are scored wrong, so its accuracies then measure answering within the limit
    or in the verifier's form as much as solving. A cut completion that wrote a right final answer before the cut
    is scored right and not counted (the share of all cut ones is given beside). The fix: a higher
    eval.max_new_tokens when completions were cut (the heldout stage generates again, no retraining), else a prompt
    that asks for the final answer in \\boxed{} (data.prompt).
    in: :func:`completion_shares` (a fallback column: evaluated under eval.answer_extraction 'boxed_or_last'), the
    threshold, the limit the evaluation generated with; out: the notes."""
    unread = (NO_ANSWER_READ[BOXED_OR_LAST] if FALLBACK in shares.columns else NO_ANSWER_READ[BOXED])
    notes = []
    for (set_name,), rows in shares.filter(~pl.col("set").str.ends_with(REACHABLE)).group_by("set", maintain_order=True):
        cut = rows.filter(pl.col(CUT_WRONG).fill_null(0.0) > threshold).height > 0
        bare = rows.filter(pl.col("no_answer") > threshold).height > 0
        if not (cut or bare):
            continue
        parts = [f"cut at the {limit}-token generation limit and not right: {_shares(rows, CUT_WRONG)} (cut in all, "
                 f"with those that wrote a right answer before the cut: {_shares(rows, 'truncated')})"] if cut else []
        parts.append(f"{unread}: {_shares(rows, 'no_answer')}")
        fix = (f"raise eval.max_new_tokens (now {limit}; the heldout stage generates again, nothing is retrained)"
               if cut else "prompt the policy to put its final answer in \\boxed{} (data.prompt; README, 'The "
               "paper's setting on a GPU')")
        notes.append(f"held-out set {set_name}: of the completions of each arm (greedy and sampled, every seed), "
                     f"{'; '.join(parts)}. These are scored wrong, so these accuracies measure "
                     f"{'finishing within the limit' if cut else 'the answer format'} as much as solving: {fix}")
    return notes


def fallback_note(samples: pl.DataFrame) -> str | None:
    """The note of an evaluation whose answers were read under eval.answer_extraction 'boxed_or_last' (the
    per-sample frame has the FALLBACK column): how its answers were read, and per set and arm how many of the
    completions (greedy and sampled, every seed) had no box nor '####' and were read by the fallback, so a reader
    knows how much of each accuracy rests on it; None under 'boxed' (no such column). in: the per-sample frame (set,
    arm, fallback; a set's reachable stratum, a subset, left out); out: the note or None."""
    if FALLBACK not in samples.columns:
        return None
    rows = samples.filter(~pl.col("set").str.ends_with(REACHABLE))
    per = (rows.group_by("set", "arm").agg(pl.col(FALLBACK).fill_null(False).sum().alias("n"), pl.len().alias("of"))
           .sort("set", "arm"))
    sets = "; ".join(f"{name}: " + ", ".join(f"{a} {n} of {m} ({100 * n / max(1, m):.0f}%)"
                                             for a, n, m in g.select("arm", "n", "of").iter_rows())
                     for (name,), g in per.group_by("set", maintain_order=True))
    return (f"answers read with eval.answer_extraction={BOXED_OR_LAST}: a completion with no \\boxed{{}} nor '####' "
            "answer is read from its last 'the (final) answer is X', else its last number (as Qwen2.5-Math's "
            "evaluation and lm-eval's flexible extract read it), and scored by the verifier's comparison; the training "
            f"reward never reads so. Completions read that way, of every seed's greedy and sampled ones: {sets}")


def samples_per_set(samples: pl.DataFrame) -> dict[str, int]:
    """Per set (and reachable stratum), the k its mean@k averages: the most sampled completions any problem of it
    has (the set's own eval.sets.NAME.k_samples, else eval.k_samples). in: the per-sample frame (set, sample);
    out: {set: k}, sets without sampled rows left out."""
    sampled = samples.filter(pl.col("sample") > GREEDY).group_by("set").agg(pl.col("sample").max())
    return {name: int(k) for name, k in sampled.iter_rows()}


def mean_k_names(ks: dict[str, int]) -> tuple[str, dict[str, str]]:
    """How the mean@k comparison is named: with one k over every set, 'mean@4' and no label per set (as it always
    read); with sets of different k (eval.sets.NAME.k_samples), 'mean@k (each set's own k)' and a label per set
    ('mean@32'), MEAN_OF_SETS's naming the ks it averages. in: {set: k} (:func:`samples_per_set`); out: (the
    metric's name, {set: its label})."""
    distinct = sorted(set(ks.values()))
    if len(distinct) <= 1:
        return f"mean@{distinct[0] if distinct else 'k'}", {}
    labels = {name: f"mean@{k}" for name, k in ks.items()}
    own = ", ".join(f"{name} {k}" for name, k in sorted(ks.items()) if not name.endswith(REACHABLE))
    labels[MEAN_OF_SETS] = f"the mean of each set's own mean@k ({own})"
    return "mean@k (each set's own k)", labels


def reachable_ids(probe: pl.DataFrame) -> dict[str, set[str]]:
    """Per set, the ids of the problems the base policy answered right in at least one of its *sampled*
    completions (sample >= 1) in `probe`: a pass of the base policy on its own seed stream (:func:`_seed_for`: no
    trained run's scored pass draws those seeds), kept apart from the completions that are scored, so that
    selecting the stratum does not select on the scored outcomes (which would bias the base's stratum accuracy up
    and every gain over it down).
    in: per-sample frame (set, id, sample, correct) of the probe pass; out: {set: ids}."""
    hits = (probe.filter(pl.col("sample") > GREEDY).group_by("set", "id").agg(pl.col("correct").any())
            .filter(pl.col("correct")))
    out: dict[str, set[str]] = {s: set() for s in probe["set"].unique().to_list()}
    for set_name, i in hits.select("set", "id").iter_rows():
        out[set_name].add(str(i))
    return out


def with_reachable(samples: pl.DataFrame, probe: pl.DataFrame) -> pl.DataFrame:
    """`samples` plus, for every set of the base policy's `probe` pass, a copy of its rows on the reachable
    problems (:func:`reachable_ids`) under the set name ``<set>:reachable``. Every summary and comparison then
    reports the stratum like any other set. in: per-sample frames (any arms), the probe pass's frame;
    out: the frame with the stratum rows appended."""
    parts = [samples]
    for set_name, ids in sorted(reachable_ids(probe).items()):
        rows = samples.filter((pl.col("set") == set_name) & pl.col("id").cast(pl.String).is_in(sorted(ids)))
        parts.append(rows.with_columns(pl.lit(set_name + REACHABLE).alias("set")))
    return pl.concat(parts, how="vertical_relaxed")


# ---------------------------------------------------------------------------------------------- steps to target


def prompts_through(cost: pl.DataFrame, arm_mean: pl.DataFrame) -> pl.DataFrame:
    """Prompts each arm generated for until it reached its target.
    in: cost (arm, seed, step, prompts: cumulative, :func:`generated_prompts`), arm_mean (arm, mean_steps: the
    step the arm's mean curve reached the target, null if never);
    out: arm, mean_prompts: per seed the cumulative prompts at the last logged step <= mean_steps (0 when none
    is, e.g. a target met at step 0), averaged over the arm's seeds; null when the arm never reached the
    target or has no cost rows."""
    through = (cost.join(arm_mean, on="arm").filter(pl.col("step") <= pl.col("mean_steps"))
               .group_by("arm", "seed").agg(pl.col("prompts").max()))
    per_seed = (cost.select("arm", "seed").unique().join(through, on=["arm", "seed"], how="left")
                .with_columns(pl.col("prompts").fill_null(0).cast(pl.Float64)))
    per_arm = per_seed.group_by("arm").agg(pl.col("prompts").mean())
    return (arm_mean.join(per_arm, on="arm", how="left")
            .select("arm", pl.when(pl.col("mean_steps").is_not_null()).then(pl.col("prompts")).alias("mean_prompts")))


def gain_target(starts: np.ndarray, finals: np.ndarray, share: float) -> np.ndarray | float:
    """The target of eval.target_gain_share: the arms' mean start plus `share` of their mean gain, the same for
    every arm. in: each arm's first and last mean-curve point (arms on axis -1; a leading axis of resamples is kept),
    the share; out: the target, per resample (a numpy float for 1-D input: one target). NaN points (a resample with
    no problem scored) are left out."""
    start = np.nanmean(starts, axis=-1)
    return start + share * (np.nanmean(finals, axis=-1) - start)


def reaches(target: float) -> pl.Expr:
    """Whether a curve point's `accuracy` reaches `target` (within TARGET_RTOL). A NaN point (no problem scored)
    never does, and a NaN target (no target: the reference has no final accuracy) is reached by no point; polars
    orders NaN above every number, so a bare `>=` counted both as reached. in: the target; out: a boolean expression
    (null for a null point, which a filter drops too)."""
    if math.isnan(target):
        return pl.lit(False)
    return pl.col("accuracy").fill_nan(None) >= target - TARGET_RTOL * max(abs(target), 1.0)


def one_curve(curve: pl.DataFrame, metric: str = "accuracy", set_name: str | None = None) -> pl.DataFrame:
    """The learning curve of one held-out set, its accuracy column named `accuracy`, as :func:`steps_to_target`
    reads it: from a curve of its own shape, or from the evaluate artifact's curves.parquet (arm, seed, set, step,
    greedy, n: metric="greedy" and the set). in: curve, the accuracy column, the set to read (None: the curve's
    only set, or a curve without a set column); out: (arm, seed, step, accuracy, ...) rows of that set. Raises
    ValueError naming the columns when `metric` is not one, or the sets when the curve holds several and no
    set_name (or one it lacks) is given."""
    if metric not in curve.columns:
        raise ValueError(f"the curve has no {metric!r} column (columns: {curve.columns}): give metric=, the column "
                         "of its accuracy (curves.parquet's is 'greedy')")
    sets = curve["set"].unique().sort().to_list() if "set" in curve.columns else []
    if set_name is not None or len(sets) > 1:
        if set_name not in sets:
            raise ValueError(f"the curve holds the sets {sets}: give set_name=, one of them (got {set_name!r})")
        curve = curve.filter(pl.col("set") == set_name)
    return curve if metric == "accuracy" else curve.drop("accuracy", strict=False).rename({metric: "accuracy"})


def steps_to_target(curve: pl.DataFrame, target: float | None = None, reference_arm: str = "vanilla",
                    cost: pl.DataFrame | None = None, gain_share: float | None = None, metric: str = "accuracy",
                    set_name: str | None = None) -> pl.DataFrame:
    """First eval step at which each arm reaches `target` accuracy, per seed and on the arm's mean curve.
    in: curve (arm, seed, step, accuracy; optionally n, the problems each point is scored on; the evaluate
    artifact's curves.parquet with metric="greedy" and set_name, :func:`one_curve`), target (None or NaN = the
    reference arm's final accuracy on its mean curve over seeds: at the last step every seed of it evaluated, so the
    reference's mean curve always reaches its own target, and :func:`steps_ratio_interval` reads the same point),
    reference arm, optionally each run's generation cost (arm, seed, step, prompts: cumulative prompts generated for,
    :func:`generated_prompts`), gain_share (with no target: the arms' mean start plus this share of their mean gain,
    :func:`gain_target`, one target for every arm, read on each arm's mean curve over the steps its seeds share);
    out: one row per (arm, seed): target, steps (that seed's first step with accuracy >= target, :func:`reaches`:
    a NaN point or target never does; null if never), reached, mean_steps (the first step at which the arm's curve
    averaged over its seeds reaches the target, over the steps every seed evaluated; null if never) and ratio (mean_steps over the reference's;
    < 1 means fewer steps than the reference; null when the arm's mean curve never reaches the target, or when
    the reference's is at it from the start (step 0) or never gets there: :func:`no_ratio_reason`),
    reference (the reference arm), target_fixed (False: the target is the reference's final accuracy, True: it
    was given), target_share (the gain share the target was derived with; null otherwise), target_problems (the
    problems each point of the curve the target comes from is scored on: the
    curve's `n` column, the largest; null without one); with `cost` also mean_prompts (prompts generated for through
    mean_steps, mean over the arm's seeds; 0 at step 0) and prompts_ratio (over the reference's): under DAPO
    a step's generation differs between arms, so equal steps are not equal compute.

    The arm-level figure reads the mean curve, not each seed: with the default target (the reference's mean
    final accuracy) some reference seed usually ends below it, so "every seed reaches it" would leave the
    reference without a step count about half the time, while its mean curve always reaches its own final
    mean, at the last step at the latest."""
    curve = one_curve(curve, metric, set_name)
    fixed = not (target is None or (isinstance(target, float) and math.isnan(target)))
    source = curve
    n_seeds = curve.group_by("arm").agg(pl.col("seed").n_unique().alias("n_seeds"))
    mean_curve = (curve.group_by("arm", "step").agg(pl.col("accuracy").mean(), pl.col("seed").n_unique().alias("n"))
                  .join(n_seeds, on="arm").filter(pl.col("n") == pl.col("n_seeds")))
    if not fixed:
        ref = curve.filter(pl.col("arm") == reference_arm)
        if ref.is_empty():
            raise ValueError(f"reference arm {reference_arm!r} not in the curve (arms: {curve['arm'].unique().to_list()})")
        if gain_share is not None:  # one target from every arm's mean curve
            ends = mean_curve.sort("step").group_by("arm").agg(pl.col("accuracy").first().alias("start"),
                                                               pl.col("accuracy").last().alias("final"))
            target = float(gain_target(ends["start"].to_numpy(), ends["final"].to_numpy(), gain_share))
        else:  # the reference's own: the target's problems are its curve's
            source = ref
            shared = mean_curve.filter(pl.col("arm") == reference_arm).sort("step")["accuracy"]
            last = shared[-1] if shared.len() else None  # a null final accuracy (no score) is a NaN one
            target = float("nan") if last is None else float(last)  # no step every seed evaluated: no target
    n_max = source["n"].max() if "n" in source.columns and source.height else None
    hits = curve.with_columns(reaches(target).alias("hit"))
    per = (hits.group_by("arm", "seed")
           .agg(pl.col("step").filter(pl.col("hit")).min().alias("steps"))
           .with_columns(pl.col("steps").is_not_null().alias("reached"), pl.lit(target).alias("target"),
                         pl.lit(reference_arm, pl.String).alias("reference"), pl.lit(fixed).alias("target_fixed"),
                         pl.lit(None if fixed else gain_share, pl.Float64).alias("target_share"),
                         pl.lit(None if n_max is None else int(n_max), pl.Int64).alias("target_problems")))
    arm_mean = mean_curve.group_by("arm").agg(
        pl.col("step").filter(reaches(target)).min().cast(pl.Float64).alias("mean_steps"))
    ref_mean = arm_mean.filter(pl.col("arm") == reference_arm)["mean_steps"]
    ref_steps = ref_mean[0] if ref_mean.len() and ref_mean[0] is not None else None
    out = per.join(arm_mean, on="arm", how="left").with_columns(
        (pl.col("mean_steps") / ref_steps if ref_steps else pl.lit(None, dtype=pl.Float64)).alias("ratio"))
    cols = ["arm", "seed", "target", "steps", "reached", "mean_steps", "ratio", "reference", "target_fixed",
            "target_share", "target_problems"]
    if cost is not None:
        spent = prompts_through(cost, arm_mean)
        ref_p = spent.filter(pl.col("arm") == reference_arm)["mean_prompts"]
        ref_prompts = ref_p[0] if ref_p.len() and ref_p[0] else None
        out = out.join(spent, on="arm", how="left").with_columns(
            (pl.col("mean_prompts") / ref_prompts if ref_prompts else pl.lit(None, dtype=pl.Float64))
            .alias("prompts_ratio"))
        cols += ["mean_prompts", "prompts_ratio"]
    return out.select(cols).sort("arm", "seed")


AT_START = "at the target from the start"  # an arm whose mean curve meets the target at step 0 (no RL step needed)
CURVE_PROBLEMS_WORDS = "in-training eval problems"  # what the curve (and so the target) is scored on


def describe_target(r: dict[str, Any], final_problems: int | None = None) -> str:
    """What a steps-to-target row's target is, in words, e.g. "vanilla's final greedy accuracy on the 200 in-training
    eval problems (14.5%), not on the 500 problems of the final evaluation". The target is read on the in-training
    curve, scored on train.eval_problems problems per set (fewer on a reachable stratum), while the comparison's
    accuracies are on the final evaluation's problems (eval.max_problems, all by default): the two differ.
    in: a :func:`steps_to_target` row (target; reference, target_fixed, target_problems where the table has them:
    one made before they existed gets a shorter sentence), the final evaluation's problem count on the set (None:
    not said); out: the sentence."""
    pct = f"{100 * r['target']:.1f}%"
    n = r.get("target_problems")
    problems = f"the {n} {CURVE_PROBLEMS_WORDS}" if n else f"the {CURVE_PROBLEMS_WORDS}"
    if r.get("target_fixed") is None or r.get("reference") is None:
        text = f"{pct} greedy accuracy on {problems}"
    elif r["target_fixed"]:
        text = f"{pct} greedy accuracy (eval.target_accuracy) on {problems}"
    elif r.get("target_share") is not None:
        text = (f"the start plus {r['target_share']:.0%} of the arms' mean gain (eval.target_gain_share) on "
                f"{problems} ({pct})")
    else:
        text = f"{r['reference']}'s final greedy accuracy on {problems} ({pct})"
    if final_problems and final_problems != n:
        text += f", not on the {final_problems} problems of the final evaluation"
    return text


def no_ratio_reason(stt: pl.DataFrame, set_name: str, arm: str) -> str:
    """Why an arm's steps-to-target row on a set has no ratio to the reference, in words: the reference's mean
    curve is at the target from the start (step 0: no ratio can be made of it) or never reaches it (a fixed target).
    in: a steps-to-target table (rows with a set column, or one set's rows without it), set, arm; out: the reason,
    or "" when the row has a ratio, when the arm's own mean curve never reaches the target (its steps say so), when
    it is the reference, or when the table does not name its reference (made before it did)."""
    rows = stt.filter(pl.col("set") == set_name) if "set" in stt.columns else stt
    own = rows.filter(pl.col("arm") == arm)
    if "reference" not in rows.columns or own.is_empty():
        return ""
    r = own.row(0, named=True)
    ref = r["reference"]
    if r["ratio"] is not None or r["mean_steps"] is None or ref is None or arm == ref:
        return ""
    ref_rows = rows.filter(pl.col("arm") == ref)
    if ref_rows.is_empty():
        return f"no ratio: no {ref} arm on this set"
    ref_steps = ref_rows["mean_steps"][0]
    if ref_steps is None:
        return f"no ratio: {ref}'s mean curve never reaches the target"
    return f"no ratio: {ref} is {AT_START}" if ref_steps == 0 else ""


def _resampled_curve(g: pl.DataFrame, ids: list[str], weights: np.ndarray, rng: np.random.Generator,
                     n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """One arm's mean curve in every resample. in: the arm's per-problem rows (seed, step, id, correct) on the
    shared `ids`, problem weights (problems, B), the rng (each arm draws its seeds from it);
    out: (steps every seed evaluated, mean curve per resample (B, steps)). A run's accuracy at a step is the
    weighted mean over the problems it scored there (as :func:`steps_to_target`'s curve: a missing row is no
    problem, not a wrong one, nor a point the curve can never reach); NaN when the resample drew none of them."""
    seeds = sorted(g["seed"].unique().to_list())
    counts = g.group_by("step").agg(pl.col("seed").n_unique().alias("n"))
    steps = np.array(sorted(counts.filter(pl.col("n") == len(seeds))["step"].to_list()), dtype=np.int64)
    pick = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    if not steps.size:  # the seeds share no eval step: no mean curve
        return steps, np.full((n_boot, 0), np.nan)
    full = (g.filter(pl.col("step").is_in(steps.tolist())).with_columns(pl.col("correct").cast(pl.Float64))
            .pivot(on="id", index=["seed", "step"], values="correct", aggregate_function="mean").sort("seed", "step"))
    # an id every run scored, but only at steps the seeds do not share, has no column: not scored (null) here
    values = (full.select([pl.col(i) if i in full.columns else pl.lit(None, pl.Float64).alias(i) for i in ids])
              .to_numpy().astype(np.float64).reshape(len(seeds), len(steps), len(ids)))
    scored = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (np.where(scored, values, 0.0) @ weights) / (scored @ weights)  # (seeds, steps, B)
    return steps, acc[pick, :, np.arange(n_boot)[:, None]].mean(axis=1)


STRATUM_SEP = "\x1f"  # between a problem's set and id where a bootstrap draws the problems of several sets


def _problem_weights(ids: list[str], strata: list[str], rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Each resample's weight of every problem (problems, B): a draw with replacement of len(ids) of them, each
    weighing 1/len(ids); with `strata` (the sets of MEAN_OF_SETS, `ids` as '<set>STRATUM_SEP<id>'), each set's own
    problems drawn within it, each weighing 1/(its set's size x the sets), so every set weighs alike in a run's mean
    (a set none of whose problems every run scored weighs nothing). in: ids (sorted), strata, rng, resamples;
    out: the weights."""
    if not strata:
        return rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot).T / len(ids)
    weights = np.zeros((len(ids), n_boot))
    for stratum in strata:
        rows = [i for i, p in enumerate(ids) if p.startswith(stratum + STRATUM_SEP)]
        if rows:
            draw = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)), size=n_boot).T
            weights[rows] = draw / (len(rows) * len(strata))
    return weights


def steps_ratio_interval(problems: pl.DataFrame, reference_arm: str = "vanilla", target: float | None = None,
                         n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                         gain_share: float | None = None) -> pl.DataFrame:
    """Bootstrap interval of each arm's steps-to-target ratio (:func:`steps_to_target` on the mean curve).
    in: the in-training evaluations of one set, per problem: arm, seed, step, id, correct (the problems every run
    scored are the ones resampled; a run's accuracy at a step is over the problems it scored there); the reference
    arm; target (None or NaN = the reference's final accuracy, or with `gain_share` :func:`gain_target` over every
    arm's curve, recomputed per resample); n_boot resamples at `level`;
    out: one row per arm: ratio_ci_low, ratio_ci_high (inf when the arm's mean curve misses the target in more
    than the upper tail's share of resamples), reach_share (share of resamples in which its mean curve reaches
    the target). Each resample draws the problems with replacement (the same draw for every arm, seed and step:
    the arms are compared on paired problems) and each arm's seeds with replacement. Resamples in which the
    reference reaches the target at step 0, or never (a fixed target), make no ratio and are left out. Empty
    without the reference arm, without a problem every run scored, or when the reference's seeds share no eval step.
    Rows of two or more sets (a set column) are the curve of MEAN_OF_SETS: each set's problems are drawn within it,
    and a run's accuracy at a step is the equal-weight mean of its sets' (:func:`_problem_weights`)."""
    schema = {"arm": pl.String, "ratio_ci_low": pl.Float64, "ratio_ci_high": pl.Float64, "reach_share": pl.Float64}
    if n_boot < 1 or problems.is_empty() or reference_arm not in problems["arm"].unique().to_list():
        return pl.DataFrame(schema=schema)
    strata = sorted(problems["set"].unique().to_list()) if "set" in problems.columns else []
    if len(strata) > 1:  # a problem is its set and id: ids repeat across sets
        problems = problems.with_columns(id=pl.col("set") + STRATUM_SEP + pl.col("id").cast(pl.String))
    ids = sorted(set.intersection(*(set(g["id"].to_list()) for _, g in problems.group_by("arm", "seed"))))
    if not ids:  # no paired problems to resample
        return pl.DataFrame(schema=schema)
    rng = np.random.default_rng(seed)
    weights = _problem_weights(ids, strata if len(strata) > 1 else [], rng, n_boot)  # (problems, B)
    shared = problems.filter(pl.col("id").is_in(ids))
    curves = {str(arm): _resampled_curve(shared.filter(pl.col("arm") == arm), ids, weights, rng, n_boot)
              for arm in sorted(shared["arm"].unique().to_list())}  # a fixed order: every arm draws from the one rng
    ref_steps_grid, ref_curve = curves[reference_arm]
    if not ref_steps_grid.size:
        return pl.DataFrame(schema=schema)
    if target is not None and not math.isnan(target):  # a NaN target is none, as in steps_to_target
        goal = np.full(n_boot, float(target))
    elif gain_share is not None:
        ends = [(c[:, 0], c[:, -1]) for grid, c in curves.values() if grid.size]
        goal = gain_target(np.stack([s for s, _ in ends], axis=-1), np.stack([e for _, e in ends], axis=-1), gain_share)
    else:
        goal = ref_curve[:, -1]
    tol = TARGET_RTOL * np.maximum(np.abs(goal), 1.0)

    def first(steps: np.ndarray, curve: np.ndarray) -> np.ndarray:
        if not steps.size:
            return np.full(n_boot, np.inf)
        hit = curve >= (goal - tol)[:, None]
        return np.where(hit.any(axis=1), steps[hit.argmax(axis=1)], np.inf)

    ref = first(ref_steps_grid, ref_curve)
    ok = (ref > 0) & np.isfinite(ref)
    alpha = (1 - level) / 2
    rows = []
    for arm, (steps, curve) in sorted(curves.items()):
        reached = first(steps, curve)
        ratio = reached[ok] / ref[ok]
        low, high = ((float(np.quantile(ratio, alpha, method="lower")), float(np.quantile(ratio, 1 - alpha, method="higher")))
                     if ratio.size else (None, None))
        rows.append({"arm": arm, "ratio_ci_low": low, "ratio_ci_high": high,
                     "reach_share": float(np.isfinite(reached).mean())})
    return pl.DataFrame(rows, schema=schema)


# ---------------------------------------------------------------------------------------------- training signal


def step_budget(log: pl.DataFrame, order: pl.DataFrame) -> pl.DataFrame:
    """What each step of one training run spent and trained on.
    in: trl's per-step log (step, reward, frac_reward_zero_std; under DAPO also dynamic_sampling/kept_groups and
    dynamic_sampling/prompts_drawn) and the run's trained order (step, id);
    out: one row per logged step: step, reward, frac_reward_zero_std, spread_groups (groups with a reward spread
    the step trained on: DAPO's kept groups, or GRPO's groups times 1 - frac_reward_zero_std) and prompts_drawn
    (prompts generated for: DAPO's draws over all its rounds, or GRPO's batch). With train.steps_per_generation > 1
    a generation batch's groups are generated (and its prompts placed in the trained order) at its first step and
    trl logs the generation metrics there alone: its other steps generated nothing (0 groups and prompts, reward and
    frac_reward_zero_std null), so a mean over steps counts each group once."""
    per_step = order.group_by("step").len("n_order").with_columns(pl.col("step").cast(log.schema["step"]))
    dapo = {"dynamic_sampling/kept_groups", "dynamic_sampling/prompts_drawn"} <= set(log.columns)
    steps = log.join(per_step, on="step", how="left").with_columns(pl.col("n_order").fill_null(0).cast(pl.Float64))
    if dapo:  # a step without a generation logs no dynamic_sampling metrics
        spread = pl.col("dynamic_sampling/kept_groups").cast(pl.Float64).fill_null(0.0)
        drawn = pl.col("dynamic_sampling/prompts_drawn").cast(pl.Float64).fill_null(0.0)
    else:
        spread = (pl.when(pl.col("n_order") > 0).then(pl.col("n_order") * (1 - pl.col("frac_reward_zero_std")))
                  .otherwise(0.0))
        drawn = pl.col("n_order")
    return steps.select("step", "reward", "frac_reward_zero_std", spread.alias("spread_groups"),
                        drawn.alias("prompts_drawn")).sort("step")


def generated_prompts(log: pl.DataFrame, order: pl.DataFrame) -> pl.DataFrame:
    """Prompts generated for up to each step of one run, cumulative (the run's generation cost: under DAPO a
    step generates for more prompts than it trains on). in: as :func:`step_budget`; out: step, prompts."""
    return step_budget(log, order).select("step", pl.col("prompts_drawn").cum_sum().alias("prompts"))


def training_signal(log: pl.DataFrame, order: pl.DataFrame, prompts: pl.DataFrame | None = None,
                    parts: int = 2) -> pl.DataFrame:
    """Where one training run's gradient signal came from, by stretch of the run: the "why" behind an accuracy gap.
    in: trl's per-step log (step, reward, frac_reward_zero_std; under DAPO also dynamic_sampling/kept_groups and
    dynamic_sampling/prompts_drawn), the run's trained order (step, id: the prompts each step trained on),
    optionally the ingested prompts (id and any of quality, difficulty) and the number of stretches of steps (as equal
    as can be: their lengths differ by one at most; `parts` of them whenever the run has that many steps);
    out: one row per stretch with a logged step (part 1..parts, first_step, last_step): reward (mean training reward),
    zero_std (mean share of generated groups whose rollouts all scored alike, i.e. no GRPO gradient),
    spread_groups (mean groups per step with a reward spread that the step trained on: DAPO's kept groups, or
    GRPO's groups times 1 - zero_std), prompts_drawn (mean prompts generated for per step: DAPO's draws over
    all its rounds, or GRPO's batch), and, where the prompts carry them, bad_share (share of prompts read with
    quality < GOOD_QUALITY) and level (mean difficulty label)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    span = max(1, int(max(log["step"].max() or 0, order["step"].max() or 0)))  # steps 1..span (step 0 joins part 1)
    part = ((pl.col("step").cast(pl.Int64) - 1).clip(lower_bound=0) * parts // span + 1).clip(upper_bound=parts).alias("part")
    out = (step_budget(log, order).with_columns(part).group_by("part")
           .agg(pl.col("step").min().alias("first_step"), pl.col("step").max().alias("last_step"),
                pl.col("reward").mean(), pl.col("frac_reward_zero_std").mean().alias("zero_std"),
                pl.col("spread_groups").mean(), pl.col("prompts_drawn").mean()))
    extra = [c for c in ("quality", "difficulty") if prompts is not None and c in prompts.columns]
    if extra and prompts is not None:
        read = order.select("step", "id").join(prompts.select("id", *extra), on="id", how="left").with_columns(part)
        aggs = []
        if "quality" in extra:
            aggs.append((pl.col("quality").cast(pl.Float64) < GOOD_QUALITY).mean().alias("bad_share"))
        if "difficulty" in extra:
            aggs.append(pl.col("difficulty").cast(pl.Float64).mean().alias("level"))
        out = out.join(read.group_by("part").agg(*aggs), on="part", how="left")
    return out.sort("part")


# ---------------------------------------------------------------------------------------------- comparisons


RUN_KEYS = ("arm", "seed", "set")  # what identifies one evaluated policy on one set
FEW_SEEDS = 2  # the seed count whose seed variance has a single degree of freedom: its interval says so
MIN_PAIRED_SEEDS = 3  # arms on the same seeds are compared seed by seed from this many (fewer: Welch)
ONE_SEED = ", 1 seed"  # a verdict's suffix when a trained side has one seed: its interval lacks that seed's effect
MEAN_OF_SETS = "mean_of_sets"  # the comparison's set of each arm's accuracy averaged over the held-out sets
TINY_BOUND_PTS = 1e-4  # a bound closer to 0 than this (in points) prints in scientific notation: +1e-07
TIE_ATOL = 1e-9  # per-seed differences within this of each other tie (an accuracy moves in steps of 1/problems)


def verifier_failures(samples: pl.DataFrame, metric: Metric | None = None,
                      by: tuple[str, ...] = ("set", "arm")) -> pl.DataFrame:
    """Verifier failures (status timeout/error: the check of an answer failed, and the answer counts as wrong) per
    group of a per-sample frame. in: per-sample frame with a status column and the `by` columns, the samples a
    metric scores (greedy: sample 0, mean_k: samples 1..k; None: every sample); out: (by..., failures)."""
    rows = samples if metric is None else (samples.filter(pl.col("sample") == GREEDY) if metric == "greedy"
                                           else samples.filter(pl.col("sample") > GREEDY))
    return (rows.group_by(list(by)).agg(pl.col("status").is_in(FAILED).sum().cast(pl.Int64).alias("failures"))
            .sort(list(by)))


def problem_scores(samples: pl.DataFrame, metric: Metric = "greedy", by: tuple[str, ...] = RUN_KEYS) -> pl.DataFrame:
    """Per (by..., id) score: greedy correctness (0/1) or the mean correctness over the k samples.
    in: per-sample frame with the `by` columns added (arm, seed; step for a curve); out: (by..., id, score)."""
    keys = [*by, "id"]
    rows = samples.filter(pl.col("sample") == GREEDY) if metric == "greedy" else samples.filter(pl.col("sample") > GREEDY)
    if rows.is_empty():
        raise ValueError(f"no {metric} samples in the per-sample frame")
    return rows.group_by(keys).agg(pl.col("correct").cast(pl.Float64).mean().alias("score")).sort(keys)


def final_accuracy(samples: pl.DataFrame, metric: Metric = "greedy", by: tuple[str, ...] = RUN_KEYS) -> pl.DataFrame:
    """(by..., accuracy) from a per-sample frame by `metric`: (arm, seed, set, accuracy) for
    :func:`compare_arms`; with by=("arm", "seed", "step", "set") and one set, the curve of :func:`steps_to_target`."""
    return (problem_scores(samples, metric, by).group_by(list(by))
            .agg(pl.col("score").mean().alias("accuracy")).sort(list(by)))


def _interval(estimate: float, parts: list[tuple[float, int]], level: float) -> tuple[float, float]:
    """estimate +- t * sqrt(sum of variances); parts are (variance of the estimate, degrees of freedom);
    Welch-Satterthwaite degrees of freedom. (nan, nan) without parts."""
    from scipy import stats

    if not parts:
        return float("nan"), float("nan")
    var = sum(v for v, _ in parts)
    if var == 0:
        return estimate, estimate
    dof = var**2 / sum(v**2 / d for v, d in parts if v > 0)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * math.sqrt(var)
    return estimate - half, estimate + half


def _uniform_bound(accuracy: float, problems: int, level: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of an accuracy of 0 or 1 on `problems` problems: the t interval of
    problems that all scored alike has no width ("0.0% [0.0, 0.0]" on 2 problems claimed certainty); the binomial
    one is [0, 1 - ((1 - level) / 2) ** (1 / n)] at 0 (16 problems: [0, 20.6%]), mirrored at 1. in: accuracy
    (0.0 or 1.0), problems (>= 1), level; out: bounds."""
    edge = ((1 - level) / 2) ** (1 / problems)
    return (0.0, 1 - edge) if accuracy == 0 else (edge, 1.0)


def _flip_bound(diff: float, problems: list[int], level: float) -> tuple[float, float]:
    """The interval of a difference of +1 (or -1) when every problem of every set went from wrong to right (right
    to wrong): the paired t interval has no width, and 0/2 against 2/2 read "[+100.0, +100.0], better". The share
    of problems that flip that way has the exact lower bound b = ((1 - level) / 2) ** (1 / n) per set (the rest may
    flip back), so the difference is at least 2b - 1 (averaged over the sets as they are): [2b - 1, 1] for +1 (two
    problems: [-0.68, 1], within noise), mirrored for -1. in: +1.0 or -1.0, each set's problems, level; out: bounds."""
    low = float(np.mean([2 * _uniform_bound(1.0, n, level)[0] - 1 for n in problems]))  # b: all n right, at least
    return (low, 1.0) if diff > 0 else (-1.0, -low)


def _clipped(lo: float, hi: float, low: float, high: float) -> tuple[float, float]:
    """An interval cut to the values the quantity can take (NaN bounds stay NaN). in: bounds, range; out: bounds."""
    return (lo if math.isnan(lo) else max(lo, low)), (hi if math.isnan(hi) else min(hi, high))


def _seed_part(acc: list[float]) -> list[tuple[float, int]]:
    """Variance of a mean over seeds (and its dof), or nothing with one seed."""
    return [(float(np.var(acc, ddof=1)) / len(acc), len(acc) - 1)] if len(acc) >= 2 else []


def _problem_part(values: np.ndarray) -> list[tuple[float, int]]:
    """Variance of a mean over problems (and its dof), or nothing with fewer than two problems."""
    return [(float(np.var(values, ddof=1)) / len(values), len(values) - 1)] if len(values) >= 2 else []


def _verdict(lo: float, hi: float, seeds_known: bool = True) -> str:
    """The verdict code of a difference's interval: no CI, within noise (it contains 0), better or worse; with
    `seeds_known` False (a trained side has one seed, so the interval lacks its seed effect) better / worse carry
    ONE_SEED. in: bounds, whether the seed variance is in them; out: the code."""
    if math.isnan(lo) or math.isnan(hi):
        return "no CI"
    if lo <= 0 <= hi:
        return "within noise"
    word = "better" if lo > 0 else "worse"
    return word if seeds_known else word + ONE_SEED


def _cell_differences(scores: pl.DataFrame, arm: str, reference: str, set_name: str) -> np.ndarray:
    """`arm` minus `reference` per (seed, problem) of `set_name`, over the cells both have: not averaged over seeds,
    where opposite differences cancel. in: :func:`problem_scores` (arm, seed, set, id, score), arms, set; out: array."""
    def side(a: str) -> pl.DataFrame:
        return scores.filter((pl.col("arm") == a) & (pl.col("set") == set_name)).select("seed", "id", "score")

    both = side(arm).join(side(reference), on=["seed", "id"], suffix="_ref").sort("seed", "id")
    return (both["score"] - both["score_ref"]).to_numpy().astype(np.float64)


def sets_to_average(prompts: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The held-out sets MEAN_OF_SETS leaves out because they share problems with another set (the same prompt in
    saerl.data.canonical_prompt's form), and a note per set left out. The mean's interval treats its sets as
    independent samples of problems; a problem in two sets entered it twice, so a set passed twice (or MATH-500
    beside MATH test) narrowed the interval by about 1/sqrt(2) with no new problem. The sets are taken largest first
    (ties by name) and one sharing a problem with a set already taken is left out whole: the mean stays an
    equal-weight mean of the sets it names, over problems that are all distinct (deduplicating the shared problems
    would change what each set's accuracy means). in: {set: its evaluated prompts}; out: (sets left out, notes)."""
    from saerl.data import canonical_prompt

    canon = {name: {canonical_prompt(p) for p in ps} for name, ps in prompts.items()}
    kept: dict[str, set[str]] = {}
    left, notes = [], []
    for name in sorted(canon, key=lambda t: (-len(canon[t]), t)):
        shared = {t: len(canon[name] & c) for t, c in kept.items() if canon[name] & c}
        if not shared:
            kept[name] = canon[name]
            continue
        left.append(name)
        with_ = ", ".join(f"{n} with {t}" for t, n in shared.items())
        notes.append(f"held-out set {name} shares problems with another set ({with_}; the same prompt once case, "
                     f"spacing, punctuation and number formatting are set aside): {MEAN_OF_SETS} leaves it out, as "
                     "it averages the sets as independent samples (a shared problem counted twice narrows its "
                     "interval); the set's own rows are reported as they are")
    return sorted(left), notes


def problem_set_notes(samples: pl.DataFrame) -> list[str]:
    """A note per held-out set whose evaluated policies (arm and seed) were not all scored on the same problems.
    Every heldout stage run reads the set's file again, and a gold whose reading runs near its bound
    (data.verify_timeout_s) can be kept in one run and dropped in another under load, which moves eval.max_problems'
    cut too. A difference between arms pairs the problems both have, but each arm's accuracy is on its own.
    in: the per-sample frame (set, arm, seed, id); out: the notes ([] when every policy has the same problems)."""
    notes = []
    runs = samples.filter(~pl.col("set").str.ends_with(REACHABLE)).select("set", "arm", "seed", pl.col("id").cast(pl.String))
    for (set_name,), rows in runs.unique().group_by("set", maintain_order=True):
        every = rows["id"].n_unique()
        own = rows.group_by("arm", "seed").agg(pl.len().alias("n")).sort("arm", "seed")
        lacking = [(a, sd, every - n) for a, sd, n in own.iter_rows() if n < every]
        if not lacking:
            continue
        shared = rows.group_by("id").agg(pl.len().alias("n")).filter(pl.col("n") == own.height).height
        names = ", ".join(f"{a}:{sd} lacks {k}" for a, sd, k in lacking)
        missing = every - shared
        notes.append(f"held-out set {set_name}: the policies were not all evaluated on the same problems ({missing} "
                     f"of the {every} problems some policy was scored on {'is' if missing == 1 else 'are'} missing "
                     f"from another: {names}). Each "
                     "heldout run reads the set's file again, and a gold whose reading nears its bound "
                     "(data.verify_timeout_s) can be kept in one run and dropped in another under load; each arm's "
                     "accuracy is on its own problems and a difference pairs the problems both have. To score every "
                     "policy on one list, raise data.verify_timeout_s (it reruns ingest and every stage after it)")
    return notes


# how the held-out ingest's rejection reasons (saerl.data) read in a note, (one, several): "552 golds the verifier
# cannot read"
REASON_WORDS = {"unparseable answer": ("gold the verifier cannot read", "golds the verifier cannot read"),
                "duplicate prompt": ("duplicate prompt", "duplicate prompts"),
                "answer timeout": ("gold whose reading timed out (data.verify_timeout_s)",
                                   "golds whose reading timed out (data.verify_timeout_s)"),
                "answer check error": ("gold whose reading failed", "golds whose reading failed")}


def _reason_words(reason: str, count: int) -> str:
    """'552 golds the verifier cannot read': a held-out ingest's rejection reason and count, in words
    (REASON_WORDS; another reason as '3 rejected as empty prompt'). in: reason, count; out: text."""
    if reason not in REASON_WORDS:
        return f"{count} rejected as {reason}"
    return f"{count} {REASON_WORDS[reason][count != 1]}"


def read_notes(read: pl.DataFrame, evaluated: dict[str, int]) -> list[str]:
    """A note per held-out set whose file's rows were not all read (a heldout artifact's ingest.parquet): golds the
    verifier cannot read, duplicate prompts and golds whose reading timed out are dropped at ingest, so the set's
    accuracies are on the rest, not on the file as published (on CollegeMath 20% of the rows, and not evenly across
    its topics). in: the frame (set, rows, kept, reasons: [{reason, count}]), {set: problems the final evaluation
    scored} (eval.max_problems may keep fewer than were read); out: the notes."""
    notes = []
    for r in read.filter(pl.col("kept") < pl.col("rows")).iter_rows(named=True):
        why = ", ".join(_reason_words(x["reason"], x["count"]) for x in r["reasons"] or [])
        n = evaluated.get(r["set"])
        scored = f" ({n} of them: eval.max_problems)" if n is not None and n < r["kept"] else ""
        notes.append(f"held-out set {r['set']}: {r['kept']} of the file's {r['rows']} rows read"
                     f"{f' ({why})' if why else ''}: its accuracies are on those rows{scored}, not on the whole file, "
                     "so they do not compare with numbers published on the whole set; `saerl ingest FILE --prompt F "
                     "--answer F` lists each row left out and why")
    return notes


def set_size(n: int, read: tuple[int, int] | None = None) -> str:
    """A comparison block's problem count: '(500 problems)'; with how the set's file was read, (kept rows, file
    rows), also what share it is: '(500 of 1319 problems)' under eval.max_problems, '(2249 readable of 2818 rows)'
    when ingest dropped rows, '(500 of 2249 readable of 2818 rows)' with both. in: problems scored, (kept, rows) or
    None; out: the text."""
    if read is None or (n >= read[0] and read[0] >= read[1]):
        return f"({n} problems)"
    kept, rows = read
    if kept >= rows:
        return f"({n} of {rows} problems)"
    return f"({n} readable of {rows} rows)" if n >= kept else f"({n} of {kept} readable of {rows} rows)"


def compare_arms(samples: pl.DataFrame, reference: str = "vanilla", *, metric: Metric = "greedy",
                 level: float = EvalConfig.model_fields["ci_level"].default, reference_fixed: bool = False,
                 left_out: Collection[str] = ()) -> pl.DataFrame:
    """Each arm's final accuracy and its difference to `reference`, per eval set, with `level` intervals.
    in: samples: the per-sample frames of :func:`evaluate_policy` stacked with arm and seed columns (arms must be
    evaluated on the same problem ids: the difference is paired problem by problem); reference arm; metric the
    samples are scored by (greedy pass@1 or mean over the k samples); confidence level; reference_fixed: the
    reference is not a trained arm (the base policy), so its one seed has no seed effect; left_out: sets kept out of
    MEAN_OF_SETS. out: set, arm, n_seeds, n_problems, accuracy, ci_low, ci_high, diff_pts, diff_ci_low_pts,
    diff_ci_high_pts (arm minus reference, in points), verdict (reference / better / worse / within noise
    (the interval contains 0) / better, 1 seed / worse, 1 seed (beyond the interval, which lacks the seed effect of
    a trained side with one seed) / no CI), ci_source (what the interval accounts for), level, verifier_failures
    (the arm's samples the metric scores whose answer check timed out or erred, all seeds: scored wrong; null
    without per-sample statuses). With two or more sets, the rows of set MEAN_OF_SETS too (the sets averaged with
    equal weight; a reachable stratum is no set of its own, nor is a set in `left_out`, one sharing problems with
    another: :func:`sets_to_average`; :func:`_arm_rows`)."""
    final = final_accuracy(samples, metric)
    scores = problem_scores(samples, metric)
    fails: dict[tuple[str, str], int] = {}
    if "status" in samples.columns:
        fails = {(s, a): n for s, a, n in verifier_failures(samples, metric).iter_rows()}
    rows = []
    for set_name in sorted(final["set"].unique().to_list()):
        fin = final.filter(pl.col("set") == set_name)
        arms = fin["arm"].unique().to_list()
        if reference not in arms:
            raise ValueError(f"reference arm {reference!r} missing on set {set_name!r} (arms: {sorted(arms)})")
        by_seed = {a: dict(fin.filter(pl.col("arm") == a).sort("seed").select("seed", "accuracy").iter_rows())
                   for a in arms}
        rows += _arm_rows(set_name, [set_name], by_seed, scores, reference, level, reference_fixed, fails)
    sets = sorted(s for s in final["set"].unique().to_list() if not s.endswith(REACHABLE) and s not in left_out)
    if len(sets) >= 2:
        rows += _arm_rows(MEAN_OF_SETS, sets, _mean_over_sets(final, sets), scores, reference, level,
                          reference_fixed, fails)
    return pl.DataFrame(rows, infer_schema_length=None)


def _mean_over_sets(final: pl.DataFrame, sets: list[str]) -> dict[str, dict[int, float]]:
    """Each arm's per-seed accuracy averaged over `sets` with equal weight (the paper's headline, "average
    accuracy"), for the seeds every set has: a seed one set lacks is left out, and an arm with no seed in every set
    is left out. in: final (arm, seed, set, accuracy), the sets; out: arm -> seed -> mean accuracy."""
    whole = (final.filter(pl.col("set").is_in(sets)).group_by("arm", "seed")
             .agg(pl.col("accuracy").mean(), pl.len().alias("n")).filter(pl.col("n") == len(sets)).sort("arm", "seed"))
    return {a: dict(g.select("seed", "accuracy").iter_rows()) for (a,), g in whole.group_by("arm", maintain_order=True)}


def _per_problem_means(scores: pl.DataFrame, sets: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Each problem's score averaged over an arm's seeds. in: :func:`problem_scores` (arm, seed, set, id, score),
    the sets to read; out: set -> arm -> id -> the seeds' mean score, ids in sorted order (a variance sums its values
    in this order, and a hash table's order moves between processes)."""
    means: dict[str, dict[str, dict[str, float]]] = {t: {} for t in sets}
    s = (scores.filter(pl.col("set").is_in(sets)).group_by("set", "arm", "id").agg(pl.col("score").mean())
         .sort("set", "arm", "id"))
    for (set_name, arm), g in s.group_by("set", "arm", maintain_order=True):
        means[set_name][arm] = dict(zip(g["id"].to_list(), g["score"].to_list(), strict=True))
    return means


def _problem_parts(values: dict[str, np.ndarray]) -> list[tuple[float, int]]:
    """Each set's per-problem variance part (:func:`_problem_part`), scaled by 1/sets^2: the variance of a mean of
    independent set means, equal weights. in: set -> per-problem values; out: (variance, dof) parts."""
    scale = 1.0 / len(values) ** 2
    return [(v * scale, d) for x in values.values() for v, d in _problem_part(x)]


def _accuracy_interval(acc: list[float], own: dict[str, np.ndarray], level: float) -> tuple[float, float]:
    """An arm's accuracy interval: the mean over its seeds' accuracies `acc`, with their seed part and each set's
    per-problem part (`own`: set -> the arm's per-problem means over seeds), clipped to 0..1. Where every problem
    and seed scored 0 (or 1) nothing spreads, so each set's exact bound (:func:`_uniform_bound`) stands in, averaged
    as the sets are (pooling them let a big set vouch for a small one). in: accuracies, per-problem means, level;
    out: bounds."""
    mean = float(np.mean(acc))
    lo, hi = _clipped(*_interval(mean, _seed_part(acc) + _problem_parts(own), level), 0.0, 1.0)
    if lo == hi and mean in (0.0, 1.0):
        bounds = [_uniform_bound(mean, len(v), level) for v in own.values()]
        lo, hi = float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds]))
    return lo, hi


def _paired_differences(means: dict[str, dict[str, dict[str, float]]], arm: str, reference: str,
                        sets: list[str]) -> dict[str, np.ndarray]:
    """`arm` minus `reference` per problem both have, each side averaged over its seeds. in: :func:`_per_problem_means`,
    the arms, the sets; out: set -> differences in id order. A set where they share no problem id is refused."""
    d = {}
    for t in sets:
        mine, ref = means[t][arm], means[t][reference]
        common = sorted(set(mine) & set(ref))
        if not common:
            raise ValueError(f"arm {arm!r} and {reference!r} share no problem ids on set {t!r}")
        d[t] = np.array([mine[i] - ref[i] for i in common])
    return d


class Difference(NamedTuple):
    """An arm's difference to the reference (fractions, not points) with its interval, whether the seeds were
    compared seed by seed, and the paired problems it read (all sets)."""

    diff: float
    low: float
    high: float
    seeds_paired: bool
    problems: int


def _seed_parts(seeds: dict[Any, float], ref_seeds: dict[Any, float],
                cells: dict[str, np.ndarray]) -> tuple[list[tuple[float, int]], bool, bool]:
    """The seed part of a difference's variance. The same MIN_PAIRED_SEEDS or more seeds are paired (what a seed
    shares between the arms cancels) unless their differences tie, which leaves a variance of exactly 0 from a
    handful of seeds; tied differences of 0 with every (seed, problem) cell alike (`cells`: :func:`_cell_differences`
    per set) are identical arms, paired with no variance. Otherwise Welch: both sides' seed parts (a one-seed side
    counts as fixed). in: arm and reference seed -> accuracy, cells; out: parts, seeds paired, arms identical."""
    per_seed = [seeds[k] - ref_seeds[k] for k in seeds] if seeds.keys() == ref_seeds.keys() else []
    ties = bool(per_seed) and float(np.ptp(per_seed)) <= TIE_ATOL
    identical = (ties and abs(per_seed[0]) <= TIE_ATOL
                 and not any(np.any(np.abs(c) > TIE_ATOL) for c in cells.values()))
    if len(per_seed) >= MIN_PAIRED_SEEDS and (not ties or identical):
        return _seed_part([0.0] * len(per_seed) if identical else per_seed), True, identical
    return _seed_part(list(seeds.values())) + _seed_part(list(ref_seeds.values())), False, identical


def _difference_interval(seeds: dict[Any, float], ref_seeds: dict[Any, float], d: dict[str, np.ndarray],
                         cells: dict[str, np.ndarray], level: float) -> Difference:
    """An arm's difference to the reference and its interval: the seed part (:func:`_seed_parts`) plus each set's
    paired per-problem part, clipped to -1..1. Where that leaves no width though the arms are not identical, the
    per-(seed, problem) cells' spread stands in (opposite differences cancelled over seeds); where every problem
    flipped the same way (a difference of +-1), the exact bound of :func:`_flip_bound`. in: arm and reference
    seed -> accuracy, set -> paired per-problem differences (:func:`_paired_differences`) and cells
    (:func:`_cell_differences`), level; out: the difference."""
    diff = float(np.mean(list(seeds.values()))) - float(np.mean(list(ref_seeds.values())))
    seed_parts, seeds_paired, identical = _seed_parts(seeds, ref_seeds, cells)
    parts = seed_parts + _problem_parts(d)
    if not identical and parts and sum(v for v, _ in parts) == 0 and sum(v for v, _ in _problem_parts(cells)) > 0:
        parts = _problem_parts(cells)  # no width, yet the arms are not alike: opposite differences cancelled over seeds
    lo, hi = _clipped(*_interval(diff, parts, level), -1.0, 1.0)
    if lo == hi and abs(diff) == 1.0:  # every problem flipped the same way: no spread either
        lo, hi = _flip_bound(diff, [len(v) for v in d.values()], level)
    return Difference(diff, lo, hi, seeds_paired, sum(len(v) for v in d.values()))


def _arm_rows(label: str, sets: list[str], by_seed: dict[str, dict[Any, float]], scores: pl.DataFrame,
              reference: str, level: float, reference_fixed: bool,
              fails: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    """:func:`compare_arms`' rows of one comparison set `label`: one held-out set (`sets` is [label]) or the mean of
    several (MEAN_OF_SETS, with equal weight). The accuracy is the mean over seeds of `by_seed`, with its interval
    (:func:`_accuracy_interval`); each set's per-problem part is scaled by 1/sets^2 (a mean of independent set means:
    sets sharing problems are not averaged together, :func:`sets_to_average`). The difference to the reference
    is :func:`_difference_interval`'s. in: label, sets, arm -> seed -> accuracy, problem scores (arm, seed, set, id,
    score), reference arm, level, whether the reference is the untrained base, verifier failures by (set, arm);
    out: rows, the reference's first (none when the reference has no seed)."""
    if reference not in by_seed:
        return []
    means = _per_problem_means(scores, sets)
    prefix = f"mean of {len(sets)} sets: " if len(sets) > 1 else ""
    ref_seeds = by_seed[reference]
    rows = []
    for arm in [reference, *sorted(a for a in by_seed if a != reference)]:
        acc = list(by_seed[arm].values())
        own = {t: np.array(list(means[t][arm].values())) for t in sets}
        lo, hi = _accuracy_interval(acc, own, level)
        row = {"set": label, "arm": arm, "n_seeds": len(acc), "n_problems": sum(len(v) for v in own.values()),
               "accuracy": float(np.mean(acc)), "ci_low": lo, "ci_high": hi, "level": level,
               "verifier_failures": sum(fails.get((t, arm), 0) for t in sets) if fails else None}
        if arm == reference:
            rows.append({**row, "diff_pts": 0.0, "diff_ci_low_pts": None, "diff_ci_high_pts": None,
                         "verdict": "reference", "ci_source": prefix + _source(len(acc), 1, row["n_problems"], False)})
            continue
        cells = {t: _cell_differences(scores, arm, reference, t) for t in sets}
        d = _difference_interval(by_seed[arm], ref_seeds, _paired_differences(means, arm, reference, sets), cells,
                                 level)
        one_seed = len(acc) < 2 or (len(ref_seeds) < 2 and not reference_fixed)
        rows.append({**row, "n_problems": d.problems, "diff_pts": 100 * d.diff, "diff_ci_low_pts": 100 * d.low,
                     "diff_ci_high_pts": 100 * d.high, "verdict": _verdict(d.low, d.high, seeds_known=not one_seed),
                     "ci_source": prefix + _source(len(acc), len(ref_seeds), d.problems, True, d.seeds_paired,
                                                   reference_fixed)})
    return rows


def _seed_words(seeds: int, ref_seeds: int, paired: bool, seeds_paired: bool,
                reference_fixed: bool) -> tuple[list[str], str]:
    """What an interval's seed part accounts for, and what it leaves out, in words (arguments as :func:`_source`'s).
    in: the arm's and the reference's seed counts, the kind of interval; out: (the parts it holds, what is missing
    or "")."""
    if not paired:
        return ([f"{seeds} seeds (t)"], "") if seeds >= 2 else ([], "training-seed variance not included (one seed)")
    if seeds_paired:
        return [f"{seeds} seeds paired with the reference's (t)"], ""
    if seeds >= 2 and ref_seeds >= 2:
        return [f"seeds ({seeds} vs {ref_seeds}, Welch t)"], ""
    if seeds >= 2:
        return [f"the arm's {seeds} seeds (t)"], (
            "the reference is the untrained starting policy: no seed variance" if reference_fixed else
            "the reference's training-seed variance not included (one seed, counted as fixed)")
    if ref_seeds >= 2:
        return ([f"the reference's {ref_seeds} seeds (t)"],
                "the arm's training-seed variance not included (one seed, counted as fixed)")
    return [], ("the arm's training-seed variance not included (one seed)" if reference_fixed
                else "training-seed variance not included (one seed)")


def _source(seeds: int, ref_seeds: int, problems: int, paired: bool, seeds_paired: bool = False,
            reference_fixed: bool = False) -> str:
    """What an interval accounts for, in words (`paired`: a difference to the reference, where each side's
    training-seed variance enters when it has >= 2 seeds and a one-seed side counts as fixed; `seeds_paired`: both
    sides ran the same >= 2 seeds, compared seed by seed; `reference_fixed`: the reference is the untrained base,
    with no seed variance to leave out). Two seeds (1 degree of freedom) add a caution. in: the arm's and the
    reference's seed counts, the problems read (>= 1), the kind of interval; out: the ci_source text."""
    parts, missing = _seed_words(seeds, ref_seeds, paired, seeds_paired, reference_fixed)
    if problems >= 2:
        parts.append(f"{problems} paired problems" if paired else f"{problems} problems")
    if not parts:
        return "none: one seed and one problem"
    counted = [n for n in ((seeds, ref_seeds) if paired and not seeds_paired else (seeds,)) if n >= 2]
    caution = (f"a side with {FEW_SEEDS} seeds estimates its seed variance from 1 degree of freedom, so this "
               "interval's width is itself uncertain: 3 or more seeds per arm give a steadier one"
               ) if FEW_SEEDS in counted else ""
    notes = "; ".join(n for n in (missing, caution) if n)
    return " + ".join(parts) + (f"; {notes}" if notes else "")


def final_problems(comparison: pl.DataFrame) -> dict[str, int]:
    """Per set, the problems the final evaluation scored: the reference rows' n_problems of a :func:`compare_arms`
    table (sets without a count left out), to set beside the in-training problems a steps target is read on."""
    if "n_problems" not in comparison.columns:
        return {}
    ref = comparison.filter((pl.col("verdict") == "reference") & pl.col("n_problems").is_not_null())
    return {s: int(n) for s, n in ref.select("set", "n_problems").iter_rows()}


def failures_line(rows: pl.DataFrame) -> str:
    """'verifier failures: N (scored wrong): arm n, ...' of some :func:`compare_arms` rows (summed per arm over the
    rows given, e.g. one set's both metrics), or '' when there are none or the rows do not count them."""
    if "verifier_failures" not in rows.columns:
        return ""
    per_arm = (rows.group_by("arm", maintain_order=True).agg(pl.col("verifier_failures").cast(pl.Int64).sum())
               .filter(pl.col("verifier_failures") > 0))
    total = int(per_arm["verifier_failures"].sum() or 0)
    if not total:
        return ""
    arms = ", ".join(f"{a} {n}" for a, n in per_arm.iter_rows())
    return f"verifier failures: {total} (scored wrong): {arms}"


def signed_bound(pts: float) -> str:
    """A difference's interval bound in points, signed, to one decimal; a bound that one decimal would show as
    +0.0 or -0.0 though it is not 0 gets the decimals that show its side of 0 (a verdict "better" beside
    "[+0.0, ...]" read as a contradiction). in: points; out: text."""
    text = f"{pts:+.1f}"
    if pts == 0 or float(text) != 0:
        return text
    if abs(pts) < TINY_BOUND_PTS:
        return f"{pts:+.0e}"
    return f"{pts:+.{max(2, 1 - math.floor(math.log10(abs(pts))))}f}"


def worse_than_base_notes(gains: pl.DataFrame, metric_names: dict[str, str]) -> list[str]:
    """A note per arm that ended worse than the starting policy: the rows of `gains` (:func:`compare_arms` against
    BASE_ARM, a metric column) whose interval of the gain lies wholly below 0 (verdict worse, or worse with one
    seed), each named by set, metric, gain and interval, and what to check. A reachable stratum is left out: the
    problems the base solves sit mostly there, so any change of the policy loses some of them there (see the module
    doc). in: the gains table, metric code -> its name in comparison.txt; out: notes ([] when no arm lost accuracy
    beyond its interval)."""
    worse = gains.filter(pl.col("verdict").is_in(["worse", "worse" + ONE_SEED]) & ~pl.col("set").str.ends_with(REACHABLE))
    notes = []
    for (arm,), rows in worse.group_by("arm", maintain_order=True):
        where = "; ".join(
            f"on set {r['set']}, {metric_names.get(r['metric'], r['metric'])} {r['diff_pts']:+.1f} points "
            f"[{signed_bound(r['diff_ci_low_pts'])}, {signed_bound(r['diff_ci_high_pts'])}]"
            + (" (1 seed: its own effect is not in the interval)" if r["verdict"] != "worse" else "")
            for r in rows.iter_rows(named=True))
        notes.append(f"arm {arm} ended worse than the starting policy, its gain's whole interval below 0: {where}. "
                     f"RL lowered accuracy: check train.learning_rate (too high?), train.beta (0: nothing holds the "
                     f"policy near its start) and the health notes of arm {arm}'s train runs (saerl report)")
    return notes


def format_comparison(table: pl.DataFrame, read: dict[str, tuple[int, int]] | None = None,
                      labels: dict[str, str] | None = None) -> str:
    """A printable table of :func:`compare_arms` output, one block per set (headed by its problem count, and with
    `read`, {set: (rows kept, rows in its file)}, the share of the file that is: :func:`set_size`; with `labels`,
    {set: what its accuracies are, e.g. 'mean@32'}, that too: :func:`mean_k_names`); says
    when a difference is within noise, what the intervals account for, and how many answer checks failed (the
    verifier's timeouts/errors, scored wrong) where any did."""
    if table.is_empty():
        return "(no arms to compare)"
    level = int(round(100 * float(table["level"][0])))
    ref = table.filter(pl.col("verdict") == "reference")["arm"][0]
    head = f"{'arm':<16} {'seeds':>5} {'accuracy':>9} {f'{level}% CI':>15}   {f'diff vs {ref} (pts)':>22} {f'{level}% CI':>17}  verdict"
    lines = []
    for set_name in table["set"].unique(maintain_order=True).to_list():
        block = table.filter(pl.col("set") == set_name)
        n = block.filter(pl.col("verdict") == "reference")["n_problems"].first() if "n_problems" in block.columns else None
        label = (labels or {}).get(set_name)
        lines += [f"set {set_name}" + (f" {set_size(n, (read or {}).get(set_name))}" if n else "")
                  + (f": {label}" if label else ""), head]
        for r in table.filter(pl.col("set") == set_name).iter_rows(named=True):
            ci = "n/a" if math.isnan(r["ci_low"]) else f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
            if r["verdict"] == "reference":
                diff, dci, verdict = "-", "", "reference"
            else:
                diff = f"{r['diff_pts']:+.1f}"
                dci = ("n/a" if r["diff_ci_low_pts"] is None or math.isnan(r["diff_ci_low_pts"])
                       else f"[{signed_bound(r['diff_ci_low_pts'])}, {signed_bound(r['diff_ci_high_pts'])}]")
                verdict = {"within noise": "within noise (CI contains 0)", "better": f"better than {ref}",
                           "worse": f"worse than {ref}", "no CI": "no CI: need 2+ seeds or 2+ problems' per-sample results",
                           **{word + ONE_SEED: f"{side} {ref} on these problems; one seed, whose own effect is not "
                              "in the interval: run 3+ seeds" for word, side in (("better", "above"), ("worse", "below"))}
                           }[r["verdict"]]
            lines.append(f"{r['arm']:<16} {r['n_seeds']:>5} {100 * r['accuracy']:>8.1f}% {ci:>15}   {diff:>22} {dci:>17}  {verdict}")
        sources = table.filter((pl.col("set") == set_name) & (pl.col("verdict") != "reference"))["ci_source"].unique(maintain_order=True).to_list()
        failed = failures_line(block)
        lines += [*([f"  intervals from: {'; '.join(sources)}"] if sources else []), *([f"  {failed}"] if failed else []), ""]
    return "\n".join(lines).rstrip() + "\n"
