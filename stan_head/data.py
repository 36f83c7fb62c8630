"""Training tensors from a feature store split, held in memory as float16 and batched without workers.

A split is read once through ``FeatureStore.read_split`` (which reads each shard in chunks, never
one file open per sample) and kept as float16 tensors; each batch is gathered and converted to
float32 on the target device. There are no DataLoader worker processes: gathering a batch from
memory is cheap next to the head's matmuls, so both cores stay on compute.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from features.extractors import resolve_device

log = logging.getLogger(__name__)

__all__ = ["Batch", "SplitTensors", "load_split", "resolve_device"]


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
        return Batch(
            visual=self.visual[index].to(device, non_blocking=nb).float(),
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


def load_split(store: Any, split: str, chunk: int = 512) -> SplitTensors:
    """Read ``split`` of a ``features.store.FeatureStore`` into memory as :class:`SplitTensors`.

    The split is read ``chunk`` clips at a time through ``store.read`` (which groups rows per shard
    file) into preallocated float16 tensors, so peak memory stays near the split's own size.
    """
    positions = np.flatnonzero(store.index["split"].to_numpy() == split)
    if len(positions) <= chunk:
        tensors = SplitTensors.from_feature_batch(store.read(positions))
    else:
        first = store.read(positions[:chunk])
        n = len(positions)
        tensors = SplitTensors(
            clip_id=[],
            visual=torch.empty((n, *first.visual.shape[1:]), dtype=torch.float16),
            audio=torch.empty((n, *first.audio.shape[1:]), dtype=torch.float16),
            segment_mask=torch.empty((n, first.segment_mask.shape[1]), dtype=torch.bool),
            label=torch.empty((n,), dtype=torch.int64),
            segment_label=torch.empty((n, first.segment_label.shape[1]), dtype=torch.int64),
        )
        start = 0
        while start < n:
            fb = first if start == 0 else store.read(positions[start : start + chunk])
            part = SplitTensors.from_feature_batch(fb)
            end = start + len(part)
            tensors.clip_id.extend(part.clip_id)
            for name in ("visual", "audio", "segment_mask", "label", "segment_label"):
                getattr(tensors, name)[start:end] = getattr(part, name)
            start = end
    log.info(
        "loaded split %r: %d clips, visual %s (%.1f MiB float16)",
        split,
        len(tensors),
        tuple(tensors.visual.shape),
        tensors.visual.numel() * 2 / 2**20,
    )
    return tensors
