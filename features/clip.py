"""Featurise one video (or decoded frames) exactly as a store did, for explanations and pixel-space metrics.

``ClipFeaturizer.from_card(card, device)`` rebuilds the store's extractors from the extractor
configurations and segmentation its card records (the weights' sha256 is checked against the
card) and exposes:

* :meth:`ClipFeaturizer.featurize_video` — a video file -> (visual (T,H,W,C), audio (T,Ca), mask (T,)),
  decoded by ``pipelines.media.decode_clip``;
* :meth:`ClipFeaturizer.decode` — a video file -> a ``DecodedClip`` with the store's segmentation (no CNN);
* :meth:`ClipFeaturizer.featurize_frames` — uint8 frames (T, F, S, S, 3) -> visual (T, H, W, C);
* :meth:`ClipFeaturizer.featurize_audio` — float audio (T, samples) -> (T, Ca);
* :meth:`ClipFeaturizer.visual_from_float` — differentiable: float frames (N, 3, S, S) in [0, 1]
  -> (N, H, W, C), for STEP and pixel-space deletion/insertion.

Values match the store's up to float16 storage rounding (the store keeps float16; these are float32).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
from features.runtime import resolve_device
from features.store import StoreCard, StoreError
from features.weights import WeightsError
from pipelines.media import ClipDecoder, DecodedClip, decode_clip
from pipelines.segments import SegmentSpec

__all__ = ["ClipFeatures", "ClipFeaturizer"]

log = logging.getLogger(__name__)


@dataclass
class ClipFeatures:
    """One clip's features: visual float32 (T, H, W, C), audio float32 (T, Ca), segment_mask bool (T,),
    plus the decoded clip (frames uint8 (T, F, S, S, 3), audio (T, samples)) they came from."""

    visual: np.ndarray
    audio: np.ndarray
    segment_mask: np.ndarray
    decoded: DecodedClip


class ClipFeaturizer:
    """The extractors and segmentation of one store, for single clips."""

    def __init__(self, visual: Any, audio: Any, spec: SegmentSpec, batch_size: int = 8) -> None:
        self.visual = visual
        self.audio = audio
        self.spec = spec
        self.batch_size = batch_size

    @classmethod
    def from_card(cls, card: StoreCard | dict[str, Any], device: str | torch.device = "cpu") -> "ClipFeaturizer":
        """Rebuild the extractors a store was extracted with, from the configurations its card records.

        Raises ValueError for an AVE folder's card, StoreError for a card written before cards
        carried the configurations (extract the store again) and WeightsError when the weights now
        differ from the card's sha256.
        """
        card = card if isinstance(card, StoreCard) else StoreCard.model_validate(card)
        if card.format == "ave":
            raise ValueError("an AVE feature folder has no extractor configuration; clips cannot be featurised like it")
        if card.visual_config is None or card.audio_config is None:
            raise StoreError(f"store {card.store_id}: its card records no extractor configuration (written by an "
                             f"older version); extract the store again to featurise clips like it")
        spec = card.segment_spec
        dev = resolve_device(device)
        visual = build_visual(VisualConfig.model_validate(card.visual_config), device=dev, input_size=spec.frame_size)
        audio = build_audio(AudioConfig.model_validate(card.audio_config), device=dev, sample_rate=spec.audio_rate)
        for kind, built, want in (("visual", visual.weights_sha256, card.visual.get("weights_sha256")),
                                  ("audio", audio.weights_sha256, card.audio.get("weights_sha256"))):
            if built != want:
                raise WeightsError(f"{kind} extractor weights sha256 {built} differ from the store card's {want}")
        return cls(visual, audio, spec)

    @property
    def device(self) -> torch.device:
        return self.visual.device

    def featurize_frames(self, frames: np.ndarray, segment_mask: np.ndarray | None = None) -> np.ndarray:
        """uint8 frames (T, F, S, S, 3) -> visual float32 (T, H, W, C); F maps averaged; masked-out segments zero."""
        t, f, s = frames.shape[:3]
        mask = np.ones(t, bool) if segment_mask is None else np.asarray(segment_mask, bool)
        flat = torch.from_numpy(np.ascontiguousarray(frames[mask]).reshape(-1, s, s, 3))
        outs = [self.visual(flat[i:i + self.batch_size]) for i in range(0, len(flat), self.batch_size)]
        h, w, c = self.visual.feature_shape
        out = np.zeros((t, h, w, c), np.float32)
        if outs:
            out[mask] = torch.cat(outs).numpy().reshape(-1, f, h, w, c).mean(1)
        return out

    def featurize_audio(self, audio: np.ndarray, segment_mask: np.ndarray | None = None) -> np.ndarray:
        """float audio (T, samples) at the card's rate -> (T, Ca); masked-out segments zero."""
        mask = np.ones(len(audio), bool) if segment_mask is None else np.asarray(segment_mask, bool)
        out = np.zeros((len(audio), self.audio.dim), np.float32)
        if mask.any():
            out[mask] = self.audio(torch.from_numpy(np.ascontiguousarray(audio[mask], dtype=np.float32))).numpy()
        return out

    def decode(self, path: str | Path, timeout_s: float = 60.0, decoder: ClipDecoder | None = None) -> DecodedClip:
        """Decode ``path`` with the store's segmentation only (frames uint8 (T, F, S, S, 3), audio, mask), no CNN.

        ``decoder``: a caller's long-lived :class:`pipelines.media.ClipDecoder` (one child process for
        many clips; its own timeout applies); None starts a child for this one call (``timeout_s``).
        """
        if decoder is not None:
            return decoder.decode(path, self.spec)
        return decode_clip(path, self.spec, timeout_s=timeout_s)

    def featurize_video(self, path: str | Path, timeout_s: float = 60.0, decoder: ClipDecoder | None = None) -> ClipFeatures:
        """Decode ``path`` (see :meth:`decode`) with the store's segmentation and featurise it.

        Raises pipelines.media.MediaError.
        """
        clip = self.decode(path, timeout_s=timeout_s, decoder=decoder)
        mask = np.asarray(clip.segment_mask, bool)
        return ClipFeatures(self.featurize_frames(clip.frames, mask), self.featurize_audio(clip.audio, mask), mask, clip)

    def visual_from_float(self, frames: torch.Tensor) -> torch.Tensor:
        """Differentiable: float frames (N, 3, S, S) in [0, 1] on :attr:`device` -> (N, H, W, C) float32."""
        return self.visual.forward_float(frames)
