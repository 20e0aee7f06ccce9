"""saerl.property_models: the fits read their settings from the score config."""

from pathlib import Path

import numpy as np


def test_the_probe_iteration_cap_is_the_configs():
    """The logistic probes' iteration cap was a bare 2000 while the log pointed at 'max_iter in score config',
    which only the elastic nets had: unconverged probes could not be fixed from the config."""
    from saerl.config import ScoreConfig
    from saerl.property_models import probe_model

    est = probe_model("sae", ScoreConfig(probe_max_iter=123), np.array([0, 1] * 10))
    assert est.estimator.named_steps["logisticregression"].max_iter == 123


def test_importing_saerl_adds_no_warnings_filter():
    """property_models installed a process-wide filter (joblib's Dask-daemon warning) at import: importing saerl
    changed a notebook's warnings. Its own third-party imports first (torch, sklearn ... add filters of their own);
    then importing saerl's modules must leave warnings.filters as it was. In a fresh interpreter: this one has them
    imported already."""
    import subprocess
    import sys

    code = """
import warnings
import numpy, polars, scipy.sparse, scipy.stats, sklearn.cluster, sklearn.linear_model, sklearn.model_selection
import sklearn.pipeline, sklearn.preprocessing, sklearn.dummy, sklearn.feature_extraction.text, sklearn.metrics
import saerl.config
before = list(warnings.filters)
import saerl.property_models
assert list(warnings.filters) == before, [f for f in warnings.filters if f not in before]
"""
    root = Path(__file__).resolve().parents[1]  # the checkout whose saerl is tested
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_fit_difficulty_silences_the_dask_daemon_warning_while_it_fits(monkeypatch):
    """The filter moved from import time into fit_difficulty: the warning is still silenced there, and the filters
    are as they were once it returns."""
    import warnings

    import saerl.property_models as pm
    from saerl.config import ScoreConfig

    class Loud:
        """An estimator whose fit warns as joblib does inside a Dask worker (a daemon process)."""

        def get_params(self, deep=True):
            return {}

        def fit(self, X, y):
            warnings.warn(pm.DASK_DAEMON_WARNING + ", setting n_jobs=1", UserWarning, stacklevel=2)
            warnings.warn("another warning", UserWarning, stacklevel=2)
            return self

    monkeypatch.setattr(pm, "difficulty_model", lambda name, cfg, family="elasticnet", n_jobs=1: Loud())
    X, y = np.ones((6, 2)), np.arange(6.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        key, _ = pm.fit_difficulty({"sae": X}, y, np.ones(6, dtype=bool), "sae",
                                   ScoreConfig(difficulty_models=["ridge"]))
        assert list(warnings.filters) == before
    assert key == "sae" and [str(w.message) for w in seen] == ["another warning"]


def test_weight_codes_applies_a_given_idf_as_the_pools_rows_were_weighted():
    """weight_codes fitted the IDF on the rows it was given, so new prompts could not be weighted with the pool's:
    with idf=code_idf(pool), any rows of the pool come out as the pool's own weighted rows."""
    import pytest
    import scipy.sparse as sp

    from saerl.property_models import code_idf, weight_codes

    X = sp.random(60, 30, density=0.2, random_state=0, format="csr", dtype=np.float32)
    pool = weight_codes(X, tfidf=True)
    idf = code_idf(X)
    assert (weight_codes(X, True, idf) != pool).nnz == 0  # the same numbers as fitting it there
    rows = [3, 17, 42]
    alone = weight_codes(X[rows], True, idf)
    assert np.allclose(alone.toarray(), pool[rows].toarray(), rtol=0, atol=1e-15)
    assert not np.allclose(weight_codes(X[rows], True).toarray(), pool[rows].toarray())  # refitted on 3 rows
    with pytest.raises(ValueError, match="tfidf off"):
        weight_codes(X, False, idf)
    with pytest.raises(ValueError, match="30 weights but the codes have 5 features"):
        weight_codes(X[:, :5], True, idf)


def test_nearest_centroid_places_rows_as_kmeans_predict_does():
    """New rows get the cluster k-means' own predict gives them (Euclidean, not cosine: the centroids are not unit
    length), and the training rows their fitted labels, for KMeans and MiniBatchKMeans alike."""
    import scipy.sparse as sp
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from saerl.config import ScoreConfig
    from saerl.property_models import fit_kmeans, nearest_centroid, weight_codes

    Z = weight_codes(sp.random(300, 40, density=0.15, random_state=1, format="csr"), tfidf=True)
    new = weight_codes(sp.random(80, 40, density=0.15, random_state=2, format="csr"), tfidf=True)
    for above in (1000, 100):  # KMeans, then MiniBatchKMeans
        cfg = ScoreConfig(minibatch_above=above, kmeans_n_init=2)
        labels, centroids = fit_kmeans(Z, 6, cfg)
        assert np.array_equal(nearest_centroid(Z, centroids), labels)
        cls = KMeans if above > 300 else MiniBatchKMeans
        extra = {} if cls is KMeans else {"batch_size": 2048}
        km = cls(6, n_init=2, random_state=cfg.seed, **extra).fit(Z)
        assert np.allclose(km.cluster_centers_, centroids)
        assert np.array_equal(nearest_centroid(new, centroids), km.predict(new))


def test_linear_weights_fold_the_scaler_into_each_fitted_model():
    """The difficulty pipelines (elastic net, ridge) and the quality probe as one weight vector and intercept on raw
    codes: x @ w + b is the pipeline's prediction (the probe's decision function)."""
    import scipy.sparse as sp
    from scipy.special import expit

    from saerl.config import ScoreConfig
    from saerl.property_models import difficulty_model, linear_weights, probe_model

    rng = np.random.default_rng(0)
    X = sp.random(120, 25, density=0.3, random_state=3, format="csr") * 7.0
    y = np.asarray(X[:, :3].sum(axis=1)).ravel() + rng.normal(0, 0.1, 120)
    cfg = ScoreConfig(cv_folds=3, enet_n_alphas=5, ridge_alphas=[0.1, 1.0])
    for family in ("elasticnet", "ridge"):
        model = difficulty_model("sae", cfg, family).fit(X, y)
        w, b = linear_weights(model)
        assert np.allclose(X @ w + b, model.predict(X), rtol=1e-10, atol=1e-10), family
    good = (y > np.median(y)).astype(int)
    probe = probe_model("sae", cfg, good).fit(X, good)
    w, b = linear_weights(probe)
    assert np.allclose(expit(X @ w + b), probe.predict_proba(X)[:, 1], rtol=1e-10, atol=1e-12)


def test_the_text_baseline_reads_character_ngrams_in_any_script():
    """TfidfVectorizer's word tokens made each Chinese clause one token (小明有3个苹果 and 小明有8个苹果 shared none),
    so the property report compared the SAE with a crippled text baseline on CJK data (i18n audit, finding 5). The
    baseline reads character 1-3-grams inside words by default; score.text_analyzer=word keeps the old tokens."""
    from saerl.config import ScoreConfig
    from saerl.property_models import featurizer, text_analyzer

    zh = ["小明有3个苹果，一共有几个？", "小明有8个苹果，一共有几个？"]
    cfg = ScoreConfig()
    assert cfg.text_analyzer == "char_wb" and text_analyzer(cfg) == "char_wb1-3"
    chars = featurizer("text", cfg).fit(zh)
    rows = chars.transform(zh)
    assert {"小", "小明", "苹果", "几个？"} <= set(chars.vocabulary_) and (rows[0] @ rows[1].T).toarray()[0, 0] > 0.5
    words_cfg = ScoreConfig(text_analyzer="word")
    words = featurizer("text", words_cfg).fit(zh)
    assert text_analyzer(words_cfg) == "word" and set(words.vocabulary_) == {"小明有3个苹果", "小明有8个苹果", "一共有几个"}
    assert featurizer("text", ScoreConfig(text_max_features=7)).fit(zh).transform(zh).shape == (2, 7)
