"""SAERL vs vanilla GRPO on the same RL budget (issue #7): final accuracy and steps-to-target, >= 3 seeds.

Runs the pipeline in this process (no Prefect), cached in the config's artifact root (the demo's `.saerl`, so
a demo run's stages are reused; --root for another): testbed -> ingest ->
extract -> sae -> encode -> score -> properties -> curriculum, then one GRPO run per (arm, seed) and the evaluate stage.
Both arms train for the same steps with the same hyper-parameters and seeds; saerl reads the curriculum
(quality-filtered, cluster-first, easy to hard), vanilla a seeded shuffle of the whole pool. Held-out
accuracy is the testbed's clean eval split (greedy pass@1, and mean over k samples); the difference has a
95% interval over seeds and paired problems (saerl.evaluate.compare_arms); steps-to-target reads the greedy
learning curve each run records every train.eval_every steps, scored on the train.eval_problems in-training eval
problems per set (200 by default; the reachable stratum: those of them the starting policy reaches), not on the
final evaluation's (eval.max_problems; all by default). So its target, vanilla's final greedy accuracy on those
in-training eval problems (mean over seeds; comparison.txt prints it per set), is not acc_vanilla below.

The testbed's held-out split follows the pool's level mix, most of it levels the policy cannot learn in a short
run (docs/testbed.md, session 5). So by default a second held-out set joins the evaluation: --fresh problems of
levels 1-2 drawn anew from the generator (content-disjoint from every split; the same draw as rl_headroom's
fresh held-out set), where GRPO does move the policy. It is read like any eval.sets file: in-training curve,
comparison with intervals, reachable stratum and steps-to-target of its own.

    .venv/bin/python benchmarks/rl_efficiency.py --quick     # 3 seeds, short runs: a few minutes (cached testbed)
    .venv/bin/python benchmarks/rl_efficiency.py             # 3 seeds at the demo's RL budget
    .venv/bin/python benchmarks/rl_efficiency.py --seeds 5 train.max_steps=200
    .venv/bin/python benchmarks/rl_efficiency.py --workers 6 testbed.n_pool=10000 train.max_steps=500

Those minutes assume the stages before training are cached under the root (a demo run leaves them there). On a
cold root the benchmark first builds them, and the testbed stage pretrains the tiny policy LM: about 3 to 5
minutes more on 2 CPU cores at the demo's testbed.pretrain_steps (165 s alone on the machine); it prints which
stages it builds, and that estimate, before it starts (:func:`cold_start_note`).

With --workers N the training runs (arms x seeds) fan out over a Dask LocalCluster of N worker processes once
the shared stages (testbed .. curriculum) are done; each run is the same cached stage run as in sequence.

Last line: ``RESULT acc_saerl=.. acc_vanilla=.. acc_delta_points=.. acc_delta_ci_low=.. steps_ratio=.. seeds=..
gain_saerl=.. gain_vanilla=.. acc_delta_reachable=.. reachable_share=.. acc_delta_fresh=.. acc_delta_fresh_ci_low=.. steps_ratio_fresh=..
gain_fresh_saerl=.. gain_fresh_vanilla=.. steps_ratio_ci_high=.. steps_ratio_fresh_ci_high=.. spread_groups_ratio=..
prompts_drawn_ratio=.. prompts_to_target_ratio_fresh=..`` (greedy accuracy on
the held-out set; seeds = training seeds per arm that ran (train.seeds: --seeds unless an override sets it);
steps_ratio = the steps saerl's mean curve over seeds takes to reach the target (vanilla's final greedy accuracy
on the in-training eval problems), over vanilla's; nan: saerl's mean curve never reaches the target, or vanilla's
is at it from the start (step 0: no ratio; comparison.txt says which); steps_ratio_ci_high = the upper end of its
bootstrap interval over seeds and paired problems (inf: saerl misses the target in too many resamples), the bound a
claim of "fewer steps" has to clear, nan whenever steps_ratio is; gain_* = each arm's points over the starting policy; acc_delta_reachable = saerl minus vanilla on the
held-out problems the starting policy solves in at least one of k probe samples, the share of the set they are;
*_fresh: the same on the fresh level 1-2 set, nan with --fresh 0; spread_groups_ratio = saerl over vanilla of the
groups with a reward spread (a gradient) trained on per step, prompts_drawn_ratio = the same of the prompts generated
for per step: 1 under GRPO, the generation cost of a step under DAPO's dynamic sampling, train.algorithm=dapo);
prompts_to_target_ratio_fresh = saerl over vanilla of the prompts generated for until the mean curve on the fresh
set reaches the target: steps_ratio_fresh in generation cost, nan when saerl never reaches it or vanilla is at the
target from the start).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from saerl.artifacts import MANIFEST, ArtifactStore
from saerl.config import PipelineConfig, load_config
from saerl.evaluate import training_signal
from saerl.pipeline import resolve_upstream, run_all, run_stage, stage_runs
from saerl.runs import stage_of
from saerl.sweep import planned_run_keys
from saerl.testbed import fresh_problems, read_world

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["runtime.progress=false", "tracking.enabled=false"]
FRESH_SET = "fresh_levels_1_2"  # the name of the fresh level 1-2 held-out set in every table
FRESH_LEVEL_MIX = [1.0, 1.0, 0.0, 0.0, 0.0]
WHOLE_TABLE = {"tbl_cols": -1, "tbl_width_chars": 200, "tbl_hide_dataframe_shape": True}  # every column printed
# --quick: fewer steps and problems; eval.k_samples stays the config's, as the reachable stratum (problems the
# starting policy solves in one of k samples) is defined by it (k=2 made it 13.5% of the set, not the full run's 24%)
QUICK = ["train.max_steps=30", "train.eval_every=10", "eval.max_problems=200"]
SHARED_UNTIL = "curriculum"  # the last stage every training run reads (built once, before them)
# seconds per step of the testbed LM's pretraining at PRETRAIN_BATCH sequences a step on 2 CPU cores: 165 s for the
# demo's 1500 steps alone on the machine, 3 to 5 minutes beside other jobs (README, measured 2026-12-04)
PRETRAIN_S_PER_STEP = (0.11, 0.2)
PRETRAIN_BATCH = 96


def cold_stages(store: ArtifactStore, cfg: PipelineConfig, until: str = SHARED_UNTIL) -> list[str]:
    """The stage runs up to `until` whose artifacts are not in `store` yet (keys planned from the config alone:
    nothing runs, nothing is hashed). in: store, config, last stage; out: run names in plan order."""
    return [name for name, key in planned_run_keys(cfg, until).items()
            if not (store.path(stage_of(name), key) / MANIFEST).exists()]


def pretrain_minutes(cfg: PipelineConfig) -> tuple[float, float]:
    """Roughly how long the testbed stage pretrains the tiny policy LM on 2 CPU cores (PRETRAIN_S_PER_STEP, scaled
    by testbed.pretrain_steps and batch_size): (low, high) minutes."""
    scale = cfg.testbed.pretrain_steps * cfg.testbed.batch_size / PRETRAIN_BATCH / 60
    return PRETRAIN_S_PER_STEP[0] * scale, PRETRAIN_S_PER_STEP[1] * scale


def cold_start_note(cfg: PipelineConfig, cold: list[str], root: Path) -> str:
    """What the benchmark builds before its training runs when they are not cached under `root`, and, when the
    testbed is among them, that it pretrains the LM and for about how many minutes ('' when nothing is cold).
    in: config, :func:`cold_stages`, artifact root; out: the text printed before anything runs."""
    if not cold:
        return ""
    note = f"not cached under {root}, built first: {', '.join(cold)}"
    if "testbed" in cold:
        low, high = pretrain_minutes(cfg)
        note += (f"\ntestbed: generating the world and pretraining the tiny policy LM "
                 f"({cfg.testbed.pretrain_steps} steps): about {max(low, 1):.0f}-{max(high, 1):.0f} minutes on 2 CPU "
                 "cores, once (cached afterwards)")
    return note


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


def write_fresh_set(cfg: PipelineConfig, testbed: Path, n: int, seed: int, folder: Path) -> Path:
    """Draw `n` clean level 1-2 problems content-disjoint from every split of the testbed world in `testbed`
    (seeded) and write them, ingest-format, to a Parquet file in `folder` named by the testbed artifact, the
    count and the seed (eval.sets is keyed by path, so another world or draw never reuses a file). Returns it."""
    path = folder / f"{FRESH_SET}-{testbed.name}-n{n}-s{seed}.parquet"
    if not path.exists():
        world = read_world(testbed)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fresh_problems(cfg.testbed, world, n, FRESH_LEVEL_MIX, seed).write_parquet(tmp)
        tmp.replace(path)
    return path


def with_eval_set(cfg: PipelineConfig, name: str, path: Path) -> PipelineConfig:
    """cfg with one more eval.sets entry {name: path} (the sets already configured are kept)."""
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"sets": {**cfg.eval.sets, name: str(path)}})})


def arm_figures(folder: Path, set_name: str) -> dict[str, float]:
    """From an evaluate artifact, on one held-out set: greedy accuracy per arm (acc_*, in points), saerl minus
    vanilla (delta) and its interval's low end (ci_low), the number of problems (n), saerl's steps-to-target
    ratio, its interval's high end (ratio_high) and the ratio of prompts generated for by then (prompts_ratio),
    and each arm's gain over the starting policy (gain_*). nan for whatever the artifact lacks; ratio_high is nan
    whenever ratio is (an interval of a ratio that does not exist: an artifact made before the table left it out)."""
    nan = float("nan")
    greedy = pl.read_parquet(folder / "comparison.parquet", glob=False).filter((pl.col("metric") == "greedy")
                                                                   & (pl.col("set") == set_name))
    row = {r["arm"]: r for r in greedy.iter_rows(named=True)}
    gain = {}  # no gains.parquet with eval.base_policy=false: no starting policy to measure a gain over
    if (folder / "gains.parquet").exists():
        gains = pl.read_parquet(folder / "gains.parquet", glob=False).filter((pl.col("metric") == "greedy")
                                                                 & (pl.col("set") == set_name))
        gain = {r["arm"]: r["diff_pts"] for r in gains.iter_rows(named=True)}
    stt = pl.read_parquet(folder / "steps_to_target.parquet", glob=False).filter((pl.col("set") == set_name)
                                                                     & (pl.col("arm") == "saerl"))
    ratio = stt["ratio"][0] if stt.height else None
    high = stt["ratio_ci_high"][0] if stt.height and ratio is not None else None
    prompts = stt["prompts_ratio"][0] if stt.height and "prompts_ratio" in stt.columns else None
    saerl, vanilla = row.get("saerl", {}), row.get("vanilla", {})
    return {"acc_saerl": 100 * saerl.get("accuracy", nan), "acc_vanilla": 100 * vanilla.get("accuracy", nan),
            "delta": saerl.get("diff_pts", nan), "ci_low": saerl.get("diff_ci_low_pts", nan),
            "n": vanilla.get("n_problems", nan), "ratio": nan if ratio is None else float(ratio),
            "ratio_high": nan if high is None else float(high),
            "prompts_ratio": nan if prompts is None else float(prompts),
            "gain_saerl": gain.get("saerl", nan), "gain_vanilla": gain.get("vanilla", nan)}


def signal_table(results: dict[str, object]) -> pl.DataFrame:
    """saerl.evaluate.training_signal of every training run, averaged per arm and third of the run."""
    ingest = Path(results["ingest"].ref.path)  # type: ignore[attr-defined]
    prompts = pl.read_parquet(ingest / "prompts.parquet", glob=False)
    rows = []
    for name, res in results.items():
        if name.startswith("train:"):
            folder = Path(res.ref.path)  # type: ignore[attr-defined]
            sig = training_signal(pl.read_parquet(folder / "log.parquet", glob=False),
                                  pl.read_parquet(folder / "trained_order.parquet", glob=False), prompts, parts=3)
            rows.append(sig.with_columns(pl.lit(name.split(":")[1]).alias("arm")))
    return (pl.concat(rows, how="diagonal_relaxed").group_by("arm", "part", "first_step", "last_step")
            .agg(pl.all().mean().round(3)).sort("arm", "part"))


def budget_ratios(signal: pl.DataFrame) -> dict[str, float]:
    """saerl over vanilla of the groups with a reward spread trained on per step and of the prompts generated for
    per step, each arm's figure the mean of its signal-table stretches (spread_groups, prompts_drawn; the
    stretches differ in length by one step at most, so this is the per-step mean to within that); nan when an arm
    is missing."""
    means = {r["arm"]: r for r in signal.group_by("arm").agg(pl.col("spread_groups", "prompts_drawn").mean())
             .iter_rows(named=True)}
    saerl, vanilla = means.get("saerl", {}), means.get("vanilla", {})
    return {col: saerl[col] / vanilla[col] if saerl.get(col) is not None and vanilla.get(col) else float("nan")
            for col in ("spread_groups", "prompts_drawn")}


def main() -> None:
    """Run the RL-efficiency benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--root", default=None, help="artifact root (default: the config's runtime.artifact_root)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per arm (>= 3 for an interval worth reading)")
    ap.add_argument("--quick", action="store_true", help="short RL runs on a capped eval set")
    ap.add_argument("--workers", type=int, default=1, help="train the arm x seed runs in parallel on a Dask "
                    "LocalCluster of this many processes (1: one after another in this process)")
    ap.add_argument("--fresh", type=int, default=1000, help="fresh level 1-2 problems added as a second held-out "
                    "set (0: the testbed's held-out split only)")
    ap.add_argument("--fresh-seed", type=int, default=7008, help="seed of that draw (7008: rl_headroom's fresh "
                    "held-out set, FRESH_SEED + 1 there)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_intermixed_args()
    overrides = [*COMMON, *([f"runtime.artifact_root={args.root}"] if args.root else []),
                 f"train.seeds={list(range(args.seeds))}",
                 *(QUICK if args.quick else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    t0 = time.time()

    def report(name: str, res: object) -> None:
        print(f"[{name}] {'computed' if res.computed else 'cached'} in {res.seconds:.0f} s "  # type: ignore[attr-defined]
              f"({time.time() - t0:.0f} s so far)", flush=True)

    store = ArtifactStore(Path(cfg.runtime.artifact_root))
    if note := cold_start_note(cfg, cold_stages(store, cfg), store.root):
        print(note, flush=True)
    if args.fresh and cfg.data.source == "testbed":
        testbed = Path(run_all(store, cfg, until="ingest", report=report)["testbed"].ref.path)
        fresh = write_fresh_set(cfg, testbed, args.fresh, args.fresh_seed, Path(cfg.runtime.artifact_root) / "bench")
        cfg = with_eval_set(cfg, FRESH_SET, fresh)
    if args.workers > 1:
        train_on_dask(store, cfg, args.workers, report)
    results = run_all(store, cfg, report=report)
    folder = Path(results["evaluate"].ref.path)
    print((folder / "comparison.txt").read_text(encoding="utf-8"))
    per_level = (pl.read_parquet(folder / "eval.parquet", glob=False)
                 .filter((pl.col("sample") == 0) & (pl.col("set") == "heldout"))
                 .group_by("arm", "difficulty").agg(pl.col("correct").mean().round(3)).sort("difficulty", "arm")
                 .pivot(on="arm", index="difficulty", values="correct"))
    signal = signal_table(results)
    with pl.Config(**WHOLE_TABLE):
        print("greedy accuracy per level on the held-out split (all seeds):")
        print(per_level)
        print("training signal by thirds of the run (mean over seeds): reward, share of generated groups without "
              "reward spread (no gradient), groups with a spread trained on per step, prompts generated for per step "
              "(more than the batch under DAPO's dynamic sampling), share of defective prompts read, mean level read:")
        print(signal)
    ratio = budget_ratios(signal)
    held, reach, fresh = (arm_figures(folder, name) for name in ("heldout", "heldout:reachable", FRESH_SET))
    print(f"RESULT acc_saerl={held['acc_saerl']:.2f} acc_vanilla={held['acc_vanilla']:.2f} "
          f"acc_delta_points={held['delta']:.2f} acc_delta_ci_low={held['ci_low']:.2f} "
          f"steps_ratio={held['ratio']:.3f} seeds={len(cfg.train.seeds)} "
          f"gain_saerl={held['gain_saerl']:.2f} gain_vanilla={held['gain_vanilla']:.2f} "
          f"acc_delta_reachable={reach['delta']:.2f} reachable_share={reach['n'] / held['n']:.3f} "
          f"acc_delta_fresh={fresh['delta']:.2f} acc_delta_fresh_ci_low={fresh['ci_low']:.2f} "
          f"steps_ratio_fresh={fresh['ratio']:.3f} gain_fresh_saerl={fresh['gain_saerl']:.2f} "
          f"gain_fresh_vanilla={fresh['gain_vanilla']:.2f} steps_ratio_ci_high={held['ratio_high']:.3f} "
          f"steps_ratio_fresh_ci_high={fresh['ratio_high']:.3f} spread_groups_ratio={ratio['spread_groups']:.3f} "
          f"prompts_drawn_ratio={ratio['prompts_drawn']:.3f} "
          f"prompts_to_target_ratio_fresh={fresh['prompts_ratio']:.3f}")

if __name__ == "__main__":
    main()
