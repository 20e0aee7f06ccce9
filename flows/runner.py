"""The task runner a config asks for: local threads, or Dask through prefect-dask."""

from __future__ import annotations

from typing import Any

from saerl.config import PipelineConfig


def task_runner(cfg: PipelineConfig) -> Any:
    """ThreadPoolTaskRunner for `runtime.task_runner: local`; a DaskTaskRunner on an existing scheduler
    (`runtime.dask_address`) or a temporary LocalCluster of `runtime.workers` single-thread processes."""
    if cfg.runtime.task_runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.runtime.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.runtime.dask_address:
        return DaskTaskRunner(address=cfg.runtime.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cfg.runtime.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
