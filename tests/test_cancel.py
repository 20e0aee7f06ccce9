"""A Cancel in Prefect (the UI's, `prefect flow-run cancel`) of a run saerl runs in its own process (`saerl run`,
`ablate`, `demo`, a flow called from Python) stops it inside its stage: its record says stopped, MLflow KILLED, and
Prefect ends the flow run Cancelled (flows.cancel). It did nothing: the run went on to its end, and Prefect marked it
Cancelled about 5 minutes later."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from saerl.config import load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
STAGE_HELD_S = 300  # how long the stand-in stage would run if nothing stopped it
STOPPED_WITHIN_S = 60  # how soon after the Cancel the run must have stopped (CANCEL_POLL_S, plus a loaded machine)
FLOW_STATES_S = 30  # how long the server may take to show the final states


def flow_state(flow_run_id) -> str:
    """The name of the flow run's state on the test server. in: its id; out: 'Cancelled', 'Running', ..."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state.name


def state_names(flow_run_id) -> list[str]:
    """Every state the flow run went through, in order. in: its id; out: the names."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return [s.name for s in sorted(states, key=lambda s: s.timestamp)]


def cancel(flow_run_id) -> None:
    """What `prefect flow-run cancel ID` does: propose Cancelling. in: the flow run's id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING))


def test_prefects_flow_engine_ends_cancelled_flow_runs_cancelled_with_no_other_state(prefect_api):
    """The contract flows.cancel.cancelled_exit leans on, beyond Prefect's public API: a flow (and the flow that
    called it) whose runs were set Cancelled, then left by FlowRunCancelled (a Prefect Abort), end Cancelled in
    Prefect and in the engine's own state, with no Failed or Crashed proposed after. If this fails, Prefect's flow
    engine has changed how it ends a flow run on an Abort: see flows/cancel.py."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    from flows.cancel import FlowRunCancelled, cancel_runs, cancelled_exit, run_chain

    seen: dict[str, object] = {}

    @flow(name="cancelled-inner")
    def inner() -> None:
        run = FlowRunContext.get().flow_run
        with get_client(sync_client=True) as client:
            chain = run_chain(client, run.id, run.parent_task_run_id)
            cancel_runs(client, chain, "cancelled by the test")
        seen["chain"] = chain
        raise cancelled_exit("stopped by the test")

    @flow(name="cancelled-outer")
    def outer() -> None:
        inner()

    with pytest.raises(FlowRunCancelled, match="stopped by the test"):
        outer()
    inner_id, outer_id = seen["chain"]
    for flow_run_id in (inner_id, outer_id):
        assert flow_state(flow_run_id) == "Cancelled"
        names = state_names(flow_run_id)
        assert names[-1] == "Cancelled" and not {"Failed", "Crashed"} & set(names), names


def test_a_process_a_worker_started_is_not_watched(monkeypatch):
    """A deployment's flow run (its process started by a Prefect worker or runner, which passes it the flow run's id)
    is cancelled by its worker (SIGTERM): its wait loop does not ask Prefect. A run started in-process is watched."""
    from flows.cancel import FLOW_RUN_ENV, watched_process

    monkeypatch.delenv(FLOW_RUN_ENV, raising=False)
    assert watched_process()
    monkeypatch.setenv(FLOW_RUN_ENV, "1e7c3a51-0000-0000-0000-000000000000")
    assert not watched_process()


class StubPrefect:
    """A stand-in for Prefect's sync client, as flows.cancel.CancelWatch.poll uses it (no server): three flow runs, a
    sweep child ('child'), the sweep ('sweep') and the flow hosting it ('top'), in the states given; it answers
    read_flow_runs out of order, counts those requests and notes each state set. `failing`: every read_flow_runs
    raises it, as a Prefect API that does not answer."""

    def __init__(self, states: dict, failing: Exception | None = None) -> None:
        import uuid
        from types import SimpleNamespace

        self.ids = {name: uuid.uuid4() for name in states}
        self.tasks = {name: uuid.uuid4() for name in ("child", "sweep")}  # the task run each one runs under
        parents = {"child": "sweep", "sweep": "top"}
        self.runs = {name: SimpleNamespace(id=self.ids[name], name=name, state=state,
                                           parent_task_run_id=self.tasks.get(name)) for name, state in states.items()}
        self.task_runs = {self.tasks[n]: SimpleNamespace(flow_run_id=self.ids[parents[n]]) for n in self.tasks}
        self.failing, self.reads, self.set, self.messages = failing, 0, [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def read_task_run(self, task_run_id):
        return self.task_runs[task_run_id]

    def read_flow_run(self, flow_run_id):
        return next(r for r in self.runs.values() if r.id == flow_run_id)

    def read_flow_runs(self, flow_run_filter):
        self.reads += 1
        if self.failing is not None:
            raise self.failing
        return [r for r in reversed(self.runs.values()) if r.id in flow_run_filter.id.any_]

    def set_flow_run_state(self, flow_run_id, state) -> None:
        self.set.append((next(n for n, i in self.ids.items() if i == flow_run_id), state.name))
        self.messages.append(state.message)

    def watch(self, monkeypatch):
        """The watch of 'child' (which runs under the sweep's task run), this stub its Prefect client."""
        import prefect.client.orchestration

        from flows.cancel import CancelWatch

        monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda sync_client: self)
        return CancelWatch(self.ids["child"], self.tasks["child"])


def _stub_states(child: str, sweep: str, top: str) -> dict:
    """{flow run: its Prefect state} from their state types' names ('RUNNING', 'CANCELLING', 'CANCELLED')."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    return {name: State(type=StateType(kind)) for name, kind in (("child", child), ("sweep", sweep), ("top", top))}


@pytest.mark.parametrize(("states", "found", "set_cancelled"), [
    (("RUNNING", "CANCELLING", "RUNNING"), "sweep", ["child", "sweep", "top"]),  # the UI's Cancel: Cancelling
    (("RUNNING", "CANCELLED", "CANCELLING"), "sweep", ["child", "top"]),  # the innermost named; a final one left be
], ids=["cancelling", "cancelled-within-cancelling"])
def test_a_cancel_watch_asks_prefect_every_few_seconds_and_cancels_the_runs_innermost_first(
        states, found, set_cancelled, monkeypatch):
    """A sweep child's wait loop asks Prefect at most once every CANCEL_POLL_S (one request) about its flow run and
    the ones it runs under; once one is Cancelling or Cancelled it sets every one not final Cancelled, innermost
    first (Prefect's server would otherwise cancel the child of a Cancelled sweep by itself), and stops the run
    naming the innermost flow run cancelled. With no Cancel, it goes on."""
    from flows.cancel import CANCEL_POLL_S, FlowRunCancelled

    prefect = StubPrefect(_stub_states("RUNNING", "RUNNING", "RUNNING"))
    watch = prefect.watch(monkeypatch)
    watch.check()
    watch.check()  # at once again: Prefect is not asked
    assert (prefect.reads, prefect.set) == (1, [])
    for name, state in _stub_states(*states).items():  # then a Cancel
        prefect.runs[name].state = state
    watch.polled -= CANCEL_POLL_S  # the next wait, CANCEL_POLL_S later
    with pytest.raises(FlowRunCancelled, match=f"flow run '{found}' was cancelled in Prefect"):
        watch.check()
    assert prefect.reads == 2 and prefect.set == [(name, "Cancelled") for name in set_cancelled]


def test_one_cancel_of_a_dask_sweep_is_said_once_naming_the_flow_run_the_user_cancelled(monkeypatch, caplog):
    """On Dask the flow hosting a sweep's children and each child watch the same flow runs, each in its own process:
    one Cancel of the sweep was said by every watch, the host's naming the sweep, then each child's naming the host's
    flow run, which the first watch had set Cancelled. The first watch to see the Cancel says it and sets the runs
    Cancelled with a message naming the flow run the user cancelled; a watch that finds one so set stops its run
    without a second warning, naming the same flow run."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    from flows.cancel import FlowRunCancelled

    first = StubPrefect(_stub_states("RUNNING", "RUNNING", "CANCELLING"))  # the user's Cancel of the sweep ('top')
    with caplog.at_level("DEBUG", logger="saerl.flow"):
        with pytest.raises(FlowRunCancelled) as err:
            first.watch(monkeypatch).check()
        stops = [str(err.value)]
        later = StubPrefect(_stub_states("RUNNING", "RUNNING", "RUNNING"))  # a second child, in another process
        for name in ("sweep", "top"):  # as the first watch left them
            later.runs[name].state = State(type=StateType.CANCELLED, message=first.messages[0])
        with pytest.raises(FlowRunCancelled) as err:
            later.watch(monkeypatch).check()
        stops.append(str(err.value))
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and said[0].startswith("flow run 'top' was cancelled in Prefect"), said
    assert all("flow run 'top' was cancelled in Prefect" in stop for stop in stops), stops
    assert later.set == [("child", "Cancelled")] and later.messages == first.messages[:1], "named as the first did"


def test_a_prefect_api_that_does_not_answer_costs_the_cancel_watch_one_warning_not_the_run(monkeypatch, caplog):
    """A poll whose request fails (the server restarting, a network hiccup) says once, as a warning, that a Cancel is
    not seen until Prefect answers; the run goes on, and the watch asks again at its next poll."""
    from flows.cancel import CANCEL_POLL_S

    prefect = StubPrefect(_stub_states("RUNNING", "RUNNING", "RUNNING"), failing=ConnectionError("refused"))
    watch = prefect.watch(monkeypatch)
    with caplog.at_level("WARNING", logger="saerl.flow"):
        for _ in range(3):
            watch.check()
            watch.polled -= CANCEL_POLL_S
    assert prefect.reads == 3 and prefect.set == []
    warned = [r.getMessage() for r in caplog.records if "could not read this flow run's state" in r.getMessage()]
    assert len(warned) == 1 and "ConnectionError: refused" in warned[0], caplog.text


class HeldStage:
    """A stand-in for a stage's runner that holds its task until released (or STAGE_HELD_S), after saying which
    flow run it runs in: what a long pretraining or training is to the flow. Released, it builds the stage
    (:meth:`released`: the test waits for that, so no stage thread outlives it)."""

    def __init__(self, build):
        self.build = build
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.flow_run = None

    def __call__(self, *args, **kwargs):
        from prefect.context import FlowRunContext

        self.flow_run = FlowRunContext.get().flow_run
        # the Prefect settings the run talks to its server with (its own local server's, entered in its context),
        # for the test's Cancel: a thread of the test's reads the process's ambient settings, which another test
        # file run before in the same worker may have left without an API (a Cancel then went to no server)
        self.context = contextvars.copy_context()
        self.started.set()
        try:
            self.release.wait(STAGE_HELD_S)
            return self.build(*args, **kwargs)
        finally:
            self.done.set()

    def released(self) -> None:
        """Let the held stage go on, and wait until it has ended (if it ever started)."""
        self.release.set()
        if self.started.is_set():
            self.done.wait(STAGE_HELD_S)


def cancel_when_started(held: HeldStage, pick=lambda run: run.id) -> dict[str, float]:
    """Start a thread that, once `held` runs, cancels the flow run `pick` gives of its flow run (as the Prefect UI or
    `prefect flow-run cancel` does), noting the time. in: the held stage, the pick; out: {'at': the time}, filled in."""
    when: dict[str, float] = {}

    def go() -> None:
        if held.started.wait(STAGE_HELD_S):
            time.sleep(1.0)  # inside the stage
            when["at"] = time.monotonic()
            try:
                held.context.run(lambda: cancel(pick(held.flow_run)))
            except BaseException:
                held.release.set()  # no Cancel was sent: the test fails now, not after STAGE_HELD_S of CI's time
                raise

    threading.Thread(target=go, daemon=True).start()
    return when


@pytest.mark.slow
def test_a_cancel_in_prefect_stops_an_in_process_run_inside_its_stage(prefect_api, tmp_path, monkeypatch):
    """Cancel in the Prefect UI on a run called in-process did nothing: it went on to its end, and Prefect marked the
    flow run Cancelled about 5 minutes later. Now its wait loop sees the Cancel and stops the run inside the stage it
    is in: the record says stopped (by a Cancel in Prefect) at that stage, MLflow's parent run KILLED, and the flow
    run ends Cancelled (not Crashed or Failed)."""
    from mlflow.tracking import MlflowClient

    from flows.cancel import CANCELLED, FlowRunCancelled
    from flows.pipeline import pipeline_flow, run_pipeline_flow
    from flows.runner import task_runner
    from saerl import pipeline
    from saerl.runs import FAILED, STOPPED, load_run
    from saerl.status import outcome

    held = HeldStage(pipeline.RUNNERS["testbed"])
    monkeypatch.setitem(pipeline.RUNNERS, "testbed", held)
    root = tmp_path / "root"
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}"])
    when = cancel_when_started(held)
    try:
        with pytest.raises(FlowRunCancelled):  # as `saerl run` calls it (flows.cli.run_pipeline)
            run_pipeline_flow(pipeline_flow.with_options(task_runner=task_runner(cfg)), cfg.model_dump(mode="json"))
        stopped_after = time.monotonic() - when["at"]
    finally:
        held.released()
    assert stopped_after < STOPPED_WITHIN_S, f"stopped {stopped_after:.0f} s after the Cancel"
    record = load_run(root, "latest")
    assert record.extra[STOPPED] == f"testbed: {CANCELLED}" and FAILED not in record.extra
    assert outcome(root, record) == ("stopped", "testbed") and not record.stages
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id])
                 if r.info.run_name == record.run_id]
    assert parent.info.status == "KILLED"
    assert flow_state(held.flow_run.id) == "Cancelled"
    assert not {"Failed", "Crashed"} & set(state_names(held.flow_run.id))


@pytest.mark.slow
@pytest.mark.parametrize("cancelled", ["sweep", "setting"])
def test_a_cancel_of_a_sweep_or_of_one_setting_stops_the_sweep(prefect_api, tmp_path, monkeypatch, cancelled):
    """Cancel on an in-process sweep (`saerl ablate`), of its own flow run or of the setting's subflow run running,
    stops the sweep inside that setting's stage: no further setting runs, the setting's record says stopped, and both
    flow runs end Cancelled."""
    from prefect.client.orchestration import get_client

    from flows.cancel import CANCELLED, FlowRunCancelled, run_chain
    from flows.sweep import ablation_flow
    from saerl import pipeline
    from saerl.runs import STOPPED, list_runs, read_run

    held = HeldStage(pipeline.RUNNERS["testbed"])
    monkeypatch.setitem(pipeline.RUNNERS, "testbed", held)
    root = tmp_path / "root"
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", "tracking.enabled=false"])

    def chain(run):
        with get_client(sync_client=True) as client:
            return run_chain(client, run.id, run.parent_task_run_id)

    when = cancel_when_started(held, lambda run: chain(run)[0 if cancelled == "setting" else 1])
    try:
        with pytest.raises(FlowRunCancelled):
            ablation_flow(config=cfg.model_dump(mode="json"), grid={"testbed.pretrain_steps": [10, 20]},
                          until="testbed")
        stopped_after = time.monotonic() - when["at"]
    finally:
        held.released()
    assert stopped_after < STOPPED_WITHIN_S, f"stopped {stopped_after:.0f} s after the Cancel"
    (path,) = list_runs(root)  # the second setting never started
    record = read_run(path)
    assert record.extra[STOPPED] == f"testbed: {CANCELLED}" and record.extra["setting"] == "pretrain_steps=10"
    child, sweep = chain(held.flow_run)
    assert (flow_state(child), flow_state(sweep)) == ("Cancelled", "Cancelled")


def terminal_signals() -> None:
    """A child's Ctrl-C and SIGHUP at their defaults, whatever the test process inherited (tests/test_cli.py)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.slow
def test_saerl_run_ends_at_once_on_a_cancel_in_prefect(prefect_api, tmp_path):
    """`saerl run` on the server the test watches, cancelled in Prefect while its testbed pretrains (made long here):
    it ends there, at once (exit status 143, as SIGTERM's, saying what is kept), the stage unfinished, its record
    stopped by the Cancel, the flow run Cancelled. It ran on to its end."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.cancel import CANCEL_CAUSE, CANCELLED
    from saerl.runs import STOPPED, list_runs, read_run

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PREFECT_API_URL", None)
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "flows.cli", "run", str(SMOKE), f"runtime.artifact_root={root}",
           f"runtime.prefect_api_url={prefect_api}", "testbed.pretrain_steps=100000", "tracking.enabled=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=terminal_signals)
    try:
        deadline = time.monotonic() + STAGE_HELD_S
        while not list((root / "testbed").glob(".partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before its testbed stage started"
        (path,) = list_runs(root)
        with get_client(sync_client=True) as client:
            (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[path.stem])))
        time.sleep(1.0)  # inside the pretraining
        cancelled_at = time.monotonic()
        cancel(flow_run.id)
        _, err = proc.communicate(timeout=STOPPED_WITHIN_S)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert stopped_after < STOPPED_WITHIN_S
    assert f"stopped by {CANCEL_CAUSE}" in err and "run the same command again to resume" in err
    assert "Crash detected" not in err and " ERROR " not in err, err[-3000:]
    assert not [p for p in (root / "testbed").iterdir() if not p.name.startswith(".")], "the stage was not finished"
    assert read_run(path).extra[STOPPED] == f"testbed: {CANCELLED}"
    assert flow_state(flow_run.id) == "Cancelled"


def test_a_cancel_leaving_a_dask_sweep_child_ends_its_task_run_cancelled(prefect_api, monkeypatch, capfd):
    """A Cancel of a Dask `saerl ablate` left the sweep child's task ('shared upstream') through
    distributed.worker_client, whose rejoin into the worker's thread pool, shut down by the closing cluster, raised
    'RuntimeError: cannot schedule new futures after shutdown': two tracebacks on stderr, and the task run Failed.
    The Cancel leaves the task as itself, no RuntimeError printed, and the task run ends Cancelled (the engine's
    last line says so, not 'Finished in state Running')."""
    import contextlib
    from types import SimpleNamespace

    import distributed
    from prefect.client.orchestration import get_client
    from prefect.context import TaskRunContext
    from prefect.exceptions import ObjectNotFound

    import flows.sweep as sweep
    from flows.cancel import FlowRunCancelled, cancelled_exit

    @contextlib.contextmanager
    def worker_client():  # the pool of a worker whose cluster is closing: the rejoin after the subflow fails
        yield SimpleNamespace(scheduler=SimpleNamespace(address="tcp://127.0.0.1:1"), security=None)

    @contextlib.contextmanager
    def closed_pool():
        try:
            with worker_client() as client:
                yield client
        finally:
            raise RuntimeError("cannot schedule new futures after shutdown")

    seen: dict[str, object] = {}

    def subflow(**_) -> None:  # cancelled once the server knows the task run is Running (a subflow runs a while)
        seen["task_run"] = TaskRunContext.get().task_run.id
        deadline = time.time() + FLOW_STATES_S
        with get_client(sync_client=True) as client:
            while time.time() < deadline:
                with contextlib.suppress(ObjectNotFound):
                    state = client.read_task_run(seen["task_run"]).state  # None until the server records one
                    if state is not None and state.is_running():
                        break
                time.sleep(0.2)
        raise cancelled_exit("stopped by the test")

    monkeypatch.setattr(distributed, "worker_client", closed_pool)
    monkeypatch.setattr(sweep, "pipeline_flow", SimpleNamespace(with_options=lambda **_: subflow))
    with pytest.raises(FlowRunCancelled, match="stopped by the test"):
        sweep.child_task.with_options(task_run_name="shared upstream")(config={}, until=None, name="child")
    deadline = time.time() + FLOW_STATES_S
    with get_client(sync_client=True) as client:
        while (state := client.read_task_run(seen["task_run"]).state).name != "Cancelled" and time.time() < deadline:
            time.sleep(0.5)
    assert state.name == "Cancelled" and "stopped by the test" in state.message, state
    err = capfd.readouterr().err
    assert "RuntimeError" not in err and "Finished in state Running" not in err, err


def test_task_run_marks_prefect_cannot_take_cost_a_warning_naming_them_not_the_run(monkeypatch):
    """The Crashed marks of lost Dask task runs (flows.pipeline.crash_lost_runs) and a Dask sweep child's Cancelled
    (flows.sweep.end_cancelled) are set by one best-effort helper (flows.pipeline.set_task_run_states): a Prefect API
    that does not answer costs each one warning saying what it could not mark, never the run's own error or stop."""
    import logging
    import uuid
    from types import SimpleNamespace

    import prefect.client.orchestration
    from prefect.context import TaskRunContext

    import flows.pipeline as pipeline
    import flows.sweep as sweep
    from flows.cancel import cancelled_exit

    class Unreachable:
        """A Prefect client whose server does not answer."""

        def __enter__(self):
            raise ConnectionError("refused")

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda sync_client: Unreachable())
    child = SimpleNamespace(id=uuid.uuid4(), name="shared upstream", state=None)
    monkeypatch.setattr(TaskRunContext, "get", lambda: SimpleNamespace(task_run=child))
    lost = SimpleNamespace(task_run_id=uuid.uuid4(), wrapped_future=SimpleNamespace(status=pipeline.DASK_ERROR))
    said: list[logging.LogRecord] = []  # saerl.flow's records (caplog's handler: gone where Prefect's first import
    handler = logging.Handler(logging.WARNING)  # here set logging up anew)
    handler.emit = said.append
    logger = logging.getLogger("saerl.flow")
    logger.addHandler(handler)
    try:
        assert pipeline.crash_lost_runs([lost]) == 0
        sweep.end_cancelled(cancelled_exit("stopped by the test"))
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in said] == [
        "could not mark the task runs of dead Dask workers as crashed in Prefect (refused)",
        "could not mark task run 'shared upstream' as cancelled in Prefect (refused)"]
    assert child.state.name == "Cancelled" and child.state.message == "stopped by the test"
