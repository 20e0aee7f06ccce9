"""The task runner a config asks for: local threads, or Dask through prefect-dask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.task_runners import ThreadPoolTaskRunner

from flows.cancel import FlowRunCancelled
from saerl.config import PipelineConfig

DASHBOARD_ADDRESS = "127.0.0.1:0"  # a LocalCluster's Dask dashboard: loopback, a free port
# a LocalCluster's security: True is distributed.Security.temporary(), mutual TLS under a throwaway CA held in memory by
# this process and its workers. Plain tcp:// on loopback let any local user's Client run code in the workers (as the
# run's user, with its environment's tokens)
LOCAL_CLUSTER_SECURITY = True
INTERRUPTS = (KeyboardInterrupt, TerminationSignal, FlowRunCancelled)  # Ctrl-C; SIGTERM, as Prefect's flow engine
# raises it; a Cancel of the flow run in Prefect, as the flow's wait loop raises it (flows.cancel)
DASK_TEMPORARY_ENV = "DASK_TEMPORARY_DIRECTORY"  # the variable of Dask's temporary-directory setting
DASK_TEMPORARY_KEY = "temporary-directory"  # Dask's setting: where a LocalCluster's scheduler and workers keep scratch


class ClusterStartError(OSError):
    """The local Dask cluster of `runtime.task_runner: dask` did not start (its scratch folder cannot be made, no
    port, no memory): an environment problem, met before any stage ran (:func:`start_cluster`), so the CLI prints it
    as one line with exit status 2 (flows.cli.failed), not as a stage's failure that the same command resumes."""


class InterruptibleThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """Prefect's ThreadPoolTaskRunner, except that a flow ended by an interrupt (Ctrl-C, SIGTERM, a Cancel in Prefect
    of a run no worker started: flows.cancel) does not wait for the stages running in its threads: Prefect's own exit
    waits for them, so a Ctrl-C during a half-hour extraction returned only when the extraction was done. What the
    stages finished stays (atomic artifacts, resumable chunks), and the same command resumes. The stages' threads end
    with the process, which ends at once only where something ends it: `saerl run` and `saerl ablate` do on the
    interrupt or the Cancel (flows.cli.stop_on_interrupt), as does Prefect's flow engine on a raw SIGTERM (a
    deployment run whose worker died: flows.pipeline.worker_lost). Where the process exits normally instead (a
    deployment run cancelled through its worker, a flow called from Python), the interpreter still waits for a
    running stage at exit: it may go on to publish its artifact, until the worker kills the process (Prefect's grace
    period, about 30 s)."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and issubclass(exc_type, INTERRUPTS) and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def _root_cause(err: BaseException) -> BaseException:
    """The error `err` was raised from or during, deepest first (distributed's RuntimeError 'Cluster failed to start'
    wraps the OSError that says why): the last of flows.cli.error_chain. in: an error; out: the deepest of its chain."""
    from flows.cli import error_chain

    *_, deepest = error_chain(err)
    return deepest


def _same_or_nested(a: Path, b: Path) -> bool:
    """Is `a` the folder `b`, inside it, or one of the folders it lies in? in: two absolute paths; out: bool."""
    return a == b or a in b.parents or b in a.parents


def temporary_directory_source(cause: BaseException) -> str | None:
    """Where the scratch folder a failed cluster start names comes from: 'DASK_TEMPORARY_DIRECTORY=...' when the
    variable is set, else Dask's temporary-directory setting (a Dask config file's), when `cause` is an OSError about
    that folder or a folder on its path; None otherwise (another cause, or the setting unset). in: the root cause;
    out: text or None."""
    import dask.config

    setting = dask.config.get(DASK_TEMPORARY_KEY, None)
    named = getattr(cause, "filename", None)
    if not setting or not isinstance(cause, OSError) or not named:
        return None
    if not _same_or_nested(Path(os.path.abspath(os.fspath(named))), Path(os.path.abspath(str(setting)))):
        return None
    if os.environ.get(DASK_TEMPORARY_ENV):
        return f"{DASK_TEMPORARY_ENV}={os.environ[DASK_TEMPORARY_ENV]}"
    return f"Dask's {DASK_TEMPORARY_KEY} setting ({setting}, from a Dask config file)"


def cluster_start_problem(err: BaseException) -> str:
    """Why the local Dask cluster did not start, in one line: the root cause (its type and message), the variable or
    setting of the scratch folder where that is it (:func:`temporary_directory_source`), and the fix. in: the error
    the cluster's start raised; out: the message."""
    cause = _root_cause(err)
    said = (f"the local Dask cluster (runtime.task_runner=dask) did not start: {type(cause).__name__}: {cause}. "
            "Nothing ran.")
    source = temporary_directory_source(cause)
    if source:
        return (f"{said} That folder comes from {source}, where Dask keeps its scratch space: point it at a folder "
                "this user can create and write, or unset it, and run the same command again")
    return f"{said} Fix the cause and run the same command again, or set runtime.task_runner=local"


def start_cluster() -> None:
    """Start the local Dask cluster of the flow run this is called in, if its task runner has one
    (flows.dask_runner.LocalClusterTaskRunner.start_cluster), so one that cannot start fails the run before its
    first stage and its record (ClusterStartError, exit status 2); no-op for any other runner or outside a flow run.
    in/out: nothing."""
    from prefect.context import FlowRunContext

    start = getattr(getattr(FlowRunContext.get(), "task_runner", None), "start_cluster", None)
    if start is not None:
        start()


def task_runner(cfg: PipelineConfig) -> Any:
    """A thread pool of `runtime.workers` threads for `runtime.task_runner: local`
    (:class:`InterruptibleThreadPoolTaskRunner`); a DaskTaskRunner on an existing scheduler
    (`runtime.dask_address`) or a temporary LocalCluster of `runtime.workers` single-thread processes, which only
    this run's client and workers can reach (mutual TLS, LOCAL_CLUSTER_SECURITY), whose failed start is one line
    (flows.dask_runner.LocalClusterTaskRunner; :func:`start_cluster`)."""
    if cfg.runtime.task_runner == "local":
        return InterruptibleThreadPoolTaskRunner(max_workers=cfg.runtime.workers)
    # imported here: prefect-dask imports distributed (about 0.3 s), which a local run needs not
    from flows.dask_runner import LocalClusterTaskRunner, ReleasingDaskTaskRunner

    if cfg.runtime.dask_address:
        return ReleasingDaskTaskRunner(address=cfg.runtime.dask_address)
    # dashboard on a free port (the scheduler serves HTTP even so, and two runs at once both took 8787, a warning) of
    # loopback only: ":0" listened on every interface, open to the network
    return LocalClusterTaskRunner(cluster_class="distributed.LocalCluster",
                                  cluster_kwargs={"n_workers": cfg.runtime.workers, "threads_per_worker": 1,
                                                  "processes": True, "dashboard_address": DASHBOARD_ADDRESS,
                                                  "security": LOCAL_CLUSTER_SECURITY})
