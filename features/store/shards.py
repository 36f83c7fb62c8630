"""Shard files (contract 3): one file per shard of clips, HDF5 or Parquet, and the tensors they hold.

HDF5 shard datasets: ``visual`` float16 (N, T, H, W, Cv) chunked per clip, ``audio`` float16
(N, T, Ca), ``clip_id`` utf-8 (N,), ``segment_mask`` uint8 (N, T), ``segment_label`` int16 (N, T),
``label_idx`` int64 (N,). Parquet shards hold the same columns; ``visual``/``audio``/
``segment_mask``/``segment_label`` are Arrow fixed-shape tensor columns. Each shard file also
carries its own metadata (clip ids, per-clip sha256, failures, timings) and is written under a
temp name and renamed when complete, so a shard that exists under its final name is complete.
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
import pyarrow as pa
import pyarrow.parquet as pq

from features.store.card import StoreCard
from pipelines.atomic import atomic_path

__all__ = [
    "FeatureBatch", "ShardData", "SHARD_FORMATS", "clip_sha256", "shard_path", "write_shard", "read_shard_meta",
    "read_shard_rows", "concat_batches",
]

log = logging.getLogger(__name__)

SHARD_FORMATS = ("hdf5", "parquet")
_EXT = {"hdf5": ".h5", "parquet": ".parquet"}
_META_KEY = "wherewhen_shard"


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

    def take(self, order: np.ndarray) -> "FeatureBatch":
        """The clips at ``order`` (positions into this batch; any order, repeats allowed)."""
        return FeatureBatch(
            clip_id=[self.clip_id[i] for i in order], visual=self.visual[order], audio=self.audio[order],
            segment_mask=self.segment_mask[order], label_idx=self.label_idx[order],
            segment_label=self.segment_label[order],
        )


@dataclass
class ShardData:
    """What one shard holds before it is written: a :class:`FeatureBatch` plus shard metadata."""

    batch: FeatureBatch
    meta: dict[str, Any]


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


def concat_batches(batches: Sequence[FeatureBatch], like: StoreCard | None = None) -> FeatureBatch:
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
