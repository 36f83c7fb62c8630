"""How shard tasks run: in this thread, on an in-process LocalCluster, or on an existing Dask scheduler.

:func:`runner_kind` is the one decision (used by the library's :func:`run_shards` and by the
Prefect flow's task runner, ``flows/dask_runner.py``), and :func:`local_cluster_kwargs` the one
definition of the in-process cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any, Literal

from features.compute_kind import ComputeKindMismatch
from features.plan import ExtractConfig, StorePlan
from features.shard_engine import ShardResult, close_decoder, extract_shard
from features.shard_task import run_shard

__all__ = ["RunnerKind", "runner_kind", "machine_cores", "local_cluster_kwargs", "LOCAL_CLUSTER_CONFIG",
           "local_cluster_config", "dask_client", "run_shards", "ShardTaskError"]

log = logging.getLogger(__name__)

#: ``serial``: one shard after the other in the calling thread, no Dask; ``local``: an in-process
#: LocalCluster (:func:`local_cluster_kwargs`); ``remote``: the scheduler at ``dask_address``.
RunnerKind = Literal["serial", "local", "remote"]


def runner_kind(workers: int | None, dask_address: str | None) -> RunnerKind:
    """Where the shard tasks of a configuration run; ``workers`` is ignored (logged) with an address."""
    if dask_address:
        if workers:
            log.info("workers=%s ignored: using the existing Dask scheduler at %s", workers, dask_address)
        return "remote"
    return "serial" if workers == 0 else "local"


def machine_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def local_cluster_kwargs(workers: int | None = None) -> dict[str, Any]:
    """``distributed.LocalCluster`` keyword arguments for extraction on this machine.

    One Dask worker inside the calling process with ``workers`` threads (default: one per core),
    each running one shard task with ``ExtractConfig.torch_threads`` (1) torch thread, so that
    Dask and torch never oversubscribe the cores. Threads rather than worker processes: the CNN
    forward releases the GIL and decoding runs in the decoders' child processes, while a worker
    process costs a start-up, its own torch import and model build, and its own copy of the
    weights (docs/BENCHMARKS.md).
    """
    return {"n_workers": 1, "threads_per_worker": workers or machine_cores(), "processes": False,
            "dashboard_address": None}


#: Dask settings under which the in-process extraction cluster is made (read when its scheduler and
#: worker start). Dask's defaults wake the event loops every 20 ms (tick), sample the running threads
#: every 10 ms (the worker's profiler) and poll memory every 100 ms: about 6 % of a core on an idle
#: LocalCluster, 0.6 % with these (docs/BENCHMARKS.md). Shard tasks are few and long and their
#: results small, so nothing here needs the finer intervals; nothing changes what is computed.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}


@contextlib.contextmanager
def local_cluster_config() -> Iterator[None]:
    """Dask's configuration set to :data:`LOCAL_CLUSTER_CONFIG` while a cluster is created in it."""
    import dask

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        yield


@contextlib.contextmanager
def dask_client(cfg: ExtractConfig) -> Iterator[Any]:
    """A Dask client for ``cfg``: ``Client(dask_address)``, or an in-process LocalCluster of
    ``workers`` threads (:func:`local_cluster_kwargs`, made under :func:`local_cluster_config`)."""
    from distributed import Client, LocalCluster

    if runner_kind(cfg.workers, cfg.dask_address) == "remote":
        with Client(cfg.dask_address) as client:
            yield client
        return
    with local_cluster_config():
        cluster = LocalCluster(**local_cluster_kwargs(cfg.workers))
    with cluster, Client(cluster) as client:
        yield client


class ShardTaskError(RuntimeError):
    """Some shard tasks failed; the store stays incomplete and a re-run resumes."""


def run_shards(plan: StorePlan, pending: list[int], client: Any = None, progress: bool = True,
               timings: dict[str, float] | None = None) -> dict[int, ShardResult]:
    """Extract the ``pending`` shards of ``plan`` on the runner its config names (or on ``client``).

    Every task is tried again once on Dask; failures are collected while the other shards go on.
    ``timings`` (when given) receives ``cluster_start_s``.

    Raises:
        ComputeKindMismatch: the shards refused to add values of another compute kind (said once).
        ShardTaskError: listing the shards whose task failed.
    """
    from tqdm.auto import tqdm

    cfg = plan.config
    results: dict[int, ShardResult] = {}
    errors: list[str] = []
    if not pending:
        return results
    bar = tqdm(total=len(pending), desc=f"extract {plan.store_id}", unit="shard", disable=not progress)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        if client is None and runner_kind(cfg.workers, cfg.dask_address) == "serial":
            stack.callback(close_decoder)   # this thread lives on: stop its decoder child
            for i in pending:
                results[i] = extract_shard(plan, i)
                bar.update(1)
            return results
        from distributed import as_completed

        t = time.perf_counter()
        if client is None:
            client = stack.enter_context(dask_client(cfg))
        if timings is not None:
            timings["cluster_start_s"] = time.perf_counter() - t
        plan_future = client.scatter(plan, broadcast=True)
        # run_shard, not extract_shard: the scheduler unpickles the task and must not import torch for it
        futures = {client.submit(run_shard, plan_future, i, key=f"extract-shard-{plan.store_id}-{i:05d}",
                                 retries=1): i for i in pending}
        for fut in as_completed(list(futures)):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - collected; the other shards go on
                errors.append(f"shard {i}: {type(exc).__name__}: {exc}")
                log.error("shard %d failed: %s", i, exc)
            bar.update(1)
    if errors:
        mismatch = [e for e in errors if "ComputeKindMismatch" in e]
        if mismatch:  # the same refusal from every shard: say it once
            raise ComputeKindMismatch(mismatch[0].split("ComputeKindMismatch: ", 1)[1])
        raise ShardTaskError(f"{len(errors)} shard task(s) failed; store {plan.store_dir} left incomplete "
                             f"(re-run to resume): " + "; ".join(errors))
    return results
