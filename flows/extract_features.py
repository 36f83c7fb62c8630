"""The ``extract-features`` flow: dataset manifest → feature store, one Dask task per shard.

Tasks: ``plan-store`` (cached on inputs, task source and the dataset's card) → one
``extract-shard`` task per shard, submitted to a ``DaskTaskRunner`` (a LocalCluster sized to the
machine, or the scheduler at ``dask_address``) → ``finalize-store`` → ``publish-store-artifacts``.
Every task is idempotent: a complete shard is skipped by ``features.extract.extract_shard`` and a
finished store is left as it is, so a second run with the same parameters is a no-op (logged, and
recorded in the ``extract-features-…`` artifact), and a task that Dask re-runs after a worker died
rewrites nothing that is already complete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Optional

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict

from features.extract import ExtractConfig, ShardResult, StorePlan, StoreSummary, extract_shard, finalize_store, plan_store
from flows.artifacts import artifact_key, markdown_table, publish_markdown, publish_table
from flows.caching import inputs_source_and_files
from flows.dask_runner import make_task_runner


class ShardOutcome(BaseModel):
    """What one shard task did: a small record (the features stay in the shard file)."""

    model_config = ConfigDict(frozen=True)
    shard: int
    seconds: float
    result: ShardResult


def _dataset_card(inputs: dict[str, Any]) -> list[Path]:
    cfg = inputs.get("config")
    return [Path(cfg.dataset_dir) / "dataset.json"] if cfg is not None else []


@task(name="plan-store", cache_policy=inputs_source_and_files(_dataset_card), retries=1)
def plan_store_task(config: ExtractConfig) -> StorePlan:
    """Plan the store (store-id, shards of clips) from the config and the dataset manifest."""
    plan = plan_store(config)
    get_run_logger().info("planned store %s: %d shards", plan.store_dir, len(plan.shards))
    return plan


@task(name="extract-shard", retries=2, retry_delay_seconds=5)
def extract_shard_task(plan: StorePlan, shard: int) -> ShardOutcome:
    """Extract one shard (skipped by the library when the shard is already complete)."""
    t0 = time.perf_counter()
    result = extract_shard(plan, shard)
    seconds = time.perf_counter() - t0
    log = get_run_logger()
    if getattr(result, "skipped", False):
        log.info("shard %d already complete: skipped", shard)
    else:
        log.info("shard %d written in %.1f s", shard, seconds)
    return ShardOutcome(shard=shard, seconds=seconds, result=result)


@flow(name="extract-shards", log_prints=False)
def extract_shards_flow(plan: StorePlan) -> list[ShardOutcome]:
    """Submit one ``extract-shard`` task per shard to this flow's task runner; wait for all."""
    futures = [extract_shard_task.submit(plan, i) for i in range(len(plan.shards))]
    return [f.result() for f in futures]


@task(name="finalize-store", retries=1)
def finalize_store_task(plan: StorePlan, outcomes: list[ShardOutcome]) -> StoreSummary:
    """Write the index, the failures and the store card (a no-op when the store is finished)."""
    return finalize_store(plan, [o.result for o in outcomes])


@task(name="publish-store-artifacts")
def publish_store_artifacts(summary: StoreSummary, outcomes: list[ShardOutcome], seconds: float) -> None:
    """Counts, per-shard throughput and failures as Prefect artifacts; says so when nothing ran."""
    key = artifact_key("extract-features", summary.store_dir)
    skipped = sum(1 for o in outcomes if getattr(o.result, "skipped", False))
    noop = bool(getattr(summary, "skipped", False)) or (outcomes and skipped == len(outcomes))
    status = "no-op: the store was already complete" if noop else f"extracted {len(outcomes) - skipped} shard(s)"
    log = get_run_logger()
    log.info("extract-features %s (%s)", status, summary.store_dir)
    rows = [
        {
            "shard": o.shard,
            "clips": getattr(o.result, "clips", None),
            "skipped": getattr(o.result, "skipped", None),
            "seconds": o.seconds,
            "clips_per_s": (getattr(o.result, "clips", 0) or 0) / o.seconds if o.seconds > 0 else None,
        }
        for o in outcomes
    ]
    head = [
        {
            "status": status,
            "store_dir": str(summary.store_dir),
            "store_id": summary.store_id,
            "clips": summary.clips,
            "failures": summary.failures,
            "shards": len(outcomes),
            "shards_skipped": skipped,
            "flow_seconds": seconds,
        }
    ]
    publish_table(key, head, f"extract-features: {status}")
    publish_markdown(
        f"{key}-shards",
        f"# extract-features: {status}\n\nStore `{summary.store_dir}`\n\n" + markdown_table(rows),
        "per-shard throughput",
    )


def extract_config(
    dataset_dir: str,
    out_root: str,
    visual: Optional[str] = None,
    audio: Optional[str] = None,
    format: Optional[str] = None,
    workers: Optional[int] = None,
    dask_address: Optional[str] = None,
    device: Optional[str] = None,
    shard_size: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> ExtractConfig:
    """The library's ``ExtractConfig`` from flat parameters (None keeps the library default)."""
    given = dict(
        dataset_dir=dataset_dir, out_root=out_root, visual=visual, audio=audio, format=format,
        workers=workers, dask_address=dask_address, device=device, shard_size=shard_size, batch_size=batch_size,
    )
    return ExtractConfig(**{k: v for k, v in given.items() if v is not None})


@flow(name="extract-features", log_prints=False)
def extract_features_flow(
    dataset_dir: str,
    out_root: str,
    visual: Optional[Literal["efficientnet_lite0", "resnet18", "resnet50", "vgg19"]] = None,
    audio: Optional[Literal["logmel", "vggish"]] = None,
    format: Optional[Literal["hdf5", "parquet"]] = None,
    workers: Optional[int] = None,
    dask_address: Optional[str] = None,
    device: Optional[Literal["auto", "cpu", "cuda"]] = None,
    shard_size: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> StoreSummary:
    """Build (or finish, or confirm) the feature store of ``dataset_dir`` under ``out_root``.

    ``dask_address`` (``tcp://HOST:PORT``) runs the shard tasks on an existing Dask cluster;
    without it a LocalCluster with ``workers`` processes (default: one per core) is started for
    the run. Omitted options keep the library's defaults (efficientnet_lite0 + logmel, hdf5).
    """
    t0 = time.perf_counter()
    config = extract_config(dataset_dir, out_root, visual, audio, format, workers, dask_address, device, shard_size, batch_size)
    plan = plan_store_task(config)
    runner = make_task_runner(config.dask_address, config.workers)
    outcomes = extract_shards_flow.with_options(task_runner=runner)(plan)
    summary = finalize_store_task(plan, outcomes)
    publish_store_artifacts(summary, outcomes, time.perf_counter() - t0)
    return summary
