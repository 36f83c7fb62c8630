"""torchvision ResNet-18 / ResNet-50 / VGG-19 feature maps.

ResNet: the output of ``layer4`` (7x7x512 / 7x7x2048 at 224²). VGG-19: ``pool5`` (the last
max-pool of ``features``, 7x7x512 at 224², AVE's choice). Weights come from an explicit file or
from torchvision's cache (``torch.hub.get_dir()/checkpoints/<file>``, where torchvision's own
download puts them). Nothing is downloaded here; a missing file is a :class:`WeightsError` that
says where it looked and how to provide one. Random weights only when asked for by name
(``weights="random"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from features.extractors.base import VisualExtractor
from features.geometry import PADDED_STRIDE32, POOLED_STRIDE32
from features.weights import WeightsAsset, WeightsError

__all__ = ["TORCHVISION_MODELS", "torchvision_cache_path", "build_torchvision_cnn", "from_config"]

#: name -> (torchvision builder, weights enum, feature channels, layer description)
TORCHVISION_MODELS: dict[str, tuple[str, str, int, str]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512, "layer4"),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048, "layer4"),
    "vgg19": ("vgg19", "VGG19_Weights", 512, "pool5 (features[36])"),
}


def torchvision_cache_path(name: str) -> Path:
    """Where torchvision's download would have cached ``name``'s ImageNet checkpoint."""
    _, enum_name, _, _ = TORCHVISION_MODELS[name]
    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class _ResNetTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_torchvision_cnn(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    input_size: int = 224,
) -> VisualExtractor:
    """Build ``name`` in {resnet18, resnet50, vgg19} as a frozen feature-map extractor.

    Args:
        weights: a checkpoint path; ``None`` = torchvision's cache file; ``"random"`` = seeded
            random init (for tests and benchmarks only, recorded as such in the card).
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision extractor {name!r}; choose one of {sorted(TORCHVISION_MODELS)}")
    builder, _, channels, layer = TORCHVISION_MODELS[name]
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
            torch.manual_seed(0)
            model = getattr(torchvision.models, builder)(weights=None)
        digest, source = None, "random"
    else:
        path = Path(weights) if weights is not None else torchvision_cache_path(name)
        if not path.is_file():
            raise WeightsError(
                f"weights {name!r}: no checkpoint at {path}"
                + (" (torchvision's cache, torch.hub.get_dir()/checkpoints)" if weights is None else "")
                + f". Provide one with --visual-weights PATH (a torchvision {name} state dict), put "
                f"torchvision's file at {torchvision_cache_path(name)}, or ask for weights='random' explicitly."
            )
        state, digest = WeightsAsset(name, path).load_state_dict()
        model = getattr(torchvision.models, builder)(weights=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"weights {name!r}: {path} does not fit torchvision's {name}: {exc}") from exc
        source = str(path)
    trunk: nn.Module = _ResNetTrunk(model) if name.startswith("resnet") else model.features
    side = -(-input_size // 32)
    return VisualExtractor(
        name=name,
        layer=layer,
        module=trunk,
        feature_shape=(side, side, channels),
        weights_sha256=digest,
        weights_source=source,
        input_size=input_size,
        device=device,
        grid=PADDED_STRIDE32 if name.startswith("resnet") else POOLED_STRIDE32,
    )


def from_config(cfg: Any, device: str | torch.device, input_size: int) -> VisualExtractor:
    """The registry's builder for the torchvision CNNs."""
    return build_torchvision_cnn(cfg.name, cfg.weights, device=device, input_size=input_size)
