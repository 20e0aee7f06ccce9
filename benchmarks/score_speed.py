"""Score stage speed: :func:`saerl.scoring.score_prompts` and :func:`saerl.scoring.property_report` on a demo run's inputs, the old way and the new way side by side.

Reads what the score stage of a config reads from an artifact root that holds a run of it up to encode (the
demo's: ``saerl demo`` or ``saerl run configs/demo.yaml --until encode``): the pooled SAE codes of every
pooling (clusters from score.cluster_pool, the quality probe from score.model_pool, the difficulty regressor
chosen among sae.encode_pool when score.difficulty_pool is auto), the ingested prompts, the mean-pooled
residuals of the residual baseline and, when the config measures difficulty, the label stage's pass rates;
exactly as ``saerl.runners.compute_score`` and ``compute_properties`` call them. Then it times both three times on them, each
with its own :class:`saerl.property_models.FitOptions` for the difficulty elastic nets:

- ``old``: serial, in the inputs' own float type (float32 codes and residuals), with the score settings of that
  time (``OLD_SETTINGS``: ``score.enet_max_iter=5000``): the way before this benchmark;
- ``float64``: serial, in float64, with the current settings (``--no-serial`` leaves this run out);
- ``new``: float64 on ``--jobs`` threads (default: the config's, see fit_options: every core), with the
  ``--new-override`` settings when given (a proposed default measured beside the current one).

Per run it prints the seconds and the scikit-learn fits that stopped at max_iter before converging, then the
property report side by side (old, new, difference) and how far the reports, difficulty_hat and the chosen
difficulty model differ. The threads never change a number (``float64`` and ``new`` must agree bit for bit:
``threads_report_diff=0``); the float64 cast does, as the old float32 fits stopped short of their tolerance.
The machine may be shared: the ratio of two runs side by side means more than either time.

    .venv/bin/python benchmarks/score_speed.py --work /tmp/X/.saerl         # the demo's score stage, 3 runs
    .venv/bin/python benchmarks/score_speed.py --quick                    # smaller CV grids, no serial float64 run

The last line is ``RESULT speedup=<old s / new s> max_report_diff=<max |old - new| over the report's values>``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning

from saerl.artifacts import ArtifactRef, ArtifactStore
from saerl.config import PipelineConfig, load_config
from saerl.pipeline import input_keys, plan
from saerl.property_models import FitOptions, fit_options
from saerl.runners import score_inputs
from saerl.scoring import PropertyReport, ScoreResult, property_report, score_prompts
from saerl.stages import STAGES, stage_key

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
# quick mode: the smaller CV grids of benchmarks/properties.py (the elastic net's path and folds are most of the time)
QUICK_SCORE = ["score.cv_folds=3", "score.enet_n_alphas=12", "score.enet_l1_ratios=[0.5,1.0]",
               "score.probe_cs=[0.1,1.0,10.0]", "score.k_range=[4,12]"]
KEY = ["property", "metric", "features"]


def planned_refs(cfg: PipelineConfig) -> tuple[dict[str, ArtifactRef], str | None]:
    """The finished artifacts the score stage of `cfg` reads in cfg.runtime.artifact_root, by stage (every planned
    stage before score, keyed as this code keys them), and None; or ({}, the first stage whose artifact is missing)."""
    store = ArtifactStore(cfg.runtime.artifact_root)
    refs: dict[str, ArtifactRef] = {}
    for stage, ups in plan(cfg, "score")[:-1]:
        key = stage_key(cfg, stage, input_keys(cfg, stage, {u: refs[u] for u in ups}))
        if not store.is_complete(stage, key):
            return {}, stage
        refs[stage] = store.open(stage, key)
    return refs, None


def newest_refs(root: Path, with_label: bool) -> dict[str, ArtifactRef]:
    """The newest finished encode artifact under `root` (by its manifest's created time) and every artifact it was
    built from, following each manifest's inputs (extract, sae, ingest, testbed), plus with `with_label` the newest
    label artifact built from that ingest; {} when there is no encode artifact, or a link of the chain is missing.
    For a run made by other code than this (its stage versions give other keys than planned_refs computes)."""
    store = ArtifactStore(root)
    encodes = sorted((ArtifactRef("encode", p.name, str(p)) for p in (root / "encode").glob("*")
                      if p.is_dir() and store.is_complete("encode", p.name)),
                     key=lambda ref: str(ref.manifest().get("created", "")))
    if not encodes:
        return {}
    refs, todo = {}, [encodes[-1]]
    while todo:
        ref = todo.pop()
        refs[ref.stage] = ref
        for stage, key in ref.manifest().get("inputs", {}).items():
            if stage in refs or stage not in STAGES:  # not an artifact: a data file's hash, the device, arm, seed
                continue
            if not store.is_complete(stage, key):
                return {}
            todo.append(store.open(stage, key))
    if with_label:
        labels = sorted((ArtifactRef("label", p.name, str(p)) for p in (root / "label").glob("*")
                         if p.is_dir() and store.is_complete("label", p.name)
                         and ArtifactRef("label", p.name, str(p)).manifest().get("inputs", {}).get("ingest") ==
                         refs["ingest"].key), key=lambda ref: str(ref.manifest().get("created", "")))
        if not labels:
            return {}
        refs["label"] = labels[-1]
    return refs


def upstream_refs(cfg: PipelineConfig, config: str) -> dict[str, ArtifactRef]:
    """What the score stage of `cfg` (loaded from the file `config`) reads: planned_refs when the artifact root has
    them, else (a run by other code, e.g. a frozen copy of the repository) newest_refs with a note saying so.
    Raises SystemExit naming the command that makes a run when neither exists."""
    refs, missing = planned_refs(cfg)
    if missing is None:
        return refs
    root = Path(cfg.runtime.artifact_root)
    refs = newest_refs(root, with_label=any(stage == "label" for stage, _ in plan(cfg, "score")))
    if refs:
        print(f"(no {missing} artifact keyed for this code and config under {root}: reading the newest encode "
              f"artifact, {refs['encode'].key}, and the artifacts it was built from)")
        return refs
    raise SystemExit(f"no finished encode artifact (or no {missing} artifact it reads) under {root}: make one with "
                     f"`saerl run {config} --until encode runtime.artifact_root={root}` (or `saerl demo` for the "
                     "demo's root, .saerl), then rerun this benchmark with --work on that root")


def timed_score(inputs: dict[str, Any], cfg: PipelineConfig,
                fit: FitOptions) -> tuple[tuple[ScoreResult, PropertyReport], float, int]:
    """((score_prompts' result, property_report's on its clusters), wall seconds of both, scikit-learn fits that
    stopped before converging) for one FitOptions: the score and properties stages' fits."""
    args = dict(inputs)
    X, prompts, measured = args.pop("X"), args.pop("prompts"), args.pop("measured")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = score_prompts(X, prompts, cfg.score, measured, fit=fit, ids=args["ids"], C=args["C"], D=args["D"])
        report = property_report(X, prompts, cfg.score, result.scores, measured, fit=fit, k=result.params["k"], **args)
    seconds = time.perf_counter() - started
    return (result, report), seconds, sum(issubclass(w.category, ConvergenceWarning) for w in caught)


def side_by_side(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The two property reports joined on (property, metric, features): old, new, diff = new - old (NaN where a
    row is in one report only), in the old report's row order."""
    joined = old.select(*KEY, pl.col("value").alias("old")).join(
        new.select(*KEY, pl.col("value").alias("new")), on=KEY, how="full", coalesce=True, maintain_order="left")
    return joined.with_columns((pl.col("new") - pl.col("old")).alias("diff"))


def max_abs_diff(table: pl.DataFrame) -> float:
    """The largest |new - old| of a side_by_side table; inf when a row is in one report only (NaN on both sides,
    e.g. an undefined metric in both, counts as equal)."""
    both_nan = table["old"].is_nan() & table["new"].is_nan()
    diff = table.filter(~both_nan.fill_null(False))["diff"]
    if diff.null_count() or diff.is_nan().any():
        return float("inf")
    return float(diff.abs().max()) if len(diff) else 0.0


# the score settings of the old way that the new way changed (session 18: float64 fits converge, so the
# iteration cap went from 5,000 to 50,000 at no cost; in float32 the old cap was also the old way's time bound)
OLD_SETTINGS = ["score.enet_max_iter=5000"]


def chosen(result: ScoreResult) -> str:
    """The production difficulty model a result chose: family, pooling, alpha, l1_ratio."""
    p = result.params
    return (f"{p['difficulty_model']} on {p['difficulty_pool']} alpha={p['difficulty_alpha']:.5g} "
            f"l1_ratio={p['difficulty_l1_ratio']:g} cv_mse={p['difficulty_cv_mse']:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller CV grids (as benchmarks/properties.py --quick) and "
                                                         "no serial float64 run")
    ap.add_argument("--work", default=".saerl", help="artifact root holding a run of the config up to encode")
    ap.add_argument("--config", default=str(DEMO_CONFIG), help="the config that run used (default: the demo's)")
    ap.add_argument("--jobs", type=int, default=None, help="threads of the new way (default: the config's)")
    ap.add_argument("--no-serial", action="store_true", help="leave out the serial float64 run")
    ap.add_argument("--new-override", action="append", default=[], metavar="KEY=VALUE",
                    help="a dotted config override for the new way only, to measure a proposed default (repeatable; "
                         "e.g. score.enet_max_iter=50000)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides (score.* change what is timed)")
    args = ap.parse_intermixed_args()
    overrides = [*(QUICK_SCORE if args.quick else []), *args.overrides]
    cfg = load_config(args.config, [*OLD_SETTINGS, *overrides, f"runtime.artifact_root={Path(args.work).resolve()}"])
    refs = upstream_refs(cfg, args.config)
    inputs = score_inputs(cfg, refs, residuals=cfg.score.baselines)
    new_cfg = load_config(args.config, [*overrides, *args.new_override,
                                        f"runtime.artifact_root={Path(args.work).resolve()}"])
    new_fit = fit_options(new_cfg.score) if args.jobs is None else FitOptions(n_jobs=args.jobs)
    X = inputs["X"]
    print(f"score inputs: {X.shape[0]} prompts x {X.shape[1]} SAE features ({X.dtype}), poolings {list(inputs['D'])}, "
          f"residuals {None if inputs['R'] is None else inputs['R'].shape}; encode {refs['encode'].path}")
    runs = {"old": FitOptions(n_jobs=1, dtype=None)}
    if not (args.quick or args.no_serial):
        runs["float64"] = FitOptions(n_jobs=1)
    runs["new"] = new_fit
    results: dict[str, tuple[tuple[ScoreResult, PropertyReport], float, int]] = {}
    for name, fit in runs.items():
        results[name] = timed_score(inputs, cfg if name == "old" else new_cfg, fit)
        (result, _), seconds, unconverged = results[name]
        print(f"[{name}]{' ' + ' '.join(args.new_override) if name == 'new' and args.new_override else ''} n_jobs={fit.n_jobs} dtype={'input' if fit.dtype is None else np.dtype(fit.dtype).name}: "
              f"{seconds:.1f}s, {unconverged} fits stopped at max_iter; chose {chosen(result)}", flush=True)

    (old, old_report), (new, new_report) = results["old"][0], results["new"][0]
    table = side_by_side(old_report.report, new_report.report)
    with pl.Config(tbl_rows=-1, tbl_width_chars=120, float_precision=4):
        print(table)
    diff = max_abs_diff(table)
    hat = float(np.abs(old.scores["difficulty_hat"].to_numpy() - new.scores["difficulty_hat"].to_numpy()).max())
    print(f"max |report diff| old vs new {diff:.4g} (rows differing at 3 decimals: "
          f"{int((table['old'].round(3) != table['new'].round(3)).sum())} of {table.height}); "
          f"max |difficulty_hat diff| {hat:.4g}")
    if "float64" in results:
        threads = max_abs_diff(side_by_side(results["float64"][0][1].report, new_report.report))
        what = "the --new-override settings and threads" if args.new_override else "threads change no number"
        print(f"threads_report_diff={threads:.3g} (float64 serial vs new: {what})")
        print(f"float64 alone: {results['old'][1] / results['float64'][1]:.2f}x; threads on top: "
              f"{results['float64'][1] / results['new'][1]:.2f}x")
    print(f"RESULT speedup={results['old'][1] / results['new'][1]:.2f} max_report_diff={diff:.4g}")


if __name__ == "__main__":
    main()
