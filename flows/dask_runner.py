"""The task runner of `runtime.task_runner: dask` on a temporary LocalCluster (flows.runner.task_runner), in a module
of its own: prefect-dask imports distributed (about 0.3 s), which a local run never needs."""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from flows.runner import ClusterStartError, cluster_start_problem


class LocalClusterTaskRunner(DaskTaskRunner):
    """prefect-dask's DaskTaskRunner on a temporary LocalCluster, whose failed start is a :class:`ClusterStartError`
    (:func:`cluster_start_problem`: one line naming the cause) instead of distributed's RuntimeError, and which the
    pipeline flow starts before its run's record (:meth:`start_cluster`; prefect-dask starts it at the first task
    submitted: a cluster that could not start read as the first stage's failure, 'the same command resumes')."""

    @property
    def client(self) -> Any:
        """prefect-dask's client of the cluster, the cluster started on first use; raises ClusterStartError where
        the cluster or the client's connection to it does not start. out: the PrefectDaskClient."""
        if self._client is not None:
            return self._client
        try:
            return super().client
        except Exception as err:
            raise ClusterStartError(cluster_start_problem(err)) from err

    def start_cluster(self) -> None:
        """Start the cluster now (its client connected), in the flow run that entered the runner; raises
        ClusterStartError where it does not start."""
        _ = self.client
