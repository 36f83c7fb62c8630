"""The Prefect task runner the extraction flow submits its per-shard tasks to.

The same decision and the same in-process cluster as the library's own runner
(:func:`features.runner.runner_kind`, :func:`features.runner.local_cluster_kwargs`): one shard
after the other in the flow's process (``workers=0``), a LocalCluster inside the flow-run process
(one thread per core, one torch thread per shard task), or the existing scheduler at an address.
"""

from __future__ import annotations

from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from features.runner import local_cluster_kwargs, runner_kind


def make_task_runner(dask_address: str | None = None, workers: int | None = None) -> DaskTaskRunner | ThreadPoolTaskRunner:
    """The task runner for ``workers`` / ``dask_address`` as ``ExtractConfig`` defines them.

    An address (``tcp://HOST:PORT``) connects to that scheduler and starts nothing (``workers`` is
    ignored: an existing cluster has the workers it has).
    """
    kind = runner_kind(workers, dask_address)
    if kind == "serial":
        return ThreadPoolTaskRunner(max_workers=1)
    if kind == "remote":
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers))
