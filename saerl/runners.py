"""Stage runners: read a stage's input artifacts, call the library function, write its outputs.

Each ``compute_<stage>(cfg, inputs, build) -> metrics`` reads upstream artifacts through their refs, writes
its files into ``build.path`` (the partial folder, published atomically afterwards) and returns a few
numbers for the run report and MLflow. Heavy imports stay inside the functions so planning is cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import shutil
import threading
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from saerl.artifacts import HUB_COMMIT, ArtifactRef, Build, build_machine
from saerl.config import (
    TESTBED_SET,
    ModelConfig,
    PipelineConfig,
    eval_max_new_tokens,
    held_out_file,
    held_out_mapping,
)
from saerl.stages import SHUFFLED_ARMS, unread_fields

log = logging.getLogger("saerl.runners")

PROMPTS = "prompts.parquet"
SCORES = "scores.parquet"
SCORE_PARAMS = "score_params.json"  # the score stage's fitted choices (k, silhouette, difficulty model, ...)
ORDER = "order.parquet"
VANILLA = "vanilla_order.parquet"
PLOTS = "plots"
CURVE_PROBLEMS = "curve_problems.parquet"  # a training run's in-training evaluations, per problem
CHECKPOINTS = "checkpoints"  # a training run's resumable checkpoints, while it trains
LAUNCH = "processes"  # a training run's spec for its processes (train.num_processes > 1), while they train
ARM_ORDERS = {"saerl": ORDER, "order_only": "order_only.parquet", "filter_only": "filter_only.parquet"}


def policy_path(cfg: PipelineConfig, inputs: dict[str, ArtifactRef]) -> str:
    """The policy model: the testbed's tiny LM when model.name_or_path is 'testbed', else the id/folder."""
    if cfg.model.name_or_path == "testbed":
        from saerl.testbed import LM_FOLDER

        return str(inputs["testbed"].file(LM_FOLDER))
    return cfg.model.name_or_path


def internals_model(cfg: PipelineConfig, inputs: dict[str, ArtifactRef]) -> str:
    """The model whose internals are read: extract.model if set, else the policy."""
    return cfg.extract.model or policy_path(cfg, inputs)


def internals_model_cfg(cfg: PipelineConfig) -> ModelConfig:
    """The model settings the internals model loads with: the policy's (model.*) when extraction reads the
    policy; for another model (extract.model, a different repo) the same settings less the policy's pinned
    model.revision, which names a commit of the policy's repo only."""
    return cfg.model if cfg.extract.model is None else cfg.model.model_copy(update={"revision": None})


def warned(stage: str, notes: list[str]) -> list[str]:
    """A stage's notes (the plain-language warnings it keeps in its manifest, `build.note(notes=...)`, which
    `saerl report` leads with), each logged as a warning first. in: stage name, notes; out: the same notes."""
    for note in notes:
        log.warning("%s: %s", stage, note)
    return notes


def read_prompts(inputs: dict[str, ArtifactRef]) -> pl.DataFrame:
    """The ingested prompts table."""
    return pl.read_parquet(inputs["ingest"].file(PROMPTS), glob=False)


def compute_testbed(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Testbed: generate the synthetic world and pretrain the tiny policy LM."""
    from saerl.testbed import build_testbed

    summary = build_testbed(cfg.testbed, build.path, progress=cfg.runtime.progress)
    # the LM pretrained on testbed.threads, which the process gives back before publishing
    build.note(summary=summary, machine={**build_machine(), "torch_threads": str(cfg.testbed.threads)})
    acc = summary.get("greedy_accuracy", {})
    return {f"greedy_acc_L{k.split('.')[0]}": float(v) for k, v in acc.items() if k != "all"} | {
        "greedy_acc": float(acc.get("all", 0.0))}


def compute_ingest(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Ingest: read the data set (a user file, the sample, or the testbed's pool), write both tables."""
    from saerl.data import REJECTED_TABLE, ingest, require_rows, summarize, write_ingest
    from saerl.pipeline import ROWS_CONTENT, data_file, rows_content

    path = data_file(cfg) or inputs["testbed"].file("world/pool.parquet")
    result = ingest(cfg.data, path, progress=cfg.runtime.progress)
    require_rows(result)  # before the artifact exists: a fixed mapping reruns it, a rerun says the same
    counts = write_ingest(result, build.path)
    summary = summarize(result)
    if result.rejected.height:  # rows rejected, or flagged and kept: say where each row's field and reason are
        log.warning("ingest: %s; each row, field and reason: %s in the ingest artifact (its folder: `saerl status`), "
                    "or `saerl ingest %s --prompt F --answer F`", summary.replace("\n", "; "), REJECTED_TABLE,
                    shlex.quote(str(path)))
    else:
        log.info("ingest: %s", summary)
    # what the stages reading its rows key on: the content of exactly the columns each reads (saerl.pipeline)
    build.note(rows=counts, summary=summary, source=str(path), **{ROWS_CONTENT: rows_content(build.path)})
    return {"kept": float(result.kept.height), "rejected": float(result.rejected.height)}


def compute_extract(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Extract: residual stream at the configured layer for every prompt, into chunked Zarr (resumable)."""
    from saerl.activations import extract, hub_commit

    prompts = read_prompts(inputs)
    model, model_cfg = internals_model(cfg, inputs), internals_model_cfg(cfg)
    summary = extract(prompts["prompt"].to_list(), prompts["id"].to_list(), build.path, model_cfg,
                      cfg.extract, build.chunks, model_path=model, device=cfg.runtime.device,
                      progress=cfg.runtime.progress, root=build.root)
    build.note(summary=summary)
    if commit := hub_commit(model, model_cfg):  # an unpinned hub model's commit is in no key: the manifest says it
        build.note(**{HUB_COMMIT: commit})
    build.note(notes=warned("extract", extract_cut_notes(summary, cfg.extract.max_length, cfg.extract.truncation_side)
                            + extract_position_notes(summary, cfg.extract.truncation_side)))
    if summary["n_clipped"]:
        log.warning("extract: %d residual values (of %d tokens x %d) lie beyond float16's range and are stored "
                    "clamped to +-65504 in the token rows the SAE trains and encodes on (the pooled vectors are "
                    "float32, unclamped); a few are a model's outlier dimensions, many say the layer's scale does "
                    "not fit float16 (another extract.layer may)", summary["n_clipped"], summary["n_tokens_total"],
                    summary["d_model"])
    metrics = {k: float(summary[k]) for k in ("n_prompts_total", "n_tokens_total", "d_model", "layer", "n_truncated",
                                              "n_clipped")}
    if summary["chunks_run"]:  # the throughput of the chunks run here: none when Dask shards (or a killed run) ran
        metrics["tokens_per_s"] = float(summary["tokens_per_s"])  # them all (it said 0 tokens/s)
    return metrics


def _ids_shown(n: int, shown: list[str] | None) -> str:
    """' (ids: a, b, ...)' for a note on `n` prompts of which the summary kept the first ids `shown` ('...' where
    it kept fewer than n; '' where it kept none). in: how many, the ids kept; out: the text."""
    shown = list(shown or [])
    return f" (ids: {', '.join(shown)}{', ...' if n > len(shown) else ''})" if shown else ""


def extract_cut_notes(summary: dict[str, Any], max_length: int, side: str) -> list[str]:
    """The extract stage's note when prompts were longer than extract.max_length tokens and cut: how many, the first
    few ids (the summary's truncated_ids), the side cut and the fix; [] when none was. in: the extract summary
    (n_truncated, n_prompts_total, truncated_ids), extract.max_length, extract.truncation_side; out: [note] or []."""
    n = int(summary["n_truncated"])
    if not n:
        return []
    ids = _ids_shown(n, summary.get("truncated_ids"))
    return [f"{n} of {summary['n_prompts_total']} prompts{ids} are longer than extract.max_length={max_length} "
            f"tokens and were cut on the {side} (raise extract.max_length to keep them whole)"]


def extract_position_notes(summary: dict[str, Any], side: str) -> list[str]:
    """The extract stage's note when prompts, as read (cut to extract.max_length), ran past the extract model's
    position limit (saerl.activations.over_positions; a model with learned positions failed on them instead): how
    many, the first few ids, the limit and the fixes, as a rotary policy's overflow is noted by the stages that
    generate; [] when none did or the limit is unknown (a summary from before the count: none). in: the extract
    summary (n_over_positions, over_positions_ids, model_positions, position_kind, n_prompts_total),
    extract.truncation_side; out: [note] or []."""
    from saerl.policy_lm import ROTARY

    n = int(summary.get("n_over_positions") or 0)
    if not n:
        return []
    positions, ids = summary["model_positions"], _ids_shown(n, summary.get("over_positions_ids"))
    kind = ("whose positions are rotary" if summary.get("position_kind") == ROTARY else
            "whose config does not say how it encodes positions (read as rotary)")
    return [f"{n} of {summary['n_prompts_total']} prompts{ids} are longer than the {positions} positions of the "
            f"extract model, {kind}: it read their tokens past position {positions} at positions it was never trained "
            "on, so their residuals there (and the pooled vectors that hold them) are out of distribution; lower "
            f"extract.max_length to {positions} or less to cut them (on extract.truncation_side={side}), or drop them "
            "at ingest (data.max_prompt_chars)"]


def compute_sae(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """SAE: train one with sae-lens on a token sample (or load one, checked against the extracted layer), and
    report its quality; a loaded SAE's mismatches under sae.hook_check=warn are the stage's notes."""
    from saerl.activations import pick_device
    from saerl.sae import cached_repo_commit, obtain_sae, release_repo

    report = obtain_sae(cfg.sae, inputs["extract"].path, build.path, device=str(pick_device(cfg.runtime.device)),
                        progress=cfg.runtime.progress)
    build.note(report=report, notes=warned("sae", report["notes"]))
    if cfg.sae.source == "pretrained" and (commit := cached_repo_commit(release_repo(cfg.sae.release or ""))):
        build.note(**{HUB_COMMIT: commit})  # the release's repo commit loaded: in no key, the manifest says it
    return {k: float(v) for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compute_encode(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Encode: pooled top-K SAE codes per prompt into chunked Zarr (resumable)."""
    from saerl.activations import pick_device
    from saerl.sae import encode_codes

    summary = encode_codes(inputs["extract"].path, inputs["sae"].path, cfg.sae, build.path, build.chunks,
                           device=str(pick_device(cfg.runtime.device)), progress=cfg.runtime.progress)
    summary |= encoded_counts(build.path, inputs["extract"].path)  # not only the chunks this process ran
    build.note(summary=summary)
    return {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}


def encoded_counts(codes_folder: Path, extract_folder: str | Path) -> dict[str, float]:
    """What a finished codes store holds, whichever process encoded its chunks (encode_codes counts only the
    chunks it ran: none when Dask shards or a killed run ran them all, so a fanned encode said 0 prompts and 0 kept
    features per prompt). in: the encode build's folder, the extract artifact's; out: n_prompts, n_tokens (content
    tokens pooled) and mean_nonzero (kept features per prompt, in the first pooling, as encode_codes counts)."""
    from saerl.activation_store import chunk_ranges, open_activations
    from saerl.sae import open_codes

    group = open_codes(codes_folder)
    fids = group[f"{group.attrs['pools'][0]}/feature_ids"]
    n = fids.shape[0]
    kept = sum(int((fids[lo:hi] >= 0).sum()) for lo, hi in chunk_ranges(n, fids.chunks[0]))
    return {"n_prompts": n, "n_tokens": open_activations(extract_folder).n_content_tokens,
            "mean_nonzero": round(kept / max(1, n), 2)}


def compute_label(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Label: measured pass rate of the policy over n rollouts on the labelled subset, chunk by chunk
    (score.label_chunk_rows prompts each; a killed run resumes from its finished chunks). Rollouts sample as RL
    does (train.temperature, train.top_k, train.max_completion_length) and are checked with the reward's
    train.verify_timeout_s, on runtime.device. Rollouts cut at train.max_completion_length are counted (labels.parquet's
    n_cut, the metric cut_share) and noted over health.truncated_share. Once the policy is loaded, before it
    generates, the labelled prompts are checked against its positions (saerl.labels.label_fit_notes: a learned-position
    policy they overflow is refused; the notes are logged then and lead the manifest's)."""
    from saerl.labels import (
        cut_notes,
        cut_share,
        labelled_subset,
        measure_labels,
        pass_rate_profile,
        saturation_notes,
    )

    t = cfg.train
    subset = labelled_subset(read_prompts(inputs), cfg.score.label_fraction, cfg.score.seed, cfg.score.label_max)
    labels, summary, fit = measure_labels(policy_path(cfg, inputs), subset, cfg.score, t.temperature,
                                          t.max_completion_length, build.path, build.chunks, cfg.model,
                                          progress=cfg.runtime.progress, top_k=t.top_k,
                                          verify_timeout_s=t.verify_timeout_s, device=cfg.runtime.device)
    profile, flat = pass_rate_profile(labels)
    if flat:
        log.warning("label: %s; every prompt has the same pass rate, so difficulty_hat orders nothing: measure with "
                    "the policy you will train (model.name_or_path) or read difficulty from a column "
                    "(data.difficulty, score.difficulty_source=column)", profile)
    else:
        log.info("label: %s", profile)
    notes = fit + warned("label", cut_notes(labels, t.max_completion_length, cfg.health.truncated_share)
                         + saturation_notes(labels, cfg.model.name_or_path, cfg.score.label_rollouts,
                                            limit=t.max_completion_length))
    build.note(rows={"labels": labels.height}, summary=summary, profile=profile, notes=notes)
    return {"labelled": float(labels.height), "mean_pass_rate": float(labels["pass_rate"].mean() or 0.0),
            "verifier_failures": float(labels["n_failed"].sum()), "cut_share": cut_share(labels)}


def score_inputs(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], residuals: bool = False) -> dict[str, Any]:
    """score_prompts' and property_report's arguments besides the config, from their stages' input artifacts: X
    (score.model_pool codes), prompts, measured (the label stage's pass rates, when it ran), ids, C
    (score.cluster_pool codes), D (the difficulty poolings: every sae.encode_pool pooling when score.difficulty_pool
    is auto), and with `residuals` (the report's residual baseline: dense [prompts, d_model] arrays, read only
    there) R (mean-pooled residuals when extracted) and RD (the residuals of D's poolings that extract.pooling
    stored, so the residual baseline's difficulty model gets the SAE's choice of pooling; None, i.e. mean alone,
    when it stored none of them); without, R and RD are None. Each pooling is read once. Every row comes in id order
    (saerl.scoring.id_order), the order the fits read them in, so they are not copied again there."""
    from saerl.activation_store import open_activations
    from saerl.sae import load_codes_csr
    from saerl.scoring import id_order, rows_in_order

    sc = cfg.score
    d_pools = cfg.sae.encode_pool if sc.difficulty_pool == "auto" else [sc.difficulty_pool]
    loaded = {pool: load_codes_csr(inputs["encode"].path, pool)
              for pool in dict.fromkeys([sc.model_pool, sc.cluster_pool, *d_pools])}
    stored_ids = loaded[sc.model_pool][0]
    order = id_order(pl.Series("id", stored_ids, dtype=pl.String))
    ids = stored_ids if order is None else [stored_ids[i] for i in order]
    loaded = {pool: rows_in_order(order, M)[0] for pool, (_, M) in loaded.items()}
    X = loaded[sc.model_pool]
    measured = pl.read_parquet(inputs["label"].file("labels.parquet"), glob=False) if "label" in inputs else None
    R, RD = None, {}
    if residuals:
        act = open_activations(inputs["extract"].path)
        R = act.pooled("mean", order) if "mean" in act.meta.pooling else None
        RD = {pool: R if pool == "mean" else act.pooled(pool, order) for pool in d_pools if pool in act.meta.pooling}
    return {"X": X, "prompts": read_prompts(inputs), "measured": measured, "ids": ids, "R": R,
            "C": loaded[sc.cluster_pool], "D": {pool: loaded[pool] for pool in d_pools},
            "RD": RD if R is not None and RD else None}


UNCONVERGED_LOG = ("%d scikit-learn fits stopped before converging (raise score.enet_max_iter for the elastic nets, "
                   "score.probe_max_iter for the logistic probes)")


@dataclass(eq=False)  # each block's own counter, told apart by identity (two blocks at 0 are not one)
class Unconverged:
    """What :func:`counting_unconverged` counted: `count` is the number of ConvergenceWarnings raised inside its
    block so far."""

    count: int = 0


@dataclass
class _Counting:
    """The process's counting of ConvergenceWarnings, shared by overlapping counting_unconverged blocks (score and
    properties in threads of one Dask worker): warnings' filters and showwarning are process-wide, so the first
    block to open installs one hook and the last to close restores what the first found (a catch_warnings of its
    own, entered once), whichever threads they run in."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    guard: Any = None  # the open warnings.catch_warnings, while any block is open
    show: Any = warnings.showwarning  # what the first block found: the other warnings go on to it (kept after)
    open: list[Unconverged] = field(default_factory=list)  # the open blocks' counters, oldest first
    local: threading.local = field(default_factory=threading.local)  # .stack: this thread's open counters


_COUNTING = _Counting()


def _count_or_show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
    """The hook while a counting block is open: a ConvergenceWarning counts in this thread's innermost block, or,
    from a thread without one (scikit-learn's joblib workers), in the oldest open block: with blocks open in
    several threads such a warning may land in another stage's count. Any other warning, and every warning once
    no block is open (a hook some other code's catch_warnings put back late), goes on to the showwarning the first
    block found."""
    from sklearn.exceptions import ConvergenceWarning

    stack = getattr(_COUNTING.local, "stack", None)
    oldest = _COUNTING.open[:1]  # one read: another thread may close the last block meanwhile
    counter = stack[-1] if stack else (oldest[0] if oldest else None)
    if issubclass(category, ConvergenceWarning) and counter is not None:
        counter.count += 1
    else:
        _COUNTING.show(message, category, filename, lineno, file, line)


@contextmanager
def counting_unconverged() -> Iterator[Unconverged]:
    """Count scikit-learn's ConvergenceWarnings raised inside the block instead of printing them, and log the
    settings that raise the iteration caps when there were any (UNCONVERGED_LOG), also when the block raises. Every
    other warning goes on as it would without the block (the caller's filters, registry and display). Blocks may
    overlap across threads (:class:`_Counting`). out: an Unconverged whose count is read after the block
    (build.note(unconverged_fits=...))."""
    from sklearn.exceptions import ConvergenceWarning

    counted = Unconverged()
    with _COUNTING.lock:
        if not _COUNTING.open:
            _COUNTING.guard = warnings.catch_warnings()  # saves the filters and showwarning, restores them on exit
            _COUNTING.guard.__enter__()
            warnings.simplefilter("always", ConvergenceWarning)
            if warnings.showwarning is not _count_or_show:  # not a hook some other code's catch_warnings put back
                _COUNTING.show = warnings.showwarning
            warnings.showwarning = _count_or_show
        _COUNTING.open.append(counted)
    stack = _COUNTING.local.__dict__.setdefault("stack", [])
    stack.append(counted)
    try:
        yield counted
    finally:
        stack[:] = [c for c in stack if c is not counted]
        with _COUNTING.lock:
            _COUNTING.open[:] = [c for c in _COUNTING.open if c is not counted]
            if not _COUNTING.open:
                _COUNTING.guard.__exit__(None, None, None)
                _COUNTING.guard = None
        if counted.count:
            log.info(UNCONVERGED_LOG, counted.count)


def compute_score(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Score: clusters, difficulty_hat, quality_hat per prompt from SAE codes (scores.parquet, what the curriculum
    reads), the fitted models' choices (score_params.json) and the fitted models themselves (score_models.safetensors
    + score_models.json: saerl.scoring.save_score_models; saerl.scoring.score_new scores new prompts with them)."""
    from saerl.scoring import save_score_models, score_prompts

    args = score_inputs(cfg, inputs)
    with counting_unconverged() as unconverged:
        result = score_prompts(args["X"], args["prompts"], cfg.score, args["measured"], ids=args["ids"], C=args["C"],
                               D=args["D"])
    result.scores.write_parquet(build.path / SCORES)
    (build.path / SCORE_PARAMS).write_text(json.dumps(result.params, indent=1, default=str), encoding="utf-8")
    save_score_models(result.models, build.path)
    build.note(notes=warned("score", result.notes), rows={"scores": result.scores.height},
               unconverged_fits=unconverged.count)
    # no quality filter here: kept / share_kept are the curriculum stage's (it reads score.quality_threshold)
    return {"n_clusters": float(result.scores["cluster"].n_unique())}


PROPERTY_TABLE_LOG = "property models vs baselines:\n%s"  # the properties runner's log of its report table


def compute_properties(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Properties: what the score stage's clusters are (clusters.parquet) and how good SAE property models are
    beside baselines on held-out rows (property_report.parquet), with the plots a person looks at (cluster map,
    predicted vs true difficulty, top features per cluster). Nothing downstream reads it, so a setting of the
    report alone (score.baselines, score.ood_folds, score.cluster_examples, ...) reruns this stage only."""
    from saerl.scoring import property_report, summarize_report

    args = score_inputs(cfg, inputs, residuals=cfg.score.baselines)
    scores = pl.read_parquet(inputs["score"].file(SCORES), glob=False)
    params = json.loads(inputs["score"].file(SCORE_PARAMS).read_text(encoding="utf-8"))
    k = params["k"]
    with counting_unconverged() as unconverged:
        result = property_report(args["X"], args["prompts"], cfg.score, scores, args["measured"], ids=args["ids"],
                                 R=args["R"], C=args["C"], D=args["D"], RD=args["RD"], k=k)
    result.clusters.write_parquet(build.path / "clusters.parquet")
    result.report.write_parquet(build.path / "property_report.parquet")
    log.info(PROPERTY_TABLE_LOG, summarize_report(result.report))
    drawn = write_score_plots(args["C"], args["ids"], args["prompts"], scores, cfg, build.path / PLOTS,
                              clusters=result.clusters, params=params, fitted=set(result.labelled),
                              heldout=result.heldout)
    notes = warned("properties", result.notes + drawn)
    build.note(notes=notes, rows={"property_report": result.report.height}, unconverged_fits=unconverged.count)
    return {"report_rows": float(result.report.height)}


# the measured-difficulty plot's rows and truth (write_score_plots): the report model's test rows, 1 - pass rate
HELDOUT_ROWS = "report's held-out rows, model fitted on its train rows"
MEASURED_TRUTH = "measured difficulty (1 - pass rate)"


def save_figure(fig: object, path: Path) -> None:
    """Render a matplotlib Figure to PNG (Agg), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]


def write_score_plots(X: object, ids: list[str], prompts: pl.DataFrame, scores: pl.DataFrame, cfg: PipelineConfig,
                      folder: Path, clusters: pl.DataFrame | None = None, params: dict | None = None,
                      fitted: set | None = None, heldout: pl.DataFrame | None = None) -> list[str]:
    """Cluster map of the codes X the clusters were made from (by cluster, and by true topic when known),
    predicted vs true difficulty, and the top SAE features per cluster (when the clusters frame is given).

    With a difficulty column: difficulty_hat against it (its legend names the regressor and pooling the score
    stage chose, from `params`: the score result's difficulty_model and difficulty_pool) on the prompts outside
    the `fitted` ids the regressor was trained on (all prompts when that leaves fewer than 3 with a label, and
    the title says so; all prompts, unnamed, when `fitted` is None), without the y = x line when the regressor
    predicts measured difficulty (1 - pass rate, another scale than the data's column). Without one (measured
    difficulty: the production model was fitted on every measured prompt): the report's in-distribution SAE
    model against the measured label, 1 - pass rate, on the report's held-out rows (`heldout`: ScoreResult.heldout,
    at least 3 rows; the legend names that model's own family and pooling), with the y = x line (one scale).

    Topics no installed font can draw are named by ASCII stand-ins, the same in both figures (saerl.plots.stand_ins
    of every prompt's topic); out: the stage notes of the plots (saerl.plots.stand_in_note: the stand-ins' key and
    the fix; [] when every topic is drawn as itself)."""
    from saerl.plots import (
        cluster_map,
        cluster_top_features,
        difficulty_label,
        difficulty_scatter,
        stand_in_note,
        stand_ins,
        topic_names,
    )
    from saerl.property_models import report_rows, weight_codes

    rows = report_rows(len(ids), cfg.score)  # above score.minibatch_above prompts, a seeded sample is drawn
    X = X[rows]  # type: ignore[index]
    ids = [ids[i] for i in rows]
    joined = pl.DataFrame({"id": ids}).join(scores, on="id", how="left").join(prompts, on="id", how="left")
    topics = joined["topic"].to_numpy() if "topic" in joined.columns else None
    names = stand_ins(topic_names(prompts["topic"].to_numpy()) if "topic" in prompts.columns else [], "topic")
    save_figure(cluster_map(weight_codes(X, cfg.score.tfidf), joined["cluster"].to_numpy(), topics, cfg.score.seed,
                            names), folder / "cluster_map.png")
    if "difficulty" in joined.columns:
        label = difficulty_label((params or {}).get("difficulty_model"), (params or {}).get("difficulty_pool"))
        shown, rows = joined, ""
        if fitted is not None:
            unseen = joined.filter(~pl.col("id").is_in(list(fitted)) & pl.col("difficulty").is_not_null())
            shown, rows = (unseen, "prompts it was not fitted on") if unseen.height >= 3 else (
                joined, "incl. its fitted prompts")
        save_figure(difficulty_scatter(shown["difficulty"].to_numpy(), shown["difficulty_hat"].to_numpy(),
                                       label, (params or {}).get("difficulty_source") != "measured", rows),
                    folder / "difficulty_pred_vs_true.png")
    elif heldout is not None and heldout.height >= 3:
        label = difficulty_label(heldout["model"][0], heldout["pool"][0])
        save_figure(difficulty_scatter(heldout["difficulty"].to_numpy(), heldout["difficulty_pred"].to_numpy(),
                                       label, True, HELDOUT_ROWS, MEASURED_TRUTH),
                    folder / "difficulty_pred_vs_true.png")
    if clusters is not None and clusters.height:
        save_figure(cluster_top_features(clusters, names=names), folder / "cluster_top_features.png")
    note = stand_in_note(names, "topic")
    return [note] if note else []


MAX_STEPS = "train.max_steps"  # the field run_share reads, which the curriculum's key leaves out where unread


def compute_curriculum(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Curriculum: the SAERL order (quality-filtered, capped at curriculum.max_difficulty_quantile, cluster-first,
    easy to hard), the vanilla arm's shuffle and the ablation arms' orders (order_only: the same order without
    the quality filter; filter_only: the prompts the quality filter keeps, with no order and no difficulty cap,
    in a seeded shuffle). The quality filter (quality_hat >= score.quality_threshold, saerl.curriculum.quality_kept)
    is applied here, not in the score stage, so a threshold change reruns from this stage on. out: metrics, among
    them share_kept (the share of prompts the filter keeps, applied or not), filtered (prompts the quality filter
    removed), out_of_reach (prompts the difficulty cap left out), home_share (the share of a whole batch its home
    cluster gave, :func:`saerl.curriculum.home_share`; absent under mix_ratio 1), home_share_designed (what
    curriculum.mix_ratio asks: round(B * (1 - mix_ratio)) / B), run_share (the share of the order's prompts the run's
    train.max_steps x batch_size covers; only where the stage's key reads train.max_steps, i.e. the order is fitted
    to the run: saerl.stages.unread_fields, saerl.curriculum.fits_budget; elsewhere a cached curriculum would report
    another run's share) and ramps (how many climbs an epoch is read in: saerl.curriculum.ramps)."""
    from saerl.curriculum import (
        home_share,
        home_size,
        inactive_filter_notes,
        quality_pool,
        share_kept,
        short_order_notes,
        vanilla_order,
    )

    scores = pl.read_parquet(inputs["score"].file(SCORES), glob=False)
    c = cfg.curriculum
    order = curriculum_order(scores, cfg, "saerl", c.seed)
    order.write_parquet(build.path / ORDER)
    ids = sorted(scores["id"].cast(pl.String).to_list())
    vanilla = vanilla_order(ids, c.epochs, c.seed, c.batch_size)
    vanilla.write_parquet(build.path / VANILLA)
    # ablation arms: the SAERL order without the quality filter, and the filter without the order
    order_only = curriculum_order(scores, cfg, "order_only", c.seed)
    order_only.write_parquet(build.path / ARM_ORDERS["order_only"])
    filtered_pool = quality_pool(scores, c.model_copy(update={"filter_quality": True}), cfg.score.quality_threshold)
    kept_ids = sorted(filtered_pool["id"].cast(pl.String).unique().to_list())  # the filter alone: no difficulty cap
    filter_only = vanilla_order(kept_ids, c.epochs, c.seed, c.batch_size)
    filter_only.write_parquet(build.path / ARM_ORDERS["filter_only"])
    from saerl.plots import curriculum_difficulty

    save_figure(curriculum_difficulty(order), build.path / PLOTS / "curriculum_difficulty.png")
    in_order = order["id"].n_unique()
    reachable = quality_pool(scores, c, cfg.score.quality_threshold)["id"].n_unique()
    filtered, out_of_reach = scores.height - reachable, reachable - in_order
    notes = warned("curriculum", inactive_filter_notes(scores, c, cfg.score.quality_threshold)
                   + short_order_notes({"saerl": order, "order_only": order_only, "filter_only": filter_only,
                                        "vanilla": vanilla}, c.batch_size, scores.height))
    build.note(rows={"order": order.height, "vanilla": vanilla.height, "filtered": filtered,
                     "out_of_reach": out_of_reach}, notes=notes)
    home = home_share(order, c.batch_size)
    first_epoch = order.filter(pl.col("epoch") == 0)
    # how much of the order's pool the run trains on (DAPO's refills read on), where the key reads train.max_steps
    read_steps = MAX_STEPS not in unread_fields(cfg, "curriculum")
    run_share = {"run_share": min(1.0, run_prompts(cfg) / max(1, in_order))} if read_steps else {}
    return {"order_rows": float(order.height), "filtered": float(filtered), **run_share,
            # in how many ramps the order is read
            "ramps": float(first_epoch["ramp"].n_unique()) if first_epoch.height else 1.0,
            "filtered_share": filtered / max(1, scores.height), "out_of_reach": float(out_of_reach),
            "share_kept": share_kept(scores, cfg.score.quality_threshold),
            "home_share_designed": home_size(c.batch_size, c.mix_ratio) / c.batch_size,
            **({} if home is None else {"home_share": home})}


# ------------------------------------------------------------------------------------------------ train / evaluate

STAGE_RUN = "{stage}:{arm}:{seed}"  # the name of one run of a stage with variants (saerl.pipeline.VARIANTS)
TRAIN_RUN = STAGE_RUN.replace("{stage}", "train")  # one (arm, seed) training run among the inputs and records
POLICY_LABEL = "{arm}:{seed}"  # how a progress bar names one policy: 'train saerl:0', 'evaluate saerl:0 on heldout'
# a training run's mean reward over its last quarter of steps (at least one): a steadier read than the last step's
REWARD_LAST_QUARTER = "reward_last_quarter_mean"


def curriculum_order(scores: pl.DataFrame, cfg: PipelineConfig, arm: str, seed: int) -> pl.DataFrame:
    """A curriculum arm's order (ORDER_SCHEMA) drawn with `seed` (:func:`saerl.curriculum.build_order`): saerl's
    quality-filtered one, or order_only's, the same without the filter. The curriculum stage writes the draw of
    curriculum.seed; each other training seed draws its own (:func:`arm_order_frame`).
    in: scores (id, cluster, difficulty_hat, quality_hat), config, arm (saerl or order_only), seed; out: the order."""
    from saerl.curriculum import build_order

    c = cfg.curriculum
    if arm == "order_only":
        c = c.model_copy(update={"filter_quality": False})
    return build_order(scores, c, cfg.score.quality_threshold, seed, run_prompts(cfg))  # read where fits_budget


def run_prompts(cfg: PipelineConfig) -> int:
    """The prompts a training run trains on: train.max_steps x curriculum.batch_size (DAPO generates for more)."""
    return cfg.train.max_steps * cfg.curriculum.batch_size


def order_seed(cfg: PipelineConfig, seed: int) -> int:
    """The seed of the order a training seed reads: curriculum.seed + seed, so seed 0 reads the curriculum stage's own
    draw and each other seed its own: an arm's spread over seeds includes its order's, for the curriculum arms as for
    the shuffled ones (until session 28 the curriculum arms' seeds all read one draw)."""
    return cfg.curriculum.seed + seed


def arm_order_frame(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], arm: str, seed: int) -> pl.DataFrame:
    """The order (ORDER_SCHEMA) one training run of an arm reads, drawn with :func:`order_seed`: vanilla = a seeded
    shuffle of the whole unfiltered pool per epoch, for curriculum.epochs epochs or as many more as the run's stream
    needs (DAPO's refills read past them: each one a fresh shuffle, not the same ones again); filter_only = the same
    shuffle of the prompts the quality filter keeps; saerl and order_only = their curriculum (:func:`curriculum_order`;
    the order file of the curriculum artifact for the curriculum stage's own draw, seed 0's). Draw seed
    curriculum.seed therefore begins as the curriculum artifact's files for every arm. in: config, the train stage's
    inputs (curriculum; score for a curriculum arm's other draws), arm, training seed; out: the order."""
    from saerl.curriculum import vanilla_order
    from saerl.stream import train_stream_length

    c = cfg.curriculum
    draw = order_seed(cfg, seed)
    if arm in SHUFFLED_ARMS:
        pool = (read_prompts(inputs) if arm == "vanilla"
                else pl.read_parquet(inputs["curriculum"].file(ARM_ORDERS[arm]), glob=False))
        ids = sorted(pool["id"].cast(pl.String).unique().to_list())
        per_epoch = len(ids) // c.batch_size * c.batch_size or len(ids)
        epochs = max(c.epochs, -(-train_stream_length(cfg.train, c.batch_size) // max(per_epoch, 1)))
        return vanilla_order(ids, epochs, draw, c.batch_size)
    if draw == c.seed:
        return pl.read_parquet(inputs["curriculum"].file(ARM_ORDERS[arm]), glob=False)
    return curriculum_order(pl.read_parquet(inputs["score"].file(SCORES), glob=False), cfg, arm, draw)


# the held-out sets whose rejected rows this process has warned of, (name, file, rows): every train and heldout run
# reads every set (six stage runs in a two-arm run), and said the same warning each time
_WARNED_SETS: set[tuple[str, str, int]] = set()
# each held-out file as read_held_out read it, by (its path, its content hash, the mapping it was read with), for this
# process: every (arm, seed) of a run reads each set in its train and its heldout stage, and the verifier normalises
# every gold answer as it reads it (CollegeMath's 2818 LaTeX answers: 150 s a read on a shared 2-core machine); read
# once, every stage run of the process also sees the same rows (a gold answer whose normalising times out is dropped)
_HELD_OUT_READ: dict[tuple[str, str, str], Any] = {}
_HELD_OUT_LOCK = threading.Lock()


def eval_sets(cfg: PipelineConfig, inputs: dict[str, ArtifactRef]) -> dict[str, pl.DataFrame]:
    """Held-out sets {name: frame (id, prompt, answer, + label columns)}: the testbed's eval split as
    'heldout' when the data is the testbed, plus every eval.sets file read with the data mapping and the set's own
    fields (saerl.config.held_out_mapping), whole
    (data.max_rows caps the training data only; eval.max_problems caps a held-out set by sha256(id)); a label
    column the training data maps but the held-out file lacks (topic, difficulty, ...) is left out for that file:
    evaluation needs only prompt and answer (and id), and reports per label where the file has one."""
    return read_eval_sets(cfg, inputs)[0]


# a heldout artifact's record of how each held-out set was read: the file's rows, the rows kept, and the rejected
# rows' count per reason (saerl.data's vocabulary), so the evaluate stage can say what share of a file it scored
# without reading the files again
HELDOUT_INGEST = "ingest.parquet"
INGEST_SCHEMA = {"set": pl.String, "rows": pl.Int64, "kept": pl.Int64,
                 "reasons": pl.List(pl.Struct({"reason": pl.String, "count": pl.Int64}))}


def read_eval_sets(cfg: PipelineConfig,
                   inputs: dict[str, ArtifactRef]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """:func:`eval_sets` with how each set was read: (the sets, a frame of INGEST_SCHEMA with one row per set: the
    rows of its file, the rows kept and the rejected rows' count per reason; the testbed's split is read whole).
    Rejected (or flagged) rows are warned of once a process. in: config, the stage's inputs; out: (sets, frame)."""
    from saerl.data import summarize

    sets: dict[str, pl.DataFrame] = {}
    read = []
    if cfg.data.source == "testbed" and "testbed" in inputs:
        sets[TESTBED_SET] = pl.read_parquet(inputs["testbed"].file("world/eval.parquet"), glob=False)
        read.append(whole_set(TESTBED_SET, sets[TESTBED_SET].height))
    for name, entry in cfg.eval.sets.items():
        path = held_out_file(entry)
        result = held_out_rows(cfg, name, entry)
        warned = (name, str(path), result.rejected.height)
        if result.rejected.height and warned not in _WARNED_SETS:  # rejected or flagged (kept) rows, counted by row as
            _WARNED_SETS.add(warned)  # saerl ingest counts them; once a process, not once per stage run reading the set
            log.warning("eval set %s (%s): %s; `saerl ingest %s --prompt F --answer F` lists each row and reason",
                        name, path, summarize(result).replace("\n", "; "), shlex.quote(str(path)))
        sets[name] = result.kept
        s = result.summary
        read.append({"set": name, "rows": s["rows"], "kept": s["kept"],
                     "reasons": [{"reason": r, "count": c} for r, c in s["reasons"].items()]})
    return sets, pl.DataFrame(read, schema=INGEST_SCHEMA)


def whole_set(name: str, rows: int) -> dict[str, Any]:
    """An INGEST_SCHEMA row of a set read whole (the testbed's split: no row rejected). in: name, rows; out: row."""
    return {"set": name, "rows": rows, "kept": rows, "reasons": []}


def read_held_out(cfg: PipelineConfig, name: str, entry: Any, max_rows: int | None = None) -> Any:
    """eval.sets.<name> read as saerl ingest reads it (the data mapping and the set's own fields and reading, labels
    optional: saerl.config.held_out_mapping), whole or its first `max_rows` rows, once per process while the file
    and the mapping stay as they were (_HELD_OUT_READ; a result is shared: do not change it); refuses a file that
    cannot be read, or is the training data's split, naming the set. in: config, the set's name and entry, a row cap (None: none);
    out: the IngestResult (kept rows in id order, as the ingest stage writes its own: saerl.data.in_id_order; so the
    generation batches and sampled draws of a shuffled copy of the file are the file's; rejected rows by file row)."""
    from saerl.data import IngestError, in_id_order, ingest
    from saerl.pipeline import hash_path

    path = held_out_file(entry)
    try:
        mapping = held_out_mapping(cfg.data, entry).model_copy(update={"max_rows": max_rows})
        if not path.exists():  # ingest's error names it
            return in_id_order(ingest(mapping, path, labels_optional=True, progress=cfg.runtime.progress))
        with _HELD_OUT_LOCK:  # one thread reads a file while another waits for what it read
            read = (str(path.resolve()), hash_path(path), mapping.model_dump_json())
            if read not in _HELD_OUT_READ:
                _HELD_OUT_READ[read] = in_id_order(ingest(mapping, path, labels_optional=True,
                                                          progress=cfg.runtime.progress))
            return _HELD_OUT_READ[read]
    except IngestError as err:
        raise type(err)(f"held-out set eval.sets.{name} ({path}): {err}") from err


def held_out_rows(cfg: PipelineConfig, name: str, entry: Any) -> Any:
    """eval.sets.<name> read whole (:func:`read_held_out`); refuses a file none of whose rows is usable, naming the
    set, the rejection counts and the fix (training's in-run evaluation died inside the tokenizer on an empty set),
    and a file that cannot be read, or is the training data's split, naming the set. in: config, the set's name and
    entry; out: the IngestResult (kept and rejected rows)."""
    from saerl.data import IngestError, summarize

    result = read_held_out(cfg, name, entry)
    if result.kept.is_empty():
        path = held_out_file(entry)
        raise IngestError(
            f"held-out set eval.sets.{name} ({path}) has no usable row: {summarize(result).splitlines()[0]}. Fix: "
            f"`saerl ingest {shlex.quote(str(path))} --prompt F --answer F` lists each row and its reason; correct the file or the "
            f"fields it is read with (eval.sets.{name}={{path: {path}, prompt: F, answer: F}}), or drop the set")
    return result


# the rows of a held-out file the preflight ingests first: the verifier normalises each gold answer as it reads it
# (CollegeMath's 2818 LaTeX answers: 150 s on a shared 2-core machine, 16 rows: under 1.5 s), so the whole file is
# read only when none of these is usable
HELD_OUT_PROBE_ROWS = 16


def check_held_out_rows(cfg: PipelineConfig, name: str, entry: Any) -> None:
    """Refuse before the first stage the held-out set :func:`held_out_rows` refuses in the train and heldout
    stages (after extraction, the SAE, scoring and the curriculum had run): its first HELD_OUT_PROBE_ROWS rows are
    ingested, and the whole file, as those stages read it, only when none of them is usable, so a refusal gives the
    whole file's counts (a row usable among the first rows is usable in the whole file: a duplicate names an earlier
    row). in: config, the set's name and entry; raises saerl.data.IngestError."""
    if read_held_out(cfg, name, entry, HELD_OUT_PROBE_ROWS).kept.is_empty():
        held_out_rows(cfg, name, entry)


def held_out_overlap(prompts: pl.DataFrame, sets: dict[str, pl.DataFrame],
                     read: Mapping[str, int] | None = None) -> list[str]:
    """A note per held-out set whose scored problems share prompts with the training data (the same text once case,
    spacing, prose punctuation, thousands separators and decimals' trailing zeros are set aside:
    saerl.data.canonical_prompt, an exact match of those forms, so a reworded problem or one in another template is
    not caught): RL trained on them, so their accuracy measures recall, not generalisation (a held-out file cut from
    the training file, or a benchmark inside it). Counts the problems scored (eval.max_problems may score a part of a
    set: :func:`scored_sets`), and says so where they are fewer than the set's problems read. in: the ingested
    training prompts (prompt), the held-out sets' scored problems {name: frame with prompt}, {name: problems read from
    its file} (None: each set scored whole); out: the notes ([] when every set is disjoint)."""
    from saerl.data import canonical_prompt

    def canon(col: pl.Series) -> list[str]:
        return [canonical_prompt(p) for p in col.cast(pl.String).to_list()]

    seen = set(canon(prompts["prompt"]))
    notes = []
    for name, frame in sets.items():
        n = sum(p in seen for p in canon(frame["prompt"]))
        whole = (read or {}).get(name, frame.height)
        capped = f" (eval.max_problems: {frame.height} of its {whole} problems)" if whole > frame.height else ""
        if n:
            notes.append(f"held-out set {name}: {n} of the {frame.height} problems scored{capped} are also in the "
                         "training data (the same text once case, spacing, punctuation and number formatting are set "
                         "aside): RL trained on them, so accuracy on this set mixes recall with generalisation; drop "
                         "them from the held-out file or from the training data")
    return notes


def compute_train(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build, *, arm: str,
                  seed: int) -> dict[str, float]:
    """Train: one arm and seed of RL (GRPO or DAPO) from the policy in the arm's order, with a greedy
    held-out learning curve. Writes policy/ (safetensors + tokenizer), checkpoints/ while it trains (resumable,
    if train.save_every: a killed run continues from the newest; removed once the run is done),
    log.parquet (trl's per-step metrics), curve.parquet (step, set, greedy, n, seconds, failures: verifier
    timeouts/errors, scored wrong), curve_problems.parquet (the
    same evaluations per problem: step, set, id, correct), trained_order.parquet
    (position, step, id: the prompts trained on, each at its generation batch's first step; a run stopped inside a
    generation batch lists all of that batch's prompts) and plots/train_curves.png. With train.num_processes above
    1 the run trains in that many processes started by torchrun (saerl.distributed.train_in_processes, its spec in
    processes/ while they run) and writes the same files. A run that resumed a checkpoint
    notes it (manifest: resumed_from, and the note RESUMED, 'resumed an interrupted training run from step 40 of 100',
    that leads the stage run's reason)."""
    from saerl.curriculum import whole_batches
    from saerl.distributed import train_in_processes
    from saerl.evaluate import select_problems
    from saerl.plots import train_curves
    from saerl.rl import train_grpo
    from saerl.runs import RESUMED, resumed_steps_note

    t = cfg.train
    order_frame = arm_order_frame(cfg, inputs, arm, seed)
    # one whole batch per step: an epoch's short last batch is left out, so no step spans two epochs and holds a
    # prompt twice (trl's own shuffling sampler drops it too); the run reads the order again if it needs more. An
    # order of fewer prompts than a batch has no whole batch and is read as it is, so its steps repeat prompts (the
    # curriculum stage notes it: saerl.curriculum.short_order_notes)
    order = whole_batches(order_frame, cfg.curriculum.batch_size)
    if not order:
        raise ValueError(f"arm {arm!r} has no prompts to train on (every prompt filtered?): lower "
                         "score.quality_threshold or set curriculum.filter_quality=false")
    sets = {n: select_problems(df, t.eval_problems) for n, df in eval_sets(cfg, inputs).items()}
    pps = cfg.curriculum.batch_size
    train = train_grpo if t.num_processes == 1 else functools.partial(train_in_processes, folder=build.path / LAUNCH)
    run = train(policy_path(cfg, inputs), read_prompts(inputs), order, t, build.path / "policy",
                     prompts_per_step=pps, seed=seed, eval_sets=sets, eval_batch=cfg.eval.batch_size,
                     eval_timeout_s=cfg.eval.verify_timeout_s, eval_extraction=cfg.eval.answer_extraction,
                     checkpoint_dir=build.path / CHECKPOINTS,
                     model_cfg=cfg.model, device=cfg.runtime.device, progress=cfg.runtime.progress,
                     clusters=refill_clusters(cfg, order_frame, arm), label=POLICY_LABEL.format(arm=arm, seed=seed),
                     health=cfg.health)
    steps_log = pl.DataFrame(run["log"], infer_schema_length=None) if run["log"] else pl.DataFrame({"step": []})
    if "step" in steps_log.columns:
        steps_log = steps_log.with_columns(pl.col("step").cast(pl.Int64))
    # step first, then by name: a resumed run's history comes back from its checkpoint with its keys sorted, so
    # trl's own order would make its log differ from an uninterrupted run's in column order alone
    steps_log = steps_log.select(sorted(steps_log.columns, key=lambda c: (c != "step", c)))
    steps_log.write_parquet(build.path / "log.parquet")
    curve = pl.DataFrame(run["curve"], schema={"step": pl.Int64, "set": pl.String, "greedy": pl.Float64,
                                               "n": pl.Int64, "seconds": pl.Float64, "failures": pl.Int64})
    curve.write_parquet(build.path / "curve.parquet")
    pl.DataFrame(run["curve_problems"], schema={"step": pl.Int64, "set": pl.String, "id": pl.String,
                                                "correct": pl.Boolean}).write_parquet(build.path / CURVE_PROBLEMS)
    trained = pl.DataFrame({"position": list(range(len(run["order"]))), "step": run["order_steps"], "id": run["order"]},
                           schema={"position": pl.Int64, "step": pl.Int64, "id": pl.String})
    trained.write_parquet(build.path / "trained_order.parquet")
    save_figure(train_curves(steps_log, curve, f"{arm} (seed {seed})"), build.path / PLOTS / "train_curves.png")
    build.note(arm=arm, seed=seed, steps=run["steps"], train_seconds=run["seconds"], resumed_from=run["resumed_from"],
               notes=run.get("fit_notes", []) + warned("train", run["notes"]))  # fit notes: logged before training
    if run["resumed_from"] is not None:  # leads the stage run's reason (saerl.pipeline.run_stage)
        build.note(**{RESUMED: resumed_steps_note(run["resumed_from"], t.max_steps)})
    metrics = {"steps": float(run["steps"]), "train_seconds": float(run["seconds"]),
               "verifier_failures": float(run["verifier_failures"]), "reward_checks": float(run["reward_checks"]),
               "curve_verifier_failures": float(curve["failures"].sum())}
    metrics |= cluster_shares(cfg, order_frame, arm, trained, run["steps"])
    reward_tail = steps_log["reward"].tail(max(1, steps_log.height // 4)).mean() if "reward" in steps_log.columns else None
    if reward_tail is not None:  # None: no steps logged, or no reward among the last quarter's
        metrics[REWARD_LAST_QUARTER] = float(reward_tail)
    for r in curve.group_by("set").agg(pl.col("greedy").sort_by("step").last()).iter_rows(named=True):
        metrics[f"eval_{r['set']}_greedy_final"] = float(r["greedy"])
    # the run is done and policy/ holds its result: the resumable checkpoints (weights + optimizer state, ~12 bytes
    # a parameter each) would only make the published artifact larger and slower to hash
    shutil.rmtree(build.path / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(build.path / LAUNCH, ignore_errors=True)
    return metrics


def refill_clusters(cfg: PipelineConfig, order: pl.DataFrame, arm: str) -> dict[str, int | None] | None:
    """What DAPO's refills by cluster read (train.dynamic_sampling_refill 'cluster'): each id's cluster in the
    run's order; None under GRPO, a stream refill or a shuffled arm (no clusters). in: config, the run's order
    (:func:`arm_order_frame`), arm; out: {id: cluster} or None."""
    t = cfg.train
    if t.algorithm != "dapo" or t.dynamic_sampling_refill != "cluster" or arm in SHUFFLED_ARMS:
        return None
    return dict(order.select("id", "cluster").iter_rows())


def cluster_shares(cfg: PipelineConfig, order: pl.DataFrame, arm: str, trained: pl.DataFrame,
                   steps: int) -> dict[str, float]:
    """For an arm that trains on a curriculum order (saerl, order_only): cluster_share, the mean share of a step's
    prompts from its most common cluster as trained, and cluster_share_designed, the same over the first `steps`
    whole batches of the order (read again from its start when the run outlasts it: what a run of as many steps
    reading one batch a step trains on; :func:`saerl.curriculum.step_cluster_share`); DAPO's refills read the next
    batches, so the first can fall under the second. {} for the shuffled arms, which read no cluster.
    in: config, the run's order (:func:`arm_order_frame`), arm, the trained order (step, id), the run's steps;
    out: metrics."""
    from saerl.curriculum import step_cluster_share, whole_batch_rows

    if arm in SHUFFLED_ARMS:
        return {}
    b = cfg.curriculum.batch_size
    batches = whole_batch_rows(order, b).select("id", step=pl.col("batch").rank("dense").cast(pl.Int64) - 1)
    n_batches = int(batches["step"].max()) + 1 if batches.height else 0
    repeats = -(-max(steps, 1) // max(n_batches, 1))
    designed = pl.concat([batches.with_columns(step=pl.col("step") + r * n_batches) for r in range(repeats)])
    designed = designed.filter(pl.col("step") < steps)
    out = {"cluster_share": step_cluster_share(trained, order, b),
           "cluster_share_designed": step_cluster_share(designed, order, b)}
    return {k: v for k, v in out.items() if v is not None}


def stage_runs_among(inputs: dict[str, ArtifactRef], stage: str) -> list[tuple[str, int, ArtifactRef]]:
    """(arm, seed, ref) of every run of a stage with variants ('train', 'heldout': named STAGE_RUN) among a stage's
    inputs, sorted by (arm, seed)."""
    out = []
    for name, ref in inputs.items():
        if name.startswith(f"{stage}:"):
            _, arm, seed = name.split(":")
            out.append((arm, int(seed), ref))
    return sorted(out, key=lambda r: (r[0], r[1]))


def train_runs(inputs: dict[str, ArtifactRef]) -> list[tuple[str, int, ArtifactRef]]:
    """(arm, seed, ref) of every training run among a stage's inputs."""
    return stage_runs_among(inputs, "train")


def curve_problems(runs: list[tuple[str, int, ArtifactRef]], reach: dict[str, set[str]] | None = None) -> pl.DataFrame:
    """Every run's in-training evaluations per problem (its curve_problems.parquet, which every train artifact
    of this stage version has), and the same rows again as set "<set>:reachable" for the ids in `reach`.
    in: (arm, seed, ref) of the training runs, {set: reachable ids} or None;
    out: (step, set, id, correct, arm, seed)."""
    from saerl.evaluate import REACHABLE

    parts = []
    for arm, seed, ref in runs:
        per = pl.read_parquet(ref.file(CURVE_PROBLEMS), glob=False).select(
            "step", "set", "id", pl.col("correct").cast(pl.Boolean))
        per = per.with_columns(arm=pl.lit(arm), seed=pl.lit(seed, pl.Int64))
        parts.append(per)
        for set_name, ids in (reach or {}).items():
            parts.append(per.filter((pl.col("set") == set_name) & pl.col("id").is_in(sorted(ids)))
                         .with_columns(set=pl.lit(set_name + REACHABLE)))
    schema = {"step": pl.Int64, "set": pl.String, "id": pl.String, "correct": pl.Boolean, "arm": pl.String, "seed": pl.Int64}
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame(schema=schema)


def reachable_curve(problems: pl.DataFrame) -> pl.DataFrame:
    """The in-training greedy curve of every run on each set's reachable stratum, from :func:`curve_problems`
    rows: (step, set, greedy, n, arm, seed) for the "<set>:reachable" sets."""
    from saerl.evaluate import REACHABLE

    return (problems.filter(pl.col("set").str.ends_with(REACHABLE))
            .group_by("arm", "seed", "set", "step")
            .agg(pl.col("correct").cast(pl.Float64).mean().alias("greedy"), pl.len().cast(pl.Int64).alias("n"))
            .select("step", "set", "greedy", "n", "arm", "seed").sort("arm", "seed", "set", "step"))


HELDOUT = "eval.parquet"  # a heldout artifact's per-sample frame (one policy on every held-out set)
REACH_PROBE = "reach_probe.parquet"  # the evaluate artifact's copy of the starting policy's probe pass
HELDOUT_SETS = "sets.parquet"  # a heldout artifact's held-out problems (set, id, prompt): what evaluate checks
# against the training data (:func:`held_out_overlap`) without reading the set files again


def held_out_fit_notes(cfg: PipelineConfig, tok: Any, context: Any, sets: dict[str, pl.DataFrame]) -> list[str]:
    """Whether each held-out set's problems that the heldout stage scores (eval.max_problems of them:
    saerl.evaluate.select_problems) fit the policy's context with eval.max_new_tokens tokens of completion
    (saerl.policy_lm.context_fit_notes: a learned-position policy they overflow is refused before it generates).
    in: config, the policy's tokenizer and context (saerl.policy_lm.model_context), the sets; out: notes."""
    from saerl.evaluate import select_problems
    from saerl.policy_lm import context_fit_notes

    field = "eval.max_new_tokens" if cfg.eval.max_new_tokens is not None else "train.max_completion_length"
    notes = []
    for name, df in sets.items():
        df = select_problems(df, cfg.eval.max_problems)
        notes += context_fit_notes(tok, context, [str(p) for p in df["prompt"].to_list()],
                                   [str(i) for i in df["id"].to_list()], eval_max_new_tokens(cfg), field,
                                   f"problems of held-out set eval.sets.{name}")
    return notes


def compute_heldout(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build, *, arm: str,
                    seed: int) -> dict[str, float]:
    """Heldout: one policy on every held-out set (:func:`saerl.evaluate.evaluate_loaded`: greedy and k samples at
    eval.temperature, k the set's own eval.sets.NAME.k_samples else eval.k_samples (saerl.config.set_samples), up to
    eval.max_new_tokens tokens each (unset: train.max_completion_length: saerl.config.eval_max_new_tokens), each
    answer, read as eval.answer_extraction says (saerl.answers), judged by the verifier within
    eval.verify_timeout_s), the unit the
    evaluate stage compares. The policy is training run (arm, seed)'s (its train artifact's policy/), or with arm
    BASE_ARM the starting policy (its scored pass, seed 0) and with PROBE_ARM the starting policy's probe pass
    (REACH_SEED, on the probe's own seed stream: saerl.evaluate._seed_for), which defines each set's reachable
    stratum from its sampled completions alone (it generates no greedy pass). Its own artifact, keyed on that
    policy and the generation settings alone: a change of how evaluate compares (eval.ci_level, the steps target), a new seed or
    arm, or a sweep child that shares vanilla's training runs generates nothing again for the policies already
    evaluated. Writes eval.parquet (set, id, sample, correct, status, completion_len, truncated, + the sets'
    difficulty/topic, + fallback under answer_extraction 'boxed_or_last'), sets.parquet (set, id, prompt) and ingest.parquet (HELDOUT_INGEST: how each set's file was
    read, :func:`read_eval_sets`).
    in: config, inputs (the run's train artifact, or the testbed for its LM; the testbed for its eval split), the
    build, arm, seed; out: metrics <set>_greedy (accuracy of the greedy pass; none for the probe pass), <set>_mean_k
    (over the set's k samples) and <set>_verifier_failures."""
    from saerl.evaluate import BASE_ARM, GREEDY, PROBE_ARM, evaluate_loaded, verifier_failures
    from saerl.policy_lm import load_policy, model_context

    sets, read = read_eval_sets(cfg, inputs)
    if not sets:
        raise ValueError("no held-out set to evaluate on: use data.source=testbed or set eval.sets={name: file}")
    if arm in (BASE_ARM, PROBE_ARM):
        policy, model_cfg = policy_path(cfg, inputs), cfg.model
    else:  # a trained policy is a local folder: no hub revision
        policy = inputs[TRAIN_RUN.format(arm=arm, seed=seed)].file("policy")
        model_cfg = cfg.model.model_copy(update={"revision": None})
    model, tok = load_policy(policy, model_cfg, device=cfg.runtime.device)
    fit = warned("heldout", held_out_fit_notes(cfg, tok, model_context(model.config), sets))  # before generating
    frame = evaluate_loaded(model, tok, sets, cfg.eval, eval_max_new_tokens(cfg), seed, greedy=arm != PROBE_ARM,
                            progress=cfg.runtime.progress, label=POLICY_LABEL.format(arm=arm, seed=seed),
                            probe=arm == PROBE_ARM)
    frame.write_parquet(build.path / HELDOUT)
    pl.concat([df.select(set=pl.lit(name), id=pl.col("id").cast(pl.String), prompt=pl.col("prompt").cast(pl.String))
               for name, df in sets.items()]).write_parquet(build.path / HELDOUT_SETS)
    read.write_parquet(build.path / HELDOUT_INGEST)
    build.note(arm=arm, seed=seed, **({"notes": fit} if fit else {}))
    acc = (frame.group_by("set", greedy=pl.col("sample") == GREEDY)
           .agg(pl.col("correct").cast(pl.Float64).mean()).sort("set", "greedy"))
    return ({f"{name}_{'greedy' if g else 'mean_k'}": float(a) for name, g, a in acc.iter_rows()}
            | {f"{name}_verifier_failures": float(n) for name, n in verifier_failures(frame, by=("set",)).iter_rows()})


def heldout_runs(inputs: dict[str, ArtifactRef]) -> dict[tuple[str, int], ArtifactRef]:
    """{(arm, seed): ref} of every held-out evaluation among the evaluate stage's inputs ('heldout:<arm>:<seed>')."""
    return {(arm, seed): ref for arm, seed, ref in stage_runs_among(inputs, "heldout")}


def compute_evaluate(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Evaluate: the arm comparison (vs vanilla, with intervals) on greedy pass@1 and mean@k of every trained policy
    (arm x seed), and steps-to-target from the training curves. It reads the heldout stage's evaluations (one
    artifact per policy: :func:`compute_heldout`) and generates nothing itself, so a change of eval.ci_level,
    eval.steps_bootstrap or the steps target recomputes only these tables (seconds).
    Writes eval.parquet (arm, seed, set, id, sample, correct, status, ...: every evaluation's rows), summary.parquet,
    comparison.parquet, steps_to_target.parquet, curves.parquet, comparison.txt and plots/accuracy_vs_step.png.
    With eval.base_policy the starting policy's evaluation is in eval.parquet too (arm "base"; gains.parquet: each
    arm's RL gain over it), and its probe pass (reach_probe.parquet) defines each set's reachable stratum, reported in
    the summary and the comparisons as the set "<set>:reachable". Its notes (a held-out set whose file's rows were
    not all read: saerl.evaluate.read_notes, from the heldout artifact's ingest.parquet; a set whose policies were
    not scored on the same problems: problem_set_notes; a set whose completions were cut at the generation limit
    and not right, or gave no answer, in over eval.truncation_note_share: truncation_notes; a held-out set whose
    scored problems share prompts with the training data: :func:`held_out_overlap`; a set left out of the mean of the
    sets for sharing problems with another: saerl.evaluate.sets_to_average; an arm that ended worse than the starting policy:
    saerl.evaluate.worse_than_base_notes; under eval.answer_extraction 'boxed_or_last', how answers were read and
    per set and arm how many the fallback read: saerl.evaluate.fallback_note, and the tables' titles say so) head
    comparison.txt, above the tables, and the manifest. Each set's table is headed by the share of its file it
    scored (saerl.evaluate.set_size), and where the sets' k differ (eval.sets.NAME.k_samples) the mean@k blocks are
    each headed by their set's own k (saerl.evaluate.mean_k_names)."""
    from saerl.evaluate import (
        BASE_ARM,
        completion_shares,
        final_problems,
        mean_k_names,
        problem_set_notes,
        reachable_ids,
        samples_per_set,
        sets_to_average,
        summarize_eval,
        truncation_notes,
        with_reachable,
    )
    from saerl.plots import accuracy_vs_step

    runs, evaluated = _evaluated_runs(inputs)
    first = next(iter(evaluated.values()))
    sets = pl.read_parquet(first.file(HELDOUT_SETS), glob=False)
    read = pl.read_parquet(first.file(HELDOUT_INGEST), glob=False)
    frames, curves, costs = _run_frames(runs, evaluated)
    probe = None
    if cfg.eval.base_policy:
        base, probe = _base_frames(evaluated)
        frames.append(base)
        probe.write_parquet(build.path / REACH_PROBE)
    samples = pl.concat(frames, how="diagonal_relaxed")
    samples.write_parquet(build.path / "eval.parquet")
    overlap = held_out_overlap(read_prompts(inputs), scored_sets(sets, samples),
                               {name: n for name, n in sets.group_by("set").len().iter_rows()})
    left_out, shared = sets_to_average(evaluated_prompts(sets, samples))
    shares = completion_shares(samples)
    ends = truncation_notes(shares, cfg.eval.truncation_note_share, eval_max_new_tokens(cfg))
    differ = problem_set_notes(samples)
    if probe is not None:
        samples = with_reachable(samples, probe)
        problems = curve_problems(runs, reachable_ids(probe))
        curves.append(reachable_curve(problems))
    else:
        problems = curve_problems(runs, None)
    summary = summarize_eval(samples, ("arm", "seed", "set"))
    summary.write_parquet(build.path / "summary.parquet")
    curve = pl.concat(curves, how="diagonal_relaxed")
    curve.write_parquet(build.path / "curves.parquet")
    reference = _reference_arm(runs)
    tables = _arm_comparisons(samples.filter(pl.col("arm") != BASE_ARM), reference, cfg.eval.ci_level, left_out)
    comparison = pl.concat(tables, how="diagonal_relaxed")
    comparison.write_parquet(build.path / "comparison.parquet")
    gains = None
    if cfg.eval.base_policy:  # each arm's RL gain over the starting policy: did RL learn anything at all?
        gains = pl.concat(_arm_comparisons(samples, BASE_ARM, cfg.eval.ci_level, left_out, reference_fixed=True),
                          how="diagonal_relaxed")
        gains.write_parquet(build.path / "gains.parquet")
    cost = pl.concat(costs, how="diagonal_relaxed")
    stt = steps_table(curve, problems, cost, reference, cfg, left_out)
    stt.write_parquet(build.path / "steps_to_target.parquet")
    mean_name, k_labels = mean_k_names(samples_per_set(samples))  # each set's own k, where they differ
    names = _metric_titles(samples, mean_name)
    notes = warned("evaluate", _evaluate_notes(samples, read, final_problems(tables[0]), gains, names,
                                               differ + ends + overlap + shared))
    build.note(notes=notes)
    sizes = {r["set"]: (r["kept"], r["rows"]) for r in read.iter_rows(named=True)}
    steps = format_steps(stt, final_problems(tables[0]))
    probe_metrics, probe_line = probe_failures(probe) if probe is not None else ({}, "")
    text = _comparison_text(notes, names, tables, gains, sizes, k_labels, steps, probe_line)
    (build.path / "comparison.txt").write_text(text, encoding="utf-8")
    targets = dict(stt.unique("set").select("set", "target").iter_rows())
    save_figure(accuracy_vs_step(curve, target=targets), build.path / PLOTS / "accuracy_vs_step.png")
    return evaluate_metrics(tables, stt, gains, summary, reference, shares, read) | probe_metrics


def _evaluated_runs(inputs: dict[str, ArtifactRef]) -> tuple[list[tuple[str, int, ArtifactRef]],
                                                               dict[tuple[str, int], ArtifactRef]]:
    """The evaluate stage's training runs and the heldout stage's evaluation of each, refused with a ValueError
    where there is no training run, or a run with no evaluation (named). in: the stage's inputs; out: (the runs as
    :func:`train_runs` lists them, :func:`heldout_runs`)."""
    runs = train_runs(inputs)
    if not runs:
        raise ValueError("evaluate needs trained policies: run the train stage first (train.arms, train.seeds)")
    evaluated = heldout_runs(inputs)
    missing = [TRAIN_RUN.format(arm=arm, seed=seed) for arm, seed, _ in runs if (arm, seed) not in evaluated]
    if missing:
        raise ValueError(f"evaluate needs the heldout stage's evaluation of every training run; missing: {missing}")
    return runs, evaluated


def _run_frames(runs: list[tuple[str, int, ArtifactRef]], evaluated: dict[tuple[str, int], ArtifactRef]
                ) -> tuple[list[pl.DataFrame], list[pl.DataFrame], list[pl.DataFrame]]:
    """Per training run, its held-out evaluation's rows, its in-training curve and the prompts it generated for by
    each step (saerl.evaluate.generated_prompts), each with the run's arm and seed columns. in: the runs
    (:func:`train_runs`), :func:`heldout_runs`; out: (evaluations, curves, costs), one frame a run each, in the
    runs' order."""
    from saerl.evaluate import generated_prompts

    frames, curves, costs = [], [], []
    for arm, seed, ref in runs:
        run = {"arm": pl.lit(arm), "seed": pl.lit(seed, pl.Int64)}
        frames.append(pl.read_parquet(evaluated[arm, seed].file(HELDOUT), glob=False).with_columns(**run))
        curves.append(pl.read_parquet(ref.file("curve.parquet"), glob=False).with_columns(**run))
        costs.append(generated_prompts(pl.read_parquet(ref.file("log.parquet"), glob=False),
                                       pl.read_parquet(ref.file("trained_order.parquet"), glob=False)).with_columns(**run))
    return frames, curves, costs


def _base_frames(evaluated: dict[tuple[str, int], ArtifactRef]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The starting policy's held-out evaluation (arm BASE_ARM, seed 0) and its probe pass's sampled completions
    (:func:`probe_samples`), which define each set's reachable stratum. in: :func:`heldout_runs` (with
    eval.base_policy); out: (the evaluation's rows with arm and seed columns, the probe's rows)."""
    from saerl.evaluate import BASE_ARM, PROBE_ARM, REACH_SEED

    base = pl.read_parquet(evaluated[BASE_ARM, 0].file(HELDOUT), glob=False)
    probe = probe_samples(pl.read_parquet(evaluated[PROBE_ARM, REACH_SEED].file(HELDOUT), glob=False))
    return base.with_columns(arm=pl.lit(BASE_ARM), seed=pl.lit(0, pl.Int64)), probe


def _reference_arm(runs: list[tuple[str, int, ArtifactRef]]) -> str:
    """The arm the others are compared with: vanilla where it trained, else the first arm by name. in: the
    training runs (arm, seed, ref); out: the arm."""
    arms = {a for a, _, _ in runs}
    return "vanilla" if "vanilla" in arms else sorted(arms)[0]


def _arm_comparisons(samples: pl.DataFrame, reference: str, level: float, left_out: Collection[str],
                     reference_fixed: bool = False) -> list[pl.DataFrame]:
    """saerl.evaluate.compare_arms against `reference` on each metric of saerl.evaluate.METRICS, each table with
    its metric column. in: the per-sample frame, the reference arm, eval.ci_level, the sets left out of the mean of
    the sets, whether the reference is one fixed policy (the starting policy); out: one table a metric, in
    METRICS' order."""
    from saerl.evaluate import METRICS, compare_arms

    return [compare_arms(samples, reference, metric=m, level=level, reference_fixed=reference_fixed,
                         left_out=left_out).with_columns(metric=pl.lit(m)) for m in METRICS]


def _metric_titles(samples: pl.DataFrame, mean_name: str) -> tuple[str, str]:
    """The titles of comparison.txt's blocks, one a metric of saerl.evaluate.METRICS: greedy pass@1 and
    `mean_name`, each saying how answers were read where eval.answer_extraction's fallback read them (a FALLBACK
    column). in: the per-sample frame, the mean@k name (saerl.evaluate.mean_k_names); out: (greedy title, mean@k
    title)."""
    from saerl.answers import BOXED_OR_LAST, FALLBACK

    read_by = f" (answers: {BOXED_OR_LAST})" if FALLBACK in samples.columns else ""  # eval.answer_extraction
    return "greedy pass@1" + read_by, mean_name + read_by


def _evaluate_notes(samples: pl.DataFrame, read: pl.DataFrame, final: dict[str, int], gains: pl.DataFrame | None,
                    names: tuple[str, str], found: list[str]) -> list[str]:
    """The evaluate stage's notes, in the order comparison.txt lists them: how the fallback read answers
    (saerl.evaluate.fallback_note), the held-out files' rows not all read (read_notes), the notes on the sets
    found before (`found`), and the arms that ended worse than the starting policy (worse_than_base_notes). in: the
    per-sample frame, the heldout artifact's ingest.parquet, {set: problems of the final evaluation}, the gains
    (None: no starting policy), :func:`_metric_titles`, the notes found; out: the notes."""
    from saerl.evaluate import METRICS, fallback_note, read_notes, worse_than_base_notes

    worse = worse_than_base_notes(gains, dict(zip(METRICS, names, strict=True))) if gains is not None else []
    fallback = [n for n in (fallback_note(samples),) if n]
    return fallback + read_notes(read, final) + found + worse


def _comparison_text(notes: list[str], names: tuple[str, str], tables: list[pl.DataFrame],
                     gains: pl.DataFrame | None, sizes: dict[str, tuple[int, int]], k_labels: dict[str, str],
                     steps: str, probe_line: str) -> str:
    """comparison.txt: the notes (above the tables: what a reader of them must know first), a block a metric of
    the arm comparisons, then of the gains over the starting policy, the steps to target and the probe's line.
    in: the notes, :func:`_metric_titles`, the comparisons (:func:`_arm_comparisons`), the gains (None: none),
    {set: (rows kept, rows in its file)}, the mean@k blocks' labels where the sets' k differ, format_steps' text,
    :func:`probe_failures`' line ('' : none); out: the text."""
    from saerl.evaluate import METRICS, format_comparison

    labels = ({}, k_labels)  # the greedy blocks need none; the mean@k blocks name their set's k where ks differ
    text = "".join(f"note: {n}\n" for n in notes)  # above the tables: what a reader of them must know first
    text += "\n".join(f"== {m} ==\n{format_comparison(t, sizes, lab)}"
                      for m, t, lab in zip(names, tables, labels, strict=True))
    if gains is not None:
        text += "\n" + "\n".join(
            f"== RL gain over the starting policy, {m} ==\n"
            f"{format_comparison(gains.filter(pl.col('metric') == k), sizes, lab)}"
            for m, k, lab in zip(names, METRICS, labels, strict=True))
    text += "\n" + steps
    return text + (f"\n{probe_line}" if probe_line else "")


def scored_sets(sets: pl.DataFrame, samples: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Per held-out set, the rows of the problems the evaluation scored (eval.max_problems may have kept a part of a
    set). in: a heldout artifact's sets.parquet (set, id, prompt), the per-sample frame (set, id, ...); out: {set: its
    scored rows (set, id, prompt)}, sets in file order."""
    scored = samples.select("set", pl.col("id").cast(pl.String)).unique()
    rows = sets.join(scored, on=["set", "id"], how="semi")
    return {name: rows.filter(pl.col("set") == name) for name in sets["set"].unique(maintain_order=True).to_list()}


def evaluated_prompts(sets: pl.DataFrame, samples: pl.DataFrame) -> dict[str, list[str]]:
    """Per held-out set, the prompts of the problems the evaluation scored (:func:`scored_sets`): what the mean of the
    sets averages (saerl.evaluate.sets_to_average). in: as scored_sets; out: {set: prompts}, sets in file order."""
    return {name: rows["prompt"].to_list() for name, rows in scored_sets(sets, samples).items()}


def probe_samples(probe: pl.DataFrame) -> pl.DataFrame:
    """The sampled completions of the starting policy's probe pass, all the reachable strata read: a probe artifact
    built before the probe generated its samples alone (a heldout stage of Dec 5, 10:33-12:57, reused under the
    same key) also holds a greedy pass, whose verifier failures were counted as the probe's. in: the probe's
    per-sample frame; out: its rows with sample > GREEDY."""
    from saerl.evaluate import GREEDY

    return probe.filter(pl.col("sample") > GREEDY)


def probe_failures(probe: pl.DataFrame) -> tuple[dict[str, float], str]:
    """The verifier failures of the base policy's probe pass (reach_probe.parquet): answers whose check timed out or
    erred count as wrong, so a problem only those answers reached is missing from its set's reachable stratum.
    in: the probe's per-sample frame (set, sample, status); out: ({<set>_reach_probe_verifier_failures: count}, a line
    for comparison.txt naming the failures per set, '' when there are none; warned too)."""
    from saerl.evaluate import verifier_failures

    per = verifier_failures(probe_samples(probe), by=("set",))
    metrics = {f"{s}_reach_probe_verifier_failures": float(n) for s, n in per.iter_rows()}
    bad = {s: int(n) for s, n in per.iter_rows() if n > 0}
    if not bad:
        return metrics, ""
    line = (f"reachable strata: {sum(bad.values())} answer checks of the starting policy's probe pass timed out or "
            f"erred ({', '.join(f'{s} {n}' for s, n in bad.items())}), counted wrong: a problem only those answers "
            "reached is missing from its set's reachable stratum (eval.verify_timeout_s bounds each check)")
    log.warning("evaluate: %s", line)
    return metrics, line


def failure_metrics(summary: pl.DataFrame) -> dict[str, float]:
    """<set>_<arm>_verifier_failures of the final evaluation: the answers whose check timed out or erred (scored
    wrong), over every seed and sample, from summary.parquet (arm, seed, set, failures); warns when there are any.
    in: the summary by (arm, seed, set); out: {metric name: count}."""
    from saerl.evaluate import REACHABLE

    per = summary.group_by("set", "arm").agg(pl.col("failures").fill_null(0).sum()).sort("set", "arm")
    metrics = {f"{s}_{a}_verifier_failures": float(n) for s, a, n in per.iter_rows()}
    bad = {f"{s} {a}": int(n) for s, a, n in per.iter_rows() if n > 0 and not s.endswith(REACHABLE)}  # strata: subsets
    if bad:
        log.warning("evaluate: %d answer checks of the final evaluation timed out or erred (verifier failures, scored "
                    "wrong; eval.verify_timeout_s bounds each check): %s", sum(bad.values()), bad)
    return metrics


def evaluate_metrics(tables: list[pl.DataFrame], stt: pl.DataFrame, gains: pl.DataFrame | None,
                     summary: pl.DataFrame, reference: str, shares: pl.DataFrame | None = None,
                     read: pl.DataFrame | None = None) -> dict[str, float]:
    """The evaluate stage's metrics. in: the greedy and mean_k comparisons, the steps-to-target table, the gains over
    the starting policy (None without one), the summary by (arm, seed, set), the reference arm, each set's and arm's
    completion shares (saerl.evaluate.completion_shares; None: none), how each set's file was read (a heldout
    artifact's ingest.parquet; None: not known);
    out: <set>_<arm>_greedy (and _greedy_delta_pts against the reference), _mean_k, _verifier_failures,
    _steps_ratio with _steps_ratio_ci_high (both only when the ratio exists: not when the arm's mean curve never
    reaches the target nor when the reference's is at it from the start), _prompts_to_target_ratio, _gain_pts,
    _truncated_share, _cut_wrong_share (cut and not right) and _no_answer_share (of every seed's greedy and sampled
    completions; no truncated nor cut_wrong share for an evaluation that did not record it), _fallback_share (the
    same completions' share whose answer eval.answer_extraction 'boxed_or_last' read unboxed; only under it); <set>_file_rows and <set>_kept_rows (the rows of the set's file and those
    read);
    with gains, the starting policy's own accuracy too, named like an arm's: <set>_base_greedy, <set>_base_mean_k."""
    from saerl.evaluate import BASE_ARM, CUT_WRONG

    metrics: dict[str, float] = {}
    for r in (shares.iter_rows(named=True) if shares is not None else ()):
        metrics |= {f"{r['set']}_{r['arm']}_{c}_share": float(r[c]) for c in ("truncated", CUT_WRONG, "no_answer", "fallback")
                    if r.get(c) is not None}
    for r in (read.iter_rows(named=True) if read is not None else ()):
        metrics |= {f"{r['set']}_file_rows": float(r["rows"]), f"{r['set']}_kept_rows": float(r["kept"])}
    for r in tables[0].iter_rows(named=True):
        metrics[f"{r['set']}_{r['arm']}_greedy"] = float(r["accuracy"])
        if r["arm"] != reference:
            metrics[f"{r['set']}_{r['arm']}_greedy_delta_pts"] = float(r["diff_pts"])
    for r in tables[1].iter_rows(named=True):
        metrics[f"{r['set']}_{r['arm']}_mean_k"] = float(r["accuracy"])
    metrics.update(failure_metrics(summary))
    for r in stt.unique(["set", "arm"]).iter_rows(named=True):
        if r["ratio"] is not None:
            metrics[f"{r['set']}_{r['arm']}_steps_ratio"] = float(r["ratio"])
            if r.get("ratio_ci_high") is not None:
                metrics[f"{r['set']}_{r['arm']}_steps_ratio_ci_high"] = float(r["ratio_ci_high"])
        if r.get("prompts_ratio") is not None:
            metrics[f"{r['set']}_{r['arm']}_prompts_to_target_ratio"] = float(r["prompts_ratio"])
    if gains is not None:
        for r in gains.filter((pl.col("metric") == "greedy") & (pl.col("arm") != BASE_ARM)).iter_rows(named=True):
            metrics[f"{r['set']}_{r['arm']}_gain_pts"] = float(r["diff_pts"])
        for r in gains.filter(pl.col("arm") == BASE_ARM).iter_rows(named=True):  # the gains' reference row
            metrics[f"{r['set']}_{BASE_ARM}_{r['metric']}"] = float(r["accuracy"])
    return metrics


STEPS_SCHEMA = {"arm": pl.String, "seed": pl.Int64, "target": pl.Float64, "steps": pl.Int64, "reached": pl.Boolean,
                "mean_steps": pl.Float64, "ratio": pl.Float64, "reference": pl.String, "target_fixed": pl.Boolean,
                "target_share": pl.Float64, "target_problems": pl.Int64, "set": pl.String,
                "averaged": pl.String}  # an empty steps-to-target table
NO_CURVE = ("the training runs recorded no in-training learning curve (no held-out set while training: "
            "use data.source=testbed or set eval.sets, then retrain)")


def steps_table(curve: pl.DataFrame, problems: pl.DataFrame, cost: pl.DataFrame, reference: str,
                cfg: PipelineConfig, left_out: Collection[str] = ()) -> pl.DataFrame:
    """Steps-to-target per held-out set of the training curves, with the ratio's bootstrap interval, and with two or
    more sets averaged (:func:`averaged_sets`) the same for MEAN_OF_SETS: the steps that go with the comparison's
    headline, read on the curve of those sets' greedy accuracies averaged with equal weight at each eval step
    (:func:`mean_of_sets_curve`; its bootstrap draws each set's problems within it).
    in: curve (arm, seed, set, step, greedy), per-problem curve rows (:func:`curve_problems`), each run's
    generation cost, the reference arm, the config (eval.target_accuracy or target_gain_share, steps_bootstrap,
    ci_level), the sets the comparison's mean leaves out (saerl.evaluate.sets_to_average);
    out: :func:`saerl.evaluate.steps_to_target` rows plus the interval columns (null where the row has no ratio: an
    interval of a ratio that does not exist would read as one), set and averaged (the sets a MEAN_OF_SETS row
    averages, ', '-joined; null on a set's own rows). When the training runs recorded no curve (they had no
    held-out set) the table is empty (STEPS_SCHEMA) and a warning says why."""
    from saerl.evaluate import MEAN_OF_SETS, steps_ratio_interval, steps_to_target

    sets = curve["set"].unique().sort().to_list() if "set" in curve.columns else []
    if not sets:
        log.warning("evaluate: no steps-to-target: %s", NO_CURVE)
        return pl.DataFrame(schema=STEPS_SCHEMA)
    e = cfg.eval
    averaged = averaged_sets(sets, left_out)
    reads = [(s, curve, problems.filter(pl.col("set") == s)) for s in sets]
    if averaged:
        reads.append((MEAN_OF_SETS, mean_of_sets_curve(curve, averaged), problems.filter(pl.col("set").is_in(averaged))))
    return pl.concat([steps_to_target(c, e.target_accuracy, reference, cost, e.target_gain_share,
                                      metric="greedy", set_name=s)
                      .join(steps_ratio_interval(p, reference, e.target_accuracy,
                                                 e.steps_bootstrap, e.ci_level, gain_share=e.target_gain_share),
                            on="arm", how="left")
                      .with_columns(set=pl.lit(s), averaged=pl.lit(", ".join(averaged) if s == MEAN_OF_SETS else None,
                                                                   pl.String))
                      for s, c, p in reads], how="diagonal_relaxed").with_columns(
        pl.when(pl.col("ratio").is_not_null()).then(pl.col(c)).alias(c) for c in ("ratio_ci_low", "ratio_ci_high"))


def averaged_sets(sets: list[str], left_out: Collection[str] = ()) -> list[str]:
    """The in-training sets MEAN_OF_SETS averages, as the comparison's headline does (saerl.evaluate.compare_arms):
    every set but a reachable stratum and one sharing problems with another (`left_out`); [] with fewer than two.
    in: the curve's sets, the sets left out; out: the sets, sorted."""
    from saerl.evaluate import REACHABLE

    kept = sorted(s for s in sets if not s.endswith(REACHABLE) and s not in left_out)
    return kept if len(kept) >= 2 else []


def mean_of_sets_curve(curve: pl.DataFrame, sets: list[str]) -> pl.DataFrame:
    """Each run's in-training curve averaged over `sets` with equal weight, at the steps it evaluated every one of
    them: (arm, seed, step, greedy, n: the problems summed over the sets, set MEAN_OF_SETS). in: the curves (arm,
    seed, set, step, greedy, n), the sets; out: the mean curve."""
    from saerl.evaluate import MEAN_OF_SETS

    n = pl.col("n").sum() if "n" in curve.columns else pl.lit(None, pl.Int64)
    return (curve.filter(pl.col("set").is_in(sets)).group_by("arm", "seed", "step")
            .agg(pl.col("greedy").mean(), n.alias("n"), pl.col("set").n_unique().alias("sets"))
            .filter(pl.col("sets") == len(sets)).drop("sets").with_columns(set=pl.lit(MEAN_OF_SETS))
            .sort("arm", "seed", "step"))


def format_steps(stt: pl.DataFrame, final: dict[str, int] | None = None) -> str:
    """Steps-to-target per set: what the target is (:func:`saerl.evaluate.describe_target`: read on the in-training
    curve's problems, not the final evaluation's), then one line per arm (on the arm's mean curve over seeds, how
    many seeds reached the target on their own, ratio to the reference or why there is none, and where the table
    has them, the prompts generated for by then and their ratio to the reference's).
    in: the steps-to-target table, {set: problems of the final evaluation} (None: not said); out: the text."""
    from saerl.evaluate import AT_START, MEAN_OF_SETS, describe_target, no_ratio_reason
    from saerl.report import format_ratio_interval

    lines = ["steps to target (greedy, in-training curve: the first eval step at which an arm's mean curve over its "
             "seeds reaches the target)"]
    if stt.is_empty():
        lines.append(f"  none: {NO_CURVE}")
    rows = stt.unique(["set", "arm"], maintain_order=True).sort(pl.col("set") == MEAN_OF_SETS, "set", "arm")
    for set_name in rows["set"].unique(maintain_order=True).to_list():
        per_set = rows.filter(pl.col("set") == set_name)
        averaged = per_set["averaged"][0] if "averaged" in per_set.columns else None
        if averaged:  # a MEAN_OF_SETS row
            lines.append(f"  {set_name}: the steps that go with the headline {set_name}, read on each eval step's "
                         f"greedy accuracy averaged over {averaged} with equal weight")
        lines.append(f"  {set_name} target: {describe_target(per_set.row(0, named=True), (final or {}).get(set_name))}")
        for r in per_set.iter_rows(named=True):
            reached = stt.filter((pl.col("set") == set_name) & (pl.col("arm") == r["arm"]))["reached"]
            steps = "mean curve never reaches it" if r["mean_steps"] is None else f"{r['mean_steps']:.0f} steps"
            if r["mean_steps"] == 0:  # the first eval (step 0, the starting policy) already meets the target
                steps += f" ({AT_START})"
            ratio = "" if r["ratio"] is None else f"  ratio {r['ratio']:.2f}x{format_ratio_interval(r)}"
            why = no_ratio_reason(stt, set_name, r["arm"])  # '' when there is a ratio
            ratio += f"  {why}" if why else ""
            if r.get("mean_prompts") is not None:
                ratio += f"; rollouts for {r['mean_prompts']:.0f} prompts by then"
                ratio += "" if r.get("prompts_ratio") is None else f" ({r['prompts_ratio']:.2f}x)"
            lines.append(f"  {set_name:<10} {r['arm']:<12} {steps} "
                         f"({int(reached.sum())}/{reached.len()} seeds on their own){ratio}")
    return "\n".join(lines) + "\n"
