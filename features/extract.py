"""Feature extraction: a dataset (contract 2) -> a feature store (contract 3), in parallel with Dask.

Entry points (what the flows and the CLI call):

* :func:`plan_store` — validate the configuration, hash the weights, load the manifest, compute
  the store-id and the fixed shard assignment; fast, no model is built.
* :func:`extract_shard` — one Dask task: decode (prefetched in A's decord child process) and run
  the frozen extractors on one shard of clips, batching frames across clips, and write the shard
  atomically. Idempotent: a shard that exists under its final name is complete and is skipped.
* :func:`finalize_store` — index.parquet, failures.parquet, boxes.parquet, then store.json (last:
  a store with store.json is complete).
* :func:`extract_features` — all of the above on a LocalCluster sized to the machine, on
  ``Client(dask_address)``, or on a given client; a complete store returns at once (no cluster).

Reproducibility: the store-id is a hash of (dataset fingerprint, extractor names + weights sha256,
segment spec, format, shard size, batch size, torch threads per task). Clips are sorted by clip_id
and cut into shards of ``shard_size``; the frames of a shard are batched in clip order into
batches of ``batch_size``; every task runs torch with ``torch_threads`` threads. None of these
depends on the number of workers or on which worker runs a shard, so on the same device and
software the stored bytes (and the per-clip sha256) are identical for any worker count, in
process, on a LocalCluster or on a remote scheduler (tests/features/test_features_extract.py).
Across devices (CPU vs CUDA) or library versions values may differ in the last float16 bit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.compute_kind import ComputeKindMismatch, claim_compute_kind, compute_kind, describe
from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual, weights_identity
from features.runtime import resolve_device, torch_threads
from features.labels import normalise_boxes, segment_labels
from features.weights import WeightsError
from features.store import (
    FeatureBatch, ShardData, StoreCard, clip_sha256, read_shard_meta, shard_path, write_card,
    write_parquet_atomic, write_shard,
)
from pipelines.manifest import load_dataset
from pipelines.runtime import code_version
from pipelines.media import ClipDecoder, DecodedClip, MediaError
from pipelines.segments import SegmentSpec

__all__ = [
    "ExtractConfig", "ClipJob", "StorePlan", "ShardResult", "StoreSummary",
    "plan_store", "extract_shard", "finalize_store", "complete_store_summary", "extract_features", "compute_store_id",
    "dask_client", "default_batch_size", "local_cluster_kwargs", "machine_cores",
]

log = logging.getLogger(__name__)

STORE_LAYOUT_VERSION = 1
FAILURE_COLUMNS = ["clip_id", "relpath", "stage", "error", "message"]


class ExtractConfig(BaseModel):
    """What ``wherewhen extract-features`` is given.

    Attributes:
        dataset_dir: a built dataset folder (manifest.parquet + dataset.json).
        out_root: the store goes to ``out_root/<dataset name>/<store-id>/``.
        visual / audio: extractor choice (a name or ``{"name", "weights"}``).
        format: shard format, ``hdf5`` (default) or ``parquet``.
        workers: shard tasks the LocalCluster runs at once, as threads of one Dask worker inside this
            process (see :func:`local_cluster_kwargs`); None = one per CPU core; 0 = run the shards
            one after the other in this process without Dask (tests, debugging). Ignored with
            ``dask_address``.
        dask_address: an existing scheduler, e.g. ``tcp://10.0.0.5:8786``.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (CUDA when present).
        segment: the segmentation (T, seconds, frames per segment, frame size, audio rate).
        shard_size: clips per shard (= per Dask task).
        batch_size: frames per CNN forward (batched across clips); None = :func:`default_batch_size`
            for the device (resolved by :func:`plan_store`, so the store-id has the number).
        torch_threads: torch intra-op threads per shard task (default 1). Fixed, not derived from the
            worker count: oneDNN's CPU convolutions round differently with different thread counts
            (float32 differences ~1e-5 that change some float16 values), so it is part of the
            store-id. One worker per core x 1 thread uses every core without oversubscription.
        decode_timeout_s: seconds one clip's decode may take before its child process is killed.
        prefetch: decoded clips kept ready ahead of the CNN.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_dir: Path
    out_root: Path
    visual: VisualConfig = VisualConfig()
    audio: AudioConfig = AudioConfig()
    format: Literal["hdf5", "parquet"] = "hdf5"
    workers: int | None = Field(None, ge=0)
    dask_address: str | None = None
    device: str = "cpu"
    segment: SegmentSpec = SegmentSpec()
    shard_size: int = Field(32, ge=1)
    batch_size: int | None = Field(None, ge=1)
    torch_threads: int = Field(1, ge=1)
    decode_timeout_s: float = Field(60.0, gt=0)
    prefetch: int = Field(2, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto":
            try:
                torch.device(v)
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}") from exc
        return v


class ClipJob(BaseModel):
    """One clip to extract (from the manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    clip_id: str
    path: str
    relpath: str
    label_idx: int
    split: str
    event_start_s: float
    event_end_s: float


class StorePlan(BaseModel):
    """Everything a shard task needs: the config, the store folder and the fixed shard assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: ExtractConfig
    store_id: str
    store_dir: Path
    dataset_name: str
    dataset_fingerprint: str
    classes: list[str]
    code_version: str
    shards: list[list[ClipJob]]
    complete: bool
    torch_threads: int | None
    visual_sha256: str | None = None
    audio_sha256: str | None = None
    plan_s: float = 0.0

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def shard_file(self, shard: int) -> Path:
        return shard_path(self.store_dir, shard, self.config.format)


class ShardResult(BaseModel):
    """What one shard task returns (small: index rows and failures, never tensors)."""

    model_config = ConfigDict(extra="forbid")
    shard: int
    path: str
    skipped: bool = False
    rows: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    visual_card: dict[str, Any] = Field(default_factory=dict)
    audio_card: dict[str, Any] = Field(default_factory=dict)
    device: str = ""
    compute: dict[str, str] = Field(default_factory=dict)  # features.compute_kind.compute_kind()


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


# ------------------------------------------------------------------------------------------ plan

#: Frames per CNN forward when the configuration leaves it open. On the CPU, one torch thread per
#: task: batch 4 was fastest per frame (EfficientNet-Lite0 graph engine, 224², this machine: 12.7 ms
#: at 4, 14.6 at 2, 15.3 at 8, 18.6 at 16; larger batches fall out of the cache). On CUDA, 64.
CPU_BATCH_SIZE = 4
CUDA_BATCH_SIZE = 64


def default_batch_size(device: str) -> int:
    """The batch size used when :attr:`ExtractConfig.batch_size` is None, for ``device``."""
    return CUDA_BATCH_SIZE if resolve_device(device).type == "cuda" else CPU_BATCH_SIZE


def compute_store_id(fingerprint: str, cfg: ExtractConfig, visual_sha: str | None, audio_sha: str | None) -> str:
    """16 hex chars of sha256 over the inputs that determine the stored values and layout."""
    key = {
        "layout": STORE_LAYOUT_VERSION,
        "dataset": fingerprint,
        "visual": {"name": cfg.visual.name, "weights_sha256": visual_sha, "engine": cfg.visual.engine},
        "audio": {"name": cfg.audio.name, "weights_sha256": audio_sha},
        "segment": cfg.segment.model_dump(),
        "format": cfg.format,
        "shard_size": cfg.shard_size,
        "batch_size": cfg.batch_size,
        "torch_threads": cfg.torch_threads,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _store_complete(store_dir: Path, store_id: str) -> bool:
    card_path = store_dir / "store.json"
    if not card_path.is_file():
        return False
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return False
    return bool(card.get("complete")) and card.get("store_id") == store_id and (store_dir / "index.parquet").is_file()


def plan_store(cfg: ExtractConfig) -> StorePlan:
    """Load the manifest, hash the weights, compute the store-id and the shard assignment.

    Raises FileNotFoundError / ValueError for a missing or inconsistent dataset and
    :class:`features.weights.WeightsError` for missing weights, before any work starts.
    """
    t0 = time.perf_counter()
    if cfg.batch_size is None:
        cfg = cfg.model_copy(update={"batch_size": default_batch_size(cfg.device)})
    ds = load_dataset(cfg.dataset_dir)
    visual_sha = weights_identity(cfg.visual)
    audio_sha = weights_identity(cfg.audio)
    store_id = compute_store_id(ds.card.fingerprint, cfg, visual_sha, audio_sha)
    store_dir = Path(cfg.out_root) / ds.card.name / store_id
    clips = ds.clips.sort_values("clip_id", kind="stable").reset_index(drop=True)
    jobs = [
        ClipJob(
            clip_id=str(r.clip_id), path=str((ds.media_root / r.relpath).resolve()), relpath=str(r.relpath),
            label_idx=int(r.label_idx), split=str(r.split),
            event_start_s=float(r.event_start_s), event_end_s=float(r.event_end_s),
        )
        for r in clips.itertuples(index=False)
    ]
    shards = [jobs[i:i + cfg.shard_size] for i in range(0, len(jobs), cfg.shard_size)]
    threads = cfg.torch_threads
    return StorePlan(
        config=cfg, store_id=store_id, store_dir=store_dir, dataset_name=ds.card.name,
        dataset_fingerprint=ds.card.fingerprint, classes=list(ds.classes), code_version=code_version(),
        shards=shards, complete=_store_complete(store_dir, store_id), torch_threads=threads,
        visual_sha256=visual_sha, audio_sha256=audio_sha,
        plan_s=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------------------- shard


class _Clip:
    """One clip being assembled inside a shard: its frames' features arrive batch by batch."""

    def __init__(self, job: ClipJob, clip: DecodedClip, n_frames: int, feature_shape: tuple[int, int, int]) -> None:
        self.job = job
        self.clip = clip
        self.out = np.zeros((n_frames, *feature_shape), np.float32)
        self.filled = 0
        self.audio: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.filled == len(self.out)


class _FrameBatcher:
    """Packs the frames of consecutive clips into full batches of ``batch_size`` for the CNN."""

    def __init__(self, forward: Any, batch_size: int) -> None:
        self.forward = forward
        self.batch_size = batch_size
        self.pending: list[tuple[_Clip, np.ndarray]] = []   # (owner, frames not yet sent)
        self.count = 0
        self.seconds = 0.0

    def add(self, owner: _Clip, frames: np.ndarray) -> None:
        if len(frames):
            self.pending.append((owner, frames))
            self.count += len(frames)
        while self.count >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.count:
            self._run(min(self.count, self.batch_size))

    def _run(self, n: int) -> None:
        take: list[tuple[_Clip, np.ndarray]] = []
        need = n
        while need:
            owner, frames = self.pending[0]
            if len(frames) <= need:
                take.append((owner, frames))
                self.pending.pop(0)
                need -= len(frames)
            else:
                take.append((owner, frames[:need]))
                self.pending[0] = (owner, frames[need:])
                need = 0
        self.count -= n
        t = time.perf_counter()
        feats = self.forward(torch.from_numpy(np.concatenate([f for _, f in take]))).numpy()
        self.seconds += time.perf_counter() - t
        pos = 0
        for owner, frames in take:
            owner.out[owner.filled:owner.filled + len(frames)] = feats[pos:pos + len(frames)]
            owner.filled += len(frames)
            pos += len(frames)


def _decode_ahead(decoder: ClipDecoder, jobs: list[ClipJob], spec: SegmentSpec, out: queue.Queue,
                  stop: threading.Event) -> None:
    """Prefetch thread: decode clips in order into ``out`` while the CNN runs; ends with None."""
    try:
        for job in jobs:
            if stop.is_set():
                return
            t = time.perf_counter()
            try:
                item: tuple = (job, decoder.decode(job.path, spec), None)
            except MediaError as exc:
                item = (job, None, ("decode", exc.error, exc.message))
            except Exception as exc:  # noqa: BLE001 - recorded as a failure, the shard goes on
                item = (job, None, ("decode", "error", f"{job.path}: {type(exc).__name__}: {exc}"))
            out.put(item + (time.perf_counter() - t,))
    finally:
        out.put(None)


_extractors_lock = threading.Lock()


def _extractors(visual: VisualConfig, audio: AudioConfig, device: str, frame_size: int, audio_rate: int,
                visual_sha: str | None, audio_sha: str | None) -> tuple[Any, Any]:
    """The frozen extractors, built once per process (by one thread; the others wait) and shared by
    its shard tasks; see :func:`_build_extractors`."""
    with _extractors_lock:
        return _build_extractors(visual, audio, device, frame_size, audio_rate, visual_sha, audio_sha)


@functools.lru_cache(maxsize=2)
def _build_extractors(visual: VisualConfig, audio: AudioConfig, device: str, frame_size: int, audio_rate: int,
                      visual_sha: str | None, audio_sha: str | None) -> tuple[Any, Any]:
    """The frozen extractors for a plan, cached per process.

    Read-only after construction (inference only), so shard tasks running in threads of one
    process share them; the cache is bounded and keyed by everything that defines them, including
    the weights' sha256 the plan was made with (a weight file replaced under the same path is a
    different key), and the loaded weights must match that sha256.
    """
    v = build_visual(visual, device=device, input_size=frame_size)
    a = build_audio(audio, device=device, sample_rate=audio_rate)
    for kind, got, want in (("visual", v.weights_sha256, visual_sha), ("audio", getattr(a, "weights_sha256", None), audio_sha)):
        if (want if want != "random" else None) != got:
            raise WeightsError(f"{kind} weights changed since the store was planned: sha256 {got}, planned {want}")
    return v, a


_decoders = threading.local()


def _decoder(timeout_s: float) -> ClipDecoder:
    """This thread's long-lived decoder child (started once, reused by later shards; restarted by
    ClipDecoder itself after a hang or crash)."""
    dec = getattr(_decoders, "decoder", None)
    if dec is None or dec.timeout_s != float(timeout_s):
        if dec is not None:
            dec.close()
        dec = _decoders.decoder = ClipDecoder(timeout_s=timeout_s, num_threads=1)
    return dec


def _close_decoder() -> None:
    """Stop this thread's decoder child, if any. Worker threads' decoders stop when their thread
    ends; a thread that lives on (the caller's, running shards with ``workers=0``) closes its own."""
    dec = getattr(_decoders, "decoder", None)
    _decoders.decoder = None
    if dec is not None:
        dec.close()


#: glibc mallopt parameters (malloc.h) and the values a shard task restores.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 64 << 20, 256 << 20


def _restore_malloc_thresholds() -> bool:
    """Undo the effect of ``MALLOC_TRIM_THRESHOLD_`` in this process's glibc heap; True when it did.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.
    pre-spawn-environ``). Setting it also freezes glibc's mmap threshold at 128 KiB, so every
    activation tensor of the CNN is a fresh ``mmap`` whose pages the kernel zeroes on first touch:
    EfficientNet-Lite0 ran at 40 ms per frame instead of 15 on one thread here, half of it in the
    kernel. Raising both thresholds with ``mallopt`` restores the speed. Only done when the variable
    is set, and only on glibc.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):   # not glibc
        return False
    return bool(ok)


def _set_threads(plan: StorePlan) -> int:
    """Run this thread's torch ops on the plan's (fixed) number of intra-op threads; return it.

    ``torch.set_num_threads`` sets the calling thread's OpenMP count and the process default that
    threads starting later inherit. Not restored per task: the tasks of one plan run concurrently
    in threads of one process and all set the same count (a task restoring the caller's count
    would change it under the others); :func:`extract_features` restores its caller's count.
    """
    threads = int(plan.torch_threads or 1)
    torch.set_num_threads(threads)
    return threads


def extract_shard(plan: StorePlan, shard: int) -> ShardResult:
    """Extract shard ``shard`` of ``plan`` and write it atomically; skip it when already complete.

    Per clip: decode (A's ClipDecoder child, one clip ahead in a prefetch thread), the visual CNN
    on the frames of the segments inside the clip (batched across clips, ``frames_per_segment``
    maps averaged), the audio extractor per segment, zeros + mask False for padded segments. A clip
    that fails is recorded in the result's failures; the shard goes on. Sets the calling thread's
    torch intra-op threads to the plan's (see :func:`_set_threads`).
    """
    path = plan.shard_file(shard)
    if path.is_file():
        meta = read_shard_meta(path)
        log.info("shard %d: complete, skipped (%s)", shard, path)
        return ShardResult(**{**meta["result"], "skipped": True})
    return _extract_shard(plan, shard, path)


def _extract_shard(plan: StorePlan, shard: int, path: Path) -> ShardResult:
    t_start = time.perf_counter()
    cfg = plan.config
    spec = cfg.segment
    threads = _set_threads(plan)
    if _restore_malloc_thresholds():
        log.debug("shard %d: raised glibc's malloc thresholds (MALLOC_TRIM_THRESHOLD_ was set)", shard)
    device = resolve_device(cfg.device)
    kind = compute_kind(device)
    claim_compute_kind(plan.store_dir, kind)  # refuses to add values of another compute kind to the store
    jobs = plan.shards[shard]
    k = len(plan.classes)
    t_num, f_num, s = spec.num_segments, spec.frames_per_segment, spec.frame_size

    in_flight: list[_Clip] = []
    finished: list[_Clip] = []
    failures: list[dict[str, str]] = []
    decode_s = wait_s = audio_s = 0.0
    q: queue.Queue = queue.Queue(maxsize=cfg.prefetch)
    stop = threading.Event()
    path.parent.mkdir(parents=True, exist_ok=True)
    decoder = _decoder(cfg.decode_timeout_s)
    # the decoder outlives the shard: the next shard in this thread reuses its child process
    worker = threading.Thread(target=_decode_ahead, args=(decoder, jobs, spec, q, stop),
                              name=f"decode-shard-{shard}", daemon=True)
    worker.start()   # decoding starts while the models load
    try:
        t = time.perf_counter()
        visual, audio = _extractors(cfg.visual, cfg.audio, str(device), spec.frame_size, spec.audio_rate,
                                    plan.visual_sha256, plan.audio_sha256)
        t_models = time.perf_counter() - t
        batcher = _FrameBatcher(visual, int(cfg.batch_size))   # plan_store resolved an open batch size
        while True:
            t = time.perf_counter()
            item = q.get()
            wait_s += time.perf_counter() - t
            if item is None:
                break
            job, clip, err, dt = item
            decode_s += dt
            if err is None and clip.frames.shape != (t_num, f_num, s, s, 3):
                err = ("extract", "bad_shape", f"{job.path}: decoder returned frames {clip.frames.shape}, "
                       f"expected {(t_num, f_num, s, s, 3)}")
            if err is not None:
                stage, code, message = err
                log.warning("shard %d: %s failed: %s", shard, job.clip_id, message)
                failures.append({"clip_id": job.clip_id, "relpath": job.relpath, "stage": stage,
                                 "error": code, "message": message})
                continue
            mask = np.asarray(clip.segment_mask, dtype=bool)
            frames = np.ascontiguousarray(clip.frames[mask]).reshape(-1, s, s, 3)
            owner = _Clip(job, clip, len(frames), visual.feature_shape)
            t = time.perf_counter()
            owner.audio = np.zeros((t_num, audio.dim), np.float32)
            if mask.any():
                owner.audio[mask] = audio(torch.from_numpy(np.ascontiguousarray(clip.audio[mask]))).numpy()
            audio_s += time.perf_counter() - t
            in_flight.append(owner)
            batcher.add(owner, frames)
            while in_flight and in_flight[0].done:
                finished.append(in_flight.pop(0))
        batcher.flush()
        finished.extend(in_flight)
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        worker.join(timeout=cfg.decode_timeout_s + 5)
        if worker.is_alive():  # still inside a decode: never hand this decoder to another shard
            _decoders.decoder = None
            decoder.close()

    t = time.perf_counter()
    h, w, c = visual.feature_shape
    n = len(finished)
    vis = np.zeros((n, t_num, h, w, c), np.float16)
    aud = np.zeros((n, t_num, audio.dim), np.float16)
    masks = np.zeros((n, t_num), bool)
    seg_labels = np.zeros((n, t_num), np.int16)
    rows: list[dict[str, Any]] = []
    for i, owner in enumerate(finished):
        job, mask = owner.job, np.asarray(owner.clip.segment_mask, dtype=bool)
        masks[i] = mask
        vis[i, mask] = owner.out.reshape(-1, f_num, h, w, c).mean(axis=1)
        aud[i] = owner.audio
        seg_labels[i] = segment_labels(t_num, spec.segment_s, job.label_idx, k, job.event_start_s,
                                       job.event_end_s, mask)
        rows.append({
            "clip_id": job.clip_id, "shard": shard, "row": i, "label_idx": job.label_idx, "split": job.split,
            "sha256": clip_sha256(vis[i], aud[i], mask), "event_start_s": job.event_start_s,
            "event_end_s": job.event_end_s, "has_audio": bool(owner.clip.has_audio),
        })
    result = ShardResult(
        shard=shard, path=str(path), rows=rows, failures=failures,
        visual_card=visual.card(), audio_card=audio.card(), device=str(device), compute=kind,
        timings={"models_s": t_models, "decode_s": decode_s, "decode_wait_s": wait_s,
                 "visual_s": batcher.seconds, "audio_s": audio_s, "torch_threads": float(threads)},
    )
    batch = FeatureBatch(
        clip_id=[r["clip_id"] for r in rows], visual=vis, audio=aud, segment_mask=masks,
        label_idx=np.array([r["label_idx"] for r in rows], np.int64), segment_label=seg_labels,
    )
    result.timings["assemble_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result.timings["total_s"] = t - t_start  # without the write; the write time is measured below
    write_shard(path, ShardData(batch, {"result": result.model_dump(mode="json")}), cfg.format)
    result.timings["write_s"] = time.perf_counter() - t
    log.info("shard %d: %d clips, %d failures -> %s", shard, n, len(failures), path)
    return result


# -------------------------------------------------------------------------------------- finalize


def finalize_store(plan: StorePlan, results: list[ShardResult], timings: dict[str, float] | None = None) -> StoreSummary:
    """Write index.parquet, failures.parquet, boxes.parquet and (last) store.json from all shard results."""
    t0 = time.perf_counter()
    results = sorted(results, key=lambda r: r.shard)
    if [r.shard for r in results] != list(range(plan.num_shards)):
        raise ValueError(f"finalize_store: need results for shards 0..{plan.num_shards - 1}, got {[r.shard for r in results]}")
    store_dir = plan.store_dir
    kinds = {json.dumps(r.compute, sort_keys=True): r.compute for r in results if r.compute}
    if len(kinds) > 1:
        raise ComputeKindMismatch(f"{store_dir}: its shards were computed on different kinds "
                                  f"({'; '.join(describe(k) for k in kinds.values())}); extract it again on one")
    for stale in store_dir.glob(".shard-*"):   # temp files of writers killed mid-write; every shard is complete now
        log.info("removing the leftover temp file %s", stale)
        stale.unlink(missing_ok=True)
    index = pd.DataFrame([row for r in results for row in r.rows])
    if index.empty:
        index = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("clip_id", "str"), ("shard", "int64"), ("row", "int64"), ("label_idx", "int64"), ("split", "str"),
            ("sha256", "str"), ("event_start_s", "float64"), ("event_end_s", "float64"), ("has_audio", "bool"))})
    index = index.astype({"shard": "int64", "row": "int64", "label_idx": "int64"})
    failures = pd.DataFrame([f for r in results for f in r.failures], columns=FAILURE_COLUMNS)
    write_parquet_atomic(store_dir / "index.parquet", index)
    write_parquet_atomic(store_dir / "failures.parquet", failures)
    ds = load_dataset(plan.config.dataset_dir)
    boxes = normalise_boxes(ds.boxes)
    if boxes is not None:
        boxes = boxes[boxes["clip_id"].isin(set(index["clip_id"]))].reset_index(drop=True)
        write_parquet_atomic(store_dir / "boxes.parquet", boxes)
    stage: dict[str, float] = {"plan_s": plan.plan_s}
    for key in ("models_s", "decode_s", "decode_wait_s", "visual_s", "audio_s", "assemble_s", "write_s"):
        stage[f"shards_{key}"] = float(sum(r.timings.get(key, 0.0) for r in results if not r.skipped))
    stage.update(timings or {})
    stage["finalize_s"] = time.perf_counter() - t0
    ref = results[0]
    card = StoreCard(
        store_id=plan.store_id, format=plan.config.format, complete=True, dataset_name=plan.dataset_name,
        dataset_dir=str(Path(plan.config.dataset_dir).resolve()), dataset_fingerprint=plan.dataset_fingerprint,
        classes=plan.classes, num_segments=plan.config.segment.num_segments, segment=plan.config.segment.model_dump(),
        visual=ref.visual_card, audio=ref.audio_card, visual_shape=tuple(ref.visual_card["feature_shape"]),
        audio_dim=int(ref.audio_card["dim"]), dtype="float16", shard_size=plan.config.shard_size,
        num_shards=plan.num_shards, clips=len(index), failures=len(failures), code_version=plan.code_version,
        device=ref.device, compute=next(iter(kinds.values()), {}), timings=stage,
    )
    write_card(store_dir, card)
    return StoreSummary(
        store_dir=store_dir, store_id=plan.store_id, clips=len(index), failures=len(failures),
        shards=plan.num_shards, shards_skipped=sum(r.skipped for r in results), skipped=False, timings=stage,
    )


# ------------------------------------------------------------------------------------------ dask


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
    Dask and torch never oversubscribe the cores. Threads rather than processes: the CNN forward
    releases the GIL (two threads on one frozen graph run as fast as two processes here) and
    decoding runs in the decoder's child processes, while a worker process costs a start-up and
    its own torch + timm import and model build (~5 s each on this machine's two cores) and its
    own copy of the weights. Also the runner the flows use (``flows/dask_runner.py``).
    """
    return {"n_workers": 1, "threads_per_worker": workers or machine_cores(), "processes": False,
            "dashboard_address": None}


@contextlib.contextmanager
def dask_client(cfg: ExtractConfig) -> Iterator[Any]:
    """A Dask client for ``cfg``: ``Client(dask_address)``, or an in-process LocalCluster of
    ``workers`` threads (:func:`local_cluster_kwargs`)."""
    from distributed import Client, LocalCluster

    if cfg.dask_address:
        client = Client(cfg.dask_address)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(**local_cluster_kwargs(cfg.workers))
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def complete_store_summary(plan: StorePlan) -> StoreSummary:
    """The summary of a store that is already complete, read from its card (nothing is written)."""
    card = StoreCard.model_validate_json((plan.store_dir / "store.json").read_text())
    return StoreSummary(store_dir=plan.store_dir, store_id=plan.store_id, clips=card.clips, failures=card.failures,
                        shards=card.num_shards, shards_skipped=card.num_shards, skipped=True,
                        timings={"plan_s": plan.plan_s})


def extract_features(cfg: ExtractConfig, client: Any = None, progress: bool = True) -> StoreSummary:
    """Build (or resume, or skip) the feature store ``cfg`` describes; see the module docstring.

    Args:
        client: an existing ``distributed.Client`` to run on (else one is made from ``cfg``).
        progress: show a tqdm progress bar (stderr) as shards complete.
    Raises:
        RuntimeError listing the shards whose task failed (the store stays incomplete; a re-run resumes).
    """
    t0 = time.perf_counter()
    plan = plan_store(cfg)
    if plan.complete:
        log.info("store %s is complete: nothing to do", plan.store_dir)
        summary = complete_store_summary(plan)
        return summary.model_copy(update={"timings": {**summary.timings, "total_s": time.perf_counter() - t0}})
    from tqdm.auto import tqdm

    results: dict[int, ShardResult] = {}
    pending = []
    for i in range(plan.num_shards):
        if plan.shard_file(i).is_file():
            results[i] = ShardResult(**{**read_shard_meta(plan.shard_file(i))["result"], "skipped": True})
        else:
            pending.append(i)
    log.info("store %s: %d shards, %d complete, %d to extract", plan.store_dir, plan.num_shards,
             len(results), len(pending))
    timings: dict[str, float] = {}
    errors: list[str] = []
    bar = tqdm(total=len(pending), desc=f"extract {plan.store_id}", unit="shard", disable=not progress)
    t_extract = time.perf_counter()
    # shard tasks run in this process (workers=0, the in-process LocalCluster) or elsewhere; either
    # way this process gets its torch thread count back afterwards
    with torch_threads(int(plan.torch_threads or 1)), contextlib.ExitStack() as stack:
        if pending and cfg.workers == 0 and client is None and cfg.dask_address is None:
            stack.callback(_close_decoder)
            for i in pending:
                results[i] = extract_shard(plan, i)
                bar.update(1)
        elif pending:
            from distributed import as_completed

            t = time.perf_counter()
            if client is None:
                client = stack.enter_context(dask_client(cfg))
            timings["cluster_start_s"] = time.perf_counter() - t
            plan_future = client.scatter(plan, broadcast=True)
            futures = {client.submit(extract_shard, plan_future, i, key=f"extract-shard-{plan.store_id}-{i:05d}",
                                     retries=1): i for i in pending}
            for fut in as_completed(list(futures)):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - collected; the other shards go on
                    errors.append(f"shard {i}: {type(exc).__name__}: {exc}")
                    log.error("shard %d failed: %s", i, exc)
                bar.update(1)
    bar.close()
    timings["extract_wall_s"] = time.perf_counter() - t_extract
    if errors:
        mismatch = [e for e in errors if "ComputeKindMismatch" in e]
        if mismatch:  # the same refusal from every shard: say it once
            raise ComputeKindMismatch(mismatch[0].split("ComputeKindMismatch: ", 1)[1])
        raise RuntimeError(f"{len(errors)} shard task(s) failed; store {plan.store_dir} left incomplete "
                           f"(re-run to resume): " + "; ".join(errors))
    timings["total_s"] = time.perf_counter() - t0
    summary = finalize_store(plan, list(results.values()), timings)
    return summary
