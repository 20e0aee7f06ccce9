"""The pipeline flow through Prefect: cache hits on rerun, what recomputes after a config change, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saerl.config import load_config

pytestmark = pytest.mark.slow


def _run(cfg, until=None):
    from flows.pipeline import pipeline_flow

    return pipeline_flow(config=cfg.model_dump(mode="json"), until=until)


def _status(record):
    return {s: v["status"] for s, v in record["stages"].items()}


def test_second_run_is_all_cache_hits(prefect_api, tmp_path, capsys):
    cfg = load_config(None, ["name=flowtest", f"runtime.artifact_root={tmp_path}"])
    first = _run(cfg)
    assert set(_status(first).values()) == {"computed"}
    second = _run(cfg)
    assert set(_status(second).values()) == {"cached"}
    assert all(v["reason"].startswith("cached") for v in second["stages"].values())
    out = capsys.readouterr().out
    assert "[ingest] computed" in out and "[ingest] cached" in out
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 2 and json.loads(runs[-1].read_text())["stages"]["ingest"]["status"] == "cached"


def test_config_change_recomputes_only_readers_and_says_why(prefect_api, tmp_path):
    base = ["name=flowtest2", f"runtime.artifact_root={tmp_path}"]
    _run(load_config(None, base))
    neutral = _run(load_config(None, base + ["tracking.enabled=false"]))
    assert set(_status(neutral).values()) == {"cached"}
    changed = _run(load_config(None, base + ["data.max_prompt_chars=50"]))
    assert _status(changed)["ingest"] == "computed"
    assert "data.max_prompt_chars 4000->50" in changed["stages"]["ingest"]["reason"]


def test_corrupt_artifact_is_recomputed_not_used(prefect_api, tmp_path):
    cfg = load_config(None, ["name=flowtest3", f"runtime.artifact_root={tmp_path}"])
    first = _run(cfg)
    prompts = Path(first["stages"]["ingest"]["path"]) / "prompts.parquet"
    prompts.write_bytes(prompts.read_bytes()[:-20])
    again = _run(cfg)
    assert _status(again)["ingest"] == "computed"
    assert "failed verification" in again["stages"]["ingest"]["reason"]
    assert "prompts.parquet" in again["stages"]["ingest"]["reason"]


def test_mlflow_has_parent_and_stage_runs(prefect_api, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = load_config(None, ["name=flowtest4", f"runtime.artifact_root={tmp_path}"])
    record = _run(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("flowtest4")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == record["run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.info.run_name for c in children} == set(record["stages"])
    assert parent.data.params["curriculum.mix_ratio"] == str(cfg.curriculum.mix_ratio)
