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
