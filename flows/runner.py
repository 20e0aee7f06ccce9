"""The task runner a config asks for: local threads, or Dask through prefect-dask."""

from __future__ import annotations

from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.task_runners import ThreadPoolTaskRunner

from saerl.config import PipelineConfig

DASHBOARD_ADDRESS = "127.0.0.1:0"  # a LocalCluster's Dask dashboard: loopback, a free port
# a LocalCluster's security: True is distributed.Security.temporary(), mutual TLS under a throwaway CA held in memory by
# this process and its workers. Plain tcp:// on loopback let any local user's Client run code in the workers (as the
# run's user, with its environment's tokens)
LOCAL_CLUSTER_SECURITY = True
INTERRUPTS = (KeyboardInterrupt, TerminationSignal)  # Ctrl-C; SIGTERM, as Prefect's flow engine raises it


class InterruptibleThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """Prefect's ThreadPoolTaskRunner, except that a flow ended by an interrupt (Ctrl-C, SIGTERM) does not wait for
    the stages running in its threads: Prefect's own exit waits for them, so a Ctrl-C during a half-hour
    extraction returned only when the extraction was done. What the stages finished stays (atomic artifacts,
    resumable chunks), and the same command resumes. The stages' threads end with the process, which ends at once
    only where something ends it: `saerl run` and `saerl ablate` do on the interrupt (flows.cli.stop_on_interrupt), as
    does Prefect's flow engine on a raw SIGTERM (a deployment run whose worker died: flows.pipeline.worker_lost).
    Where the process exits normally instead (a deployment run cancelled through its worker, a flow called from
    Python), the interpreter still waits for a running stage at exit: it may go on to publish its artifact, until
    the worker kills the process (Prefect's grace period, about 30 s)."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and issubclass(exc_type, INTERRUPTS) and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def task_runner(cfg: PipelineConfig) -> Any:
    """A thread pool of `runtime.workers` threads for `runtime.task_runner: local`
    (:class:`InterruptibleThreadPoolTaskRunner`); a DaskTaskRunner on an existing scheduler
    (`runtime.dask_address`) or a temporary LocalCluster of `runtime.workers` single-thread processes, which only
    this run's client and workers can reach (mutual TLS, LOCAL_CLUSTER_SECURITY)."""
    if cfg.runtime.task_runner == "local":
        return InterruptibleThreadPoolTaskRunner(max_workers=cfg.runtime.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.runtime.dask_address:
        return DaskTaskRunner(address=cfg.runtime.dask_address)
    # dashboard on a free port (the scheduler serves HTTP even so, and two runs at once both took 8787, a warning) of
    # loopback only: ":0" listened on every interface, open to the network
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cfg.runtime.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": DASHBOARD_ADDRESS,
                                          "security": LOCAL_CLUSTER_SECURITY})
