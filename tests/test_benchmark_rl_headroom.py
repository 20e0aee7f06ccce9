"""benchmarks/rl_headroom.py: the oracle pools are chosen with the world's true labels."""

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
