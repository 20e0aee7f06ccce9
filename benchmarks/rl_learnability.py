"""Does plain GRPO through trl teach the testbed's tiny policy LM anything? (issue #4's acceptance check)

Reuses the testbed (world and tiny LM) of its config: without --testbed-dir, the pipeline's testbed artifact of
that config when it is complete (<runtime.artifact_root>/testbed/<its stage key>, e.g. the demo's under
.saerl/testbed/ after `saerl demo`), else this script's own build in .saerl/bench/testbed when it came from the same
testbed config; with --testbed-dir, that folder (either kind). Otherwise it builds the testbed first: on a cold root
that pretrains the tiny LM (several minutes: 165 s alone on 2 cores, 330 s on a loaded machine) before the RL
budget starts, and says so. Then it draws an RL pool
and a held-out set of fresh problems from the same generator at the chosen levels (content disjoint from
every split of the world and from each other, so RL never sees a prompt twice within the budget and
cannot pass by memorising answers), measures held-out accuracy (greedy and mean over k samples at T=1) per
level, runs vanilla GRPO (a seeded shuffle of the pool, no filtering) under a wall-clock budget, measures
again, and prints the before/after table. Gains are paired per problem; the standard error is that of the
mean paired difference. The RESULT line reports the more conservative of the two gains (greedy, mean@k):
the one whose gain - 2 SE is smaller, with its SE.

    .venv/bin/python benchmarks/rl_learnability.py            # full: 5 minutes of RL, 1000 held-out problems
    .venv/bin/python benchmarks/rl_learnability.py --quick    # smoke run: 300 problems, k=2, 1 minute of RL
    .venv/bin/python benchmarks/rl_learnability.py --levels 1,2,3 train.learning_rate=5e-5

Why fresh prompts: with the world's 2000-prompt pool, 5 minutes of GRPO (~600 steps x 16 prompts) reads every
prompt ~5 times; the tiny LM then learns the pool's answers (pool accuracy .17 -> .31) while held-out accuracy
barely moves (.19 -> .21). See docs/testbed.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import polars as pl
import torch

from saerl.artifacts import MANIFEST, ArtifactStore, write_file_atomic
from saerl.config import PipelineConfig, TrainConfig, load_config
from saerl.pipeline import input_keys
from saerl.policy_lm import load_policy, score_policy
from saerl.rl import train_grpo
from saerl.stages import stage_key
from saerl.stream import train_stream_length
from saerl.testbed import build_testbed, fresh_problems, read_world

MIN_STEP_SECONDS = 0.2  # no GRPO step is faster on CPU: caps the step count (and the dataset) the budget can use
STAMP = "testbed_key.txt"  # the testbed stage key of the config a --testbed-dir build came from (written last)
BUILD_DIR = ".saerl/bench/testbed"  # this script's own build when --testbed-dir is not given and no artifact fits
BUILDING = "building the testbed (pretraining the tiny LM: several minutes)"


def testbed_key(cfg: PipelineConfig) -> str:
    """The pipeline's testbed stage key of cfg (as saerl.pipeline.run_stage keys it: the stage reads no artifact)."""
    return stage_key(cfg, "testbed", input_keys(cfg, "testbed", {}))


def pipeline_testbed(cfg: PipelineConfig) -> Path | None:
    """The pipeline's testbed artifact of cfg, <runtime.artifact_root>/testbed/<key>, when it is complete (its
    manifest verifies); None otherwise (nothing is created under the root)."""
    root, key = Path(cfg.runtime.artifact_root), testbed_key(cfg)
    if not (root / "testbed" / key / MANIFEST).exists():
        return None
    store = ArtifactStore(root)
    return store.path("testbed", key) if store.is_complete("testbed", key) else None


def choose_testbed(cfg: PipelineConfig, given: str | None) -> Path:
    """Where the testbed of cfg is read from: `given` (--testbed-dir) when set, else the pipeline's complete testbed
    artifact of cfg (pipeline_testbed), else BUILD_DIR (this script's own build). Says which on stdout."""
    if given is not None:
        return Path(given)
    if (artifact := pipeline_testbed(cfg)) is not None:
        print(f"reusing the pipeline's testbed artifact {artifact} (testbed key {artifact.name[:12]})")
        return artifact
    print(f"no complete testbed artifact of this config under {Path(cfg.runtime.artifact_root).resolve()}/testbed "
          f"(key {testbed_key(cfg)[:12]}): using this script's build in {BUILD_DIR}")
    return Path(BUILD_DIR)


def ensure_testbed(cfg: PipelineConfig, root: Path) -> None:
    """Make `root` hold the testbed (world and LM) of cfg.testbed: kept when it already does (this script's
    build with the same pipeline testbed stage key in its STAMP, or the pipeline's testbed artifact of that key,
    a folder named by it), otherwise built there (a folder built from another testbed config, or of unknown
    origin, is rebuilt: a reused one would be another world than the config's). A pipeline artifact of another
    key is never overwritten: SystemExit."""
    key = testbed_key(cfg)
    if (root / MANIFEST).exists():  # a published pipeline artifact: complete, named by its key
        if root.name == key:
            return
        raise SystemExit(f"--testbed-dir {root} is the pipeline's testbed artifact of another testbed config "
                         f"(key {root.name}, this config's is {key}): pass another --testbed-dir")
    stamp = root / STAMP
    if (root / "lm" / "config.json").exists() and stamp.exists() and stamp.read_text(encoding="utf-8").strip() == key:
        print(f"reusing this script's testbed build in {root} (testbed key {key[:12]})")
        return
    stamp.unlink(missing_ok=True)
    print(f"{BUILDING} in {root}", flush=True)
    build_testbed(cfg.testbed, root)
    write_file_atomic(stamp, lambda tmp: tmp.write_text(key + "\n", encoding="utf-8"))


def pool_size(train: TrainConfig, prompts_per_step: int, steps: int, asked: int) -> int:
    """Fresh RL prompts to draw: `asked` (--pool-n), or the training stream of `steps` steps when that is longer
    (saerl.stream.train_stream_length: whole generation batches, and under DAPO every refill round's prompts too), so
    that no prompt is read twice within the step budget (a shorter pool is read again, epoch after epoch)."""
    return max(asked, train_stream_length(train, prompts_per_step, steps))


def paired(before: list[float], after: list[float]) -> tuple[float, float]:
    """(mean of after - before, its standard error), in points."""
    d = [a - b for a, b in zip(after, before, strict=True)]
    return 100 * statistics.fmean(d), 100 * statistics.stdev(d) / math.sqrt(len(d))


def table(ev: pl.DataFrame, cols: dict[str, list[float]]) -> pl.DataFrame:
    """Mean of each column per level, plus an 'all' row."""
    t = ev.select(pl.col("difficulty").cast(pl.Int64).cast(pl.Utf8).alias("level")).with_columns(
        **{k: pl.Series(v, dtype=pl.Float64) for k, v in cols.items()})
    per = t.group_by("level").agg(pl.len().alias("n"), *[pl.col(k).mean().round(3) for k in cols]).sort("level")
    tot = t.select(pl.lit("all").alias("level"), pl.len().alias("n"), *[pl.col(k).mean().round(3) for k in cols])
    return pl.concat([per, tot])


def main() -> None:
    """Run the RL-learnability benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"),
                    help="YAML config (default: the demo's: its testbed and GRPO settings)")
    ap.add_argument("--testbed-dir", default=None, help="built testbed (built if missing or built from another "
                    "testbed config; default: the pipeline's testbed artifact of the config under its "
                    f"runtime.artifact_root when complete, else {BUILD_DIR})")
    ap.add_argument("--out", default=".saerl/bench/rl_learnability", help="where the trained policy goes")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of RL")
    ap.add_argument("--max-steps", type=int, default=None, help="step budget instead of the wall clock (for a "
                    "machine shared with other jobs: pick the steps the budget buys on a quiet one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", default="1,2", help="levels of the RL pool and the held-out set, e.g. 1,2,3")
    ap.add_argument("--pool-n", type=int, default=10_000, help="fresh RL prompts (raised to the training stream "
                    "the step budget can read, so none is read twice)")
    ap.add_argument("--eval-n", type=int, default=1000, help="fresh held-out problems")
    ap.add_argument("--quick", action="store_true", help="300 held-out problems, k=2, 1 minute of RL")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.learning_rate=5e-5")
    args = ap.parse_intermixed_args()
    cfg: PipelineConfig = load_config(args.config, args.overrides)
    tb = cfg.testbed
    torch.set_num_threads(tb.threads)
    root = choose_testbed(cfg, args.testbed_dir)
    ensure_testbed(cfg, root)
    world = read_world(root)
    levels = [int(v) for v in args.levels.split(",")]
    mix = [1.0 if lv in levels else 0.0 for lv in range(1, len(tb.pool_level_mix) + 1)]
    k, minutes, eval_n = cfg.eval.k_samples, args.minutes, args.eval_n
    if args.quick:
        k, minutes, eval_n = 2, min(minutes, 1.0), min(eval_n, 300)
    steps = args.max_steps or int(60 * minutes / MIN_STEP_SECONDS)
    taken: set[tuple] = set()
    ev = fresh_problems(tb, world, eval_n, mix, seed=1000 + args.seed, exclude=taken)
    pool = fresh_problems(tb, world, pool_size(cfg.train, cfg.curriculum.batch_size, steps, args.pool_n), mix,
                          seed=2000 + args.seed, exclude=taken)
    print(f"fresh held-out set: {ev.height} problems; fresh RL pool: {pool.height} prompts (levels {levels})")

    def measure(model_dir: Path | str) -> tuple[list[bool], list[float]]:
        model, tok = load_policy(model_dir)
        return score_policy(model, tok, ev, k, cfg.eval.temperature, tb.max_new_tokens, tb.eval_batch, args.seed)

    t0 = time.time()
    g0, m0 = measure(root / "lm")
    print(f"eval before: {time.time() - t0:.0f} s")
    run = train_grpo(root / "lm", pool, None, cfg.train, args.out, prompts_per_step=cfg.curriculum.batch_size,
                     seed=args.seed, max_steps=steps,
                     time_limit_s=None if args.max_steps else 60 * minutes)
    g1, m1 = measure(run["model_dir"])
    rewards = [h["reward"] for h in run["log"] if "reward" in h]
    q = max(1, len(rewards) // 4)
    seen = len(run["order"])
    print(f"GRPO: {run['steps']} steps in {run['seconds']:.0f} s, {seen} prompts read ({len(set(run['order']))} "
          f"distinct); train reward first/last quarter {statistics.fmean(rewards[:q]):.3f} -> "
          f"{statistics.fmean(rewards[-q:]):.3f}")
    print(table(ev, {"greedy_before": g0, "greedy_after": g1, f"mean@{k}_before": m0, f"mean@{k}_after": m1}))
    gg, gse = paired([float(x) for x in g0], [float(x) for x in g1])
    mg, mse = paired(m0, m1)
    print(f"greedy gain {gg:+.1f} (SE {gse:.1f}) points; mean@{k} gain {mg:+.1f} (SE {mse:.1f}) points; "
          f"n={ev.height}")
    gain, se = (gg, gse) if gg - 2 * gse <= mg - 2 * mse else (mg, mse)
    print(f"RESULT rl_gain_points={gain:.2f} rl_gain_se={se:.2f} rl_minutes={run['seconds'] / 60:.2f}")


if __name__ == "__main__":
    main()
