"""The smoke pipeline against a real `mlflow server` (loopback, random port, SQLite backend and proxied
artifacts under tmp), checked through the server's REST API: parent and nested runs, the training run's
per-step reward history, and the plots as artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import requests

from saerl.config import load_config

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
HOST = "127.0.0.1"
START_TIMEOUT_S = 180  # the first start creates the SQLite tables; slow on 2 busy cores
STOP_TIMEOUT_S = 15
POLL_S = 0.5
REQUEST_TIMEOUT_S = 10
API = "/api/2.0/mlflow"


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll GET /health until it answers OK; fail with the server log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=REQUEST_TIMEOUT_S).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(POLL_S)
    pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers: SIGTERM to its process group, SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """A real `mlflow server` on a free loopback port, its SQLite store and artifacts under `folder`, in its own
    process session; returns (process, url, database path) once it answers its health check."""
    from flows.server import free_port

    db, log = folder / "mlflow.db", folder / "server.log"
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(folder / "artifacts")]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
                                env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"))
    url = f"http://{HOST}:{port}"
    try:
        _wait_healthy(url, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, url, db


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback: (base URL, artifacts folder). Always stopped at teardown."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    proc, url, _ = start_mlflow(tmp)
    try:
        yield url, tmp / "artifacts"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def tracked_run(prefect_api, mlflow_server, tmp_path_factory):
    """The smoke pipeline run through the flow, tracked to the server: (run record, server URL, artifacts)."""
    from flows.pipeline import pipeline_flow

    url, artifacts = mlflow_server
    root = tmp_path_factory.mktemp("server-root")
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", f"tracking.uri={url}"])
    return pipeline_flow(config=cfg.model_dump(mode="json")), url, artifacts


def _get(url: str, endpoint: str, **params: str) -> dict:
    r = requests.get(f"{url}{API}/{endpoint}", params=params, timeout=REQUEST_TIMEOUT_S)
    assert r.ok, f"{endpoint}: {r.status_code} {r.text[:500]}"
    return r.json()


def _runs(url: str, experiment_id: str) -> list[dict]:
    """Every run of an experiment, through POST runs/search (paged)."""
    runs, token = [], None
    while True:
        body = {"experiment_ids": [experiment_id], "max_results": 1000} | ({"page_token": token} if token else {})
        r = requests.post(f"{url}{API}/runs/search", json=body, timeout=REQUEST_TIMEOUT_S)
        assert r.ok, r.text[:500]
        page = r.json()
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _files(url: str, run_id: str, path: str = "") -> set[str]:
    listing = _get(url, "artifacts/list", run_id=run_id, **({"path": path} if path else {}))
    return {Path(f["path"]).name for f in listing.get("files", [])}


def test_parent_and_nested_runs_exist(tracked_run):
    record, url, _ = tracked_run
    exp = _get(url, "experiments/get-by-name", experiment_name="smoke")["experiment"]
    runs = _runs(url, exp["experiment_id"])
    parent = next(r for r in runs if r["info"]["run_name"] == record["run_id"])
    assert parent["info"]["status"] == "FINISHED"
    tags = _tags(parent)
    assert tags["saerl.version.torch"] and tags["saerl.version.mlflow"] and "saerl.git_commit" in tags
    children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert {c["info"]["run_name"] for c in children} == set(record["stages"])


def test_training_reward_history_has_one_point_per_step(tracked_run):
    record, url, _ = tracked_run
    exp = _get(url, "experiments/get-by-name", experiment_name="smoke")["experiment"]
    train = next(r for r in _runs(url, exp["experiment_id"]) if r["info"]["run_name"] == "train:saerl:0"
                 and _tags(r).get("saerl.key") == record["stages"]["train:saerl:0"]["key"])
    history = _get(url, "metrics/get-history", run_id=train["info"]["run_id"], metric_key="reward")["metrics"]
    logged = pl.read_parquet(Path(record["stages"]["train:saerl:0"]["path"]) / "log.parquet")["step"].to_list()
    assert sorted(m["step"] for m in history) == logged == [1, 2, 3]


def test_plots_are_artifacts_on_the_server(tracked_run):
    record, url, artifacts = tracked_run
    exp = _get(url, "experiments/get-by-name", experiment_name="smoke")["experiment"]
    runs = {r["info"]["run_name"]: r["info"]["run_id"] for r in _runs(url, exp["experiment_id"])}
    assert {"cluster_map.png", "cluster_top_features.png"} <= _files(url, runs["properties"], "plots")
    assert "accuracy_vs_step.png" in _files(url, runs["evaluate"], "plots")
    assert "train_curves.png" in _files(url, runs["train:vanilla:0"], "plots")
    assert "comparison.parquet" in _files(url, runs["evaluate"])
    assert any(artifacts.rglob("accuracy_vs_step.png")), "the server stored the uploads in its destination"
