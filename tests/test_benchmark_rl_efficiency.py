"""benchmarks/rl_efficiency.py: the fresh level 1-2 held-out set and the per-set figures it prints."""

from pathlib import Path

import polars as pl
import pytest
from bench import load_benchmark

from saerl.config import ConfigError, PipelineConfig
from saerl.config import TestbedConfig as TBConfig
from saerl.testbed import generate_world, write_world

CFG = PipelineConfig(testbed=TBConfig(n_pretrain=300, n_pool=300, n_eval=100))


def test_fresh_set_is_levels_1_2_disjoint_from_the_world_and_reused(tmp_path):
    bench = load_benchmark("rl_efficiency")
    testbed = tmp_path / "testbed" / "abc123"
    world = generate_world(CFG.testbed)
    write_world(world, testbed)
    path = bench.write_fresh_set(CFG, testbed, 50, 7, tmp_path / "bench")
    assert path.name == "fresh_levels_1_2-abc123-n50-s7.parquet"  # named by world, count and seed
    fresh = pl.read_parquet(path)
    assert fresh.height == 50 and set(fresh["difficulty"].to_list()) <= {1, 2}
    assert (fresh["defect"] == "none").all()
    taken = set().union(*(set(df["content"]) for df in world.values()))
    assert not taken & set(fresh["content"])  # no problem of any split comes back
    stamp = path.stat().st_mtime_ns
    assert bench.write_fresh_set(CFG, testbed, 50, 7, tmp_path / "bench") == path
    assert path.stat().st_mtime_ns == stamp  # the same draw is not redrawn
    other = bench.write_fresh_set(CFG, testbed, 50, 8, tmp_path / "bench")
    assert other != path and set(pl.read_parquet(other)["id"]) != set(fresh["id"])


def test_with_eval_set_keeps_the_configured_sets():
    bench = load_benchmark("rl_efficiency")
    cfg = CFG.model_copy(update={"eval": CFG.eval.model_copy(update={"sets": {"mine": "a.parquet"}})})
    out = bench.with_eval_set(cfg, "fresh", Path("b.parquet"))
    assert out.eval.sets == {"mine": "a.parquet", "fresh": "b.parquet"}
    assert cfg.eval.sets == {"mine": "a.parquet"}  # the input config is not changed


def _evaluate_folder(folder: Path) -> Path:
    """The three evaluate files arm_figures reads, for sets 'heldout' (both arms) and 'other' (vanilla only)."""
    folder.mkdir()
    pl.DataFrame({"set": ["heldout", "heldout", "other"], "arm": ["saerl", "vanilla", "vanilla"],
                  "metric": ["greedy"] * 3, "accuracy": [0.12, 0.10, 0.5], "n_problems": [500, 500, 40],
                  "diff_pts": [2.0, None, None], "diff_ci_low_pts": [-1.0, None, None]}).write_parquet(
        folder / "comparison.parquet")
    pl.DataFrame({"set": ["heldout", "heldout", "heldout"], "arm": ["saerl", "vanilla", "saerl"],
                  "metric": ["greedy", "greedy", "mean_at_k"], "diff_pts": [3.0, 1.0, 9.0]}).write_parquet(
        folder / "gains.parquet")
    pl.DataFrame({"set": ["heldout", "heldout"], "arm": ["saerl", "vanilla"], "ratio": [0.5, 1.0],
                  "ratio_ci_high": [0.9, 1.0], "prompts_ratio": [0.3, 1.0]}).write_parquet(
        folder / "steps_to_target.parquet")
    return folder


def test_arm_figures_read_one_set_and_nan_for_what_is_missing(tmp_path):
    bench = load_benchmark("rl_efficiency")
    folder = _evaluate_folder(tmp_path / "evaluate")
    held = bench.arm_figures(folder, "heldout")
    assert held == {"acc_saerl": 12.0, "acc_vanilla": 10.0, "delta": 2.0, "ci_low": -1.0, "n": 500, "ratio": 0.5,
                    "ratio_high": 0.9, "prompts_ratio": 0.3, "gain_saerl": 3.0,
                    "gain_vanilla": 1.0}  # greedy gains only, saerl's steps ratio
    other = bench.arm_figures(folder, "other")
    assert other["acc_vanilla"] == 50.0 and other["n"] == 40
    assert all(other[k] != other[k] for k in ("acc_saerl", "delta", "ratio", "ratio_high", "prompts_ratio",
                                              "gain_saerl"))  # nan
    absent = bench.arm_figures(folder, "fresh_levels_1_2")
    assert all(v != v for v in absent.values())
    (folder / "gains.parquet").unlink()  # eval.base_policy=false: no starting policy, no gains
    no_base = bench.arm_figures(folder, "heldout")
    assert no_base["delta"] == 2.0 and no_base["gain_saerl"] != no_base["gain_saerl"]


def test_budget_ratios_average_each_arm_over_the_run():
    bench = load_benchmark("rl_efficiency")
    signal = pl.DataFrame({"arm": ["saerl", "saerl", "vanilla", "vanilla"], "part": [1, 2, 1, 2],
                           "spread_groups": [15.0, 13.0, 11.0, 10.0], "prompts_drawn": [20.0, 30.0, 40.0, 60.0]})
    assert bench.budget_ratios(signal) == {"spread_groups": 14.0 / 10.5, "prompts_drawn": 0.5}
    alone = bench.budget_ratios(signal.filter(pl.col("arm") == "saerl"))
    assert all(v != v for v in alone.values())  # nan without a vanilla arm


def test_overrides_may_come_before_and_after_options(monkeypatch):
    """`--seeds 6` after an override used to be refused by argparse, losing a run; now the config loader is
    reached (here a stand-in that records what it got and stops the run), with every override kept in order."""
    bench = load_benchmark("rl_efficiency")
    monkeypatch.setattr("sys.argv", ["rl_efficiency.py", "--config", "nope.yaml", "train.max_steps=5",
                                     "--seeds", "6", "train.algorithm=dapo"])
    seen = {}

    def fake_load(path, overrides):
        seen["overrides"] = overrides
        raise ConfigError(f"{path} does not exist")

    monkeypatch.setattr(bench, "load_config", fake_load)
    with pytest.raises(ConfigError):
        bench.main()
    assert "train.seeds=[0, 1, 2, 3, 4, 5]" in seen["overrides"]
    assert seen["overrides"][-2:] == ["train.max_steps=5", "train.algorithm=dapo"]


def test_result_line_counts_the_seeds_that_ran(tmp_path, monkeypatch, capsys):
    """An override train.seeds=[...] wins over --seeds: the RESULT line reports the seeds the runs used, not the
    --seeds default."""
    from types import SimpleNamespace

    bench = load_benchmark("rl_efficiency")
    folder = _evaluate_folder(tmp_path / "evaluate")
    (folder / "comparison.txt").write_text("table\n")
    pl.DataFrame({"set": ["heldout"], "arm": ["saerl"], "sample": [0], "difficulty": [1], "correct": [True]}
                 ).write_parquet(folder / "eval.parquet")
    seen = {}

    def fake_run_all(store, cfg, until=None, report=None):
        seen["seeds"] = cfg.train.seeds
        return {"evaluate": SimpleNamespace(ref=SimpleNamespace(path=str(folder)))}

    monkeypatch.setattr(bench, "run_all", fake_run_all)
    monkeypatch.setattr(bench, "signal_table", lambda results: pl.DataFrame(
        {"arm": ["saerl", "vanilla"], "spread_groups": [2.0, 1.0], "prompts_drawn": [4.0, 4.0]}))
    monkeypatch.setattr("sys.argv", ["rl_efficiency.py", "--root", str(tmp_path / "root"), "--fresh", "0",
                                     "train.seeds=[0,1,2,3,4]"])
    bench.main()
    result = capsys.readouterr().out.strip().splitlines()[-1]
    assert seen["seeds"] == [0, 1, 2, 3, 4]
    assert result.startswith("RESULT ") and " seeds=5 " in result
    assert "acc_delta_points=2.00" in result and "spread_groups_ratio=2.000" in result


def test_no_steps_ratio_has_no_interval_and_the_docstring_says_why(tmp_path):
    """vanilla at the target from the start: steps_ratio=nan, which the docstring called "never reaches it", while an
    older artifact's interval still printed steps_ratio_ci_high=inf for the ratio that does not exist."""
    bench = load_benchmark("rl_efficiency")
    folder = _evaluate_folder(tmp_path / "evaluate")
    pl.DataFrame({"set": ["heldout", "heldout"], "arm": ["saerl", "vanilla"], "ratio": [None, None],
                  "ratio_ci_high": [float("inf"), None], "prompts_ratio": [None, None]},
                 schema_overrides={"ratio": pl.Float64, "prompts_ratio": pl.Float64}).write_parquet(
        folder / "steps_to_target.parquet")
    held = bench.arm_figures(folder, "heldout")
    assert held["ratio"] != held["ratio"] and held["ratio_high"] != held["ratio_high"]  # both nan
    doc = " ".join(bench.__doc__.split())
    assert "or vanilla's is at it from the start" in doc and "nan whenever steps_ratio is" in doc
    assert "vanilla's final greedy accuracy on those in-training eval problems" in doc  # not the whole set's


def test_a_cold_root_says_it_pretrains_the_testbed_and_for_how_long_before_it_starts(tmp_path, monkeypatch, capsys):
    """`--quick` on a cold machine pretrained the tiny LM for minutes without a word (the docstring promised "a few
    minutes"): before anything runs it names the stages it builds and the testbed's expected minutes; a warm root
    says nothing. No stage runs here (run_all faked)."""
    from saerl.artifacts import ArtifactStore
    from saerl.config import load_config

    bench = load_benchmark("rl_efficiency")
    cfg = load_config(bench.ROOT / "configs" / "demo.yaml", [f"runtime.artifact_root={tmp_path / 'root'}"])
    store = ArtifactStore(tmp_path / "root")
    cold = bench.cold_stages(store, cfg)
    assert cold[0] == "testbed" and cold[-1] == "curriculum" and not any(c.startswith("train") for c in cold)
    note = bench.cold_start_note(cfg, cold, store.root)
    low, high = bench.pretrain_minutes(cfg)
    assert 2 <= low < high <= 6, (low, high)  # the demo's 1500 steps: 165 s alone, 3-5 minutes shared
    assert "pretraining the tiny policy LM" in note and f"about {low:.0f}-{high:.0f} minutes" in note
    assert bench.cold_start_note(cfg, ["score", "curriculum"], store.root).splitlines() == [
        f"not cached under {store.root}, built first: score, curriculum"], "no testbed line when it is cached"
    assert bench.cold_start_note(cfg, [], store.root) == ""
    for stage, key in bench.planned_run_keys(cfg, bench.SHARED_UNTIL).items():  # a warm root
        store.ensure(stage, key, lambda b: (b.path / "f").write_text("x"))
    assert bench.cold_stages(store, cfg) == []

    calls = []

    def fake_run_all(store, cfg, until=None, report=None):
        calls.append(capsys.readouterr().out)
        raise SystemExit(0)

    monkeypatch.setattr(bench, "run_all", fake_run_all)
    monkeypatch.setattr("sys.argv", ["rl_efficiency.py", "--quick", "--root", str(tmp_path / "cold")])
    with pytest.raises(SystemExit):
        bench.main()
    assert "testbed: generating the world and pretraining the tiny policy LM" in calls[0], calls
    doc = " ".join(bench.__doc__.split())
    assert "a few minutes (cached testbed)" in doc and "3 to 5 minutes more" in doc
