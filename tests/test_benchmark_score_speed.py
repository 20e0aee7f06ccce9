"""benchmarks/score_speed.py: its report comparison, its message when no run exists, and (slow) a whole side-by-side
on the smoke config's run up to encode."""

import math
import sys
from pathlib import Path

import polars as pl
import pytest
from bench import load_benchmark

from saerl.artifacts import ArtifactStore
from saerl.config import load_config
from saerl.pipeline import run_all

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _report(values: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame({"property": ["difficulty"] * len(values), "metric": list(values),
                         "features": ["sae"] * len(values), "value": list(values.values())})


def test_side_by_side_and_its_largest_difference():
    bench = load_benchmark("score_speed")
    old = _report({"spearman_id": 0.5, "spearman_ood": 0.25, "auroc": math.nan})
    new = _report({"spearman_id": 0.5004, "spearman_ood": 0.25, "auroc": math.nan})
    table = bench.side_by_side(old, new)
    assert table.columns == ["property", "metric", "features", "old", "new", "diff"]
    assert table["metric"].to_list() == ["spearman_id", "spearman_ood", "auroc"]
    assert bench.max_abs_diff(table) == pytest.approx(0.0004)  # NaN on both sides counts as equal
    assert bench.max_abs_diff(bench.side_by_side(old, old)) == 0.0
    assert bench.max_abs_diff(bench.side_by_side(old, new.head(2))) == math.inf  # a row in one report only
    assert bench.max_abs_diff(bench.side_by_side(old, new.with_columns(pl.lit(math.nan).alias("value")))) == math.inf


def test_without_a_run_it_says_how_to_make_one(tmp_path):
    bench = load_benchmark("score_speed")
    cfg = load_config(bench.DEMO_CONFIG, [f"runtime.artifact_root={tmp_path}"])
    with pytest.raises(SystemExit, match=r"saerl run .*demo.yaml --until encode"):
        bench.upstream_refs(cfg, str(bench.DEMO_CONFIG))


@pytest.mark.slow
def test_old_and_new_side_by_side_on_the_smoke_run(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("score_speed")
    cfg = load_config(SMOKE, ["runtime.torch_threads=1", "tracking.enabled=false", f"runtime.artifact_root={tmp_path}"])
    run_all(ArtifactStore(tmp_path), cfg, until="encode")
    planned, missing = bench.planned_refs(cfg)
    assert missing is None and {"ingest", "extract", "encode"} <= set(planned)
    # a run made by other code (other stage keys): the newest encode artifact and what it was built from
    assert bench.newest_refs(tmp_path, with_label=False) == planned
    monkeypatch.setattr(sys, "argv", ["score_speed.py", "--config", str(SMOKE), "--work", str(tmp_path), "--jobs", "2",
                                      "runtime.torch_threads=1", "tracking.enabled=false"])
    bench.main()
    out = capsys.readouterr().out
    assert "[old] n_jobs=1 dtype=input" in out and "[float64] n_jobs=1 dtype=float64" in out
    assert "[new] n_jobs=2 dtype=float64" in out and "threads_report_diff=0 " in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT speedup=") and "max_report_diff=" in last
    assert float(last.split("max_report_diff=")[1]) < 0.05  # the float64 cast moves the report a little at most
