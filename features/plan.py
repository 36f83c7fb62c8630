"""Planning a feature store: the extraction configuration, the store-id and the fixed shard assignment.

:func:`plan_store` validates the configuration, hashes the weights, loads the dataset's manifest
(once per extraction: the plan carries what the later steps need from it) and computes the
store-id and the shards; it is fast and builds no model.

The store-id is a hash of (dataset fingerprint, extractor names + weights sha256 + engine,
segment spec, format, shard size, batch size, torch threads per task). Clips are sorted by
clip_id and cut into shards of ``shard_size``; none of this depends on the number of workers or
on which worker runs a shard.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.extractors import AudioConfig, VisualConfig, weights_identity
from features.labels import normalise_boxes
from features.runtime import resolve_device
from features.store import is_complete, shard_path
from pipelines.manifest import load_dataset
from pipelines.runtime import code_version
from pipelines.segments import SegmentSpec

__all__ = [
    "ExtractConfig", "ClipJob", "StorePlan", "plan_store", "compute_store_id", "default_batch_size",
    "STORE_LAYOUT_VERSION", "CPU_BATCH_SIZE", "CPU_BATCH_PIXELS", "CUDA_BATCH_SIZE", "EXTRACT_PRESETS", "ExtractPreset",
]

STORE_LAYOUT_VERSION = 1

#: Frames per CNN forward when the configuration leaves it open: small on the CPU (one torch thread
#: per task; the batch-size sweep is in docs/BENCHMARKS.md, bench/extract_sweep.py), large on CUDA.
CPU_BATCH_SIZE = 4
CUDA_BATCH_SIZE = 64
#: On the CPU a batch holds at most this many frame pixels (4 frames of 320 px): above it, the CNN's
#: largest activations outgrow the 64 MiB heaps glibc gives each thread, and every batch maps them
#: afresh (EfficientNet-Lite0 at 448 px, batch 4: 4 x 96 x 224 x 224 float32 is 77 MB; see
#: :func:`default_batch_size`).
CPU_BATCH_PIXELS = CPU_BATCH_SIZE * 320 * 320

#: Named extraction protocols: the field values ``ExtractConfig(preset=NAME)`` starts from; fields given
#: explicitly win (visual, audio and segment field by field). ``ave`` is AVE-ECCV18's (Tian et al. 2018):
#: VGG-19 pool5 7×7×512 with 16 frames per 1-s segment averaged, 10 segments, VGGish 128-d audio; the
#: weights are local checkpoints as for any extractor (``--visual-weights`` / ``--audio-weights``).
EXTRACT_PRESETS: dict[str, dict[str, Any]] = {
    "ave": {"visual": {"name": "vgg19"}, "audio": {"name": "vggish"},
            "segment": {"num_segments": 10, "segment_s": 1.0, "frames_per_segment": 16, "frame_size": 224}},
}
ExtractPreset = Literal[tuple(EXTRACT_PRESETS)]  # type: ignore[valid-type]


def _with_preset(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over its preset's values (a nested field given as a dict is merged key by key)."""
    out = dict(given)
    for key, value in EXTRACT_PRESETS[given["preset"]].items():
        mine = given.get(key)
        out[key] = {**value, **mine} if isinstance(mine, dict) else value if mine is None else mine
    return out


#: the devices an extraction runs on ("auto": CUDA when available, else the CPU).
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class ExtractConfig(BaseModel):
    """What ``wherewhen extract-features`` is given.

    Attributes:
        dataset_dir: a built dataset folder (manifest.parquet + dataset.json).
        out_root: the store goes to ``out_root/<dataset name>/<store-id>/``.
        visual / audio: extractor choice (a name or ``{"name", "weights", ...}``).
        format: shard format, ``hdf5`` (default) or ``parquet``.
        workers: shard tasks run at once as threads of one Dask worker inside this process
            (see :func:`features.runner.local_cluster_kwargs`); None = one per CPU core; 0 = run
            the shards one after the other in this process without Dask (tests, debugging).
            Ignored with ``dask_address``.
        dask_address: an existing scheduler, e.g. ``tcp://10.0.0.5:8786``.
        device: ``cpu`` (the default), ``cuda``, ``cuda:1`` or ``auto`` (CUDA when present).
        segment: the segmentation (T, seconds, frames per segment, frame size, audio rate).
        shard_size: clips per shard (= per Dask task).
        batch_size: frames per CNN forward (batched across clips); None = :func:`default_batch_size`
            for the device and frame size (resolved by :func:`plan_store`, so the store-id has the number).
        torch_threads: torch intra-op threads per shard task (default 1). Fixed, not derived from the
            worker count: oneDNN's CPU convolutions round differently with different thread counts
            (float32 differences that change some float16 values), so it is part of the store-id.
            One task per core x 1 thread uses every core without oversubscription.
        decode_timeout_s: seconds one clip's decode may take before its child process is killed.
        prefetch: decoded clips kept ready ahead of the CNN.
        preset: a named protocol (:data:`EXTRACT_PRESETS`, e.g. ``ave``) the other fields start from.
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
    preset: ExtractPreset | None = Field(None, description="a named protocol the other options start from: ave = "
                                         "AVE-ECCV18's VGG-19 pool5, 16 frames per 1-s segment averaged, 10 segments, VGGish")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return _with_preset(data) if isinstance(data, dict) and data.get("preset") in EXTRACT_PRESETS else data

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
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
    """Everything the shard tasks and finalize need: the config (with its batch size resolved), the
    store folder, the fixed shard assignment and what the manifest says about the clips.

    ``boxes`` are the dataset's boxes normalised to [0, 1] of the frame (records), None without any.
    """

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
    boxes: list[dict[str, Any]] | None = None
    visual_sha256: str | None = None
    audio_sha256: str | None = None
    plan_s: float = 0.0

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def torch_threads(self) -> int:
        """Torch intra-op threads of every shard task (part of the store-id)."""
        return self.config.torch_threads

    @property
    def batch_size(self) -> int:
        """Frames per CNN forward (resolved by :func:`plan_store`)."""
        return int(self.config.batch_size)  # type: ignore[arg-type]  # never None: see _batch_size_resolved

    @field_validator("config")
    @classmethod
    def _batch_size_resolved(cls, v: ExtractConfig) -> ExtractConfig:
        if v.batch_size is None:
            raise ValueError("a plan's config has its batch size resolved (plan_store does it)")
        return v

    def shard_file(self, shard: int) -> Path:
        return shard_path(self.store_dir, shard, self.config.format)


def default_batch_size(device: str, frame_size: int) -> int:
    """The batch size used when :attr:`ExtractConfig.batch_size` is None, for ``device`` and frames of
    ``frame_size`` px: 64 on CUDA; on the CPU 4, fewer where 4 frames exceed :data:`CPU_BATCH_PIXELS`
    (2 at 448 px, the default frame size; 1 from 640 px).

    Why fewer: shard tasks run in threads, and glibc serves a thread's blocks larger than its 64 MiB
    heaps with a fresh ``mmap`` whatever :func:`features.malloc.raise_malloc_thresholds` sets, so the
    pages are zeroed again by the kernel at every batch. At 448 px, two shard tasks in threads x 1 torch
    thread, EfficientNet-Lite0 took 53.7 ms of wall time per frame at batch 4 (22.5 ms of system CPU per
    frame) and 37.6 at batch 2 (0.5), 36.9 at batch 1 (``python bench/extract_sweep.py --frame-size 448``,
    docs/BENCHMARKS.md, "CNN engine, batch size, heap and threads").
    """
    kind = resolve_device(device).type if device == "auto" else device.split(":")[0]
    if kind == "cuda":
        return CUDA_BATCH_SIZE
    return max(1, min(CPU_BATCH_SIZE, CPU_BATCH_PIXELS // (frame_size * frame_size)))


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


def plan_store(cfg: ExtractConfig) -> StorePlan:
    """Load the manifest, hash the weights, compute the store-id and the shard assignment.

    Raises FileNotFoundError / ValueError for a missing or inconsistent dataset and
    :class:`features.weights.WeightsError` for missing weights, before any work starts.
    """
    t0 = time.perf_counter()
    if cfg.batch_size is None:
        cfg = cfg.model_copy(update={"batch_size": default_batch_size(cfg.device, cfg.segment.frame_size)})
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
    boxes = normalise_boxes(ds.boxes)
    return StorePlan(
        config=cfg, store_id=store_id, store_dir=store_dir, dataset_name=ds.card.name,
        dataset_fingerprint=ds.card.fingerprint, classes=list(ds.classes), code_version=code_version(),
        shards=[jobs[i:i + cfg.shard_size] for i in range(0, len(jobs), cfg.shard_size)],
        complete=is_complete(store_dir, store_id),
        boxes=None if boxes is None else boxes.to_dict(orient="records"),
        visual_sha256=visual_sha, audio_sha256=audio_sha, plan_s=time.perf_counter() - t0,
    )
