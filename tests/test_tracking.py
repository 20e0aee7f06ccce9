"""saerl.tracking: parent + nested runs with params and tags; a dead server never stops the pipeline."""

import logging

from mlflow.tracking import MlflowClient

from saerl.config import flatten, load_config
from saerl.tracking import Tracker, tracking_uri


def test_parent_and_nested_stage_runs(tmp_path):
    cfg = load_config(None, ["name=trk", "curriculum.mix_ratio=0.3"])
    t = Tracker(cfg, tmp_path, "run-1")
    t.log_stage("curriculum", "computed", "abc", "computed: first run", 1.5,
                {"curriculum.mix_ratio": 0.3}, {"kept": 10})
    t.log_metrics({"acc": 0.5}, step=3, stage="curriculum")
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    exp = client.get_experiment_by_name("trk")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "run-1")
    child = next(r for r in runs if r.info.run_name == "curriculum")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags["saerl.status"] == "computed" and child.data.tags["saerl.key"] == "abc"
    assert parent.data.params["curriculum.mix_ratio"] == "0.3"
    assert len(parent.data.params) == len(flatten(cfg))
    assert child.data.metrics["kept"] == 10
    assert [m.step for m in client.get_metric_history(child.info.run_id, "acc")] == [3]
    assert parent.info.status == "FINISHED"


def test_unreachable_server_warns_once_and_disables(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = load_config(None, ["tracking.uri=http://127.0.0.1:9"])
    with caplog.at_level(logging.WARNING, logger="saerl.tracking"):
        t = Tracker(cfg, tmp_path, "run")
        t.log_stage("ingest", "computed", "k", "r", 0.1, {})
        t.finish()
    assert not t.enabled
    assert sum("continuing without tracking" in r.message for r in caplog.records) == 1


def test_disabled_tracking_logs_nothing(tmp_path):
    cfg = load_config(None, ["tracking.enabled=false"])
    t = Tracker(cfg, tmp_path, "run")
    t.log_stage("ingest", "computed", "k", "r", 0.1, {})
    assert t.parent_id is None and not (tmp_path / "mlflow.db").exists()
