"""One Prefect task per stage, cached on the stage's artifact key.

The cache key is the artifact key from `saerl.stages.stage_key` (code version + input artifact keys +
the config fields the stage reads), never Prefect's default (which includes the run id) nor
`TASK_SOURCE`. The persisted result is a small reference (stage, key, path, metrics), never arrays, stored as plain JSON
(`RESULT_SERIALIZER`: no pickles, nothing in a result file names code to import).
The flow passes ``refresh_cache=True`` when the stored artifact is missing or corrupt, so a Prefect cache
record can never hand back an artifact that is no longer there, and when the stage run's cache record is not one
`RESULT_SERIALIZER` wrote (:func:`plain_record`): Prefect decodes a record with the serializer the record names,
so a record left by an earlier version (cloudpickle) would otherwise be unpickled; refreshing overwrites it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.serializers import JSONSerializer
from prefect.states import Completed, State

from flows.runlog import send_worker_lines
from saerl.artifacts import CACHE_RECORDS_DIR, ArtifactRef, ArtifactStore
from saerl.config import build_config
from saerl.pipeline import quiet_libraries, run_stage
from saerl.runs import explain
from saerl.tracking import live_metrics

RESULTS_DIR = CACHE_RECORDS_DIR  # result storage of the stage tasks, under the artifact root
# Prefect's default result serializer is cloudpickle (PREFECT_RESULTS_PERSIST_BY_DEFAULT persists every task's
# result): a loaded cache record would unpickle whatever the file holds. Our task results are JSON already; the
# encoder/decoder hooks are off so a record can only decode to plain JSON values, never to a class it names.
RESULT_SERIALIZER = JSONSerializer(object_encoder=None, object_decoder=None)


# Prefect persists a failed task's exception as a result too, through the task's serializer: plain JSON cannot hold
# an exception, so every failed stage logged this beside its real error, reading like a second problem. A stage's
# successful result is always plain JSON, so the message can only be about a failure's exception.
UNWRITTEN_FAILURE = re.compile(r"^Failed to write result: Failed to serialize object of type '\w+' with serializer "
                               r"'json'")


class UnwrittenFailureFilter(logging.Filter):
    """Drops Prefect's warning that a failed stage's exception could not be written as a JSON result
    (UNWRITTEN_FAILURE); the failure itself is logged and raised as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not UNWRITTEN_FAILURE.match(record.getMessage())


def quiet_unwritten_failures() -> None:
    """Install UnwrittenFailureFilter on Prefect's task-run logger, once per process (the flow's, and a Dask
    worker's, which imports this module to run the task)."""
    runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, UnwrittenFailureFilter) for f in runs.filters):
        runs.addFilter(UnwrittenFailureFilter())


quiet_unwritten_failures()


def to_refs(upstream: dict[str, dict[str, str]]) -> dict[str, ArtifactRef]:
    """Upstream references as passed between tasks (plain dicts) back into ArtifactRefs."""
    return {name: ArtifactRef(**ref) for name, ref in upstream.items()}


def artifact_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Prefect cache key of a stage task: '<stage>-<artifact key>'."""
    return f"{parameters['stage']}-{parameters['key']}"


@task(cache_key_fn=artifact_cache_key, persist_result=True, result_serializer=RESULT_SERIALIZER, retries=0)
def stage_task(stage: str, key: str, root: str, config: dict[str, Any], upstream: dict[str, dict[str, str]],
               variant: dict[str, Any] | None = None, lock_held: bool = False,
               live_run: str | None = None) -> dict[str, Any] | State:
    """Build or reuse one stage's artifact (for train and heldout: one {arm, seed} run); returns its reference and
    metrics as a small dict, or, for an artifact reused without a Prefect cache hit (built by another process
    meanwhile, or its cache record gone), that dict in a Completed state whose message is saerl's reason
    (:func:`reused_state`). lock_held: the flow holds the key's build lock for this task (a sharded stage it
    fanned out), so the task builds without taking it. live_run: the id of the stage run's nested MLflow run, made
    as it started computing (saerl.tracking.Tracker.start_stage), which its metric points are sent to as they are
    measured, from whatever process runs the task (saerl.tracking.live_metrics); None: none are. saerl's log lines
    reach the flow run's log from a Dask worker too (flows.runlog.send_worker_lines)."""
    send_worker_lines()
    cfg = build_config(config)
    refs = to_refs(upstream)
    # on a Dask worker too, which the flow's own quieting does not reach
    with quiet_libraries(cfg), live_metrics(cfg, root, live_run):
        res = run_stage(ArtifactStore(root), cfg, stage, refs, key=key, variant=variant, take_lock=not lock_held)
    return reused_state(stage, res.to_json())


def reused_state(stage: str, result: dict[str, Any]) -> dict[str, Any] | State:
    """What a stage task returns: a computed run's result as it is (Prefect: Completed), a reused one's in a
    Completed state whose message says why, as the run's own line does (saerl.runs.explain: 'cached: built by
    another process meanwhile (waited 12 s for it)'): Prefect showed such a run as a build, with no message. Its
    name stays 'Completed', so the flow still tells it from a Prefect cache hit ('Cached'). in: the stage, its
    StageResult.to_json(); out: the result or the state holding it."""
    if result["computed"]:
        return result
    return Completed(data=result, message=explain(stage, False, {}, {}, {}, waited=result.get("waited", 0.0)))


def record_path(root: str | Path, stage: str, key: str) -> Path:
    """Where the Prefect cache record of a stage run lies: result storage / cache key (:func:`artifact_cache_key`)."""
    return Path(root).resolve() / RESULTS_DIR / f"{stage}-{key}"


def plain_record(root: str | Path, stage: str, key: str) -> bool:
    """Whether a cache hit of this stage run could only decode plain JSON: True when it has no cache record, or one
    whose serializer is exactly `RESULT_SERIALIZER`; False for a record that names another serializer (cloudpickle,
    written before results were JSON; JSON with hooks that import what a record names) or that cannot be read.
    in: artifact root, stage, artifact key; out: bool."""
    try:
        serializer = json.loads(record_path(root, stage, key).read_bytes())["metadata"]["serializer"]
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return serializer == RESULT_SERIALIZER.model_dump(mode="json")


def stage_options(stage: str, root: Path, refresh: bool) -> dict[str, Any]:
    """Per-call task options: task name, where results persist, and whether to bypass the cache."""
    return {"name": stage, "task_run_name": stage, "refresh_cache": refresh,
            "result_storage": Path(root).resolve() / RESULTS_DIR}


@task(retries=1, result_serializer=RESULT_SERIALIZER)
def prepare_shards_task(stage: str, key: str, root: str, config: dict[str, Any],
                        upstream: dict[str, dict[str, str]], n_shards: int) -> list[list[int]]:
    """Lay out a sharded stage's store and return its unfinished chunks split into shards."""
    from saerl.pipeline import prepare_shards

    send_worker_lines()
    refs = to_refs(upstream)
    return prepare_shards(ArtifactStore(root), build_config(config), stage, refs, key, n_shards)


@task(retries=1, result_serializer=RESULT_SERIALIZER)
def shard_task(stage: str, key: str, root: str, config: dict[str, Any], upstream: dict[str, dict[str, str]],
               chunk_ids: list[int], token: str | None = None) -> dict[str, Any]:
    """Compute some chunks of a sharded stage (runs on a Dask worker under `runtime.task_runner: dask`), until
    the fan-out `token` names is no longer the build's (saerl.pipeline.shard_wanted).
    No Prefect cache: finished chunks are recorded in the artifact's chunk log, so a retry skips them. Its saerl log
    lines reach the flow run's log (flows.runlog.send_worker_lines)."""
    from saerl.pipeline import run_shard

    send_worker_lines()
    refs = to_refs(upstream)
    cfg = build_config(config)
    with quiet_libraries(cfg):  # a worker of an external cluster inherits nothing from the flow's process
        return run_shard(ArtifactStore(root), cfg, stage, refs, key, chunk_ids, token)
