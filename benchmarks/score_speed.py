"""Score stage speed: :func:`saerl.scoring.score_prompts` and :func:`saerl.scoring.property_report` on a demo run's inputs, the old way and the new way side by side.

Reads what the score stage of a config reads from an artifact root that holds a run of it up to encode (the
demo's: ``saerl demo`` or ``saerl run configs/demo.yaml --until encode``): the pooled SAE codes of every
pooling (clusters from score.cluster_pool, the quality probe from score.model_pool, the difficulty regressor
chosen among sae.encode_pool when score.difficulty_pool is auto), the ingested prompts, the mean-pooled
residuals of the residual baseline and, when the config measures difficulty, the label stage's pass rates;
exactly as ``saerl.runners.compute_score`` and ``compute_properties`` call them. When that root holds no run keyed
for this code and config, it reads the newest encode artifact and what it was built from (a run by other code of
the same config, e.g. a frozen copy of the repository), and refuses one that another config built (the config
name of the root's run records, else the config fields its artifacts' manifests recorded): the config's score
settings timed on another config's codes would measure neither. Then it times both stages' fits, with one
:class:`saerl.property_models.FitOptions` per side for the difficulty elastic nets:

- ``old``: serial, in the inputs' own float type (float32 codes and residuals), with the score settings of that
  time (``OLD_SETTINGS``: ``score.enet_max_iter=5000``): the way before this benchmark;
- ``float64``: serial, in float64, with the current settings (``--no-serial`` leaves this run out);
- ``new``: float64 on ``--jobs`` threads (default: the config's, see fit_options: every core), with the
  ``--new-override`` settings when given (a proposed default measured beside the current one).

The sides run interleaved, ``--repeats`` rounds (default 3, --quick 2) of old, [float64,] new, so that load on a
shared machine falls on every side alike (one sequential pass per side moved the quick ratio from 1.76 to 1.08 on
the same inputs). Per run it prints the seconds of the score stage's fits (score_prompts) and the properties
stage's (property_report) and the scikit-learn fits that stopped at max_iter before converging; then each side's
times, the property report side by side (old, new, difference) and how far the reports, difficulty_hat and the
chosen difficulty model differ. The threads never change a number (``float64`` and ``new`` must agree bit for
bit: ``threads_report_diff=0``); the float64 cast does, as the old float32 fits stopped short of their tolerance.

    .venv/bin/python benchmarks/score_speed.py --work /tmp/X/.saerl         # the demo's score stage, 3 rounds
    .venv/bin/python benchmarks/score_speed.py --quick                    # smaller CV grids, no serial float64 run

The last line is ``RESULT speedup=<old s / new s> score_speedup=<..> properties_speedup=<..>
max_report_diff=<max |old - new| over the report's values>``: each speedup the median over the rounds of that
round's ratio (both stages' fits; the score stage's alone; the properties stage's alone).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sides import interleaved, median_ratio, seconds_text

from saerl.artifacts import ArtifactRef, ArtifactStore
from saerl.config import PipelineConfig, load_config
from saerl.pipeline import input_keys, manifest_rows_key, plan
from saerl.property_models import FitOptions, fit_options
from saerl.runners import counting_unconverged, score_inputs
from saerl.runs import list_runs, read_run
from saerl.scoring import PropertyReport, ScoreResult, property_report, score_prompts
from saerl.stages import STAGES, stage_key, stage_slice

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
# quick mode: the smaller CV grids of benchmarks/properties.py (the elastic net's path and folds are most of the time)
QUICK_SCORE = ["score.cv_folds=3", "score.enet_n_alphas=12", "score.enet_l1_ratios=[0.5,1.0]",
               "score.probe_cs=[0.1,1.0,10.0]"]  # k_range stays the default: NMI depends on the k chosen
KEY = ["property", "metric", "features"]
DEFAULT_REPEATS = 3  # interleaved rounds of the sides (old, [float64,] new)
QUICK_REPEATS = 2


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
    built from, following each manifest's inputs (extract, sae, testbed; the newest ingest whose rows extraction
    read: saerl.pipeline.rows_key), plus with `with_label` the newest label artifact built from that ingest; {} when
    there is no encode artifact, or a link of the chain is missing. For a run made by other code than this (its stage versions give other keys than planned_refs computes)."""
    store = ArtifactStore(root)
    encodes = newest_first(root, "encode", store)
    if not encodes:
        return {}
    refs, todo = {}, [encodes[0]]
    while todo:
        ref = todo.pop()
        refs[ref.stage] = ref
        for stage, key in ref.manifest().get("inputs", {}).items():
            if stage in refs or stage not in STAGES:  # not an artifact: a data file's hash, the device, arm, seed
                continue
            if not store.is_complete(stage, key):
                return {}
            todo.append(store.open(stage, key))
    rows = refs["extract"].manifest().get("inputs", {}).get("ingest_rows") if "extract" in refs else None
    if rows is not None:  # extraction keys on ingest's rows (saerl.pipeline.ROWS_READERS): the newest match
        ingests = [ref for ref in newest_first(root, "ingest", store) if manifest_rows_key("extract", ref) == rows]
        if not ingests:
            return {}
        refs["ingest"] = ingests[0]
    if with_label:
        labels = [ref for ref in newest_first(root, "label", store)
                  if ref.manifest().get("inputs", {}).get("ingest") == refs["ingest"].key
                  or ref.manifest().get("inputs", {}).get("ingest_rows") == manifest_rows_key("label", refs["ingest"])]
        if not labels:
            return {}
        refs["label"] = labels[0]
    return refs


def newest_first(root: Path, stage: str, store: ArtifactStore) -> list[ArtifactRef]:
    """The finished artifacts of `stage` under `root`, newest first (by their manifests' created time)."""
    refs = [ArtifactRef(stage, p.name, str(p)) for p in (root / stage).glob("*")
            if p.is_dir() and store.is_complete(stage, p.name)]
    return sorted(refs, key=lambda ref: str(ref.manifest().get("created", "")))[::-1]  # ties: the last listed first



def recorded_configs(root: Path, stage: str, key: str) -> list[str]:
    """The config names of the saved runs under `root` (saerl.runs records) that computed or reused `stage`'s
    artifact `key`, newest run first, each name once; an unreadable record is skipped. [] when none did (a run
    without records, e.g. saerl.pipeline.run_all)."""
    names: list[str] = []
    for path in reversed(list_runs(root)):
        try:
            record = read_run(path)
        except ValueError:
            continue
        if record.name not in names and any(r.stage == stage and r.key == key for r in record.stages.values()):
            names.append(record.name)
    return names


def slice_differences(cfg: PipelineConfig, refs: dict[str, ArtifactRef]) -> list[str]:
    """The config fields that the artifacts in `refs` recorded (each manifest's config slice) with another value
    than `cfg` gives them, as 'field recorded (config: value)'; only fields both sides know, as other code may read
    more or fewer (a field this code added, or dropped, is no difference)."""
    out = []
    for stage, ref in sorted(refs.items()):
        manifest = ref.manifest()
        ours = json.loads(json.dumps(stage_slice(cfg, stage, manifest.get("inputs", {})), default=str))
        out += [f"{field} {value!r} (config: {ours[field]!r})" for field, value in sorted(manifest.get("config", {}).items())
                if field in ours and ours[field] != value]
    return out


def config_hint(name: str) -> str:
    """What to pass for a config named `name`: '--config configs/<name>.yaml' when the repository has that file,
    else a description of it."""
    path = ROOT / "configs" / f"{name}.yaml"
    return f"--config {path.relative_to(ROOT)}" if path.exists() else f"--config <the config file named '{name}'>"


def check_same_config(cfg: PipelineConfig, config: str, refs: dict[str, ArtifactRef], root: Path) -> None:
    """Refuse (SystemExit) artifacts that another config than `cfg` (loaded from `config`) built: the config names
    of the runs that made refs['encode'] (recorded_configs) when there are any, else the fields their manifests
    recorded (slice_differences). A run of cfg's name whose fields differ (overrides, other code's defaults) only
    gets a note."""
    key = refs["encode"].key
    names = recorded_configs(root, "encode", key)
    differ = slice_differences(cfg, refs)
    where = f"the encode artifact {key[:12]} under {root} (the newest; none is keyed for this code and {config})"
    if names and cfg.name not in names:
        raise SystemExit(f"{where} was built from config '{names[0]}': pass {config_hint(names[0])} (or --work a root "
                         f"holding a run of {config})")
    if differ and not names:
        raise SystemExit(f"{where} was built from another config than {config}: its artifacts recorded "
                         f"{'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}. Pass the --config (and "
                         "overrides) that built it, or --work a root holding a run of this config")
    if differ:
        print(f"(note: a run of config '{cfg.name}' built it, with other values of {len(differ)} recorded fields: "
              f"{'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''})")


def upstream_refs(cfg: PipelineConfig, config: str) -> dict[str, ArtifactRef]:
    """What the score stage of `cfg` (loaded from the file `config`) reads: planned_refs when the artifact root has
    them, else (a run by other code of the same config, e.g. a frozen copy of the repository) newest_refs with a
    note saying so, refused (check_same_config) when another config built them. Raises SystemExit naming the
    command that makes a run when neither exists."""
    refs, missing = planned_refs(cfg)
    if missing is None:
        return refs
    root = Path(cfg.runtime.artifact_root)
    refs = newest_refs(root, with_label=any(stage == "label" for stage, _ in plan(cfg, "score")))
    if refs:
        check_same_config(cfg, config, refs, root)
        print(f"(no {missing} artifact keyed for this code and config under {root}: reading the newest encode "
              f"artifact, {refs['encode'].key}, and the artifacts it was built from)")
        return refs
    raise SystemExit(f"no finished encode artifact (or no {missing} artifact it reads) under {root}: make one with "
                     f"`saerl run {config} --until encode runtime.artifact_root={root}` (or `saerl demo` for the "
                     "demo's root, .saerl), then rerun this benchmark with --work on that root")


Timed = tuple[tuple[ScoreResult, PropertyReport], tuple[float, float], int]  # timed_score's result


def timed_score(inputs: dict[str, Any], cfg: PipelineConfig, fit: FitOptions) -> Timed:
    """((score_prompts' result, property_report's on its clusters), (wall seconds of score_prompts, of
    property_report), scikit-learn fits that stopped before converging) for one FitOptions: the score stage's fits
    and the properties stage's."""
    args = dict(inputs)
    X, prompts, measured = args.pop("X"), args.pop("prompts"), args.pop("measured")
    with counting_unconverged() as unconverged:
        started = time.perf_counter()
        result = score_prompts(X, prompts, cfg.score, measured, fit=fit, ids=args["ids"], C=args["C"], D=args["D"])
        scored = time.perf_counter()
        report = property_report(X, prompts, cfg.score, result.scores, measured, fit=fit, k=result.params["k"], **args)
        seconds = (scored - started, time.perf_counter() - scored)
    return (result, report), seconds, unconverged.count


def times_line(name: str, seconds: list[tuple[float, float]]) -> str:
    """One side's times per round: 'old: score 12.1 / 11.8 s, properties 20.3 / 19.9 s, total 32.4 / 31.7 s'."""
    return (f"{name}: score {seconds_text([s for s, _ in seconds])} s, properties "
            f"{seconds_text([p for _, p in seconds])} s, total {seconds_text([s + p for s, p in seconds])} s")


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
    """Run the score-speed benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller CV grids (as benchmarks/properties.py --quick) and "
                                                         "no serial float64 run")
    ap.add_argument("--work", default=".saerl", help="artifact root holding a run of the config up to encode")
    ap.add_argument("--config", default=str(DEMO_CONFIG), help="the config that run used (default: the demo's)")
    ap.add_argument("--jobs", type=int, default=None, help="threads of the new way (default: the config's)")
    ap.add_argument("--no-serial", action="store_true", help="leave out the serial float64 run")
    ap.add_argument("--repeats", type=int, default=None, help=f"interleaved rounds of the sides (default "
                    f"{DEFAULT_REPEATS}, --quick {QUICK_REPEATS}); the speedups are the medians of the rounds' ratios")
    ap.add_argument("--new-override", action="append", default=[], metavar="KEY=VALUE",
                    help="a dotted config override for the new way only, to measure a proposed default (repeatable; "
                         "e.g. score.enet_max_iter=50000)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides (score.* change what is timed)")
    args = ap.parse_intermixed_args()
    repeats = args.repeats if args.repeats is not None else QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if repeats < 1:
        raise SystemExit(f"--repeats {repeats}: give 1 or more rounds")
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

    def report_run(name: str, i: int, timed: Timed) -> None:
        (result, _), (score_s, props_s), unconverged = timed
        fit = runs[name]
        print(f"[{name}]{' ' + ' '.join(args.new_override) if name == 'new' and args.new_override else ''} "
              f"n_jobs={fit.n_jobs} dtype={'input' if fit.dtype is None else np.dtype(fit.dtype).name}, round "
              f"{i + 1}/{repeats}: {score_s + props_s:.1f}s (score {score_s:.1f}s, properties {props_s:.1f}s), {unconverged} fits stopped "
              f"at max_iter; chose {chosen(result)}", flush=True)

    timed = interleaved({name: (lambda name=name, fit=fit: timed_score(inputs, cfg if name == "old" else new_cfg, fit))
                         for name, fit in runs.items()}, repeats, report_run)
    results = {name: rounds[0] for name, rounds in timed.items()}  # the first round's results are compared
    seconds = {name: [t[1] for t in rounds] for name, rounds in timed.items()}  # (score s, properties s) per round
    for name in runs:
        print(times_line(name, seconds[name]))

    def speedup(a: str, b: str, part: Callable[[tuple[float, float]], float] = sum) -> float:
        return median_ratio([part(t) for t in seconds[a]], [part(t) for t in seconds[b]])

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
        print(f"float64 alone: {speedup('old', 'float64'):.2f}x; threads on top: {speedup('float64', 'new'):.2f}x "
              f"(medians over {repeats} rounds)")
    print(f"RESULT speedup={speedup('old', 'new'):.2f} score_speedup={speedup('old', 'new', lambda t: t[0]):.2f} "
          f"properties_speedup={speedup('old', 'new', lambda t: t[1]):.2f} max_report_diff={diff:.4g}")


if __name__ == "__main__":
    main()
