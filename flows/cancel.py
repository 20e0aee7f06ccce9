"""A Cancel in Prefect (the UI's button, `prefect flow-run cancel ID`) of a run saerl runs in its own process.

Prefect 3 cancels a flow run through the worker or runner that started its process: that one sees the run
Cancelling and sends its process SIGTERM, which the flow engine turns into a Cancelled run. A flow run no worker
started (`saerl run`, `saerl ablate`, `saerl demo`, a flow called from Python) has no one to do that: a Cancel did
nothing, the run went on to its end, and Prefect's server marked it Cancelled about 5 minutes later. So the flow's
wait loop (flows.pipeline.as_done) asks Prefect, at most once every CANCEL_POLL_S, for the state of its own flow run
and of the flow runs it runs under (:class:`CancelWatch`: a sweep child's parent sweep, on Dask the flow hosting
the children), and when one of them is Cancelling (or Cancelled) it sets every one of them Cancelled, innermost
first, and raises :class:`FlowRunCancelled`. The pipeline flow records the run as stopped ('<stage run>: cancelled
in Prefect', MLflow KILLED) as for Ctrl-C; the flow engines end Cancelled, proposing no other state; `saerl run`,
`ablate` and `demo` then end at once, as a Ctrl-C does (flows.cli.stop_on_interrupt, exit status 143), and the same
command resumes what the run finished.

A process a worker or runner started for a flow run (PREFECT__FLOW_RUN_ID set: a deployment's run) is not watched:
its worker cancels it already (SIGTERM), and two stops racing would help no one.

One Cancel is said once: on Dask, the flow hosting a sweep's children and every child watch the same flow runs (each
in its own process), and each said it, naming the flow run it found cancelled, which for all but the first was one
the first had set Cancelled (two or three warnings for one Cancel). A watch that finds a run another watch set
Cancelled (its state's message: CANCELLED_RUNS) stops its run as quietly (a debug line), naming the run the user
cancelled, which that message carries. Two watches that ask in the same instant can still both say it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any
from uuid import UUID

from prefect.exceptions import Abort

log = logging.getLogger("saerl.flow")
CANCEL_POLL_S = 3.0  # how often at most a flow's wait loop asks Prefect whether its flow run was cancelled (one request)
CANCELLED = "cancelled in Prefect"  # how a run record's stop says so: 'train:saerl:0: cancelled in Prefect'
CANCEL_CAUSE = "a Cancel in Prefect"  # the CLI's last line: 'saerl: stopped by a Cancel in Prefect: ...'
CANCELLED_MESSAGE = "saerl stopped the run: {why}; its finished stages and chunks are kept, and the same command resumes"
ANCESTOR_DEPTH = 8  # flow runs walked up from a flow run to the top one it runs under (a sweep child on Dask: 2)
WATCHES_KEPT = 64  # flow runs whose watch (:func:`cancel_watch`) one process keeps at once: a sweep's children
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # what a Prefect worker (or runner) tells the process it starts to run
CANCEL_TYPES = ("CANCELLING", "CANCELLED")  # the state types (prefect StateType values) of a flow run cancelled
# the message of the Cancelled state a watch sets on each flow run it stops, after the name of the one found cancelled
CANCELLED_RUNS = " was cancelled in Prefect: saerl stopped its run"


class FlowRunCancelled(Abort):
    """Raised in a flow's wait loop once its flow run, or one it runs under, was cancelled in Prefect, after every
    one of them was set Cancelled (:meth:`CancelWatch.check`). A Prefect `Abort`: Prefect's flow engine proposes no
    state for it (the runs are Cancelled already) and each flow engine it passes through takes its `state`
    (:func:`cancelled_exit`). Like Ctrl-C, it is no error: the pipeline records the run as stopped (CANCELLED), and
    the CLI ends the process at once."""


def cancelled_exit(message: str) -> FlowRunCancelled:
    """The exception that ends the flow runs of this process once they are Cancelled in Prefect (set through its
    API, :func:`cancel_runs`), each as Cancelled. The one place that leans on Prefect's flow engine beyond its public
    API (prefect 3.9, flow_engine.FlowRunEngine.initialize_run): an `Abort` raised in a flow is re-raised without
    proposing a state (a proposal would overwrite Cancelled: Failed is allowed from it, and Crashed, for a
    BaseException, is forced), and an abort's `state` becomes the engine's own (its 'Finished in state Cancelled'
    line). tests/test_cancel.py fails if Prefect changes either. in: the message; out: the exception, to raise."""
    from prefect.states import Cancelled

    err = FlowRunCancelled(message)
    err.state = Cancelled(message=message)  # type: ignore[attr-defined]
    return err


def watched_process() -> bool:
    """Does this process watch its flow runs for a Cancel (:func:`cancel_watch`)? Not when a Prefect worker or
    runner started it to run a flow run (FLOW_RUN_ENV): that one cancels it, by SIGTERM. out: bool."""
    return not os.environ.get(FLOW_RUN_ENV)


class CancelWatch:
    """Watches one flow run, and the flow runs it runs under, for a Cancel in Prefect (:meth:`check`)."""

    def __init__(self, flow_run_id: UUID, parent_task_run_id: UUID | None) -> None:
        """in: the flow run's id, and its parent task run's (a subflow's; None for a top-level run)."""
        self.flow_run_id = flow_run_id
        self.parent_task_run_id = parent_task_run_id
        self.chain: list[UUID] | None = None  # the flow run, then those it runs under, read at the first poll
        self.polled = float("-inf")  # time.monotonic() of the last poll
        self.warned = False  # a poll that failed said so once

    def check(self) -> None:
        """Ask Prefect, unless CANCEL_POLL_S have not passed since the last time, whether the flow run or one it runs
        under is Cancelling or Cancelled; if so set each of them that is not final Cancelled and raise
        :class:`FlowRunCancelled`, with a warning naming the flow run cancelled unless another watch gave it already
        (:meth:`poll`). A Prefect API that does not answer costs a warning (once a watch), never the run.
        Raises FlowRunCancelled."""
        now = time.monotonic()
        if now - self.polled < CANCEL_POLL_S:
            return
        self.polled = now
        try:
            cancelled = self.poll()
        except Exception as err:  # noqa: BLE001 - a Cancel not seen is not worth the run
            if not self.warned:
                self.warned = True
                log.warning("could not read this flow run's state from Prefect (%s: %s): a Cancel in Prefect is not "
                            "seen until it answers (Ctrl-C stops the run)", type(err).__name__, err)
            return
        if cancelled is not None:
            name, said = cancelled
            why = f"flow run {name!r} was cancelled in Prefect"
            log.log(logging.DEBUG if said else logging.WARNING,
                    "%s: stopping the run; the same command resumes what it built", why)
            raise cancelled_exit(CANCELLED_MESSAGE.format(why=why))

    def poll(self) -> tuple[str, bool] | None:
        """One look at the flow runs' states (one request, and at the first poll the walk up to the top flow run);
        on a Cancel, every one not final is set Cancelled. out: None, or the name of the flow run the user cancelled
        (the innermost one found cancelled, or the one its message names where another watch set it Cancelled:
        :func:`stopped_by_watch`) and whether another watch stopped its run for it already (and said so)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with get_client(sync_client=True) as client:
            if self.chain is None:
                self.chain = run_chain(client, self.flow_run_id, self.parent_task_run_id)
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=self.chain)))
            runs = sorted(found, key=lambda r: self.chain.index(r.id))  # type: ignore[union-attr]
            cancelled = next((r for r in runs if r.state is not None and r.state.type.value in CANCEL_TYPES), None)
            if cancelled is None:
                return None
            first = stopped_by_watch(cancelled.state)
            name = cancelled.name if first is None else first
            cancel_runs(client, [r.id for r in runs if r.state is None or not r.state.is_final()],
                        f"{name}{CANCELLED_RUNS}")
            return name, first is not None


def stopped_by_watch(state: Any) -> str | None:
    """The flow run whose Cancel another watch acted on, where `state` is a Cancelled state that watch set (its
    message: '<name>' + CANCELLED_RUNS), else None (a Cancel of the user's, Prefect's own). in: a Prefect state;
    out: the flow run's name or None."""
    message = getattr(state, "message", None) or ""
    if state.type.value != "CANCELLED" or not message.endswith(CANCELLED_RUNS):
        return None
    return message[:-len(CANCELLED_RUNS)]


def run_chain(client: Any, flow_run_id: UUID, parent_task_run_id: UUID | None) -> list[UUID]:
    """The flow run `flow_run_id`, then the flow runs it runs under, innermost first: a subflow's parent task run
    belongs to the flow run that called it, up to ANCESTOR_DEPTH of them. in: a sync Prefect client, the flow run's
    id, its parent task run's id (None: top level); out: flow run ids."""
    chain = [flow_run_id]
    for _ in range(ANCESTOR_DEPTH):
        if parent_task_run_id is None:
            break
        parent = client.read_flow_run(client.read_task_run(parent_task_run_id).flow_run_id)
        chain.append(parent.id)
        parent_task_run_id = parent.parent_task_run_id
    return chain


def cancel_runs(client: Any, flow_run_ids: list[UUID], message: str) -> None:
    """Set each flow run Cancelled, in the order given (innermost first: Prefect's server would otherwise cancel a
    subflow of a Cancelled parent by itself, with its own message). A Cancelling run's proposal of Cancelled is what
    Prefect allows it; a Running one's too. in: a sync Prefect client, the flow run ids, the states' message."""
    from prefect.states import Cancelled

    for flow_run_id in flow_run_ids:
        client.set_flow_run_state(flow_run_id, Cancelled(message=message))


@functools.lru_cache(maxsize=WATCHES_KEPT)
def _watch(flow_run_id: UUID, parent_task_run_id: UUID | None) -> CancelWatch:
    """The one watch of a flow run in this process (its polls are spaced across the flow's waits). in: the flow
    run's id and parent task run's; out: its watch."""
    return CancelWatch(flow_run_id, parent_task_run_id)


def cancel_watch() -> CancelWatch | None:
    """The watch of the flow run this is called in, or None: outside a flow run, or in a process a worker started
    (:func:`watched_process`). out: the watch or None."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or not watched_process():
        return None
    return _watch(run.id, run.parent_task_run_id)
