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


def test_parent_run_tags_library_versions(tmp_path):
    from importlib import metadata

    from saerl.tracking import VERSION_TAG, VERSIONED_LIBRARIES

    cfg = load_config(None, ["name=versions"])
    t = Tracker(cfg, tmp_path, "run-v", tags={"extra": "yes"}, started=1_700_000_000.0)
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    parent = client.get_run(t.parent_id)
    tags = parent.data.tags
    assert {VERSION_TAG + lib for lib in VERSIONED_LIBRARIES} <= set(tags)
    assert tags[VERSION_TAG + "torch"] == metadata.version("torch")
    assert tags[VERSION_TAG + "mlflow"] == metadata.version("mlflow")
    assert "saerl.git_commit" in tags and tags["extra"] == "yes"
    assert parent.info.start_time == 1_700_000_000_000, "a re-logged run keeps its original start time"


def test_library_tags_from_given_versions_name_the_missing_ones():
    from saerl.tracking import NOT_INSTALLED, VERSION_TAG, library_tags

    tags = library_tags({"torch": "9.9"})
    assert tags[VERSION_TAG + "torch"] == "9.9" and tags[VERSION_TAG + "trl"] == NOT_INSTALLED


def test_step_points_one_per_step_plus_the_eval_curve():
    import polars as pl

    from saerl.tracking import step_points

    steps = pl.DataFrame({"step": [1, 2], "reward": [0.5, None], "note": ["a", "b"]})
    curve = pl.DataFrame({"step": [0, 2], "set": ["heldout", "heldout"], "greedy": [0.1, 0.3]})
    assert step_points(steps, curve) == [(1, {"reward": 0.5}), (2, {}), (0, {"eval/heldout/greedy": 0.1}),
                                         (2, {"eval/heldout/greedy": 0.3})]


def test_log_stage_run_logs_plots_tables_and_history(tmp_path):
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "train_curves.png").write_bytes(b"\x89PNG")
    pl.DataFrame({"step": [1, 2, 3], "reward": [0.1, 0.2, 0.3]}).write_parquet(folder / "log.parquet")
    pl.DataFrame({"step": [0, 3], "set": ["h", "h"], "greedy": [0.2, 0.4]}).write_parquet(folder / "curve.parquet")
    pl.DataFrame({"position": [0], "step": [1], "id": ["p"]}).write_parquet(folder / "trained_order.parquet")
    cfg = load_config(None, ["name=stagelog"])
    t = Tracker(cfg, tmp_path, "run-s")
    rec = StageRecord(stage="train:saerl:0", key="k1", status="computed", reason="computed: first", seconds=2.0,
                      config={"train.learning_rate": 1e-5}, inputs={}, path=str(folder))
    log_stage_run(t, "train", rec, {"steps": 3})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["train:saerl:0"]
    run = client.get_run(rid)
    assert run.data.params["train.learning_rate"] == "1e-05" and run.data.metrics["steps"] == 3
    assert run.data.tags["saerl.key"] == "k1"
    assert [m.step for m in client.get_metric_history(rid, "reward")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(rid, "eval/h/greedy")] == [0, 3]
    assert {a.path for a in client.list_artifacts(rid)} >= {"plots", "trained_order.parquet", "log.parquet"}
    assert [a.path for a in client.list_artifacts(rid, "plots")] == ["plots/train_curves.png"]
    # the logged files live under the artifact root, whatever folder the run started in
    assert (tmp_path / "mlruns").is_dir() and list((tmp_path / "mlruns").rglob("train_curves.png"))
    assert client.get_experiment(t.experiment_id).artifact_location == (tmp_path / "mlruns").resolve().as_uri()


def test_metrics_are_timestamped_when_logged(tmp_path):
    """MLflow reads a metric's timestamp as when it was logged (epoch ms): stage summaries, per-step points and
    plain metrics carry the logging time, not 0 (1970 on MLflow's wall-time axis)."""
    import time

    cfg = load_config(None, ["name=stamps"])
    before = int(time.time() * 1000)
    t = Tracker(cfg, tmp_path, "run-t")
    t.log_stage("evaluate", "computed", "k", "r", 1.0, {}, {"acc": 0.5})
    t.log_metrics({"m": 1.0}, step=2, stage="evaluate")
    t.log_history([(1, {"reward": 0.1}), (2, {"reward": 0.2})], stage="evaluate")
    t.finish()
    after = int(time.time() * 1000)
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["evaluate"]
    history = [m for key in ("seconds", "acc", "m", "reward") for m in client.get_metric_history(rid, key)]
    assert len(history) == 5 and all(before <= m.timestamp <= after for m in history)


def test_a_metric_name_mlflow_refuses_is_cleaned_not_the_end_of_tracking(tmp_path):
    """A held-out set's name is the user's (eval.sets keys): 'gsm8k+math' in a metric name made MLflow refuse the
    whole batch, and tracking stopped for the rest of the run. The name is cleaned instead."""
    from saerl.tracking import metric_key

    cfg = load_config(None, ["name=names"])
    t = Tracker(cfg, tmp_path, "run-n")
    t.log_stage("evaluate", "computed", "k", "r", 1.0, {}, {"gsm8k+math_vanilla_greedy": 0.5})
    t.log_history([(3, {"eval/math (hard)/greedy": 0.25})], stage="evaluate")
    assert t.enabled
    t.finish()
    run = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.stage_runs["evaluate"])
    assert run.data.metrics["gsm8k_math_vanilla_greedy"] == 0.5 and run.data.metrics["eval/math _hard_/greedy"] == 0.25
    assert metric_key("heldout:reachable_saerl_greedy") == "heldout:reachable_saerl_greedy"


def test_a_run_that_loses_the_race_to_create_the_experiment_uses_the_winners(tmp_path, monkeypatch):
    """Runs started side by side (a sweep's children on Dask) can all find the experiment missing; the one whose
    create then fails (it exists by now) must log into it, not turn tracking off for its whole run."""
    cfg = load_config(None, ["name=race"])
    first = Tracker(cfg, tmp_path, "run-a")
    looked: list[str] = []
    real = MlflowClient.get_experiment_by_name

    def stale(self, name):  # the first look happened before the other run created the experiment
        looked.append(name)
        return None if len(looked) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", stale)
    second = Tracker(cfg, tmp_path, "run-b")
    assert looked and second.enabled and second.experiment_id == first.experiment_id
