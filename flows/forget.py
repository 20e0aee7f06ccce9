"""The Prefect side of `saerl gc --forget-runs-older-than-days`: delete the flow runs of the saerl runs it forgets.

saerl.gc forgets a run's record and MLflow runs; Prefect keeps a flow run per pipeline run (its task runs and log
lines: about 0.5 MB under ROOT/prefect/ each), which only its API deletes. The API is the one `saerl run` would use
(flows.server.prefect_server): PREFECT_API_URL's, where a scheduled deployment's runs are, else a local server
started on the root's Prefect home for the deletion. When none can be reached, Prefect is skipped with a line
saying so; the runs are forgotten anyway (their flow runs then stay in Prefect). Their Prefect events (the flow and
task runs' state changes and heartbeats: most of what a forget leaves of prefect.db) are not deleted: neither
Prefect's API nor its client deletes an event, by flow run or otherwise, and saerl writes no SQL into Prefect's
database. Prefect's own event retention trims them (its db_vacuum service deletes the events older than
server.events.retention_period, 7 days by default, when a server starts and hourly while it runs: a local server of
the root starts with every `saerl run` and with this forget), and the report's line says so (:func:`events_note`).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.server import API_URL_ENV, API_URL_FIELD, PREFECT_DB, prefect_home, prefect_server
from saerl.runs import PREFECT_TAGS, SWEEP, RunRecord, ended_at

log = logging.getLogger("saerl.forget")
PARENT_DEPTH = 4  # flow runs above a pipeline's own, at most: a deployment's entry, an ablation's, its Dask flow
LOGS_WAIT_S = 30.0  # how long the server has to delete a deleted flow run's log lines (it does so in the background)
POLL_S = 0.25
FLOW_RUNS_PAGE = 200  # flow runs one query asks for (the server's default limit): every_flow_run pages on
EVENTS_RETENTION = "server.events.retention_period"  # Prefect's setting: how long a server keeps events
EVENTS_RETENTION_ENV = "PREFECT_SERVER_EVENTS_RETENTION_PERIOD"  # the variable that sets it (ISO 8601: P3D)
SECONDS_PER_DAY = 24 * 3600.0


def forget_flow_runs(root: Path, forgotten: list[RunRecord], kept: list[RunRecord], dry_run: bool) -> str:
    """Delete the Prefect flow runs of saerl runs being forgotten (saerl.gc.PrefectForget): each run's own flow run
    (flows.pipeline.pipeline_flow_runs: its tagged one, or under a deployment those named after its run id), and, unless it is a child of a sweep with runs left, the flow runs above it (a
    deployment's entry flow run, an ablation's) with every flow run under them (:func:`run_tree`); their task
    runs and log lines go with them (the server deletes the logs in the background: waited for, at most
    LOGS_WAIT_S); their events stay, for Prefect's event retention to trim (:func:`events_note`, on the line).
    in: artifact root, the records forgotten and those kept, dry run (nothing is asked of Prefect);
    out: the report's line."""
    tagged = [r for r in forgotten if r.extra.get(PREFECT_TAGS)]
    if not tagged:
        return ""
    if dry_run:
        return (f"Prefect: would delete the flow runs of {len(tagged)} runs (with their task runs and logs)"
                f"{events_note(root, tagged)}")
    by_api: dict[str | None, list[RunRecord]] = {}  # each run's flow runs are on the API it ran with
    for record in tagged:
        by_api.setdefault(record_api(record), []).append(record)
    return "; ".join(_forget_on(root, api, group, kept) for api, group in by_api.items())


def events_retention() -> timedelta:
    """How long a Prefect server keeps events (EVENTS_RETENTION), as this process's Prefect settings read it: the
    root's local server runs with the same environment, so it is that server's; a server elsewhere has its own.
    in: nothing; out: the span."""
    from prefect.settings import get_current_settings

    return get_current_settings().server.events.retention_period


def events_note(root: Path, records: list[RunRecord], now: float | None = None) -> str:
    """The report's words on the Prefect events of runs being forgotten, which no Prefect API deletes (the module's
    docstring): for those that ran on the root's own local server and ended within Prefect's event retention
    (:func:`events_retention`; older ones' events went when a server of the root started, this forget's too) '; the
    events of 3 of them stay in prefect.db ... until they are older than Prefect's event retention, 7 days ...', and
    for those on a server elsewhere (its retention is its own) '; the events of 2 of them stay on their server until
    its event retention ... trims them'; '' when neither. in: root, the records (their end: saerl.runs.ended_at), the
    time now (default the current time); out: the words."""
    now = time.time() if now is None else now
    retention = events_retention()
    elsewhere = [r for r in records if record_api(r) is not None]
    recent = [r for r in records if record_api(r) is None
              and now - (ended_at(root, r) or now) < retention.total_seconds()]
    out = ""
    if recent:
        out += (f"; the events of {len(recent)} of the forgotten runs stay in {PREFECT_DB} (no Prefect API deletes an "
                f"event) until they are older than Prefect's event retention, "
                f"{retention.total_seconds() / SECONDS_PER_DAY:g} days ({EVENTS_RETENTION}, {EVENTS_RETENTION_ENV}), "
                "which a server of the root applies when it starts (with every `saerl run`) and hourly")
    if elsewhere:
        out += (f"; the events of {len(elsewhere)} of the forgotten runs stay on their server (no Prefect API deletes "
                f"an event) until its event retention ({EVENTS_RETENTION}, 7 days by default) trims them")
    return out


def record_api(record: RunRecord) -> str | None:
    """The Prefect API a run's flow runs are on: its config's runtime.prefect_api_url, else this process's
    PREFECT_API_URL (a deployment's worker sets it), else None: the root's own local server, as `saerl run` starts
    one. in: a run record; out: the API's URL or None."""
    return record.config.get(API_URL_FIELD) or os.environ.get(API_URL_ENV) or None


def _forget_on(root: Path, api: str | None, forgotten: list[RunRecord], kept: list[RunRecord]) -> str:
    """:func:`forget_flow_runs` on one API (None: the root's own local server, started for it where the root has a
    Prefect home; skipped with a line where it has none), with :func:`events_note` on their events. in: root, the
    API, the records forgotten there and every record kept; out: the report's line for it."""
    db = prefect_home(root) / PREFECT_DB
    if api is None and not db.exists():
        return (f"Prefect: skipped: no {API_URL_FIELD} nor {API_URL_ENV} names a server and the root has no Prefect "
                f"home ({db}), so no server holds their flow runs")
    from saerl.privacy import redact
    from saerl.status import MB

    local = api is None
    free = _free_bytes(db) if local else 0
    try:
        with prefect_server(Path(root), api_url=api) as url:
            deleted, logs_left = _delete(forgotten, kept)
    except Exception as err:  # noqa: BLE001 - Prefect is best effort here: the line says what was skipped
        return (f"Prefect{'' if local else ' at ' + redact(api)}: skipped, its API could not be reached or failed "
                f"({type(err).__name__}: {redact(str(err))}); the flow runs of these {len(forgotten)} runs stay in "
                "Prefect")
    where = f"(a server on {db.parent})" if local else f"at {redact(url)}"
    freed = f", {max(0, _free_bytes(db) - free) / MB:.2f} MB freed in {db.name} for later runs" if local else ""
    late = (f"; the server had not deleted the log lines of {logs_left} of them after {LOGS_WAIT_S:g} s (it goes "
            "on when it next runs)") if logs_left else ""
    return (f"Prefect {where}: deleted {deleted} flow runs (with their task runs and logs){freed}{late}"
            f"{events_note(root, forgotten)}")


def _free_bytes(db: Path) -> int:
    """The free pages' bytes of the Prefect database (saerl.tracking.sqlite_free_bytes), 0 when it cannot be read
    (the measure is a report's, never worth the deletion). in: the file; out: bytes."""
    import sqlite3

    from saerl.tracking import sqlite_free_bytes

    try:
        return sqlite_free_bytes(db)
    except (OSError, sqlite3.Error):
        return 0


def _delete(forgotten: list[RunRecord], kept: list[RunRecord]) -> tuple[int, int]:
    """:func:`forget_flow_runs`'s deletions, through the API prefect_server set. in: the records forgotten and kept;
    out: (flow runs deleted, those whose log lines were still there after LOGS_WAIT_S)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.pipeline import pipeline_flow_runs

    left_sweeps = {r.extra.get(SWEEP) for r in kept} - {None}
    with get_client(sync_client=True) as client:
        doomed: set[UUID] = set()
        for record in forgotten:
            own = {UUID(str(i)) for i in pipeline_flow_runs(client, record)}
            doomed |= own
            if record.extra.get(SWEEP) not in left_sweeps:  # its sweep (if any) goes whole: so does what ran it
                for flow_run_id in own | tagged_flow_run(record):
                    doomed |= run_tree(client, top_flow_run(client, flow_run_id))
        deleted = []
        for flow_run_id in sorted(doomed, key=str):
            try:
                client.delete_flow_run(flow_run_id)
                deleted.append(flow_run_id)
            except ObjectNotFound:  # gone already (deleted in the UI)
                continue
        return len(deleted), logs_remaining(client, deleted)


def tagged_flow_run(record: RunRecord) -> set[UUID]:
    """The flow run a record's Prefect tags name (flows.pipeline.PREFECT_FLOW_RUN_TAG): the pipeline's own, or under
    a deployment the deployment's flow run, which a sweep's children share. in: a record; out: {its id} or none."""
    from flows.pipeline import PREFECT_FLOW_RUN_TAG

    tag = (record.extra.get(PREFECT_TAGS) or {}).get(PREFECT_FLOW_RUN_TAG)
    return {UUID(str(tag))} if tag else set()


def top_flow_run(client: Any, flow_run_id: UUID) -> UUID | None:
    """The flow run at the top of the ones `flow_run_id` runs under (itself when it is top-level), walking up its
    parent task runs at most PARENT_DEPTH times; None when the server does not know it. in: a sync client, a flow run
    id; out: the top flow run's id."""
    from prefect.exceptions import ObjectNotFound

    try:
        run = client.read_flow_run(flow_run_id)
        for _ in range(PARENT_DEPTH):
            if run.parent_task_run_id is None:
                break
            run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    except ObjectNotFound:
        return None
    return run.id


def run_tree(client: Any, top: UUID | None) -> set[UUID]:
    """A flow run and every flow run under it (subflows, theirs, ...). in: a sync client, a flow run id (None:
    none); out: ids."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    if top is None:
        return set()
    found, todo = {top}, [top]
    while todo:
        parents, todo = todo, []
        children = every_flow_run(client, FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)))
        todo = [c.id for c in children if c.id not in found]
        found |= set(todo)
    return found


def every_flow_run(client: Any, flow_run_filter: Any) -> list[Any]:
    """Every flow run a filter matches, page after page (the server returns at most its default limit, 200, a query:
    a sweep's deployment runs more subflows than that). in: a sync client, a FlowRunFilter; out: FlowRun objects."""
    out: list[Any] = []
    while page := client.read_flow_runs(flow_run_filter=flow_run_filter, limit=FLOW_RUNS_PAGE, offset=len(out)):
        out.extend(page)
        if len(page) < FLOW_RUNS_PAGE:
            break
    return out


def logs_remaining(client: Any, flow_run_ids: list[UUID]) -> int:
    """Wait up to LOGS_WAIT_S for the server to delete the log lines of deleted flow runs (it queues that when a flow
    run is deleted). in: a sync client, the deleted flow runs' ids; out: how many still have lines."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + LOGS_WAIT_S
    left = list(flow_run_ids)
    while left:
        left = [i for i in left if client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[i])),
                                                    limit=1)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    return len(left)
