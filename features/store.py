"""The feature store (DESIGN.md contract 3): shard writers, the store card and one reader.

Layout of ``<out_root>/<dataset>/<store-id>/``::

    shard-00000.h5 | shard-00000.parquet   one file per shard of clips, written under a temp name
                                           and renamed when complete (pipelines.atomic)
    index.parquet                          clip_id, shard, row, label_idx, split, sha256,
                                           event_start_s, event_end_s, has_audio
    store.json                             the store card (:class:`StoreCard`)
    compute.json                           the compute kind the shards were made on (features.compute_kind)
    boxes.parquet                          the dataset's boxes, normalised to [0, 1] of the frame
    failures.parquet                       clip_id, relpath, stage, error, message

HDF5 shard datasets: ``visual`` float16 (N, T, H, W, Cv) chunked per clip, ``audio`` float16
(N, T, Ca), ``clip_id`` utf-8 (N,), ``segment_mask`` uint8 (N, T), ``segment_label`` int16 (N, T),
``label_idx`` int64 (N,). Parquet shards hold the same columns; ``visual``/``audio``/
``segment_mask``/``segment_label`` are Arrow fixed-shape tensor columns. Each shard file also
carries its own metadata (clip ids, per-clip sha256, failures, timings) so that a shard that
exists under its final name is complete by construction.

:class:`FeatureStore` reads a store in either format, or AVE's released feature layout
(``features.ave_interop``), and returns the same :class:`FeatureBatch` tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from pipelines.atomic import atomic_path, atomic_write_text

__all__ = [
    "FeatureBatch", "StoreCard", "FeatureStore", "ShardData", "StoreError",
    "clip_sha256", "shard_path", "write_shard", "read_shard_meta", "read_shard_rows",
    "SHARD_FORMATS", "INDEX_COLUMNS",
]

log = logging.getLogger(__name__)

SHARD_FORMATS = ("hdf5", "parquet")
_EXT = {"hdf5": ".h5", "parquet": ".parquet"}
_META_KEY = "wherewhen_shard"
INDEX_COLUMNS = ["clip_id", "shard", "row", "label_idx", "split", "sha256", "event_start_s", "event_end_s", "has_audio"]


class StoreError(RuntimeError):
    """A store folder that cannot be read (missing files, unknown layout, incomplete store)."""


@dataclass
class FeatureBatch:
    """Features of n clips.

    Attributes:
        clip_id: n clip ids.
        visual: float16 (n, T, H, W, Cv) feature maps; zeros in padded segments.
        audio: float16 (n, T, Ca); zeros in padded segments.
        segment_mask: bool (n, T), True where the segment lies inside the clip.
        label_idx: int64 (n,) class index into the store's ``classes``.
        segment_label: int64 (n, T): ``label_idx`` inside the event, K (background) outside.
    """

    clip_id: list[str]
    visual: np.ndarray
    audio: np.ndarray
    segment_mask: np.ndarray
    label_idx: np.ndarray
    segment_label: np.ndarray

    def __len__(self) -> int:
        return len(self.clip_id)


@dataclass
class ShardData:
    """What one shard holds before it is written: a :class:`FeatureBatch` plus shard metadata."""

    batch: FeatureBatch
    meta: dict[str, Any]


class StoreCard(BaseModel):
    """``store.json``: what a store holds and how it was made.

    ``visual``/``audio`` are the extractors' cards (name, layer, input size, normalisation,
    weights sha256); ``segment`` is the :class:`pipelines.segments.SegmentSpec` as a dict;
    ``timings`` holds seconds per stage (plan, decode, visual, audio, write, finalize, total).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    store_id: str
    format: str
    complete: bool = True
    dataset_name: str = ""
    dataset_dir: str | None = None
    dataset_fingerprint: str = ""
    classes: list[str]
    num_segments: int
    segment: dict[str, Any] = Field(default_factory=dict)
    visual: dict[str, Any] = Field(default_factory=dict)
    audio: dict[str, Any] = Field(default_factory=dict)
    visual_shape: tuple[int, int, int]
    audio_dim: int
    dtype: str = "float16"
    shard_size: int = 0
    num_shards: int = 0
    clips: int = 0
    failures: int = 0
    code_version: str = ""
    device: str = ""
    # what decides the values' last bits (features.compute_kind): device, CPU capability or GPU, torch
    compute: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def frames_per_segment(self) -> int:
        return int(self.segment.get("frames_per_segment", 1))


def clip_sha256(visual: np.ndarray, audio: np.ndarray, segment_mask: np.ndarray) -> str:
    """sha256 of one clip's stored feature bytes: float16 visual, float16 audio, uint8 mask (C order)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(visual, dtype=np.float16).tobytes())
    h.update(np.ascontiguousarray(audio, dtype=np.float16).tobytes())
    h.update(np.ascontiguousarray(segment_mask, dtype=np.uint8).tobytes())
    return h.hexdigest()


def shard_path(store_dir: Path, shard: int, fmt: str) -> Path:
    """``<store_dir>/shard-NNNNN.h5`` (hdf5) or ``.parquet``."""
    if fmt not in _EXT:
        raise ValueError(f"unknown store format {fmt!r}; choose one of {SHARD_FORMATS}")
    return Path(store_dir) / f"shard-{shard:05d}{_EXT[fmt]}"


# ---------------------------------------------------------------------------------------- write


def write_shard(path: Path, data: ShardData, fmt: str) -> Path:
    """Write one shard atomically (temp name + fsync + rename) in ``fmt``; return ``path``."""
    with atomic_path(path) as tmp:
        if fmt == "hdf5":
            _write_hdf5(tmp, data)
        elif fmt == "parquet":
            _write_parquet(tmp, data)
        else:
            raise ValueError(f"unknown store format {fmt!r}")
    return Path(path)


def _write_hdf5(path: Path, data: ShardData) -> None:
    b = data.batch
    n = len(b)
    with h5py.File(path, "w") as f:
        chunks = (1, *b.visual.shape[1:]) if n else None
        f.create_dataset("visual", data=b.visual.astype(np.float16, copy=False), chunks=chunks)
        f.create_dataset("audio", data=b.audio.astype(np.float16, copy=False),
                         chunks=(1, *b.audio.shape[1:]) if n else None)
        f.create_dataset("clip_id", data=np.array(b.clip_id, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("segment_mask", data=b.segment_mask.astype(np.uint8))
        f.create_dataset("segment_label", data=b.segment_label.astype(np.int16))
        f.create_dataset("label_idx", data=b.label_idx.astype(np.int64))
        f.attrs[_META_KEY] = json.dumps(data.meta)


def _tensor_column(arr: np.ndarray) -> pa.Array:
    if len(arr) == 0:
        typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(arr.dtype), list(arr.shape[1:]))
        return pa.ExtensionArray.from_storage(typ, pa.array([], type=typ.storage_type))
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(arr))


def _write_parquet(path: Path, data: ShardData) -> None:
    b = data.batch
    table = pa.table({
        "clip_id": pa.array(b.clip_id, type=pa.string()),
        "visual": _tensor_column(b.visual.astype(np.float16, copy=False)),
        "audio": _tensor_column(b.audio.astype(np.float16, copy=False)),
        "segment_mask": _tensor_column(b.segment_mask.astype(np.uint8)),
        "segment_label": _tensor_column(b.segment_label.astype(np.int16)),
        "label_idx": pa.array(b.label_idx.astype(np.int64)),
    })
    table = table.replace_schema_metadata({_META_KEY: json.dumps(data.meta)})
    pq.write_table(table, path, compression="none", row_group_size=max(1, min(len(b), 64)))


# ----------------------------------------------------------------------------------------- read


def read_shard_meta(path: Path) -> dict[str, Any]:
    """The metadata a shard file carries (clip ids, rows, sha256, failures, timings)."""
    path = Path(path)
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[_META_KEY])
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[_META_KEY.encode()])


def read_shard_rows(path: Path, rows: Sequence[int]) -> FeatureBatch:
    """Rows ``rows`` (any order, repeats allowed) of one shard file, hdf5 or parquet."""
    path = Path(path)
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inverse = np.unique(rows, return_inverse=True)
    if path.suffix == ".h5":
        # One contiguous hyperslab per dataset, then select in memory: h5py's point selection of
        # scattered rows (one split's rows in a shard) is an order of magnitude slower, and a
        # shard is small enough (shard_size clips) to read whole.
        lo, hi = (int(uniq[0]), int(uniq[-1]) + 1) if len(uniq) else (0, 0)
        sel = uniq - lo
        with h5py.File(path, "r") as f:
            cols = {k: f[k][lo:hi][sel] for k in ("visual", "audio", "segment_mask", "segment_label", "label_idx")}
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["clip_id"][lo:hi][sel]]
    else:
        table = pq.read_table(path).take(pa.array(uniq))
        cols = {}
        for k in ("visual", "audio", "segment_mask", "segment_label"):
            col = table.column(k).combine_chunks()
            cols[k] = col.to_numpy_ndarray() if len(col) else np.zeros((0, *col.type.shape), col.type.value_type.to_pandas_dtype())
        cols["label_idx"] = table.column("label_idx").to_numpy()
        ids = table.column("clip_id").to_pylist()
    pick = inverse
    return FeatureBatch(
        clip_id=[ids[i] for i in pick],
        visual=np.ascontiguousarray(cols["visual"][pick], dtype=np.float16),
        audio=np.ascontiguousarray(cols["audio"][pick], dtype=np.float16),
        segment_mask=cols["segment_mask"][pick].astype(bool),
        label_idx=cols["label_idx"][pick].astype(np.int64),
        segment_label=cols["segment_label"][pick].astype(np.int64),
    )


def concat_batches(batches: Sequence[FeatureBatch], like: "StoreCard | None" = None) -> FeatureBatch:
    """Concatenate batches in order (an empty list gives an empty batch shaped like ``like``)."""
    if not batches:
        if like is None:
            raise ValueError("concat_batches: nothing to concatenate and no card to shape an empty batch")
        t, (h, w, c), ca = like.num_segments, like.visual_shape, like.audio_dim
        return FeatureBatch([], np.zeros((0, t, h, w, c), np.float16), np.zeros((0, t, ca), np.float16),
                            np.zeros((0, t), bool), np.zeros((0,), np.int64), np.zeros((0, t), np.int64))
    return FeatureBatch(
        clip_id=[c for b in batches for c in b.clip_id],
        visual=np.concatenate([b.visual for b in batches]),
        audio=np.concatenate([b.audio for b in batches]),
        segment_mask=np.concatenate([b.segment_mask for b in batches]),
        label_idx=np.concatenate([b.label_idx for b in batches]),
        segment_label=np.concatenate([b.segment_label for b in batches]),
    )


class FeatureStore:
    """Read access to a feature store: hdf5 or parquet shards, or AVE's released layout.

    Attributes:
        path: the store folder.
        card: the :class:`StoreCard` (``store.json``; synthesised for an AVE folder).
        index: one row per clip: clip_id, shard, row, label_idx, split, sha256 (+ event_start_s,
            event_end_s, has_audio); positions into it are what :meth:`read` takes.
        boxes: clip_id, segment, x0, y0, x1, y1 in [0, 1] of the frame, or None.
        failures: clip_id, relpath, stage, error, message.
    """

    def __init__(self, path: Path, card: StoreCard, index: pd.DataFrame, boxes: pd.DataFrame | None,
                 failures: pd.DataFrame, reader: Any = None) -> None:
        self.path = Path(path)
        self.card = card
        self.index = index.reset_index(drop=True)
        self.boxes = boxes
        self.failures = failures
        self._reader = reader

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        """Open a store folder (``store.json`` + shards) or an AVE feature folder (``visual_feature.h5``).

        Raises :class:`StoreError` naming the folder when it is neither, or when the store is incomplete.
        """
        path = Path(path)
        if (path / "store.json").is_file():
            card = StoreCard.model_validate_json((path / "store.json").read_text())
            if not card.complete:
                raise StoreError(f"{path}: the store is incomplete (store.json complete=false); re-run extract-features")
            if not (path / "index.parquet").is_file():
                raise StoreError(f"{path}: index.parquet is missing")
            index = pd.read_parquet(path / "index.parquet")
            boxes = pd.read_parquet(path / "boxes.parquet") if (path / "boxes.parquet").is_file() else None
            failures = (pd.read_parquet(path / "failures.parquet") if (path / "failures.parquet").is_file()
                        else pd.DataFrame(columns=["clip_id", "relpath", "stage", "error", "message"]))
            return cls(path, card, index, boxes, failures)
        if (path / "visual_feature.h5").is_file():
            from features.ave_interop import open_ave

            return open_ave(path)
        raise StoreError(f"{path}: not a feature store (no store.json) and not an AVE feature folder (no visual_feature.h5)")

    def __len__(self) -> int:
        return len(self.index)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def read(self, positions: Sequence[int]) -> FeatureBatch:
        """Features of the clips at ``positions`` (rows of :attr:`index`), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return concat_batches([], like=self.card)
        if self._reader is not None:
            return self._reader(positions)
        sel = self.index.iloc[positions]
        parts: list[FeatureBatch] = []
        order: list[np.ndarray] = []
        for shard, group in sel.groupby("shard", sort=True):
            where = np.flatnonzero(sel["shard"].to_numpy() == shard)
            parts.append(read_shard_rows(shard_path(self.path, int(shard), self.card.format), group["row"].to_numpy()))
            order.append(where)
        batch = concat_batches(parts)
        back = np.empty(len(positions), dtype=np.int64)
        back[np.concatenate(order)] = np.arange(len(positions))
        return FeatureBatch(
            clip_id=[batch.clip_id[i] for i in back], visual=batch.visual[back], audio=batch.audio[back],
            segment_mask=batch.segment_mask[back], label_idx=batch.label_idx[back], segment_label=batch.segment_label[back],
        )

    def positions(self, split: str | None = None) -> np.ndarray:
        """Index positions of ``split`` (all clips when None), in index order."""
        if split is None:
            return np.arange(len(self.index))
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def read_split(self, split: str) -> FeatureBatch:
        """All clips of ``split`` (train | val | test) in index order."""
        return self.read(self.positions(split))

    def iter_batches(self, positions: Sequence[int], chunk: int = 256):
        """Yield :class:`FeatureBatch` chunks of at most ``chunk`` clips over ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        for i in range(0, len(positions), chunk):
            yield self.read(positions[i:i + chunk])


def write_card(store_dir: Path, card: StoreCard) -> Path:
    """Write ``store.json`` atomically."""
    return atomic_write_text(Path(store_dir) / "store.json", card.model_dump_json(indent=2))


def write_parquet_atomic(path: Path, df: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet atomically (no pandas index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)
