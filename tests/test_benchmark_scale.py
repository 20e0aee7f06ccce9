"""benchmarks/scale.py: the side-by-side difficulty fits alternate round by round and report the median ratio."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from bench import load_benchmark


def _labelled(n: int, d: int) -> tuple[sp.csr_matrix, list[str], pl.DataFrame]:
    """n prompts of random sparse codes over d features, every row labelled with a difficulty they predict."""
    rng = np.random.default_rng(0)
    X = sp.random(n, d, density=0.3, format="csr", random_state=0, dtype=np.float64)
    ids = [f"p{i}" for i in range(n)]
    y = np.asarray(X[:, :3].sum(axis=1)).ravel() + rng.normal(0, 0.01, n)
    return X, ids, pl.DataFrame({"id": ids, "labelled": [True] * n, "difficulty": y})


def test_the_sparse_and_default_fits_alternate_and_each_round_is_kept(monkeypatch):
    """The always-sparse fit ran once and then the default once, so load in between moved dense_fit_speedup; they now
    alternate for --repeats rounds (sparse, default, sparse, default, ...) and every round's seconds come back."""
    bench = load_benchmark("scale")
    X, ids, prompts = _labelled(40, 8)
    order = []

    class Model:
        def predict(self, X):
            return np.zeros(X.shape[0])

    monkeypatch.setattr(bench, "fit_difficulty",
                        lambda cands, y, rows, name, cfg: order.append(cfg.dense_fit_mb) or ("sae", Model()))
    cfg = bench.scale_score_config()
    sparse, default, diff = bench.dense_fit_speedup(X, ids, prompts, cfg, repeats=3)
    assert order == [0.0, cfg.dense_fit_mb] * 3 and cfg.dense_fit_mb > 0
    assert len(sparse) == len(default) == 3 and diff == 0.0
    order.clear()
    bench.dense_fit_speedup(X, ids, prompts, cfg.model_copy(update={"dense_fit_mb": 0.0}), repeats=2)
    assert order == [0.0, 0.0] * 2  # a zero budget still runs both sides
    with pytest.raises(SystemExit, match="--repeats"):
        bench.dense_fit_speedup(X, ids, prompts, cfg, repeats=0)


def test_the_median_ratio_of_the_rounds():
    bench = load_benchmark("scale")
    assert bench.median_ratio([2.0, 9.0, 1.0], [1.0, 3.0, 1.0]) == 2.0  # ratios 2, 3, 1
    assert bench.median_ratio([3.0, 1.0], [1.0, 1.0]) == 2.0  # two rounds: the mean of the two ratios
    assert bench.seconds_text([1.0, 1.25]) == "1.0 / 1.2"


def test_a_real_small_fit_on_both_sides_predicts_alike():
    bench = load_benchmark("scale")
    X, ids, prompts = _labelled(60, 10)  # more rows than features: the default fits on a dense copy
    sparse, default, diff = bench.dense_fit_speedup(X, ids, prompts, bench.scale_score_config(), repeats=2)
    assert len(sparse) == len(default) == 2 and all(s > 0 for s in sparse + default)
    assert diff < 1e-6
