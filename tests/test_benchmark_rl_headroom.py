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
