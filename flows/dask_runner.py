"""The task runner of `runtime.task_runner: dask` on a temporary LocalCluster (flows.runner.task_runner), in a module
of its own: prefect-dask imports distributed (about 0.3 s), which a local run never needs.

Its close says nothing a user needs. distributed logs, only while a cluster closes, lines that read like failures:
- the nanny's 'Worker process still alive after 4.0 seconds, killing' (distributed.nanny, in this process), at every
  close where a worker process takes over 4 s to exit (SpecCluster closes each nanny with its default 5 s timeout, 80%
  of it for the process to end). A worker of saerl's imports some 5,500 modules (torch, transformers, Prefect): the
  interpreter's own teardown of them after the worker closed took 2 s on an idle machine and over 4 s on a loaded one,
  and a worker still running a stage when a run stops (a Cancel, Ctrl-C, a failure) waits for it that long anyway;
- a worker's 'Async instruction for <Task cancelled name="execute(...)"> ended with CancelledError'
  (distributed.worker.state_machine, on the worker's stderr), one per task the closing worker was still running, which
  distributed logs "exclusively in Worker.close()".
Both are dropped, those lines alone and only during the close (:class:`CloseOnlyLine`): this runner's own close in
this process, and a worker's close through :class:`QuietWorkerClose`. What the run says of its own end (its error, a
dead worker's KilledWorker and the scheduler's 'marked as failed because 1 workers died', a Cancel) is untouched.
A killed worker also left a 'resource_tracker: There appear to be N leaked semaphore objects' warning at the run's
exit: tqdm's multiprocessing lock, made at a stage's first progress bar, is a named semaphore in a spawned worker and
was never unlinked. :class:`QuietWorkerClose` gives the workers' bars a thread lock instead (no bar is shared across
processes: each spawned worker made a lock of its own)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

from flows.runner import ClusterStartError, cluster_start_problem
from saerl.terminal import filtered

NANNY_LOGGER = "distributed.nanny"  # where a nanny says it kills a worker process that did not exit in time
NANNY_KILL = ("Worker process still alive after ", " seconds, killing")  # that line's start and end
WORKER_STATE_LOGGER = "distributed.worker.state_machine"  # where a closing worker says it cancelled a running task
TASK_CANCELLED = ("Async instruction for ", "ended with CancelledError")  # that line's start and end
WORKER_CLOSING = ("closing", "closed")  # the names of a distributed Worker's status while and after it closes
QUIET_PLUGIN = "saerl-quiet-worker-close"  # the name of :class:`QuietWorkerClose` on the cluster


class CloseOnlyLine(logging.Filter):
    """A logging filter that drops the records of one line distributed logs only while it closes (its text starts
    with `start` and ends with `end`) while `closing()` is true; every other record passes."""

    def __init__(self, start: str, end: str, closing: Callable[[], bool] = lambda: True) -> None:
        """in: the line's start and end, and what says the close is under way (default: always, for a filter that
        is only attached during the close)."""
        super().__init__()
        self.start, self.end, self.closing = start, end, closing

    def filter(self, record: logging.LogRecord) -> bool:
        """in: a record; out: False for the close-only line during the close, True for everything else."""
        text = record.getMessage()
        return not (text.startswith(self.start) and text.endswith(self.end) and self.closing())


def thread_bar_lock() -> None:
    """Have this process's tqdm bars share a thread lock (tqdm.set_lock), before its first bar makes tqdm's default:
    a thread lock plus a multiprocessing RLock, which in a spawned process (a LocalCluster worker) is a named
    semaphore registered with the run's resource tracker, and leaked when the process is killed. No bar of a worker
    is shared with another process, so the multiprocessing lock kept nothing apart."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


class QuietWorkerClose(WorkerPlugin):
    """On each worker of saerl's LocalCluster (set up when it joins, a restarted one included): its close-only line
    of a task it cancelled (TASK_CANCELLED) is dropped while it closes, and its progress bars share a thread lock
    (:func:`thread_bar_lock`)."""

    idempotent = True  # registered once a cluster

    def setup(self, worker: Any) -> None:
        """in: the distributed Worker it is set up on."""
        def closing() -> bool:
            return getattr(worker.status, "name", "") in WORKER_CLOSING

        logging.getLogger(WORKER_STATE_LOGGER).addFilter(CloseOnlyLine(*TASK_CANCELLED, closing))
        thread_bar_lock()


def forget_closed_servers() -> None:
    """Drop distributed's memo of its servers' handler signatures, `distributed.core._expects_comm`: an unbounded
    functools.cache keyed by bound methods, so it keeps every in-process Scheduler a closed LocalCluster ran (with
    its task history) for the life of the process (distributed 2026.8; a plain LocalCluster loop shows it). The memo
    is private: read with getattr, a rename makes this a no-op; clearing it costs one signature inspection per
    handler on its next call. in/out: nothing."""
    core = sys.modules.get("distributed.core")
    clear = getattr(getattr(core, "_expects_comm", None), "cache_clear", None)
    if clear is not None:
        clear()


class ReleasingDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's DaskTaskRunner that lets go of its client and cluster when it closes. prefect-dask 0.3.7 keeps
    both after its close, and Prefect keeps a finished flow run's context, which names its task runner, so each
    Dask run in a long-lived process (a notebook, a service, a sweep) kept its closed cluster, with a LocalCluster's
    whole in-process Scheduler, about 1.5 MB a small run (session 52). The runner of `runtime.dask_address` as it
    is; :class:`LocalClusterTaskRunner` builds on it."""

    def __exit__(self, *exc_info: Any) -> None:
        """Close the client and the cluster (prefect-dask's close), then drop them and distributed's memo of the
        closed servers (:func:`forget_closed_servers`). in: the block's exception info."""
        try:
            super().__exit__(*exc_info)
        finally:
            self._client = self._cluster = self._connect_to = None
            forget_closed_servers()


class LocalClusterTaskRunner(ReleasingDaskTaskRunner):
    """prefect-dask's DaskTaskRunner on a temporary LocalCluster, whose failed start is a :class:`ClusterStartError`
    (:func:`cluster_start_problem`: one line naming the cause) instead of distributed's RuntimeError, and which the
    pipeline flow starts before its run's record (:meth:`start_cluster`; prefect-dask starts it at the first task
    submitted: a cluster that could not start read as the first stage's failure, 'the same command resumes'). Its
    workers get :class:`QuietWorkerClose`, and its close (client first, then the cluster: prefect-dask's order) drops
    the nanny's close-only line of a worker process it killed (NANNY_KILL), and lets go of both
    (:class:`ReleasingDaskTaskRunner`)."""

    @property
    def client(self) -> Any:
        """prefect-dask's client of the cluster, the cluster started on first use (its workers given
        :class:`QuietWorkerClose`); raises ClusterStartError where the cluster or the client's connection to it does
        not start. out: the PrefectDaskClient."""
        if self._client is not None:
            return self._client
        try:
            client = super().client
            client.register_plugin(QuietWorkerClose(), name=QUIET_PLUGIN)
        except Exception as err:
            raise ClusterStartError(cluster_start_problem(err)) from err
        return client

    def start_cluster(self) -> None:
        """Start the cluster now (its client connected), in the flow run that entered the runner; raises
        ClusterStartError where it does not start."""
        _ = self.client

    def __exit__(self, *exc_info: Any) -> None:
        """Close the client and the cluster, without the nanny's close-only line (NANNY_KILL), and let go of them
        (:class:`ReleasingDaskTaskRunner`). in: the block's exception info, as a context manager's __exit__ gets
        it."""
        with filtered(NANNY_LOGGER, CloseOnlyLine(*NANNY_KILL)):
            super().__exit__(*exc_info)
