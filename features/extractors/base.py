"""Shared behaviour of the frozen extractors: normalisation, memory format, device, cards.

``VisualExtractor`` wraps a torch module that maps normalised float images (N, 3, S, S) to a
feature map (N, C, H, W). Calling it on uint8 frames (N, S, S, 3) normalises inside, runs in
``torch.inference_mode`` with channels-last tensors (about 2x faster on CPU than contiguous), and
returns float32 (N, H, W, C) on the CPU. :meth:`VisualExtractor.forward_float` is the
differentiable path used by pixel-space explanations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from features.geometry import PADDED_STRIDE32

__all__ = ["VisualExtractor", "AudioExtractor", "resolve_device", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class VisualExtractor:
    """A frozen image CNN producing a spatial feature map.

    Attributes:
        name: extractor name (``efficientnet_lite0``, ``resnet18``, ...).
        layer: which layer the map comes from (for the card).
        input_size: S, the square input side in pixels.
        feature_shape: (H, W, C) of the output at ``input_size``.
        grid: where the map's cells sit in the frame, ``{stride_px, origin_px}``
            (see :mod:`features.geometry`).
    """

    def __init__(
        self,
        name: str,
        layer: str,
        module: nn.Module,
        feature_shape: tuple[int, int, int],
        weights_sha256: str | None,
        weights_source: str,
        input_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        device: str | torch.device = "cpu",
        grid: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self.grid = dict(grid or PADDED_STRIDE32)
        self.layer = layer
        self.input_size = input_size
        self.feature_shape = feature_shape
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source
        self.mean = mean
        self.std = std
        self.device = resolve_device(device)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module.to(self.device, memory_format=torch.channels_last)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def card(self) -> dict[str, Any]:
        """What the store card records about this extractor."""
        return {
            "name": self.name,
            "kind": "visual",
            "layer": self.layer,
            "input_size": self.input_size,
            "feature_shape": list(self.feature_shape),
            "grid": dict(self.grid),
            "normalisation": {"mean": list(self.mean), "std": list(self.std), "scale": "uint8/255"},
            "weights_sha256": self.weights_sha256,
            "weights": self.weights_source,
        }

    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: float images (N, 3, S, S) in [0, 1] -> feature map (N, H, W, C).

        Gradients flow to ``x``; the weights stay frozen. Runs on ``x``'s device (move it first).
        """
        x = (x - self._mean.to(x.device, x.dtype)) / self._std.to(x.device, x.dtype)
        y = self.module(x.contiguous(memory_format=torch.channels_last))
        return y.permute(0, 2, 3, 1)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, S, S, 3) RGB -> float32 feature maps (N, H, W, C) on the CPU."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected uint8 (N, S, S, 3) frames, got {frames.dtype} {tuple(frames.shape)}")
        with torch.inference_mode():
            x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            y = self.module(x.contiguous(memory_format=torch.channels_last))
            return y.permute(0, 2, 3, 1).float().cpu().contiguous()


class AudioExtractor:
    """A per-segment audio embedding: float audio (N, samples) at ``sample_rate`` -> (N, dim)."""

    name: str
    dim: int
    sample_rate: int

    def card(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
