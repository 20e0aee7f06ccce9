"""benchmarks/properties.py on the smoke config: the property table has SAE and baseline rows for each property."""

import math
from pathlib import Path

import pytest
from bench import load_benchmark

from saerl.config import load_config
from saerl.scoring import summarize_report

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_property_table_on_smoke_config(tmp_path):
    bench = load_benchmark("properties")
    cfg = load_config(SMOKE, [*bench.COMMON, f"runtime.artifact_root={tmp_path}"])
    report, seconds = bench.property_report(cfg)
    assert "score" in seconds and "extract" in seconds
    feats = set(report["features"])
    assert {"sae", "residual", "text", "length", "majority"} <= feats
    # every report model is tested on all rows that carry the label and that it was not fitted on: the tiny
    # world labels every row, so even its few labelled rows give a quality AUROC
    for prop, metric in [("topic_clusters", "nmi"), ("topic_clusters", "purity"), ("difficulty", "spearman_id")]:
        rows = report.filter((report["property"] == prop) & (report["metric"] == metric))
        assert "sae" in set(rows["features"]) and len(set(rows["features"]) - {"sae"}) >= 3, (prop, metric)
    table = summarize_report(report)
    assert "sae" in table and "majority" in table and "spearman_id" in table
    values = bench.headline(report)
    assert set(values) == {"topic_nmi", "topic_nmi_best_baseline", "difficulty_spearman",
                           "difficulty_spearman_best_baseline", "quality_auroc", "quality_auroc_best_baseline"}
    assert 0.0 <= values["topic_nmi"] <= 1.0 and not math.isnan(values["difficulty_spearman"])
    assert 0.0 <= values["quality_auroc"] <= 1.0 and 0.0 <= values["quality_auroc_best_baseline"] <= 1.0
    quality = report.filter(report["metric"] == "auroc")
    assert quality["n_test"].max() > quality["n_train"].max(), "tested beyond the labelled subset's held-out part"
    line = bench.result_line(values)
    assert line.startswith("RESULT topic_nmi=") and "quality_auroc_best_baseline=" in line


def test_derived_labels():
    bench = load_benchmark("properties")
    assert bench.steps_before_answer("a = 1\nb = 2\n\n#### 3") == 2
    assert bench.steps_before_answer("#### 3") == 0
    assert bench.formula_ops("7+2=9") == 1
    assert bench.formula_ops("(5-2)*3=9") == 2
    assert bench.formula_ops("") == 1
