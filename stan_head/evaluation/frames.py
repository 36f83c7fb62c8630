"""Decoded frames of a store's clips, for pixel-space metrics and overlays: no CNN involved.

:class:`FrameSource` reads the store's dataset manifest once, keeps one decoder child
(``pipelines.media.ClipDecoder``) for all the clips of a run and decodes each clip once, with the
store's own segmentation (the card's segment spec), so the frames are the ones the features
were computed from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from features.store import StoreCard
from pipelines.manifest import load_dataset
from pipelines.media import ClipDecoder
from pipelines.segments import SegmentSpec

log = logging.getLogger(__name__)

__all__ = ["FrameSource"]


class FrameSource:
    """Frames of the clips of one store; a context manager (closing stops the decoder child).

    Args:
        card: the store's card (its ``dataset_dir`` and ``segment`` spec).
        device: where :meth:`__call__` puts the float frames.
        timeout_s: per-clip decode timeout.

    Raises:
        FileNotFoundError: the card names no dataset folder, or the dataset is gone.
    """

    def __init__(self, card: StoreCard, device: torch.device | str = "cpu", timeout_s: float = 60.0) -> None:
        if not card.dataset_dir:
            raise FileNotFoundError(f"store {card.store_id}: the store card names no dataset folder; frames are unreachable")
        self.dataset = load_dataset(Path(card.dataset_dir))
        self.spec = SegmentSpec.model_validate(card.segment)
        self.device = torch.device(device)
        self._decoder = ClipDecoder(timeout_s=timeout_s)
        self._cache: dict[str, np.ndarray] = {}

    def uint8(self, clip_id: str) -> np.ndarray:
        """uint8 (T, F, S, S, 3) frames of one clip (decoded once, then kept)."""
        if clip_id not in self._cache:
            self._cache[clip_id] = self._decoder.decode(self.dataset.clip_path(clip_id), self.spec).frames
        return self._cache[clip_id]

    def centre_frames(self, clip_id: str) -> np.ndarray:
        """uint8 (T, S, S, 3): the middle sampled frame of each segment."""
        frames = self.uint8(clip_id)
        return frames[:, frames.shape[1] // 2]

    def __call__(self, clip_ids: list[str]) -> torch.Tensor:
        """float (B, T, F, 3, S, S) in [0, 1] on :attr:`device` (the ``FrameLoader`` of ``step_pixel``)."""
        frames = np.stack([self.uint8(c) for c in clip_ids])
        return torch.from_numpy(frames).to(self.device).permute(0, 1, 2, 5, 3, 4).float() / 255.0

    def close(self) -> None:
        """Stop the decoder child."""
        self._decoder.close()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
