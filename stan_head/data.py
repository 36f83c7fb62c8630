"""Training tensors from a feature store split, held in memory as float16 and batched without workers.

The splits are read once through ``FeatureStore.read`` in chunks of contiguous rows (one file
open per shard and chunk, never per sample) and kept as float16 tensors; each batch is gathered and converted to
float32 on the target device. There are no DataLoader worker processes: gathering a batch from
memory is cheap next to the head's matmuls, so both cores stay on compute.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


log = logging.getLogger(__name__)

__all__ = ["Batch", "SplitTensors", "load_split", "load_splits"]


@dataclass
class Batch:
    """One training batch on the target device: float32 features, bool mask, int64 labels."""

    visual: torch.Tensor  # float32 (B, T, H, W, Cv)
    audio: torch.Tensor  # float32 (B, T, Ca)
    segment_mask: torch.Tensor  # bool (B, T)
    label: torch.Tensor  # int64 (B,)
    segment_label: torch.Tensor  # int64 (B, T); K = background


@dataclass
class SplitTensors:
    """A whole split in memory (CPU, float16 features)."""

    clip_id: list[str]
    visual: torch.Tensor  # float16 (n, T, H, W, Cv)
    audio: torch.Tensor  # float16 (n, T, Ca)
    segment_mask: torch.Tensor  # bool (n, T)
    label: torch.Tensor  # int64 (n,)
    segment_label: torch.Tensor  # int64 (n, T)

    def __len__(self) -> int:
        return len(self.clip_id)

    @classmethod
    def from_feature_batch(cls, fb: Any) -> "SplitTensors":
        """Wrap a ``features.store.FeatureBatch`` (numpy) without copying where dtypes already fit."""
        visual = np.ascontiguousarray(fb.visual, dtype=np.float16)
        audio = np.ascontiguousarray(fb.audio, dtype=np.float16)
        return cls(
            clip_id=list(fb.clip_id),
            visual=torch.from_numpy(visual),
            audio=torch.from_numpy(audio),
            segment_mask=torch.from_numpy(np.asarray(fb.segment_mask, dtype=bool)),
            label=torch.from_numpy(np.asarray(fb.label_idx, dtype=np.int64)),
            segment_label=torch.from_numpy(np.asarray(fb.segment_label, dtype=np.int64)),
        )

    def batch(self, index: torch.Tensor, device: torch.device) -> Batch:
        """Gather rows ``index`` (int64) and move them to ``device`` as float32."""
        nb = device.type == "cuda"
        if device.type == "cpu":
            # One pass per row (gather + float16 -> float32 in the same copy) instead of a float16
            # gather followed by a conversion: the batch's visual block is the largest memory traffic.
            visual = torch.empty((len(index), *self.visual.shape[1:]), dtype=torch.float32)
            for j, i in enumerate(index.tolist()):
                visual[j].copy_(self.visual[i])
        else:
            visual = self.visual[index].to(device, non_blocking=nb).float()
        return Batch(
            visual=visual,
            audio=self.audio[index].to(device, non_blocking=nb).float(),
            segment_mask=self.segment_mask[index].to(device, non_blocking=nb),
            label=self.label[index].to(device, non_blocking=nb),
            segment_label=self.segment_label[index].to(device, non_blocking=nb),
        )

    def batches(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Yield batches in order, or shuffled by ``generator`` (a seeded CPU generator) when given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], device)


def load_splits(store: Any, splits: Sequence[str], chunk: int = 512) -> dict[str, SplitTensors]:
    """Read several splits of a ``features.store.FeatureStore`` into memory in one pass.

    The store is read in index order, ``chunk`` clips at a time, so each read asks a shard for a
    contiguous run of rows (HDF5 reads a run as one hyperslab; the same rows scattered across a
    shard — one split's rows — are an order of magnitude slower to select). Rows of splits not
    asked for are dropped chunk by chunk; tensors are preallocated, so peak memory stays near the
    splits' own size plus one chunk.
    """
    split_col = store.index["split"].to_numpy()
    counts = {name: int((split_col == name).sum()) for name in splits}
    card = store.card
    t, (h, w, cv), ca = int(card.num_segments), tuple(int(x) for x in card.visual_shape), int(card.audio_dim)
    out = {
        name: SplitTensors(
            clip_id=[],
            visual=torch.empty((n, t, h, w, cv), dtype=torch.float16),
            audio=torch.empty((n, t, ca), dtype=torch.float16),
            segment_mask=torch.empty((n, t), dtype=torch.bool),
            label=torch.empty((n,), dtype=torch.int64),
            segment_label=torch.empty((n, t), dtype=torch.int64),
        )
        for name, n in counts.items()
    }
    filled = dict.fromkeys(counts, 0)
    wanted = np.flatnonzero(np.isin(split_col, list(counts)))
    if len(wanted):
        lo, hi = int(wanted[0]), int(wanted[-1]) + 1
        for start in range(lo, hi, chunk):
            positions = np.arange(start, min(hi, start + chunk))
            part = SplitTensors.from_feature_batch(store.read(positions))
            chunk_split = split_col[positions]
            for name, tensors in out.items():
                keep = np.flatnonzero(chunk_split == name)
                if not len(keep):
                    continue
                a, b = filled[name], filled[name] + len(keep)
                idx = torch.from_numpy(keep)
                tensors.clip_id.extend(part.clip_id[i] for i in keep)
                for field in ("visual", "audio", "segment_mask", "label", "segment_label"):
                    getattr(tensors, field)[a:b] = getattr(part, field)[idx]
                filled[name] = b
    for name, tensors in out.items():
        log.info(
            "loaded split %r: %d clips, visual %s (%.1f MiB float16)",
            name, len(tensors), tuple(tensors.visual.shape), tensors.visual.numel() * 2 / 2**20,
        )
    return out


def load_split(store: Any, split: str, chunk: int = 512) -> SplitTensors:
    """Read one split into memory as :class:`SplitTensors` (see :func:`load_splits`)."""
    return load_splits(store, [split], chunk=chunk)[split]
