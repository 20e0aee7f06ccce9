"""saerl.property_models: the fits read their settings from the score config."""

import numpy as np


def test_the_probe_iteration_cap_is_the_configs():
    """The logistic probes' iteration cap was a bare 2000 while the log pointed at 'max_iter in score config',
    which only the elastic nets had: unconverged probes could not be fixed from the config."""
    from saerl.config import ScoreConfig
    from saerl.property_models import probe_model

    est = probe_model("sae", ScoreConfig(probe_max_iter=123), np.array([0, 1] * 10))
    assert est.estimator.named_steps["logisticregression"].max_iter == 123
