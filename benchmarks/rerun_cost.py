"""Rerun cost: what the content-addressed cache saves when only a curriculum or a report setting changes.

In one process and one fresh temporary artifact root (configs/smoke.yaml with --quick, else configs/demo.yaml):

1. full: the whole pipeline once, through ``saerl.pipeline.run_all`` (in process, no Prefect, no tracking), after
   importing the heavy libraries (their import time, ~30 s on 2 busy cores, is printed but not counted) and one
   untimed run of the same config in a scratch root (first calls' one-time costs: ~5 s of the smoke config's
   testbed stage).
2. rerun: the same config with ``curriculum.mix_ratio`` changed, again through ``run_all``. Exactly the stage runs
   downstream of the curriculum in the plan must recompute (the curriculum, the training runs of the arms that read
   it, their held-out evaluations and evaluate: :func:`downstream_runs`) and every other one must be a cache hit, read from the run's results
   (asserted). The overhead is that run's wall time minus the time of the stage runs that recomputed: planning,
   key hashing and reading cached manifests.
3. report setting: then ``score.baselines`` flipped (a setting of the property report alone): exactly the properties
   stage must recompute (asserted); ``report_rerun_ratio`` is that run's wall time over the full run's.
   comparison setting: then ``eval.ci_level`` changed (how the arms are compared): exactly the evaluate stage must
   recompute, no policy's held-out evaluation (asserted); ``compare_rerun_ratio`` is that run's wall time over the
   full run's.
4. sweep vs fresh: N settings of ``curriculum.mix_ratio`` through the ablation flow (``flows.sweep.ablation_flow``,
   one parent flow, a pipeline subflow per setting, in a fresh root) against N pipeline flow runs
   (``flows.pipeline.pipeline_flow``) each in a fresh root of its own; both under one local Prefect server,
   so both pay the same orchestration. The ratio is sweep time over the N fresh runs' total time.

    .venv/bin/python benchmarks/rerun_cost.py --quick     # smoke config, N=2: about 6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/rerun_cost.py             # demo config, N=3

Last line: ``RESULT full_s=.. rerun_overhead_s=.. rerun_ratio=.. report_rerun_ratio=.. compare_rerun_ratio=.. sweep_ratio=..
sweep_n=..``
(seconds; rerun_ratio is the rerun's wall time over the full run's; sweep_ratio < 1 means the sweep costs less than the same
settings run from scratch).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from saerl.artifacts import ArtifactRef, ArtifactStore
from saerl.config import PipelineConfig, load_config
from saerl.pipeline import StageResult, resolve_upstream, run_all, stage_runs

REPO = Path(__file__).resolve().parents[1]
COMMON = ["runtime.progress=false", "tracking.enabled=false"]  # timings without progress bars or MLflow
MIX_RATIOS = (0.5, 0.0, 0.1, 0.3)  # curriculum.mix_ratio values the rerun and the sweep try, in this order
CI_LEVELS = (0.95, 0.9)  # eval.ci_level values the comparison-setting rerun tries: the first that differs
SWEEP_N = {True: 2, False: 3}  # settings in the sweep: --quick, full
HEAVY_IMPORTS = ("torch", "transformers", "sklearn", "sae_lens.training.sae_trainer", "trl.trainer.grpo_trainer",
                 "saerl.testbed", "saerl.activations", "saerl.sae", "saerl.scoring", "saerl.rl", "saerl.evaluate")


def config(path: Path, root: Path, *overrides: str) -> PipelineConfig:
    """The benchmark's config: `path` in artifact root `root` with the common and given overrides."""
    return load_config(path, [*COMMON, f"runtime.artifact_root={root}", *overrides])


def warm_imports() -> float:
    """Import the libraries the stages import lazily, so that no timed run pays for them; returns seconds."""
    import importlib

    started = time.time()
    for name in HEAVY_IMPORTS:
        importlib.import_module(name)
    return time.time() - started


def timed_run_all(store: ArtifactStore, cfg: PipelineConfig) -> tuple[float, dict[str, StageResult]]:
    """Wall seconds and results of every stage run of `cfg` in this process."""
    started = time.time()
    results = run_all(store, cfg, report=lambda name, r: print(
        f"  [{name}] {'computed' if r.computed else 'cached'} {r.seconds:.1f}s", flush=True))
    return time.time() - started, results


def rerun_overhead(store: ArtifactStore, cfg: PipelineConfig, expected: set[str]) -> tuple[float, float]:
    """Rerun `cfg` (one field changed from the cached run) and check that exactly the `expected` stage runs
    recomputed and every other one was a cache hit. out: (the run's wall seconds, its overhead: wall seconds minus
    the recomputed stage runs' seconds)."""
    seconds, results = timed_run_all(store, cfg)
    computed = {name for name, r in results.items() if r.computed}
    assert computed == expected, f"recomputed {sorted(computed)}, expected exactly {sorted(expected)}"
    return seconds, seconds - sum(results[name].seconds for name in computed)


def downstream_runs(cfg: PipelineConfig, stage: str) -> set[str]:
    """The stage runs of `cfg`'s plan (saerl.pipeline.stage_runs) that a change to `stage`'s artifact alone
    recomputes: `stage` and every run that reads it, directly or through another such run, with the artifacts each
    run reads as the pipeline resolves them (resolve_upstream: 'train' stands for every training run; the vanilla
    arm does not read the curriculum). out: their run names."""
    refs: dict[str, ArtifactRef] = {}
    hit: set[str] = set()
    for planned, name, ups, variant in stage_runs(cfg):
        reads = resolve_upstream(planned, ups, refs, variant)
        if planned == stage or hit & set(reads):
            hit.add(name)
        refs[name] = ArtifactRef(planned, "", "")
    return hit


def sweep_vs_fresh(path: Path, base: Path, values: list[float]) -> tuple[float, float]:
    """(seconds of the ablation flow over `values` in one fresh root, total seconds of one pipeline flow per
    value, each in a fresh root), under one local Prefect server whose home is under `base`."""
    from flows.server import prefect_server

    with prefect_server(base / "prefect-server"):
        from flows.pipeline import pipeline_flow
        from flows.sweep import ablation_flow

        cfg = config(path, base / "sweep")
        started = time.time()
        ablation_flow(config=cfg.model_dump(mode="json"), grid={"curriculum.mix_ratio": values})
        sweep_s = time.time() - started
        fresh_s = 0.0
        for i, value in enumerate(values):
            cfg = config(path, base / f"fresh-{i}", f"curriculum.mix_ratio={value}")
            started = time.time()
            pipeline_flow(config=cfg.model_dump(mode="json"))
            fresh_s += time.time() - started
    return sweep_s, fresh_s


def main() -> None:
    """Run the rerun-cost benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="configs/smoke.yaml and a 2-setting sweep")
    ap.add_argument("--config", help="config file (default: smoke.yaml with --quick, else demo.yaml)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary artifact roots (their path is printed)")
    args = ap.parse_args()
    path = Path(args.config or REPO / "configs" / ("smoke.yaml" if args.quick else "demo.yaml"))
    n = SWEEP_N[args.quick]
    base = Path(tempfile.mkdtemp(prefix="saerl-rerun-cost-"))
    print(f"artifact roots under {base}", flush=True)
    try:
        cfg = config(path, base / "rerun")
        store = ArtifactStore(base / "rerun")
        print(f"imports {warm_imports():.1f} s (not counted)", flush=True)
        warm_s, _ = timed_run_all(ArtifactStore(base / "warmup"), config(path, base / "warmup"))
        print(f"warm-up run {warm_s:.1f} s (not counted)", flush=True)
        print("full run (run_all, no Prefect)", flush=True)
        full_s, _ = timed_run_all(store, cfg)
        changed = next(v for v in MIX_RATIOS if v != cfg.curriculum.mix_ratio)
        print(f"rerun with curriculum.mix_ratio {cfg.curriculum.mix_ratio} -> {changed}", flush=True)
        moved = config(path, base / "rerun", f"curriculum.mix_ratio={changed}")
        rerun_s, overhead_s = rerun_overhead(store, moved, downstream_runs(moved, "curriculum"))
        print(f"rerun with score.baselines {cfg.score.baselines} -> {not cfg.score.baselines} (a report setting)",
              flush=True)
        report_s, _ = rerun_overhead(store, config(path, base / "rerun", f"curriculum.mix_ratio={changed}",
                                                   f"score.baselines={not cfg.score.baselines}"), {"properties"})
        level = next(v for v in CI_LEVELS if v != cfg.eval.ci_level)
        print(f"rerun with eval.ci_level {cfg.eval.ci_level} -> {level} (a comparison setting)", flush=True)
        compare_s, _ = rerun_overhead(store, config(path, base / "rerun", f"curriculum.mix_ratio={changed}",
                                                    f"score.baselines={not cfg.score.baselines}",
                                                    f"eval.ci_level={level}"), {"evaluate"})
        values = list(MIX_RATIOS[:n])
        print(f"sweep of {n} settings curriculum.mix_ratio={values} (ablation flow) vs {n} fresh runs", flush=True)
        sweep_s, fresh_s = sweep_vs_fresh(path, base, values)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    print(f"full {full_s:.1f} s; rerun {rerun_s:.1f} s of which {rerun_s - overhead_s:.1f} s recomputing; "
          f"report setting {report_s:.1f} s; comparison setting {compare_s:.1f} s; sweep {sweep_s:.1f} s vs fresh {fresh_s:.1f} s")
    print(f"RESULT full_s={full_s:.2f} rerun_overhead_s={overhead_s:.3f} rerun_ratio={rerun_s / full_s:.3f} "
          f"report_rerun_ratio={report_s / full_s:.3f} compare_rerun_ratio={compare_s / full_s:.3f} sweep_ratio={sweep_s / fresh_s:.3f} sweep_n={n}")


if __name__ == "__main__":
    main()
