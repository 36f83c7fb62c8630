"""Training tensors from a feature store split, held in memory as float16 and batched without workers.

The splits are read once through ``FeatureStore.read`` in chunks of contiguous rows (one file
open per shard and chunk, never per sample) and kept as a float16 :class:`stan_head.batch.HeadBatch`
on the CPU; :meth:`HeadBatch.batches` gathers each batch and converts it to float32 on the
target device. There are no DataLoader worker processes: gathering a batch from memory is cheap
next to the head's matmuls, so the cores stay on compute.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from features.store import FeatureStore
from stan_head.batch import HeadBatch

log = logging.getLogger(__name__)

__all__ = ["load_split", "load_splits"]


def load_splits(store: FeatureStore, splits: Sequence[str], chunk: int = 512) -> dict[str, HeadBatch]:
    """Read several splits of a feature store into memory in one pass (float16 ``HeadBatch`` per split).

    The store is read in index order, ``chunk`` clips at a time, so each read asks a shard for a
    contiguous run of rows (HDF5 reads a run as one hyperslab; the same rows scattered across a
    shard — one split's rows — are an order of magnitude slower to select). Rows of splits not
    asked for are dropped chunk by chunk; tensors are preallocated, so peak memory stays near the
    splits' own size plus one chunk.
    """
    split_col = store.index["split"].to_numpy()
    counts = {name: int((split_col == name).sum()) for name in splits}
    card = store.card
    out = {
        name: HeadBatch.empty(n, int(card.num_segments), card.visual_shape, int(card.audio_dim))
        for name, n in counts.items()
    }
    filled = dict.fromkeys(counts, 0)
    wanted = np.flatnonzero(np.isin(split_col, list(counts)))
    if len(wanted):
        lo, hi = int(wanted[0]), int(wanted[-1]) + 1
        for start in range(lo, hi, chunk):
            positions = np.arange(start, min(hi, start + chunk))
            part = HeadBatch.from_features(store.read(positions))
            chunk_split = split_col[positions]
            for name, tensors in out.items():
                keep = np.flatnonzero(chunk_split == name)
                if len(keep):
                    tensors.assign(filled[name], part, torch.from_numpy(keep))
                    filled[name] += len(keep)
    for name, tensors in out.items():
        log.info(
            "loaded split %r: %d clips, visual %s (%.1f MiB float16)",
            name, len(tensors), tuple(tensors.visual.shape), tensors.visual.numel() * 2 / 2**20,
        )
    return out


def load_split(store: FeatureStore, split: str, chunk: int = 512) -> HeadBatch:
    """Read one split into memory as a float16 :class:`HeadBatch` (see :func:`load_splits`)."""
    return load_splits(store, [split], chunk=chunk)[split]
