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
                                      "--repeats", "2", "runtime.torch_threads=1", "tracking.enabled=false"])
    bench.main()
    out = capsys.readouterr().out
    assert "[old] n_jobs=1 dtype=input, round 1/2" in out and "[float64] n_jobs=1 dtype=float64, round 2/2" in out
    assert "[new] n_jobs=2 dtype=float64" in out and "threads_report_diff=0 " in out
    assert "\nold: score " in out and "\nnew: score " in out  # each side's times per round
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT speedup=") and "max_report_diff=" in last
    assert " score_speedup=" in last and " properties_speedup=" in last
    assert float(last.split("max_report_diff=")[1]) < 0.05  # the float64 cast moves the report a little at most


def _encode_artifact(root: Path, key: str, config: dict) -> None:
    """A published encode artifact (no files, inputs from no other artifact) whose manifest records `config`."""
    ArtifactStore(root).ensure("encode", key, lambda build: None, {"config": config, "inputs": {}})


def _record(root: Path, name: str, key: str) -> None:
    """A saved run of config `name` that built the encode artifact `key`."""
    from saerl.runs import RunRecord, StageRecord, save_run

    save_run(root, RunRecord(name=name, stages={"encode": StageRecord("encode", key, "computed", "", {}, {})}))


def test_a_run_of_another_config_is_refused_naming_it(tmp_path):
    """With the default --config (demo) on a root that the smoke config built, the newest encode artifact (smoke's)
    was read and the demo's score settings timed on smoke's codes without a word. The run records' config name
    (else the config fields the manifests recorded) is now compared with --config: another config is refused."""
    bench = load_benchmark("score_speed")
    cfg = load_config(bench.DEMO_CONFIG, [f"runtime.artifact_root={tmp_path}"])
    demo_slice = {"sae.encode_top_k": cfg.sae.encode_top_k, "sae.encode_pool": list(cfg.sae.encode_pool)}
    _encode_artifact(tmp_path, "a" * 20, {**demo_slice, "sae.encode_top_k": 16})
    _record(tmp_path, "smoke", "a" * 20)
    with pytest.raises(SystemExit, match=r"built from config 'smoke': pass --config configs/smoke\.yaml"):
        bench.upstream_refs(cfg, str(bench.DEMO_CONFIG))
    _record(tmp_path, "demo", "a" * 20)  # a run of the demo's name built it too (with other settings): a note only
    assert set(bench.upstream_refs(cfg, str(bench.DEMO_CONFIG))) == {"encode"}


def test_without_run_records_the_recorded_fields_decide(tmp_path, capsys):
    """No run record (a run through run_all): the manifests' config slices are compared on the fields both sides
    know, so a run by other code of the same config (a field added or dropped) is still read."""
    bench = load_benchmark("score_speed")
    cfg = load_config(bench.DEMO_CONFIG, [f"runtime.artifact_root={tmp_path}"])
    demo_slice = {"sae.encode_top_k": cfg.sae.encode_top_k, "sae.encode_pool": list(cfg.sae.encode_pool)}
    _encode_artifact(tmp_path, "b" * 20, {**demo_slice, "sae.encode_top_k": 16})
    with pytest.raises(SystemExit, match=rf"built from another config than .*sae\.encode_top_k 16 \(config: {cfg.sae.encode_top_k}\)"):
        bench.upstream_refs(cfg, str(bench.DEMO_CONFIG))
    _encode_artifact(tmp_path, "c" * 20, {**demo_slice, "sae.field_of_other_code": 1})  # newer: the one read
    refs = bench.upstream_refs(cfg, str(bench.DEMO_CONFIG))
    assert refs["encode"].key == "c" * 20 and "reading the newest encode artifact" in capsys.readouterr().out


def test_the_sides_run_interleaved_and_the_median_ratio_is_reported():
    """Each side ran once, one after the other, so load in between moved the ratio (1.76 then 1.08 on the same
    inputs): the sides now alternate round by round and the ratio is the median of the rounds' ratios."""
    bench = load_benchmark("score_speed")
    calls, printed = [], []
    sides = {"old": lambda: calls.append("old") or len(calls), "new": lambda: calls.append("new") or len(calls)}
    out = bench.interleaved(sides, 3, lambda name, i, value: printed.append((name, i)))
    assert calls == ["old", "new"] * 3 and out == {"old": [1, 3, 5], "new": [2, 4, 6]}
    assert printed == [("old", 0), ("new", 0), ("old", 1), ("new", 1), ("old", 2), ("new", 2)]
    assert bench.median_ratio([10.0, 30.0, 12.0], [5.0, 10.0, 12.0]) == 2.0  # ratios 2, 3, 1
    with pytest.raises(SystemExit, match="--repeats"):
        bench.interleaved(sides, 0)
    line = bench.times_line("old", [(1.0, 2.0), (1.5, 2.5)])
    assert line == "old: score 1.0 / 1.5 s, properties 2.0 / 2.5 s, total 3.0 / 4.0 s"
