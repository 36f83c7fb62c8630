"""The ``extract-features`` flow: dataset manifest → feature store, one Dask task per shard.

The library's pipeline (:mod:`features.extract`), step by step as Prefect tasks: ``plan-store`` →
(a complete store: ``read-complete-store``) → the pending shards (:func:`features.extract.pending_shards`),
one ``extract-shard`` task each, on the task runner of :mod:`flows.dask_runner` (the library's
runner decision and LocalCluster) → ``finalize-store`` → ``publish-store-artifacts``.
Every task is idempotent: a complete shard is skipped by ``features.shard_engine.extract_shard``
and a finished store is left as it is, so a second run with the same parameters is a no-op (logged,
and recorded in the ``extract-features-…`` artifact), and a task that Dask re-runs after a worker
died rewrites nothing that is already complete.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict

from features.extract import (
    StoreSummary,
    complete_store_summary,
    finalize_store,
    pending_shards,
)
from features.plan import ExtractConfig, StorePlan, plan_store
from features.runtime import torch_threads
from features.shard_engine import ShardResult, extract_shard
from flows.artifacts import (
    artifact_key,
    markdown_table,
    publish_markdown,
    publish_table,
)
from flows.caching import cached_unless_missing, key_and_source
from flows.dask_runner import make_task_runner
from flows.flow_params import config_flow
from flows.inputs import before_extract


class ShardOutcome(BaseModel):
    """What one shard task did: a small record (the features stay in the shard file)."""

    model_config = ConfigDict(frozen=True)
    shard: int
    seconds: float
    clips: int
    failures: int
    skipped: bool
    result: ShardResult

    @classmethod
    def on_disk(cls, result: ShardResult) -> "ShardOutcome":
        """The outcome of a shard that was complete before this run (nothing extracted)."""
        return cls(shard=result.shard, seconds=0.0, clips=len(result.rows), failures=len(result.failures),
                   skipped=True, result=result)


@task(name="plan-store")
def plan_store_task(config: ExtractConfig) -> StorePlan:
    """Plan the store (store-id, shards of clips, whether it is already complete).

    Not cached: ``complete`` depends on the store on disk, and planning is fast (no model is built).
    """
    plan = plan_store(config)
    get_run_logger().info("store %s: %d shards, complete=%s", plan.store_dir, plan.num_shards, plan.complete)
    return plan


def _shard_key(inputs: dict[str, Any]) -> str:
    """Shard cache key: the store-id (a hash of the dataset fingerprint, extractors + weights,
    segmentation, format, shard and batch size) and the shard number."""
    return f"{inputs['plan'].store_id}-shard-{inputs['shard']:05d}"


@task(name="extract-shard", retries=2, retry_delay_seconds=5, cache_policy=key_and_source(_shard_key))
def extract_shard_task(plan: StorePlan, shard: int) -> ShardOutcome:
    """Extract one shard (the library skips a shard that is already complete on disk)."""
    t0 = time.perf_counter()
    result = extract_shard(plan, shard)
    seconds = time.perf_counter() - t0
    log = get_run_logger()
    if result.skipped:
        log.info("shard %d already complete: skipped", shard)
    else:
        log.info("shard %d: %d clips written in %.1f s", shard, len(result.rows), seconds)
    return ShardOutcome(shard=shard, seconds=seconds, clips=len(result.rows), failures=len(result.failures),
                        skipped=result.skipped, result=result)


@flow(name="extract-shards", log_prints=False)
def extract_shards_flow(plan: StorePlan, shards: list[int]) -> list[ShardOutcome]:
    """Submit one ``extract-shard`` task per shard in ``shards`` to this flow's task runner; wait for all.

    A shard whose file is missing is recomputed even when a cached record exists.
    """
    futures = [
        cached_unless_missing(extract_shard_task, [plan.shard_file(i)]).submit(plan, i)
        for i in shards
    ]
    return [f.result() for f in futures]


@task(name="finalize-store")
def finalize_store_task(plan: StorePlan, outcomes: list[ShardOutcome]) -> StoreSummary:
    """Write the index, the failures and (last) the store card from the shard results."""
    return finalize_store(plan, [o.result for o in outcomes])


@task(name="read-complete-store")
def read_complete_store(plan: StorePlan) -> StoreSummary:
    """The summary of a store that is already complete (read from its card; nothing is written)."""
    summary = complete_store_summary(plan)
    get_run_logger().info("no-op: store %s is already complete (%d clips)", plan.store_dir, summary.clips)
    return summary


@task(name="publish-store-artifacts")
def publish_store_artifacts(summary: StoreSummary, outcomes: list[ShardOutcome], seconds: float) -> None:
    """Counts, per-shard throughput and failures as Prefect artifacts; says so when nothing ran."""
    key = artifact_key("extract-features", summary.store_dir)
    extracted = [o for o in outcomes if not o.skipped]
    if summary.skipped:
        status = "no-op: the store was already complete"
    elif not extracted:
        status = "no-op: every shard was already complete (index and card rewritten)"
    else:
        status = f"extracted {len(extracted)} of {summary.shards} shard(s)"
    get_run_logger().info("extract-features %s: %s", status, summary.store_dir)
    clips_done = sum(o.clips for o in extracted)
    busy = sum(o.seconds for o in extracted)
    head = {
        "status": status, "store_dir": str(summary.store_dir), "store_id": summary.store_id,
        "clips": summary.clips, "failures": summary.failures, "shards": summary.shards,
        "shards_skipped": summary.shards - len(extracted), "clips_extracted": clips_done,
        "flow_seconds": seconds, "clips_per_s_wall": clips_done / seconds if clips_done and seconds > 0 else 0.0,
        "clips_per_s_per_worker": clips_done / busy if clips_done and busy > 0 else 0.0,
    }
    publish_table(key, [head], f"extract-features: {status}")
    rows = [
        {"shard": o.shard, "clips": o.clips, "failures": o.failures, "skipped": o.skipped, "seconds": o.seconds,
         "clips_per_s": o.clips / o.seconds if o.seconds > 0 and not o.skipped else None}
        for o in outcomes
    ]
    failures = [f for o in outcomes for f in o.result.failures]
    publish_markdown(
        f"{key}-shards",
        f"# extract-features: {status}\n\nStore `{summary.store_dir}`\n\n## shards\n\n" + markdown_table(rows)
        + "\n## failures\n\n" + markdown_table(failures),
        "per-shard throughput and failures",
    )


@config_flow(ExtractConfig, name="extract-features")
def extract_features_flow(config: ExtractConfig) -> StoreSummary:
    """Build (or finish, or confirm) the feature store of ``config.dataset_dir`` under ``config.out_root``.

    ``config.dask_address`` (``tcp://HOST:PORT``) runs the shard tasks on an existing Dask cluster;
    without it a LocalCluster in this process with ``config.workers`` threads (default: one per core)
    is started for the run (``workers=0``: in this process, no Dask). Paths must be absolute.
    """
    t0 = time.perf_counter()
    before_extract(config)
    plan = plan_store_task(config)
    if plan.complete:
        summary, outcomes = read_complete_store(plan), []
    else:
        done, pending = pending_shards(plan)
        outcomes = [ShardOutcome.on_disk(r) for r in done.values()]
        if pending:
            runner = make_task_runner(config.dask_address, config.workers)
            with torch_threads(plan.torch_threads):   # the shard tasks may run in this process's threads
                outcomes = sorted(outcomes + extract_shards_flow.with_options(task_runner=runner)(plan, pending),
                                  key=lambda o: o.shard)
        summary = finalize_store_task(plan, outcomes)
    publish_store_artifacts(summary, outcomes, time.perf_counter() - t0)
    return summary
