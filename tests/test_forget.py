"""flows/forget.py: `saerl gc --forget-runs-older-than-days` deletes the Prefect flow runs of the runs it forgets
(through a real Prefect server, the suite's), with the flow runs under them, and leaves the others."""

from __future__ import annotations

import pytest

from saerl.runs import PREFECT_TAGS, RunRecord


def _flow_runs(prefect_api):
    """Two pipeline-like flow runs on the suite's server, the first with a subflow under it, each logging a line:
    {name: flow run id}."""
    from prefect import flow, get_run_logger
    from prefect.context import FlowRunContext

    @flow(name="forget-child")
    def child() -> str:
        get_run_logger().warning("the subflow's line")
        return str(FlowRunContext.get().flow_run.id)

    @flow(name="forget-parent")
    def parent(with_child: bool) -> tuple[str, str | None]:
        get_run_logger().warning("the flow's line")
        return str(FlowRunContext.get().flow_run.id), child() if with_child else None

    (gone, sub), (kept, _) = parent(True), parent(False)
    return {"gone": gone, "sub": sub, "kept": kept}


def _record(run_id: str, flow_run_id: str) -> RunRecord:
    from flows.pipeline import PREFECT_FLOW_RUN_TAG

    return RunRecord(name="demo", run_id=run_id, extra={PREFECT_TAGS: {PREFECT_FLOW_RUN_TAG: flow_run_id}})


@pytest.mark.slow
def test_forgetting_deletes_a_runs_flow_runs_and_logs_and_keeps_the_others(prefect_api, tmp_path):

    from flows.forget import forget_flow_runs

    ids = _flow_runs(prefect_api)
    gone, kept = _record("20260101-000000-aaaaaa", ids["gone"]), _record("20260102-000000-bbbbbb", ids["kept"])
    assert _logged(ids) == {ids["gone"], ids["sub"], ids["kept"]}, "each flow run's line reached the server"
    before = _present(ids)
    assert before == set(ids.values())

    line = forget_flow_runs(tmp_path, [gone], [kept], dry_run=True)
    assert line.startswith("Prefect: would delete the flow runs of 1 runs")
    assert _present(ids) == before, "a dry run deletes nothing"

    line = forget_flow_runs(tmp_path, [gone], [kept], dry_run=False)
    assert "deleted 2 flow runs" in line, line
    left = _present(ids)
    assert ids["gone"] not in left and ids["sub"] not in left, "the run's flow run and the subflow under it go"
    assert ids["kept"] in left and left == before - {ids["gone"], ids["sub"]}, "every other flow run stays"
    assert _logged(ids, wait=False) == {ids["kept"]}, "the deleted flow runs' log lines go too"


def _logged(ids: dict[str, str], wait: bool = True) -> set[str]:
    """The flow runs of `ids` with log lines on the server; with `wait`, after sending the queued lines (Prefect ships
    them in the background: in a busy suite they arrived after the check) and waiting up to LOGS_WAIT_S for all."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.forget import LOGS_WAIT_S
    from flows.server import drain_logs

    if wait:
        drain_logs()
    deadline = time.time() + (LOGS_WAIT_S if wait else 0)
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[UUID(i) for i in ids.values() if i])))
        found = {str(log.flow_run_id) for log in logs}
        if not wait or found == {i for i in ids.values() if i} or time.time() > deadline:
            return found
        time.sleep(0.5)


def test_without_a_server_or_a_prefect_home_prefect_is_skipped_with_a_line(tmp_path, monkeypatch):
    from flows.forget import forget_flow_runs
    from flows.server import API_URL_ENV

    monkeypatch.delenv(API_URL_ENV, raising=False)
    line = forget_flow_runs(tmp_path, [_record("20260101-000000-aaaaaa", "0" * 32)], [], dry_run=False)
    assert line.startswith("Prefect: skipped") and API_URL_ENV in line
    assert forget_flow_runs(tmp_path, [RunRecord(name="demo", run_id="r")], [], dry_run=False) == "", \
        "a run Prefect never saw asks nothing of it"



def test_the_line_says_that_forgotten_runs_events_stay_until_prefects_event_retention(tmp_path, monkeypatch):
    """A forget with --vacuum deleted the runs' flow runs, task runs and logs but left their Prefect events (most of
    what remained of prefect.db), and the line said nothing of them. No Prefect API deletes an event, so they stay
    until Prefect's event retention trims them: the line says so for the runs that ended within it (older ones' went
    when a server of the root started), and for runs on a server elsewhere, whose retention is its own."""
    import time

    from flows.forget import forget_flow_runs
    from flows.server import API_URL_ENV, API_URL_FIELD
    from saerl.runs import ENDED

    monkeypatch.delenv(API_URL_ENV, raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EVENTS_RETENTION_PERIOD", raising=False)
    now = time.time()
    old, recent, remote = (_record(f"2026010{i}-000000-aaaaaa", "0" * 32) for i in (1, 2, 3))
    old.extra[ENDED], recent.extra[ENDED], remote.extra[ENDED] = now - 30 * 86400, now - 86400, now - 30 * 86400
    remote.config = {API_URL_FIELD: "http://prefect.example:4200/api"}
    line = forget_flow_runs(tmp_path, [old], [], dry_run=True)
    assert line == "Prefect: would delete the flow runs of 1 runs (with their task runs and logs)", \
        "a run older than the retention: its events went when a server of the root started"
    line = forget_flow_runs(tmp_path, [old, recent, remote], [], dry_run=True)
    assert "; the events of 1 of the forgotten runs stay in prefect.db (no Prefect API deletes an event) until they " \
        "are older than Prefect's event retention, 7 days (server.events.retention_period" in line, line
    assert "; the events of 1 of the forgotten runs stay on their server" in line, line


@pytest.mark.slow
def test_a_run_that_named_its_prefect_server_is_forgotten_there(prefect_api, tmp_path, monkeypatch):
    """A run whose config named runtime.prefect_api_url had its flow runs on that server, but gc asked only
    PREFECT_API_URL (unset here) or the root's own home (none): "no server holds their flow runs", and they stayed."""

    from flows.forget import forget_flow_runs
    from flows.server import API_URL_ENV, API_URL_FIELD

    ids = _flow_runs(prefect_api)
    gone = _record("20260101-000000-aaaaaa", ids["kept"])
    gone.config = {API_URL_FIELD: prefect_api}
    monkeypatch.delenv(API_URL_ENV, raising=False)
    line = forget_flow_runs(tmp_path, [gone], [], dry_run=False)
    assert line.startswith("Prefect at http") and "deleted 1 flow runs" in line, line
    monkeypatch.setenv(API_URL_ENV, prefect_api)
    left = _present(ids)
    assert ids["kept"] not in left and ids["gone"] in left


def _present(ids: dict[str, str]) -> set[str]:
    """Which of the flow runs `ids` the server still has (read by id: the suite's server holds more flow runs than
    one query returns)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in
                                                                                             ids.values() if i])))
    return {str(r.id) for r in runs}


def test_every_flow_run_reads_past_the_servers_page():
    """run_tree read one query's flow runs: the server returns at most 200, so a sweep's deployment with more
    subflows kept the rest when it was forgotten."""
    from flows.forget import FLOW_RUNS_PAGE, every_flow_run

    rows = list(range(2 * FLOW_RUNS_PAGE + 50))

    class Client:
        def read_flow_runs(self, flow_run_filter=None, limit=None, offset=0):
            return rows[offset:offset + min(limit or FLOW_RUNS_PAGE, FLOW_RUNS_PAGE)]

    assert every_flow_run(Client(), None) == rows
