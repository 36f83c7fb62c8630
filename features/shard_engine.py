"""The shard engine: one shard of a plan -> one shard file, in the calling thread.

Per clip: decode (a ``pipelines.media.ClipDecoder`` child process, clips decoded ahead by a
prefetch thread), the visual CNN on the frames of the segments inside the clip (frames of
consecutive clips packed into full batches of ``batch_size``, ``frames_per_segment`` maps
averaged), the audio extractor per segment, zeros + mask False for padded segments. A clip that
fails is recorded in the shard's failures and the shard goes on.

Shared by the shard tasks of one process: the frozen extractors (built once, by one thread; the
others wait) and, per thread, a long-lived decoder child reused by the next shard of that
thread. Batching follows clip order only, and every task runs torch with the plan's fixed thread
count, so the stored bytes do not depend on the worker count or on which worker runs a shard.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from features.compute_kind import claim_compute_kind, compute_kind
from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
from features.labels import segment_labels
from features.plan import ClipJob, StorePlan
from features.runtime import resolve_device
from features.shard_claim import shard_claim
from features.shard_result import ShardResult
from features.store import FeatureBatch, ShardData, clip_sha256, read_shard_meta, write_shard
from features.weights import WeightsError
from pipelines.media import ClipDecoder, DecodedClip, MediaError
from pipelines.segments import SegmentSpec

__all__ = ["ShardResult", "extract_shard", "close_decoder", "load_models"]

log = logging.getLogger(__name__)


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

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> None:
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
                visual_sha: str | None, audio_sha: str | None, batch_size: int) -> tuple[Any, Any]:
    """The frozen extractors, built once per process (by one thread; the others wait) and shared by
    its shard tasks; see :func:`_build_extractors`."""
    with _extractors_lock:
        return _build_extractors(visual, audio, device, frame_size, audio_rate, visual_sha, audio_sha, batch_size)


def load_models(plan: StorePlan) -> tuple[Any, Any]:
    """The plan's frozen (visual, audio) extractors in this process, built and warmed on the first call
    (by one thread; the others wait) and shared by its shard tasks afterwards."""
    cfg = plan.config
    return _extractors(cfg.visual, cfg.audio, str(resolve_device(cfg.device)), cfg.segment.frame_size,
                       cfg.segment.audio_rate, plan.visual_sha256, plan.audio_sha256, plan.batch_size)


@functools.lru_cache(maxsize=2)
def _build_extractors(visual: VisualConfig, audio: AudioConfig, device: str, frame_size: int, audio_rate: int,
                      visual_sha: str | None, audio_sha: str | None, batch_size: int) -> tuple[Any, Any]:
    """The frozen extractors for a plan, cached per process, the visual one warmed up at the plan's
    batch size (its inference graph built and run once: a one-off cost of the model load, not of
    the first shard's first batch).

    Read-only after construction (inference only), so shard tasks running in threads of one
    process share them; the cache is bounded and keyed by everything that defines them, including
    the weights' sha256 the plan was made with (a weight file replaced under the same path is a
    different key), and the loaded weights must match that sha256.
    """
    v = build_visual(visual, device=device, input_size=frame_size)
    a = build_audio(audio, device=device, sample_rate=audio_rate)
    for kind, got, want in (("visual", v.weights_sha256, visual_sha), ("audio", a.weights_sha256, audio_sha)):
        if (want if want != "random" else None) != got:
            raise WeightsError(f"{kind} weights changed since the store was planned: sha256 {got}, planned {want}")
    v.warm_up(batch_size)
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


def close_decoder() -> None:
    """Stop this thread's decoder child, if any. Worker threads' decoders stop when their thread
    ends; a thread that lives on (the caller's, running shards with ``workers=0``) closes its own."""
    dec = getattr(_decoders, "decoder", None)
    _decoders.decoder = None
    if dec is not None:
        dec.close()



def _set_threads(plan: StorePlan) -> int:
    """Run this thread's torch ops on the plan's (fixed) number of intra-op threads; return it.

    ``torch.set_num_threads`` sets the calling thread's OpenMP count and the process default that
    threads starting later inherit. Not restored per task: the tasks of one plan run concurrently
    in threads of one process and all set the same count (a task restoring the caller's count
    would change it under the others); the caller of the runner restores its own count
    (``features.runtime.torch_threads``).
    """
    torch.set_num_threads(plan.torch_threads)
    return plan.torch_threads


def extract_shard(plan: StorePlan, shard: int) -> ShardResult:
    """Extract shard ``shard`` of ``plan`` and write it atomically; skip it when already complete.

    Idempotent: a shard that exists under its final name is complete, and its recorded result is
    returned. Concurrent tasks for the same shard (two extractions of one store, a duplicate Dask
    task) extract it once: the task holds the shard's claim (:mod:`features.shard_claim`) while it
    extracts, and a task that waited for the claim returns the shard the other one wrote. Sets the
    calling thread's torch intra-op threads to the plan's (see :func:`_set_threads`).
    """
    path = plan.shard_file(shard)
    if path.is_file():
        log.info("shard %d: complete, skipped (%s)", shard, path)
        return ShardResult.from_file(path)
    with shard_claim(plan.store_dir, shard):   # another extraction of this store may be on it: one at a time
        if path.is_file():
            log.info("shard %d: extracted meanwhile by another task, skipped (%s)", shard, path)
            return ShardResult.from_file(path)
        return _extract_shard(plan, shard, path)


def _extract_shard(plan: StorePlan, shard: int, path: Path) -> ShardResult:
    t_start = time.perf_counter()
    cfg = plan.config
    spec = cfg.segment
    threads = _set_threads(plan)
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
        visual, audio = load_models(plan)
        t_models = time.perf_counter() - t
        batcher = _FrameBatcher(visual, plan.batch_size)
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
