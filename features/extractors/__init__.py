"""Frozen extractors and their configuration.

``build_visual(cfg)`` / ``build_audio(cfg)`` turn a validated :class:`VisualConfig` /
:class:`AudioConfig` into an extractor through its :mod:`features.extractors.registry` spec. A
visual extractor maps uint8 frames (N, S, S, 3) to float feature maps (N, H, W, C); an audio
extractor maps float audio (N, samples) to (N, Ca) per segment. Importing this package imports
no torch; building an extractor does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.extractors.registry import (
    AUDIO_EXTRACTORS,
    AUDIO_NAMES,
    VISUAL_EXTRACTORS,
    VISUAL_NAMES,
    AudioName,
    ExtractorSpec,
    VisualEngine,
    VisualName,
)

if TYPE_CHECKING:
    import torch

    from features.extractors.base import AudioExtractor, VisualExtractor

__all__ = [
    "VisualConfig", "AudioConfig", "VISUAL_NAMES", "AUDIO_NAMES", "VisualName", "AudioName",
    "build_visual", "build_audio", "weights_identity", "spec_of",
]

class _ByName(BaseModel):
    """A config that can also be given as its bare name (``"resnet18"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v


class VisualConfig(_ByName):
    """Which visual CNN, which weights, which CPU inference engine."""

    name: VisualName = Field("efficientnet_lite0", description="frozen visual CNN (features.extractors.registry)")
    weights: str | None = Field(None, description="a checkpoint path, 'random', or None for the registry's default file")
    engine: VisualEngine = Field("graph", description="CPU inference: frozen TorchScript 'graph' or 'eager'; values "
                                                      "differ in the last float32 bits, so it enters the store-id")


class AudioConfig(_ByName):
    """Which audio extractor and which weights (``weights`` as for :class:`VisualConfig`)."""

    name: AudioName = Field("logmel", description="audio extractor (features.extractors.registry)")
    weights: str | None = Field(None, description="a checkpoint path, 'random', or None for the registry's default")


def spec_of(cfg: VisualConfig | AudioConfig) -> ExtractorSpec:
    """The registry entry of ``cfg``'s extractor."""
    return (VISUAL_EXTRACTORS if isinstance(cfg, VisualConfig) else AUDIO_EXTRACTORS)[cfg.name]


def build_visual(cfg: VisualConfig, device: str | torch.device = "cpu", input_size: int = 224) -> VisualExtractor:
    """The frozen visual extractor ``cfg`` names, on ``device`` ("auto" = CUDA when present).

    Also raises this process's glibc malloc thresholds (:func:`features.malloc.raise_malloc_thresholds`):
    at 320 px the CNN's largest activations exceed glibc's own mmap threshold, and without it every batch
    maps them afresh (1.6x slower on the CPU, docs/BENCHMARKS.md)."""
    from features.malloc import raise_malloc_thresholds

    raise_malloc_thresholds()
    extractor = spec_of(cfg).build_function()(cfg, device, input_size)
    extractor.engine = cfg.engine
    return extractor


def build_audio(cfg: AudioConfig, device: str | torch.device = "cpu", sample_rate: int = 16000) -> AudioExtractor:
    """The audio extractor ``cfg`` names."""
    return spec_of(cfg).build_function()(cfg, device, sample_rate)


def weights_identity(cfg: VisualConfig | AudioConfig) -> str | None:
    """The sha256 of the weights ``cfg`` would load, without building the model (for the store-id).

    ``"random"`` for explicit random init, None for extractors without weights (logmel). Raises
    :class:`features.weights.WeightsError` when the weight file is missing, so a bad
    configuration fails before any cluster starts.
    """
    from features.weights import WeightsError, efficientnet_lite0_asset
    from pipelines.runtime import file_sha256

    record = spec_of(cfg).weights
    if cfg.weights == "random":
        return "random"
    if record.default == "none":
        return None
    if cfg.weights is not None:
        path = Path(cfg.weights)
    elif record.default == "packaged":
        return efficientnet_lite0_asset().sha256
    elif record.default == "fetched":
        from features.audio_weights import fetched_asset

        return fetched_asset(cfg.name).sha256   # raises WeightsError naming the fetch command when missing
    elif record.default == "required":
        kind = "audio" if isinstance(cfg, AudioConfig) else "visual"
        raise WeightsError(f"weights {cfg.name!r}: no checkpoint given; provide one with --{kind}-weights PATH")
    else:
        from features.extractors.torchvision_cnn import torchvision_cache_path

        path = torchvision_cache_path(cfg.name)
    if not path.is_file():
        # the builder raises the full explanation (where it looked, how to provide a file)
        if isinstance(cfg, VisualConfig):
            build_visual(cfg)
        raise WeightsError(f"weights {cfg.name!r}: file not found: {path}")
    return file_sha256(path)
