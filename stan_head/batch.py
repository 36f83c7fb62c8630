"""The head's inputs for n clips as torch tensors: the one batch class of training, explanation and evaluation.

``features.store.FeatureBatch`` is the store's record (numpy, float16, what a shard holds);
:class:`HeadBatch` is what a head reads (torch). A whole split is held in memory as a float16
``HeadBatch`` on the CPU (:mod:`stan_head.data`); :meth:`HeadBatch.take` gathers rows of it as
float32 on the target device, which is what the trainer, the explainers and the deletion curves
receive. Labels are optional: a batch explained for a given target needs none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from features.store import FeatureBatch

__all__ = ["HeadBatch"]


@dataclass
class HeadBatch:
    """Head inputs (and, where known, labels) of n clips.

    Attributes:
        clip_id: the clips, in batch order.
        visual: float (n, T, H, W, Cv).
        audio: float (n, T, Ca).
        segment_mask: bool (n, T), True where the segment lies inside the clip.
        label: int64 (n,) class index, or None.
        segment_label: int64 (n, T), the class inside the event and K (background) outside, or None.
    """

    clip_id: list[str]
    visual: torch.Tensor
    audio: torch.Tensor
    segment_mask: torch.Tensor
    label: torch.Tensor | None = None
    segment_label: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.clip_id)

    @classmethod
    def from_features(cls, fb: FeatureBatch) -> "HeadBatch":
        """Wrap a store read on the CPU, float16 features as they are (no copy where dtypes already fit)."""
        return cls(
            clip_id=list(fb.clip_id),
            visual=torch.from_numpy(np.ascontiguousarray(fb.visual, dtype=np.float16)),
            audio=torch.from_numpy(np.ascontiguousarray(fb.audio, dtype=np.float16)),
            segment_mask=torch.from_numpy(np.asarray(fb.segment_mask, dtype=bool)),
            label=torch.from_numpy(np.asarray(fb.label_idx, dtype=np.int64)),
            segment_label=torch.from_numpy(np.asarray(fb.segment_label, dtype=np.int64)),
        )

    @classmethod
    def empty(cls, n: int, t: int, visual_shape: Sequence[int], audio_dim: int) -> "HeadBatch":
        """Preallocated float16 CPU tensors for n clips (filled by :meth:`assign`)."""
        h, w, cv = (int(x) for x in visual_shape)
        return cls(
            clip_id=[],
            visual=torch.empty((n, t, h, w, cv), dtype=torch.float16),
            audio=torch.empty((n, t, audio_dim), dtype=torch.float16),
            segment_mask=torch.empty((n, t), dtype=torch.bool),
            label=torch.empty((n,), dtype=torch.int64),
            segment_label=torch.empty((n, t), dtype=torch.int64),
        )

    def assign(self, start: int, other: "HeadBatch", rows: torch.Tensor) -> None:
        """Copy rows ``rows`` of ``other`` into rows ``start:`` of this batch (and append their clip ids)."""
        stop = start + len(rows)
        self.clip_id.extend(other.clip_id[i] for i in rows.tolist())
        self.visual[start:stop] = other.visual[rows]
        self.audio[start:stop] = other.audio[rows]
        self.segment_mask[start:stop] = other.segment_mask[rows]
        for name in ("label", "segment_label"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None:
                mine[start:stop] = theirs[rows]

    def take(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> "HeadBatch":
        """Rows ``index`` (int64 tensor or slice) as float32 features on ``device``."""
        device = torch.device(device)
        rows = torch.arange(len(self))[index] if isinstance(index, slice) else index
        nb = device.type == "cuda"
        if device.type == "cpu":
            # One pass per row (gather + float16 -> float32 in the same copy) instead of a float16
            # gather followed by a conversion: the batch's visual block is the largest memory traffic.
            visual = torch.empty((len(rows), *self.visual.shape[1:]), dtype=torch.float32)
            for j, i in enumerate(rows.tolist()):
                visual[j].copy_(self.visual[i])
        else:
            visual = self.visual[rows].to(device, non_blocking=nb).float()

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[rows].to(device, non_blocking=nb)

        return HeadBatch(
            clip_id=[self.clip_id[i] for i in rows.tolist()],
            visual=visual,
            audio=self.audio[rows].to(device, non_blocking=nb).float(),
            segment_mask=move(self.segment_mask),  # type: ignore[arg-type]
            label=move(self.label),
            segment_label=move(self.segment_label),
        )

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Iterator["HeadBatch"]:
        """Float32 batches on ``device`` in order, or shuffled by ``generator`` (a seeded CPU generator) when given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.take(order[start : start + batch_size], device)
