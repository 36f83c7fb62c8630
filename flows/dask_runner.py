"""The Dask task runner the extraction flow submits its per-shard tasks to.

By default a ``distributed.LocalCluster`` sized to the machine: one process per worker with one
thread each (CPU-bound torch work releases the GIL only partly, and processes keep torch's own
thread pools from oversubscribing the cores); each worker's torch/OpenMP thread count is the
cores divided by the workers. Given an address, the runner connects to that existing scheduler
instead and starts nothing.
"""

from __future__ import annotations

import logging
import os

import dask
from distributed import LocalCluster
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from features.extract import worker_settings

logger = logging.getLogger(__name__)


def machine_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def local_cluster_kwargs(workers: int | None = None) -> dict:
    """``LocalCluster`` keyword arguments for ``workers`` processes (default: one per core).

    Each worker has one Dask thread; ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in the worker
    environment give torch ``cores // workers`` threads so that workers never fight for cores.
    The dashboard binds a free port so that several clusters can run side by side.
    """
    cores = machine_cores()
    n = workers if workers and workers > 0 else cores
    threads = str(max(1, cores // n))
    return {
        "n_workers": n,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
        "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
    }


def non_daemonic_local_cluster(**kwargs) -> LocalCluster:
    """A ``LocalCluster`` set up for extraction (:func:`features.extract.worker_settings`).

    Its worker processes are not daemonic (a daemonic process may not start children, and the
    decoder runs in one) and do not get Dask's ``MALLOC_TRIM_THRESHOLD_`` (it made the CNN ~2.7x
    slower). Workers you start yourself: ``dask worker --no-nanny``, or
    ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` under a nanny.
    """
    with dask.config.set(worker_settings()):
        return LocalCluster(**kwargs)


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
    return DaskTaskRunner(cluster_class=non_daemonic_local_cluster, cluster_kwargs=local_cluster_kwargs(workers))
