"""benchmarks/rl_headroom.py: the oracle pools are chosen with the world's true labels."""

from pathlib import Path

import polars as pl
from bench import load_benchmark


def test_oracle_pools_filter_by_true_defect_and_level():
    pool = pl.DataFrame({"id": [f"p{i}" for i in range(6)], "difficulty": [1, 2, 3, 1, 2, 5],
                         "defect": ["none", "none", "none", "wrong_gold", "garbled", "none"]})
    fresh = pl.DataFrame({"id": ["f0", "f1"], "difficulty": [1, 2], "defect": ["none", "none"]})
    pools = load_benchmark("rl_headroom").oracle_pools({"pool": pool}, fresh)
    assert set(pools) == {"all", "clean", "clean_levels_1_2", "fresh_levels_1_2"}
    assert pools["all"]["id"].to_list() == pool["id"].to_list()
    assert pools["clean"]["id"].to_list() == ["p0", "p1", "p2", "p5"]
    assert pools["clean_levels_1_2"]["id"].to_list() == ["p0", "p1"]
    assert pools["fresh_levels_1_2"]["id"].to_list() == ["f0", "f1"]


def _frame(set_name: str, correct: dict[str, list[bool]]) -> pl.DataFrame:
    """An evaluate_policy-shaped frame: per id, greedy (sample 0) then sampled results."""
    rows = [(set_name, i, j, c) for i, cs in correct.items() for j, c in enumerate(cs)]
    return pl.DataFrame(rows, schema=["set", "id", "sample", "correct"], orient="row")


def test_gains_read_greedy_samples_only_and_the_stratum_by_id():
    bench = load_benchmark("rl_headroom")
    # base: greedy right on a only; its sampled tries are right everywhere and must not count
    base = pl.concat([_frame("heldout", {"a": [True, True], "b": [False, True], "c": [False, True], "d": [False, True]}),
                      _frame("fresh_levels_1_2", {"f": [False, True], "g": [False, True]})])
    after = pl.concat([_frame("heldout", {"a": [False, False], "b": [True, False], "c": [True, False], "d": [False, False]}),
                       _frame("fresh_levels_1_2", {"f": [True, False], "g": [False, False]})])
    gains = bench.gains_over(base, after, {"a", "b"})
    assert gains["heldout"] == 25.0  # 1/4 -> 2/4
    assert gains["reachable"] == 0.0  # on {a, b}: 1/2 -> 1/2
    assert gains["fresh_levels_1_2"] == 50.0  # 0/2 -> 1/2


def test_result_line_reads_unrounded_gains_at_the_evaluate_stages_token_limit(tmp_path, monkeypatch, capsys):
    """The best pool and its gains come from the unrounded figures (the printed table rounds to 0.1 point), and
    every policy is evaluated at train.max_completion_length, the generation limit of the evaluate stage."""
    from types import SimpleNamespace

    bench = load_benchmark("rl_headroom")
    n = 400  # one problem is 0.25 points
    heldout = pl.DataFrame({"id": [f"e{i}" for i in range(n)], "difficulty": [1] * n, "defect": ["none"] * n})
    pool = heldout.with_columns(id=pl.col("id").str.replace("e", "p"))
    solved = {"lm": 100, "all": 104, "clean": 105}  # greedy right on the first this-many held-out problems
    tokens = []

    devices = []

    def fake_eval(model_dir, sets, ecfg, max_new_tokens, seed, device="cpu"):
        tokens.append(max_new_tokens)
        devices.append(device)
        k = solved[Path(model_dir).name]
        return pl.concat([_frame(name, {f"{name}{i}": [i < k, True] for i in range(n)}) for name in sets])

    def fake_train(lm, pool, order, cfg, out, **kw):
        return {"model_dir": str(out), "steps": 2, "seconds": 1.0,
                "log": [{"reward": 0.5, "frac_reward_zero_std": 0.5}]}

    monkeypatch.setattr(bench, "run_all", lambda store, cfg, until=None: {
        "testbed": SimpleNamespace(ref=SimpleNamespace(path=str(tmp_path / "tb")))})
    monkeypatch.setattr(bench, "read_world", lambda path: {"pool": pool, "eval": heldout})
    monkeypatch.setattr(bench, "fresh_problems", lambda *a: heldout)
    monkeypatch.setattr(bench, "evaluate_policy", fake_eval)
    monkeypatch.setattr(bench, "train_grpo", fake_train)
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr("sys.argv", ["rl_headroom.py", "--root", str(tmp_path / "root"), "--out", str(tmp_path),
                                     "--pools", "all,clean", "train.max_completion_length=40"])
    bench.main()
    result = capsys.readouterr().out.strip().splitlines()[-1]
    assert "heldout_gain_best=1.25 heldout_gain_all=1.00" in result and result.endswith("best_pool=clean")
    assert set(tokens) == {40}
    assert set(devices) == {"auto"}  # runtime.device, where the heldout stage evaluates (evaluate_policy's was the CPU)



def test_an_empty_stratum_or_set_gives_nan_not_a_crash():
    """A starting policy that solves no held-out problem in its probe has an empty reachable stratum (and
    --fresh-n 0 an empty fresh set): its gain is undefined (nan), where float(None) crashed the run."""
    bench = load_benchmark("rl_headroom")
    base = _frame("heldout", {"a": [False, False], "b": [True, False]})
    after = _frame("heldout", {"a": [True, False], "b": [True, False]})
    gains = bench.gains_over(base, after, set())
    assert gains["heldout"] == 50.0
    assert gains["reachable"] != gains["reachable"] and gains["fresh_levels_1_2"] != gains["fresh_levels_1_2"]


def test_the_fresh_pool_holds_the_whole_training_stream():
    """Under DAPO the stream is (1 + refill rounds) times longer than steps x batch: a pool of steps x batch fresh
    problems was read several times over (a fresh pool must not repeat a prompt)."""
    from saerl.config import TrainConfig

    bench = load_benchmark("rl_headroom")
    assert bench.fresh_pool_size(TrainConfig(max_steps=10), 4) == 40
    assert bench.fresh_pool_size(TrainConfig(max_steps=10, algorithm="dapo", dynamic_sampling_max_rounds=3), 4) == 160
    assert bench.fresh_pool_size(TrainConfig(max_steps=6, steps_per_generation=3), 4) == 24


def test_a_misspelt_pool_is_refused_before_any_work(monkeypatch):
    """--pools all,clean_levels_12 trained the whole pool only and reported it as the best oracle pool (the
    misspelt name matched none and was skipped without a word); now the run stops first, naming it."""
    import pytest

    bench = load_benchmark("rl_headroom")
    pool = pl.DataFrame({"id": ["p0"], "difficulty": [1], "defect": ["none"]})
    assert tuple(bench.oracle_pools({"pool": pool}, pool)) == bench.POOLS
    assert bench.chosen_pools("all, clean_levels_1_2,") == {"all", "clean_levels_1_2"}
    monkeypatch.setattr(bench, "load_config", lambda *a: pytest.fail("the config was loaded"))
    monkeypatch.setattr("sys.argv", ["rl_headroom.py", "--pools", "all,clean_levels_12"])
    with pytest.raises(SystemExit, match="clean_levels_12") as err:
        bench.main()
    assert "fresh_levels_1_2" in str(err.value)  # the names it takes
    with pytest.raises(SystemExit, match="none given"):
        bench.chosen_pools(",")
