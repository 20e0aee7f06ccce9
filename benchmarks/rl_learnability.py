"""Does plain GRPO through trl teach the testbed's tiny policy LM anything?

Builds the testbed (or reuses a built one), measures held-out accuracy (greedy and mean over k samples) per
level, runs vanilla GRPO (seeded shuffle of the whole pool, defects included, no filtering) under a wall-clock
budget, measures again, and prints the before/after table. Gains are paired per problem; the standard error
is that of the mean paired difference. The RESULT line reports the smaller of the two gains (greedy, mean@k)
and its SE.

    .venv/bin/python benchmarks/rl_learnability.py            # full: 5 minutes of RL
    .venv/bin/python benchmarks/rl_learnability.py --quick    # smoke run: small eval, 1 minute of RL
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import polars as pl
import torch

from saerl.config import PipelineConfig, load_config
from saerl.policy_lm import load_policy, score_policy
from saerl.rl import train_grpo
from saerl.testbed import build_testbed

MIN_STEP_SECONDS = 0.2  # no GRPO step is faster on CPU: caps the step count (and the dataset) the budget can use


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (default: the schema's defaults)")
    ap.add_argument("--testbed-dir", default=".saerl/bench/testbed", help="built testbed (built if missing)")
    ap.add_argument("--out", default=".saerl/bench/rl_learnability", help="where the trained policy goes")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of RL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N held-out problems")
    ap.add_argument("--levels", default=None, help="keep only these levels in pool and eval, e.g. 1,2 "
                    "(the same as a pool_level_mix with zeros elsewhere)")
    ap.add_argument("--quick", action="store_true", help="200 eval problems, k=2, 1 minute of RL")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.learning_rate=5e-5")
    args = ap.parse_args()
    cfg: PipelineConfig = load_config(args.config, args.overrides)
    tb = cfg.testbed
    torch.set_num_threads(tb.threads)
    root = Path(args.testbed_dir)
    if not (root / "lm" / "config.json").exists():
        build_testbed(tb, root)
    pool = pl.read_parquet(root / "world" / "pool.parquet")
    ev = pl.read_parquet(root / "world" / "eval.parquet")
    if args.levels:
        keep = [float(v) for v in args.levels.split(",")]
        pool, ev = (df.filter(pl.col("difficulty").is_in(keep)) for df in (pool, ev))
    k, minutes = cfg.eval.k_samples, args.minutes
    if args.eval_n:
        ev = ev.head(args.eval_n)
    if args.quick:
        ev, k, minutes = ev.head(200), 2, min(minutes, 1.0)

    def measure(model_dir: Path | str) -> tuple[list[bool], list[float]]:
        model, tok = load_policy(model_dir)
        return score_policy(model, tok, ev, k, cfg.eval.temperature, tb.max_new_tokens, tb.eval_batch, args.seed)

    t0 = time.time()
    g0, m0 = measure(root / "lm")
    print(f"eval before: {time.time() - t0:.0f} s")
    run = train_grpo(root / "lm", pool, None, cfg.train, args.out, prompts_per_step=cfg.curriculum.batch_size,
                     seed=args.seed, max_steps=int(60 * minutes / MIN_STEP_SECONDS), time_limit_s=60 * minutes)
    g1, m1 = measure(run["model_dir"])
    rewards = [h["reward"] for h in run["log"] if "reward" in h]
    q = max(1, len(rewards) // 4)
    print(f"GRPO: {run['steps']} steps in {run['seconds']:.0f} s; train reward first/last quarter "
          f"{statistics.fmean(rewards[:q]):.3f} -> {statistics.fmean(rewards[-q:]):.3f}")
    print(table(ev, {"greedy_before": g0, "greedy_after": g1, f"mean@{k}_before": m0, f"mean@{k}_after": m1}))
    gg, gse = paired([float(x) for x in g0], [float(x) for x in g1])
    mg, mse = paired(m0, m1)
    print(f"greedy gain {gg:+.1f} (SE {gse:.1f}) points; mean@{k} gain {mg:+.1f} (SE {mse:.1f}) points; "
          f"n={ev.height}")
    gain, se = (gg, gse) if gg - 2 * gse <= mg - 2 * mse else (mg, mse)
    print(f"RESULT rl_gain_points={gain:.2f} rl_gain_se={se:.2f} rl_minutes={run['seconds'] / 60:.2f}")


if __name__ == "__main__":
    main()
