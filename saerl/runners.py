"""Stage runners: read a stage's input artifacts, call the library function, write its outputs.

Each ``compute_<stage>(cfg, inputs, build) -> metrics`` reads upstream artifacts through their refs, writes
its files into ``build.path`` (the partial folder, published atomically afterwards) and returns a few
numbers for the run report and MLflow. Heavy imports stay inside the functions so planning is cheap.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import polars as pl

from saerl.artifacts import ArtifactRef, Build
from saerl.config import PipelineConfig

log = logging.getLogger("saerl.runners")

PROMPTS = "prompts.parquet"
SCORES = "scores.parquet"
ORDER = "order.parquet"
VANILLA = "vanilla_order.parquet"
PLOTS = "plots"


def policy_path(cfg: PipelineConfig, inputs: dict[str, ArtifactRef]) -> str:
    """The policy model: the testbed's tiny LM when model.name_or_path is 'testbed', else the id/folder."""
    if cfg.model.name_or_path == "testbed":
        return str(inputs["testbed"].file("lm"))
    return cfg.model.name_or_path


def internals_model(cfg: PipelineConfig, inputs: dict[str, ArtifactRef]) -> str:
    """The model whose internals are read: extract.model if set, else the policy."""
    return cfg.extract.model or policy_path(cfg, inputs)


def read_prompts(inputs: dict[str, ArtifactRef]) -> pl.DataFrame:
    """The ingested prompts table."""
    return pl.read_parquet(inputs["ingest"].file(PROMPTS))


def compute_testbed(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Testbed: generate the synthetic world and pretrain (or resume) the tiny policy LM."""
    from saerl.testbed import build_testbed

    summary = build_testbed(cfg.testbed, build.path)
    build.note(summary=summary)
    acc = summary.get("greedy_accuracy", {})
    return {f"greedy_acc_L{k.split('.')[0]}": float(v) for k, v in acc.items() if k != "all"} | {
        "greedy_acc": float(acc.get("all", 0.0))}


def compute_ingest(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Ingest: read the data set (a user file, the sample, or the testbed's pool), write both tables."""
    from saerl.data import ingest, summarize, write_ingest
    from saerl.pipeline import data_file

    path = data_file(cfg) or inputs["testbed"].file("world/pool.parquet")
    result = ingest(cfg.data, path)
    counts = write_ingest(result, build.path)
    summary = summarize(result)
    log.info("ingest: %s", summary)
    build.note(rows=counts, summary=summary, source=str(path))
    return {"kept": float(result.kept.height), "rejected": float(result.rejected.height)}


def compute_extract(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Extract: residual stream at the configured layer for every prompt, into chunked Zarr (resumable)."""
    from saerl.activations import extract

    prompts = read_prompts(inputs)
    summary = extract(prompts["prompt"].to_list(), prompts["id"].to_list(), build.path, cfg.model, cfg.extract,
                      build.chunks, model_path=internals_model(cfg, inputs), device=cfg.runtime.device,
                      progress=cfg.runtime.progress)
    build.note(summary=summary)
    return {k: float(summary[k]) for k in ("n_prompts_total", "n_tokens_total", "d_model", "layer", "tokens_per_s")}


def compute_sae(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """SAE: train one with sae-lens on a token sample (or load one), and report its quality."""
    from saerl.activations import pick_device
    from saerl.sae import obtain_sae

    report = obtain_sae(cfg.sae, inputs["extract"].path, build.path, device=str(pick_device(cfg.runtime.device)))
    build.note(report=report)
    return {k: float(v) for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compute_encode(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Encode: pooled top-K SAE codes per prompt into chunked Zarr (resumable)."""
    from saerl.activations import pick_device
    from saerl.sae import encode_codes

    summary = encode_codes(inputs["extract"].path, inputs["sae"].path, cfg.sae, build.path, build.chunks,
                           device=str(pick_device(cfg.runtime.device)), progress=cfg.runtime.progress)
    build.note(summary=summary)
    return {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}


def compute_label(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Label: measured pass rate of the policy over n rollouts on the labelled subset."""
    from saerl.labels import LABELS, labelled_subset, measure_pass_rates

    subset = labelled_subset(read_prompts(inputs), cfg.score.label_fraction, cfg.score.seed)
    labels = measure_pass_rates(policy_path(cfg, inputs), subset, cfg.score.label_rollouts, cfg.train.temperature,
                                cfg.train.max_completion_length, cfg.score.label_batch, cfg.score.seed)
    labels.write_parquet(build.path / LABELS)
    build.note(rows={"labels": labels.height})
    return {"labelled": float(labels.height), "mean_pass_rate": float(labels["pass_rate"].mean() or 0.0),
            "verifier_failures": float(labels["n_failed"].sum())}


def compute_score(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Score: clusters, difficulty_hat, quality_hat from SAE codes, plus the baselines report."""
    from sklearn.exceptions import ConvergenceWarning

    from saerl.activation_store import open_activations
    from saerl.sae import load_codes_csr
    from saerl.scoring import score_prompts, summarize_report

    ids, X = load_codes_csr(inputs["encode"].path)
    prompts = read_prompts(inputs)
    measured = pl.read_parquet(inputs["label"].file("labels.parquet")) if "label" in inputs else None
    act = open_activations(inputs["extract"].path)
    R = act.pooled("mean") if "mean" in act.meta.pooling else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = score_prompts(X, prompts, cfg.score, measured, ids=ids, R=R)
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if unconverged:
        log.info("score: %d scikit-learn fits stopped before converging (max_iter in score config)", unconverged)
    result.scores.write_parquet(build.path / SCORES)
    result.clusters.write_parquet(build.path / "clusters.parquet")
    result.report.write_parquet(build.path / "property_report.parquet")
    (build.path / "score_params.json").write_text(json.dumps(result.params, indent=1, default=str))
    log.info("property models vs baselines:\n%s", summarize_report(result.report))
    write_score_plots(X, ids, prompts, result.scores, cfg, build.path / PLOTS)
    build.note(notes=result.notes, rows={"scores": result.scores.height}, unconverged_fits=unconverged)
    kept = result.scores["kept"].mean()
    return {"n_clusters": float(result.clusters.height), "kept_share": float(kept) if kept is not None else 1.0}


def save_figure(fig: object, path: Path) -> None:
    """Render a matplotlib Figure to PNG (Agg), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]


def write_score_plots(X: object, ids: list[str], prompts: pl.DataFrame, scores: pl.DataFrame, cfg: PipelineConfig,
                      folder: Path) -> None:
    """Cluster map (by cluster, and by true topic when known) and predicted vs true difficulty (when known)."""
    from saerl.plots import cluster_map, difficulty_scatter
    from saerl.property_models import weight_codes

    joined = pl.DataFrame({"id": ids}).join(scores, on="id", how="left").join(prompts, on="id", how="left")
    topics = joined["topic"].to_numpy() if "topic" in joined.columns else None
    save_figure(cluster_map(weight_codes(X, cfg.score.tfidf), joined["cluster"].to_numpy(), topics, cfg.score.seed),
                folder / "cluster_map.png")
    if "difficulty" in joined.columns:
        save_figure(difficulty_scatter(joined["difficulty"].to_numpy(), joined["difficulty_hat"].to_numpy()),
                    folder / "difficulty_pred_vs_true.png")


def compute_curriculum(cfg: PipelineConfig, inputs: dict[str, ArtifactRef], build: Build) -> dict[str, float]:
    """Curriculum: the SAERL order (filtered, cluster-first, easy to hard) and the vanilla arm's shuffle."""
    from saerl.curriculum import build_order, vanilla_order

    scores = pl.read_parquet(inputs["score"].file(SCORES))
    order = build_order(scores, cfg.curriculum, cfg.score.quality_threshold, cfg.curriculum.seed)
    order.write_parquet(build.path / ORDER)
    vanilla = vanilla_order(scores["id"].to_list(), cfg.curriculum.epochs, cfg.curriculum.seed,
                            cfg.curriculum.batch_size)
    vanilla.write_parquet(build.path / VANILLA)
    from saerl.plots import curriculum_difficulty

    save_figure(curriculum_difficulty(order), build.path / PLOTS / "curriculum_difficulty.png")
    filtered = scores.height - order["id"].n_unique()
    build.note(rows={"order": order.height, "vanilla": vanilla.height, "filtered": filtered})
    return {"order_rows": float(order.height), "filtered": float(filtered),
            "filtered_share": filtered / max(1, scores.height)}
