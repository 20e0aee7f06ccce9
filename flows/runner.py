"""The task runner a config asks for: local threads, or Dask through prefect-dask."""

from __future__ import annotations

from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.task_runners import ThreadPoolTaskRunner

from saerl.config import PipelineConfig

INTERRUPTS = (KeyboardInterrupt, TerminationSignal)  # Ctrl-C; SIGTERM, as Prefect's flow engine raises it


class InterruptibleThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """Prefect's ThreadPoolTaskRunner, except that a flow ended by an interrupt (Ctrl-C, SIGTERM) does not wait for
    the stages running in its threads: Prefect's own exit waits for them, so a Ctrl-C during a half-hour
    extraction returned only when the extraction was done. The stages stop with the process instead; what they
    finished stays (atomic artifacts, resumable chunks), and the same command resumes."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and issubclass(exc_type, INTERRUPTS) and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def task_runner(cfg: PipelineConfig) -> Any:
    """A thread pool of `runtime.workers` threads for `runtime.task_runner: local`
    (:class:`InterruptibleThreadPoolTaskRunner`); a DaskTaskRunner on an existing scheduler
    (`runtime.dask_address`) or a temporary LocalCluster of `runtime.workers` single-thread processes."""
    if cfg.runtime.task_runner == "local":
        return InterruptibleThreadPoolTaskRunner(max_workers=cfg.runtime.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.runtime.dask_address:
        return DaskTaskRunner(address=cfg.runtime.dask_address)
    # dashboard on a free port: the scheduler serves HTTP even so, and two runs at once both took 8787 (a warning)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cfg.runtime.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": ":0"})
