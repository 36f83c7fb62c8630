"""The Dask task runner the extraction flow submits its per-shard tasks to.

By default a ``distributed.LocalCluster`` inside the flow-run process, sized to the machine the way
the library sizes its own (:func:`features.extract.local_cluster_kwargs`: one thread per core, one
torch thread per shard task). Given an address, the runner connects to that existing scheduler
instead and starts nothing.
"""

from __future__ import annotations

import logging

from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from features.extract import local_cluster_kwargs

logger = logging.getLogger(__name__)


def make_task_runner(dask_address: str | None = None, workers: int | None = None) -> DaskTaskRunner | ThreadPoolTaskRunner:
    """A ``DaskTaskRunner`` for an existing scheduler (``tcp://HOST:PORT``) or a new LocalCluster.

    ``workers`` sizes the LocalCluster and is ignored (with a log line) when an address is given:
    an existing cluster has the workers it has. ``workers=0`` runs the shard tasks one at a time
    in the flow's own process, without Dask (debugging, tiny datasets).
    """
    if workers == 0 and not dask_address:
        return ThreadPoolTaskRunner(max_workers=1)
    if dask_address:
        if workers:
            logger.info("workers=%s ignored: using the existing Dask scheduler at %s", workers, dask_address)
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers))
