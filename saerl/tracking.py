"""MLflow tracking: one experiment per config name, a parent run per pipeline run, nested runs per stage.

Tracking never breaks a pipeline: if the tracking store is unreachable, the tracker warns once and turns
itself off; the artifacts on disk are the source of truth and a finished run can be re-logged later.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from saerl.config import PipelineConfig, flatten
from saerl.runs import StageRecord

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("saerl.tracking")
T = TypeVar("T")
PARAM_VALUE_LIMIT = 6000  # MLflow's maximum length of a param value
BATCH_LIMIT = 100  # MLflow's maximum number of params per log_batch call
METRIC_BATCH_LIMIT = 1000  # MLflow's maximum number of metrics per log_batch call
VERSIONED_LIBRARIES = ("torch", "transformers", "trl", "sae-lens", "prefect", "mlflow", "zarr", "polars")
VERSION_TAG = "saerl.version."  # + package name: a parent-run tag holding that library's installed version
NOT_INSTALLED = "not installed"
MS_PER_S = 1000  # MLflow timestamps are epoch milliseconds
TRACKED_FINISHED, TRACKED_FAILED, TRACKED_KILLED = "FINISHED", "FAILED", "KILLED"  # MLflow run statuses
METRIC_NAME_BAD = re.compile(r"[^\w\-. :/]")  # characters MLflow refuses in a metric name
LOGGED_TABLES = {  # small tables a person wants beside the run in MLflow
    "ingest": ("rejected.parquet",),
    "sae": ("sae_report.json",),
    "score": ("property_report.parquet", "clusters.parquet", "scores.parquet"),
    "curriculum": ("order.parquet", "vanilla_order.parquet"),
    "train": ("trained_order.parquet", "log.parquet", "curve.parquet"),
    "evaluate": ("comparison.txt", "comparison.parquet", "summary.parquet", "steps_to_target.parquet"),
}


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: every character outside letters, digits, _ - . space : / becomes '_'
    (a held-out set named 'gsm8k+math' gives 'gsm8k_math_vanilla_greedy'; MLflow would refuse the whole batch,
    and tracking would stop for the rest of the run)."""
    return METRIC_NAME_BAD.sub("_", name)


def now_ms() -> int:
    """The current time as MLflow timestamps it (epoch milliseconds): when a metric is logged."""
    return int(time.time() * MS_PER_S)


def tracking_uri(cfg: PipelineConfig, root: Path) -> str:
    """The configured tracking URI, or a SQLite store under the artifact root."""
    return cfg.tracking.uri or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def artifact_location(cfg: PipelineConfig, root: Path) -> str | None:
    """Where a new experiment keeps its logged files: `<root>/mlruns` for the default SQLite store under the
    artifact root (MLflow would use ./mlruns of whatever folder the first run started in: outside the root,
    lost when it moves); None (the server's choice) for a configured tracking.uri."""
    return None if cfg.tracking.uri else (Path(root).resolve() / "mlruns").as_uri()


def git_commit() -> str:
    """The current git commit of the working directory, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_tags(versions: dict[str, str] | None = None) -> dict[str, str]:
    """Parent-run tags naming the version of each library in VERSIONED_LIBRARIES.
    in: known versions {package: version} (None = ask importlib.metadata for the installed ones);
    out: {'saerl.version.<package>': version or 'not installed'}."""
    out = {}
    for name in VERSIONED_LIBRARIES:
        if versions is not None:
            out[VERSION_TAG + name] = versions.get(name, NOT_INSTALLED)
            continue
        try:
            out[VERSION_TAG + name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[VERSION_TAG + name] = NOT_INSTALLED
    return out


class Tracker:
    """Logs one pipeline run to MLflow through an explicit client (safe across threads).

    `tags` are added to (and override) the parent run's default tags (git commit, library versions);
    `started` (epoch seconds) back-dates the parent run, for a run re-logged after the fact."""

    def __init__(self, cfg: PipelineConfig, root: Path, run_name: str, tags: dict[str, str] | None = None,
                 started: float | None = None) -> None:
        self.enabled = cfg.tracking.enabled
        self.parent_id: str | None = None
        self.uri = tracking_uri(cfg, root)
        self.artifact_location = artifact_location(cfg, root)
        self.stage_runs: dict[str, str] = {}
        if not self.enabled:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.tracking.http_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.tracking.http_timeout_s))
        self._guard(lambda: self._start(cfg, run_name, tags or {}, started))

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

    def _start(self, cfg: PipelineConfig, run_name: str, tags: dict[str, str], started: float | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(cfg.tracking.experiment or cfg.name)
        all_tags = {"saerl.git_commit": git_commit(), **library_tags(), **tags}
        start_ms = int(started * MS_PER_S) if started is not None else None
        run = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=run_name, tags=all_tags)
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, flatten(cfg))

    def _experiment(self, name: str) -> str:
        """The id of the experiment `name`, created when missing. Runs started side by side (a sweep's children on
        Dask) may all find it missing: the one whose create loses reads the winner's, instead of failing and
        turning tracking off for its whole run. in: experiment name; out: experiment id."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.artifact_location)
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)  # created by a concurrent run since we looked
            if exp is None:
                raise
            return exp.experiment_id

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
            now = now_ms()
            ms = [Metric("seconds", float(seconds), now, 0)] + [
                Metric(metric_key(k), float(v), now, 0) for k, v in (metrics or {}).items()]
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
            now = now_ms()
            self.client.log_batch(rid, metrics=[Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()])

        self._guard(do)

    def log_history(self, points: list[tuple[int, dict[str, float]]], stage: str | None = None) -> None:
        """Log many (step, {name: value}) points to the stage's nested run (or the parent), in batches."""

        def do() -> None:
            from mlflow.entities import Metric

            rid = self.stage_runs.get(stage or "", self.parent_id)
            now = now_ms()
            ms = [Metric(metric_key(k), float(v), now, step) for step, values in points for k, v in values.items()]
            for i in range(0, len(ms), METRIC_BATCH_LIMIT):
                self.client.log_batch(rid, metrics=ms[i : i + METRIC_BATCH_LIMIT])

        self._guard(do)

    def finish(self, status: str = TRACKED_FINISHED) -> None:
        """Close the parent run with `status` (FINISHED, FAILED or KILLED)."""
        if self.parent_id:
            self._guard(lambda: self.client.set_terminated(self.parent_id, status=status))


def step_points(steps_log: pl.DataFrame, curve: pl.DataFrame) -> list[tuple[int, dict[str, float]]]:
    """A training run's per-step metric points. in: trl's per-step log (polars frame with a `step` column and
    one numeric column per metric) and the greedy eval curve (step, set, greedy); out: [(step, {name: value})],
    the curve's points named 'eval/<set>/greedy'."""
    points = [(int(row["step"]), {k: v for k, v in row.items()
                                  if k != "step" and isinstance(v, int | float) and v is not None})
              for row in steps_log.iter_rows(named=True)] if "step" in steps_log.columns else []
    points += [(int(row["step"]), {f"eval/{row['set']}/greedy": row["greedy"]})
               for row in curve.iter_rows(named=True)]
    return points


def log_stage_run(tracker: Tracker, stage: str, rec: StageRecord, metrics: dict[str, float] | None) -> None:
    """One nested MLflow run for a stage run: its config slice as params, key/status/reason as tags, its
    summary metrics, its plots and small tables (LOGGED_TABLES); for a training run also trl's per-step
    metrics and the greedy learning curve, at their steps. in: the tracker, the stage (e.g. 'train'), the
    stage run's record (name, key, status, reason, config slice, seconds, artifact path) and its metrics."""
    import polars as pl

    folder = Path(rec.path)
    tracker.log_stage(rec.stage, rec.status, rec.key, rec.reason, rec.seconds, rec.config, metrics)
    for png in sorted(folder.glob("plots/*.png")):
        tracker.log_artifact(png, rec.stage, "plots")
    for table in LOGGED_TABLES.get(stage, ()):
        if (folder / table).exists():
            tracker.log_artifact(folder / table, rec.stage)
    if stage == "train":
        points = step_points(pl.read_parquet(folder / "log.parquet"), pl.read_parquet(folder / "curve.parquet"))
        tracker.log_history(points, stage=rec.stage)
