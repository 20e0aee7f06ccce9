"""How much can choosing the RL prompts buy at this budget? Vanilla GRPO on oracle-chosen pools of one world.

The testbed knows every prompt's true level and defect, so it can build the pools a perfect data engineer
would: the whole pool (what vanilla reads), the pool without defects, the clean prompts of levels 1-2 (where
the starting policy has signal), and fresh level 1-2 problems from the generator (the pool rl_learnability
trains on). Each is read by plain GRPO (a seeded shuffle, the same steps and hyper-parameters as the arms of
rl_efficiency), and every trained policy is scored on the world's held-out split, on its reachable stratum
(problems the starting policy solves in at least one of k probe samples), and on fresh level 1-2 problems.

No curriculum can beat the best oracle pool by much at the same budget, so this bounds what SAERL can show
on the testbed: if even the oracle pools barely move the held-out split, a +5 point SAERL effect on it is out
of reach whatever the property models do (docs/testbed.md, session 5).

    .venv/bin/python benchmarks/rl_headroom.py --quick        # 60 steps per pool, 4 pools: ~10 min on 2 cores
    .venv/bin/python benchmarks/rl_headroom.py testbed.n_pool=10000 train.max_steps=300

Last line: ``RESULT heldout_gain_best=.. heldout_gain_all=.. reachable_gain_best=.. reachable_gain_all=..
fresh_gain_best=.. fresh_gain_all=.. best_pool=..`` (greedy points over the starting policy; "all" is the
whole pool, as vanilla reads it; "best" the oracle pool with the highest held-out gain).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch

from saerl.artifacts import ArtifactStore
from saerl.config import EvalConfig, TrainConfig, load_config
from saerl.evaluate import GREEDY, REACH_SEED, evaluate_policy, reachable_ids
from saerl.pipeline import run_all
from saerl.rl import train_grpo
from saerl.stream import train_stream_length
from saerl.testbed import fresh_problems, read_world

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["runtime.progress=false", "tracking.enabled=false"]
# --quick: shorter runs; eval.k_samples stays the config's (it defines the reachable stratum, reachable_gain_*)
QUICK = ["train.max_steps=60"]
FRESH_N = {True: 300, False: 1000}  # fresh level 1-2 held-out problems by default: --quick, full
FRESH_SEED = 7007  # seed of the fresh level 1-2 problems (pool and held-out draws add 1 and 2)
POOLS = ("all", "clean", "clean_levels_1_2", "fresh_levels_1_2")  # the oracle pools, in the order they run


def greedy_accuracy(samples: pl.DataFrame, set_name: str, ids: set[str] | None = None) -> float:
    """Greedy accuracy of an evaluate_policy frame on one set, or on the given ids of it; nan when that leaves
    no problem (an empty reachable stratum, an empty fresh set)."""
    rows = samples.filter((pl.col("set") == set_name) & (pl.col("sample") == GREEDY))
    if ids is not None:
        rows = rows.filter(pl.col("id").is_in(sorted(ids)))
    return float(rows["correct"].mean()) if rows.height else float("nan")


def gains_over(base: pl.DataFrame, after: pl.DataFrame, reach: set[str]) -> dict[str, float]:
    """Greedy points of `after` over `base` (evaluate_policy frames): on the held-out split, on its reachable
    stratum `reach`, and on the fresh level 1-2 set."""
    def gain(set_name: str, ids: set[str] | None = None) -> float:
        return 100 * (greedy_accuracy(after, set_name, ids) - greedy_accuracy(base, set_name, ids))

    return {"heldout": gain("heldout"), "reachable": gain("heldout", reach), "fresh_levels_1_2": gain("fresh_levels_1_2")}


def fresh_pool_size(train: TrainConfig, prompts_per_step: int) -> int:
    """Fresh problems the fresh pool needs so that no prompt is read twice: the training stream's length
    (saerl.stream.train_stream_length: whole generation batches, and under DAPO every refill round's prompts too)."""
    return train_stream_length(train, prompts_per_step)


def oracle_pools(world: dict[str, pl.DataFrame], fresh: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The pools GRPO reads, each chosen with the world's true labels (or drawn fresh from the generator)."""
    pool = world["pool"]
    clean = pool.filter(pl.col("defect") == "none")
    return {"all": pool, "clean": clean, "clean_levels_1_2": clean.filter(pl.col("difficulty") <= 2),
            "fresh_levels_1_2": fresh}


def chosen_pools(arg: str) -> set[str]:
    """The pool names of a comma-separated --pools value; SystemExit naming any that is not one of POOLS (a
    misspelt pool was skipped without a word, and the best pool was then chosen among the others)."""
    names = {name.strip() for name in arg.split(",") if name.strip()}
    unknown = sorted(names - set(POOLS))
    if unknown or not names:
        raise SystemExit(f"--pools {arg!r}: unknown pool(s) {', '.join(unknown) or '(none given)'}; choose among "
                         f"{', '.join(POOLS)}")
    return names


def main() -> None:
    """Run the RL-headroom benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--root", default=None, help="artifact root for the testbed (default: the config's)")
    ap.add_argument("--out", default=".saerl-bench/rl_headroom", help="where the trained policies go")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-n", type=int, default=None,
                    help=f"fresh level 1-2 held-out problems (default {FRESH_N[False]}, {FRESH_N[True]} with --quick)")
    ap.add_argument("--pools", default=",".join(POOLS), help="comma-separated oracle pools to train on")
    ap.add_argument("--quick", action="store_true", help=f"60 GRPO steps per pool, {FRESH_N[True]} fresh "
                    "problems")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_intermixed_args()
    pools = chosen_pools(args.pools)
    cfg = load_config(args.config, [*COMMON, *([f"runtime.artifact_root={args.root}"] if args.root else []),
                                    *(QUICK if args.quick else []), *args.overrides])
    torch.set_num_threads(cfg.testbed.threads)
    t0 = time.time()
    testbed = run_all(ArtifactStore(Path(cfg.runtime.artifact_root)), cfg, until="ingest")["testbed"].ref.path
    world = read_world(Path(testbed))
    lm = Path(testbed) / "lm"
    taken: set[tuple] = set()
    fresh_n = args.fresh_n or FRESH_N[args.quick]
    fresh_eval = fresh_problems(cfg.testbed, world, fresh_n, [1, 1, 0, 0, 0], FRESH_SEED + 1, taken)
    fresh_pool = fresh_problems(cfg.testbed, world, fresh_pool_size(cfg.train, cfg.curriculum.batch_size),
                                [1, 1, 0, 0, 0], FRESH_SEED + 2, taken)
    sets = {"heldout": world["eval"], "fresh_levels_1_2": fresh_eval}
    tokens = cfg.train.max_completion_length  # the evaluate stage's generation limit (the rollouts' too)
    ecfg: EvalConfig = cfg.eval.model_copy(update={"max_problems": None})  # every problem of every set
    device = cfg.runtime.device  # where the heldout stage evaluates

    # the starting policy, scored and probed exactly as the evaluate stage does (reachable_ids, REACH_SEED)
    print(f"evaluating the starting policy on {world['eval'].height} held-out and {fresh_eval.height} fresh problems "
          f"(greedy + {ecfg.k_samples} samples), then probing it", flush=True)
    base = evaluate_policy(lm, sets, ecfg, tokens, args.seed, device=device)
    probe = evaluate_policy(lm, {"heldout": world["eval"]}, ecfg, tokens, REACH_SEED, device=device)
    reach = reachable_ids(probe)["heldout"]
    print(f"starting policy: held-out {greedy_accuracy(base, 'heldout'):.3f} (reachable {len(reach)} of "
          f"{world['eval'].height}: {greedy_accuracy(base, 'heldout', reach):.3f}), fresh levels 1-2 "
          f"{greedy_accuracy(base, 'fresh_levels_1_2'):.3f}", flush=True)
    rows = []
    for name, pool in oracle_pools(world, fresh_pool).items():
        if name not in pools:
            continue
        run = train_grpo(lm, pool, None, cfg.train, Path(args.out) / name, prompts_per_step=cfg.curriculum.batch_size,
                         seed=args.seed, max_steps=cfg.train.max_steps)
        log = pl.DataFrame(run["log"])
        row = {"pool": name, "prompts": pool.height, "steps": run["steps"],
               "reward": round(float(log["reward"].mean()), 3),
               "zero_std": round(float(log["frac_reward_zero_std"].mean()), 3),
               **gains_over(base, evaluate_policy(run["model_dir"], sets, ecfg, tokens, args.seed, device=device),
                            reach)}
        rows.append(row)
        print(f"[{name}] {pool.height} prompts, {run['steps']} steps in {run['seconds']:.0f} s; greedy gain "
              f"held-out {row['heldout']:+.1f}, reachable {row['reachable']:+.1f}, fresh levels 1-2 "
              f"{row['fresh_levels_1_2']:+.1f} points ({time.time() - t0:.0f} s so far)", flush=True)
    table = pl.DataFrame(rows)
    print("greedy points over the starting policy, per oracle pool (one GRPO run each):")
    print(table.with_columns(pl.col("heldout", "reachable", "fresh_levels_1_2").round(1)))
    best = max(rows, key=lambda r: r["heldout"])  # unrounded gains; a tie goes to the first pool run
    every = {r["pool"]: r for r in rows}
    whole = every.get("all", {"heldout": float("nan"), "reachable": float("nan"), "fresh_levels_1_2": float("nan")})
    print(f"RESULT heldout_gain_best={best['heldout']:.2f} heldout_gain_all={whole['heldout']:.2f} "
          f"reachable_gain_best={best['reachable']:.2f} reachable_gain_all={whole['reachable']:.2f} "
          f"fresh_gain_best={best['fresh_levels_1_2']:.2f} fresh_gain_all={whole['fresh_levels_1_2']:.2f} "
          f"best_pool={best['pool']}")


if __name__ == "__main__":
    main()
