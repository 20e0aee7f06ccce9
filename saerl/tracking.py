"""MLflow tracking: one experiment per config name, a parent run per pipeline run, nested runs per stage.

Tracking never breaks a pipeline: if the tracking store is unreachable, the tracker warns once and turns
itself off; the artifacts on disk are the source of truth and a finished run can be re-logged later.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from saerl.config import PipelineConfig, flatten

log = logging.getLogger("saerl.tracking")
T = TypeVar("T")
PARAM_VALUE_LIMIT = 6000  # MLflow's maximum length of a param value
BATCH_LIMIT = 100  # MLflow's maximum number of params per log_batch call
METRIC_BATCH_LIMIT = 1000  # MLflow's maximum number of metrics per log_batch call


def tracking_uri(cfg: PipelineConfig, root: Path) -> str:
    """The configured tracking URI, or a SQLite store under the artifact root."""
    return cfg.tracking.uri or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def git_commit() -> str:
    """The current git commit of the working directory, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Logs one pipeline run to MLflow through an explicit client (safe across threads)."""

    def __init__(self, cfg: PipelineConfig, root: Path, run_name: str) -> None:
        self.enabled = cfg.tracking.enabled
        self.parent_id: str | None = None
        self.uri = tracking_uri(cfg, root)
        self.stage_runs: dict[str, str] = {}
        if not self.enabled:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.tracking.http_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.tracking.http_timeout_s))
        self._guard(lambda: self._start(cfg, run_name))

    def _guard(self, fn: Callable[[], T]) -> T | None:
        """Run a tracking call; on failure warn once and disable tracking."""
        if not self.enabled:
            return None
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any tracking failure must not stop the pipeline
            log.warning("MLflow tracking at %s failed (%s); continuing without tracking", self.uri, err)
            self.enabled = False
            return None

    def _start(self, cfg: PipelineConfig, run_name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        name = cfg.tracking.experiment or cfg.name
        exp = self.client.get_experiment_by_name(name)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(name)
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"saerl.git_commit": git_commit()})
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, flatten(cfg))

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_VALUE_LIMIT]) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(run_id, params=items[i : i + BATCH_LIMIT])

    def log_stage(self, stage: str, status: str, key: str, reason: str, seconds: float,
                  params: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
        """One nested run per stage: its config slice as params, key/status/reason as tags."""

        def do() -> None:
            from mlflow.entities import Metric, RunTag

            run = self.client.create_run(
                self.experiment_id, run_name=stage, tags={"mlflow.parentRunId": self.parent_id})
            rid = run.info.run_id
            self.stage_runs[stage] = rid
            self._log_params(rid, params)
            tags = [RunTag("saerl.stage", stage), RunTag("saerl.key", key), RunTag("saerl.status", status),
                    RunTag("saerl.reason", reason[:PARAM_VALUE_LIMIT])]
            ms = [Metric("seconds", float(seconds), 0, 0)] + [
                Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()]
            self.client.log_batch(rid, metrics=ms, tags=tags)
            self.client.log_batch(self.parent_id, tags=[RunTag(f"stage.{stage}", f"{status}:{key}")])
            self.client.set_terminated(rid)

        self._guard(do)

    def log_artifact(self, path: Path, stage: str | None = None, folder: str | None = None) -> None:
        """Attach a file to the stage's nested run (or the parent run), under `folder` in its artifacts."""
        self._guard(lambda: self.client.log_artifact(
            self.stage_runs.get(stage or "", self.parent_id), str(path), folder))

    def log_metrics(self, metrics: dict[str, float], step: int = 0, stage: str | None = None) -> None:
        """Log metrics at a step to the stage's nested run (or the parent run)."""

        def do() -> None:
            from mlflow.entities import Metric

            rid = self.stage_runs.get(stage or "", self.parent_id)
            self.client.log_batch(rid, metrics=[Metric(k, float(v), 0, step) for k, v in metrics.items()])

        self._guard(do)

    def log_history(self, points: list[tuple[int, dict[str, float]]], stage: str | None = None) -> None:
        """Log many (step, {name: value}) points to the stage's nested run (or the parent), in batches."""

        def do() -> None:
            from mlflow.entities import Metric

            rid = self.stage_runs.get(stage or "", self.parent_id)
            ms = [Metric(k, float(v), 0, step) for step, values in points for k, v in values.items()]
            for i in range(0, len(ms), METRIC_BATCH_LIMIT):
                self.client.log_batch(rid, metrics=ms[i : i + METRIC_BATCH_LIMIT])

        self._guard(do)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run."""
        if self.parent_id:
            self._guard(lambda: self.client.set_terminated(self.parent_id, status=status))
