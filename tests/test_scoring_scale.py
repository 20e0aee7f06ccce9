"""The scalable path of scoring gives the same numbers as the plain one where both apply: in-place TF-IDF
weighting, blocked prediction, and the seeded report sample above score.minibatch_above; plus the synthetic
codes of benchmarks/scale.py round-trip through the encode stage's Zarr layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.preprocessing import normalize
from test_scoring import FAST, synth

from saerl import property_models as PM
from saerl.config import ScoreConfig
from saerl.property_models import difficulty_model, predict_rows, probe_model, report_rows, weight_codes
from saerl.sae import load_codes_csr
from saerl.scoring import FEATURES, property_report, score_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale  # noqa: E402  (benchmarks/ is not a package)


@pytest.fixture(scope="module")
def data():
    return synth(n=300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_codes_matches_scikit_learn_bit_for_bit_and_leaves_x_alone(data, monkeypatch, dtype):
    X = data[0].astype(dtype)
    before = X.copy()
    monkeypatch.setattr(PM, "WEIGHT_BLOCK_NNZ", 97)  # many blocks, one ragged
    ref = TfidfTransformer(norm="l2").fit_transform(sp.csr_matrix(X, dtype=np.float64)).tocsr()
    got = weight_codes(X, tfidf=True)
    assert got.dtype == np.float64 and np.array_equal(got.indptr, ref.indptr)
    assert np.array_equal(got.indices, ref.indices) and got.data.tobytes() == ref.data.tobytes()
    plain = normalize(sp.csr_matrix(X, dtype=np.float64)).tocsr()
    assert weight_codes(X, tfidf=False).data.tobytes() == plain.data.tobytes()
    assert (X != before).nnz == 0


def test_predict_rows_matches_one_call(data, monkeypatch):
    X, prompts, _ = data
    monkeypatch.setattr(PM, "PREDICT_BLOCK_ROWS", 64)
    cfg = ScoreConfig(**FAST)
    y = prompts["difficulty"].to_numpy()
    reg = difficulty_model("sae", cfg).fit(X[:150], y[:150])
    assert predict_rows(reg, X).tobytes() == reg.predict(X).tobytes()
    good = (prompts["quality"].to_numpy() >= 0.5).astype(int)
    clf = probe_model("sae", cfg, good[:150]).fit(X[:150], good[:150])
    assert predict_rows(clf, X, proba=True).tobytes() == clf.predict_proba(X)[:, 1].tobytes()
    assert predict_rows(reg, X[:0]).shape == (0,)


def test_report_rows_all_or_a_seeded_sample():
    cfg = ScoreConfig(minibatch_above=100)
    assert np.array_equal(report_rows(100, cfg), np.arange(100))
    sample = report_rows(1000, cfg)
    assert len(sample) == 100 and np.all(np.diff(sample) > 0) and np.array_equal(sample, report_rows(1000, cfg))
    assert sample[0] >= 0 and sample[-1] < 1000 and np.median(sample) > 250, "drawn across the pool, not its head"
    other = report_rows(1000, cfg.model_copy(update={"seed": cfg.seed + 1}))
    assert not np.array_equal(sample, other), "score.seed draws the sample"


def test_large_pool_reports_clusters_on_the_sample(data):
    X, prompts, R = data
    cfg = ScoreConfig(**FAST, minibatch_above=120, n_clusters=4)
    result = score_prompts(X, prompts, cfg, ids=prompts["id"])
    report = property_report(X, prompts, cfg, result.scores, ids=prompts["id"], R=R, k=result.params["k"])
    clusters = report.report.filter(pl.col("property") == "topic_clusters")
    assert set(clusters["n_train"]) == {cfg.minibatch_above}
    assert {*FEATURES, "shuffled"} <= set(clusters["features"])
    assert result.scores.height == prompts.height and result.scores["cluster"].n_unique() == 4
    sae_nmi = clusters.filter((pl.col("features") == "sae") & (pl.col("metric") == "nmi"))["value"][0]
    assert sae_nmi > 0.5


def test_large_pool_whose_report_sample_has_no_topic_reports_no_clusters_and_says_so(data):
    """Topics on a few prompts of a pool above score.minibatch_above: the report's sample can hold none of them
    (purity's max over an empty contingency table crashed the score stage); no cluster metric, a note instead."""
    X, prompts, _ = data
    cfg = ScoreConfig(**FAST, minibatch_above=120, n_clusters=4, baselines=False)
    outside = prompts["id"].to_numpy()[np.setdiff1d(np.arange(prompts.height), report_rows(prompts.height, cfg))]
    lone = prompts.with_columns(topic=pl.when(pl.col("id") == outside[0]).then(pl.col("topic")))
    result = score_prompts(X, lone, cfg, ids=lone["id"])
    report = property_report(X, lone, cfg, result.scores, ids=lone["id"], k=result.params["k"])
    assert "topic_clusters" not in set(report.report["property"]) and result.scores.height == prompts.height
    assert any("has a topic" in n for n in report.notes)


def test_synthetic_codes_round_trip_through_the_encode_layout(tmp_path, monkeypatch):
    chunk_rows = 16
    monkeypatch.setattr(scale, "CHUNK_ROWS", chunk_rows)
    n = 3 * chunk_rows + 5  # a ragged last chunk
    prompts = scale.build_data(n, tmp_path, labelled=10)
    ids, X = load_codes_csr(tmp_path)
    assert ids == prompts["id"].to_list() and X.shape == (n, scale.D_SAE)
    nnz = X.getnnz(axis=1)
    assert nnz.max() <= scale.TOP_K and nnz.min() > scale.FROM_SIGNATURE and (X.data > 0).all()
    assert prompts["labelled"].sum() == 10 and prompts["difficulty"].null_count() == n - 10


def test_dense_fit_speedup_times_both_fits_and_they_agree(tmp_path, monkeypatch):
    """The benchmark's side-by-side on a tall world (more labelled rows than features, so the default budget
    fits the elastic net on a dense copy): both fits run and predict alike."""
    monkeypatch.setattr(scale, "CHUNK_ROWS", 64)
    prompts = scale.build_data(200, tmp_path, labelled=150, d_sae=96)
    ids, X = load_codes_csr(tmp_path)
    assert X.shape == (200, 96)
    cfg = ScoreConfig(**FAST, difficulty_models=["elasticnet"], enet_max_iter=20000)
    sparse_s, dense_s, diff = scale.dense_fit_speedup(X, ids, prompts, cfg, repeats=2)
    assert len(sparse_s) == len(dense_s) == 2 and min(sparse_s) > 0 and min(dense_s) > 0 and diff < 1e-3
