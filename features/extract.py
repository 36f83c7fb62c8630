"""Feature extraction: a dataset (contract 2) -> a feature store (contract 3), one task per shard.

The pipeline, the same for the library's :func:`extract_features` and the ``extract-features``
Prefect flow (flows/extract_features.py), built from these pieces:

1. :func:`features.plan.plan_store` — the store-id and the fixed shard assignment (a complete
   store stops here: :func:`complete_store_summary`);
2. :func:`pending_shards` — which shards are on disk already (a killed run resumes);
3. the pending shards on a runner (:mod:`features.runner`: in this thread, an in-process
   LocalCluster or an existing scheduler), each :func:`features.shard_engine.extract_shard`;
4. :func:`finalize_store` — index, failures, boxes and (last) the card
   (``features.store.write_store_files``).

Reproducibility: the stored bytes (and the per-clip sha256) are the same for any worker count, in
process, on a LocalCluster or on a remote scheduler, on the same device and software
(tests/features/test_features_extract.py). Across devices (CPU vs CUDA) or library versions
values may differ in the last float16 bit; ``features.compute_kind`` keeps one store on one kind.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from features.compute_kind import ComputeKindMismatch, describe
from features.labels import boxes_frame
from features.plan import ClipJob, ExtractConfig, StorePlan, compute_store_id, default_batch_size, plan_store
from features.runtime import torch_threads
from features.shard_result import ShardResult
from features.store import StoreCard, check_complete, failures_frame, index_frame, write_store_files

__all__ = [
    "ExtractConfig", "ClipJob", "StorePlan", "ShardResult", "StoreSummary",
    "plan_store", "pending_shards", "extract_shard", "finalize_store", "complete_store_summary", "extract_features",
    "compute_store_id", "dask_client", "default_batch_size", "local_cluster_kwargs", "machine_cores",
]

log = logging.getLogger(__name__)

#: names this module offers from the engine and the runner, imported on first use (PEP 562) so
#: that planning and a no-op re-run do not import torch and the CNNs.
_LAZY = {"extract_shard": "features.shard_engine", "dask_client": "features.runner",
         "local_cluster_kwargs": "features.runner", "machine_cores": "features.runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: per-shard timings summed into the card's ``shards_<name>`` entries
_SHARD_STAGES = ("models_s", "decode_s", "decode_wait_s", "visual_s", "audio_s", "assemble_s", "write_s")


class StoreSummary(BaseModel):
    """What :func:`extract_features` / :func:`finalize_store` return."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    store_dir: Path
    store_id: str
    clips: int
    failures: int
    shards: int
    shards_skipped: int = 0
    skipped: bool = False
    timings: dict[str, float] = Field(default_factory=dict)

    def summary_line(self) -> str:
        state = "already complete (no-op)" if self.skipped else f"{self.shards - self.shards_skipped} shard(s) extracted"
        return (f"store {self.store_id} at {self.store_dir}: {self.clips} clips, {self.failures} failures, "
                f"{self.shards} shards, {state}, {self.timings.get('total_s', 0.0):.1f} s")


def pending_shards(plan: StorePlan) -> tuple[dict[int, ShardResult], list[int]]:
    """The shards already complete on disk (their recorded results, marked skipped) and those to extract."""
    done = {i: ShardResult.from_file(plan.shard_file(i)) for i in range(plan.num_shards) if plan.shard_file(i).is_file()}
    pending = [i for i in range(plan.num_shards) if i not in done]
    log.info("store %s: %d shards, %d complete, %d to extract", plan.store_dir, plan.num_shards, len(done), len(pending))
    return done, pending


def complete_store_summary(plan: StorePlan) -> StoreSummary:
    """The summary of a store that is already complete, read from its card (nothing is written).

    Raises :class:`features.store.StoreError` when the store is not complete.
    """
    card = check_complete(plan.store_dir, plan.store_id)
    return StoreSummary(store_dir=plan.store_dir, store_id=plan.store_id, clips=card.clips, failures=card.failures,
                        shards=card.num_shards, shards_skipped=card.num_shards, skipped=True,
                        timings={"plan_s": plan.plan_s})


def finalize_store(plan: StorePlan, results: list[ShardResult], timings: dict[str, float] | None = None) -> StoreSummary:
    """Build the index, failures, boxes and card from all shard results and write them (card last).

    Raises ValueError when a shard's result is missing and ComputeKindMismatch when the shards
    were computed on different kinds.
    """
    t0 = time.perf_counter()
    results = sorted(results, key=lambda r: r.shard)
    if [r.shard for r in results] != list(range(plan.num_shards)):
        raise ValueError(f"finalize_store: need results for shards 0..{plan.num_shards - 1}, got {[r.shard for r in results]}")
    kinds = {json.dumps(r.compute, sort_keys=True): r.compute for r in results if r.compute}
    if len(kinds) > 1:
        raise ComputeKindMismatch(f"{plan.store_dir}: its shards were computed on different kinds "
                                  f"({'; '.join(describe(k) for k in kinds.values())}); extract it again on one")
    index = index_frame(row for r in results for row in r.rows)
    failures = failures_frame(f for r in results for f in r.failures)
    boxes = boxes_frame(plan.boxes)
    if boxes is not None:
        boxes = boxes[boxes["clip_id"].isin(set(index["clip_id"]))].reset_index(drop=True)
    stage: dict[str, float] = {"plan_s": plan.plan_s}
    for key in _SHARD_STAGES:
        stage[f"shards_{key}"] = float(sum(r.timings.get(key, 0.0) for r in results if not r.skipped))
    stage.update(timings or {})
    stage["finalize_s"] = time.perf_counter() - t0
    cfg, ref = plan.config, results[0]
    card = StoreCard(
        store_id=plan.store_id, format=cfg.format, complete=True, dataset_name=plan.dataset_name,
        dataset_dir=str(Path(cfg.dataset_dir).resolve()), dataset_fingerprint=plan.dataset_fingerprint,
        classes=plan.classes, num_segments=cfg.segment.num_segments, segment=cfg.segment.model_dump(),
        visual=ref.visual_card, audio=ref.audio_card,
        visual_config=cfg.visual.model_dump(mode="json"), audio_config=cfg.audio.model_dump(mode="json"),
        visual_shape=tuple(ref.visual_card["feature_shape"]), audio_dim=int(ref.audio_card["dim"]), dtype="float16",
        shard_size=cfg.shard_size, num_shards=plan.num_shards, clips=len(index), failures=len(failures),
        code_version=plan.code_version, device=ref.device, compute=next(iter(kinds.values()), {}), timings=stage,
    )
    write_store_files(plan.store_dir, card, index, failures, boxes)
    return StoreSummary(
        store_dir=plan.store_dir, store_id=plan.store_id, clips=len(index), failures=len(failures),
        shards=plan.num_shards, shards_skipped=sum(r.skipped for r in results), skipped=False, timings=stage,
    )


def extract_features(cfg: ExtractConfig, client: Any = None, progress: bool = True) -> StoreSummary:
    """Build (or resume, or skip) the feature store ``cfg`` describes; see the module docstring.

    Args:
        client: an existing ``distributed.Client`` to run on (else the runner ``cfg`` names).
        progress: show a tqdm progress bar (stderr) as shards complete.
    Raises:
        features.runner.ShardTaskError listing the shards whose task failed (the store stays
        incomplete; a re-run resumes); ComputeKindMismatch when the store was started on another kind.
    """
    t0 = time.perf_counter()
    plan = plan_store(cfg)
    if plan.complete:
        log.info("store %s is complete: nothing to do", plan.store_dir)
        summary = complete_store_summary(plan)
        return summary.model_copy(update={"timings": {**summary.timings, "total_s": time.perf_counter() - t0}})
    done, pending = pending_shards(plan)
    timings: dict[str, float] = {}
    t_extract = time.perf_counter()
    # shard tasks may run in this process's threads; either way it gets its torch thread count back
    from features.runner import run_shards  # the engine (torch, the CNNs) only when there is work

    with torch_threads(plan.torch_threads):
        ran = run_shards(plan, pending, client=client, progress=progress, timings=timings)
    timings["extract_wall_s"] = time.perf_counter() - t_extract
    timings["total_s"] = time.perf_counter() - t0
    return finalize_store(plan, [*done.values(), *ran.values()], timings)
