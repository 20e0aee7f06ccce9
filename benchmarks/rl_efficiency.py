"""SAERL vs vanilla GRPO on the same RL budget (issue #7): final accuracy and steps-to-target, >= 3 seeds.

Runs the pipeline in this process (no Prefect), cached in the config's artifact root (the demo's `.saerl`, so
a demo run's stages are reused; --root for another): testbed -> ingest ->
extract -> sae -> encode -> score -> curriculum, then one GRPO run per (arm, seed) and the evaluate stage.
Both arms train for the same steps with the same hyper-parameters and seeds; saerl reads the curriculum
(quality-filtered, cluster-first, easy to hard), vanilla a seeded shuffle of the whole pool. Held-out
accuracy is the testbed's clean eval split (greedy pass@1, and mean over k samples); the difference has a
95% interval over seeds and paired problems (saerl.evaluate.compare_arms); steps-to-target reads the greedy
learning curve each run records every train.eval_every steps (target: vanilla's final accuracy).

    .venv/bin/python benchmarks/rl_efficiency.py --quick     # 3 seeds, short runs: a few minutes
    .venv/bin/python benchmarks/rl_efficiency.py             # 3 seeds at the demo's RL budget
    .venv/bin/python benchmarks/rl_efficiency.py --seeds 5 train.max_steps=200
    .venv/bin/python benchmarks/rl_efficiency.py --workers 6 testbed.n_pool=10000 train.max_steps=500

With --workers N the training runs (arms x seeds) fan out over a Dask LocalCluster of N worker processes once
the shared stages (testbed .. curriculum) are done; each run is the same cached stage run as in sequence.

Last line: ``RESULT acc_saerl=.. acc_vanilla=.. acc_delta_points=.. acc_delta_ci_low=.. steps_ratio=.. seeds=..
gain_saerl=.. gain_vanilla=.. acc_delta_reachable=.. reachable_share=..`` (greedy accuracy on the held-out set;
steps_ratio = saerl's mean steps to vanilla's final accuracy over vanilla's, nan when an arm's seeds do not all
reach it; gain_* = each arm's points over the starting policy; acc_delta_reachable = saerl minus vanilla on the
held-out problems the starting policy solves in at least one of k probe samples, the share of the set they are).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from saerl.artifacts import ArtifactStore
from saerl.config import load_config
from saerl.evaluate import training_signal
from saerl.pipeline import resolve_upstream, run_all, run_stage, stage_runs

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["runtime.progress=false", "tracking.enabled=false"]
QUICK = ["train.max_steps=30", "train.eval_every=10", "eval.max_problems=200", "eval.k_samples=2"]


def train_on_dask(store: ArtifactStore, cfg: object, workers: int, report: Callable[[str, object], None]) -> None:
    """Run the stages before training here, then every training run (arm x seed) as one task on a Dask
    LocalCluster of `workers` processes; each lands in `store` exactly as `run_all` would cache it."""
    from dask.distributed import Client, LocalCluster, as_completed

    refs = {name: res.ref for name, res in run_all(store, cfg, until="curriculum", report=report).items()}  # type: ignore[arg-type]
    runs = [(name, resolve_upstream(stage, ups, refs, variant), variant)
            for stage, name, ups, variant in stage_runs(cfg) if stage == "train"]  # type: ignore[arg-type]
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        futures = {client.submit(run_stage, store, cfg, "train", ups, variant=variant, key=name, pure=False): name
                   for name, ups, variant in runs}
        for fut in as_completed(futures):
            report(futures[fut], fut.result())


def signal_table(results: dict[str, object]) -> pl.DataFrame:
    """saerl.evaluate.training_signal of every training run, averaged per arm and third of the run."""
    prompts = pl.read_parquet(Path(results["ingest"].ref.path) / "prompts.parquet")  # type: ignore[attr-defined]
    rows = []
    for name, res in results.items():
        if name.startswith("train:"):
            folder = Path(res.ref.path)  # type: ignore[attr-defined]
            sig = training_signal(pl.read_parquet(folder / "log.parquet"),
                                  pl.read_parquet(folder / "trained_order.parquet"), prompts, parts=3)
            rows.append(sig.with_columns(pl.lit(name.split(":")[1]).alias("arm")))
    return (pl.concat(rows, how="diagonal_relaxed").group_by("arm", "part", "first_step", "last_step")
            .agg(pl.all().mean().round(3)).sort("arm", "part"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--root", default=None, help="artifact root (default: the config's runtime.artifact_root)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per arm (>= 3 for an interval worth reading)")
    ap.add_argument("--quick", action="store_true", help="short RL runs on a capped eval set")
    ap.add_argument("--workers", type=int, default=1, help="train the arm x seed runs in parallel on a Dask "
                    "LocalCluster of this many processes (1: one after another in this process)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args()
    overrides = [*COMMON, *([f"runtime.artifact_root={args.root}"] if args.root else []),
                 f"train.seeds={list(range(args.seeds))}",
                 *(QUICK if args.quick else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    t0 = time.time()

    def report(name: str, res: object) -> None:
        print(f"[{name}] {'computed' if res.computed else 'cached'} in {res.seconds:.0f} s "  # type: ignore[attr-defined]
              f"({time.time() - t0:.0f} s so far)", flush=True)

    store = ArtifactStore(Path(cfg.runtime.artifact_root))
    if args.workers > 1:
        train_on_dask(store, cfg, args.workers, report)
    results = run_all(store, cfg, report=report)
    folder = Path(results["evaluate"].ref.path)
    print((folder / "comparison.txt").read_text())
    per_level = (pl.read_parquet(folder / "eval.parquet").filter(pl.col("sample") == 0)
                 .group_by("arm", "difficulty").agg(pl.col("correct").mean().round(3)).sort("difficulty", "arm")
                 .pivot(on="arm", index="difficulty", values="correct"))
    print("greedy accuracy per level (all seeds):")
    print(per_level)
    print("training signal by thirds of the run (mean over seeds): reward, share of groups without reward spread "
          "(no gradient), share of defective prompts read, mean level read:")
    print(signal_table(results))
    greedy = pl.read_parquet(folder / "comparison.parquet").filter(pl.col("metric") == "greedy")
    row = {r["arm"]: r for r in greedy.filter(pl.col("set") == "heldout").iter_rows(named=True)}
    reach = {r["arm"]: r for r in greedy.filter(pl.col("set") == "heldout:reachable").iter_rows(named=True)}
    gains = pl.read_parquet(folder / "gains.parquet").filter((pl.col("metric") == "greedy") & (pl.col("set") == "heldout"))
    gain = {r["arm"]: r["diff_pts"] for r in gains.iter_rows(named=True)}
    stt = pl.read_parquet(folder / "steps_to_target.parquet").filter(pl.col("set") == "heldout")
    ratio = stt.filter(pl.col("arm") == "saerl")["ratio"][0]
    nan = float("nan")
    print(f"RESULT acc_saerl={100 * row['saerl']['accuracy']:.2f} acc_vanilla={100 * row['vanilla']['accuracy']:.2f} "
          f"acc_delta_points={row['saerl']['diff_pts']:.2f} acc_delta_ci_low={row['saerl']['diff_ci_low_pts']:.2f} "
          f"steps_ratio={nan if ratio is None else ratio:.3f} seeds={args.seeds} "
          f"gain_saerl={gain.get('saerl', nan):.2f} gain_vanilla={gain.get('vanilla', nan):.2f} "
          f"acc_delta_reachable={reach['saerl']['diff_pts'] if reach else nan:.2f} "
          f"reachable_share={reach['vanilla']['n_problems'] / row['vanilla']['n_problems'] if reach else nan:.3f}")


if __name__ == "__main__":
    main()
