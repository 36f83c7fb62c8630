"""Fixed costs of extraction (issue 18.3): the inference path imports no timm and no torch._dynamo,
and the timm-free EfficientNet-Lite0 gives timm's values bit for bit (eager and frozen graph)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from features.extractors.base import freeze_graph
from features.extractors.efficientnet_lite0 import Lite0, build_lite0_classifier

REPO = Path(__file__).resolve().parents[1].parent


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def test_lite0_is_timms_efficientnet_lite0_bit_for_bit():
    import timm

    ours, _ = build_lite0_classifier()
    theirs = timm.create_model("efficientnet_lite0", pretrained=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())   # the same names in the same order
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval()
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(ours.forward_features(x), theirs.forward_features(x))
        assert torch.equal(freeze_graph(_Features(ours).eval(), x)(x), freeze_graph(_Features(theirs).eval(), x)(x))
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert isinstance(Lite0().classifier, torch.nn.Linear)


_PROBE = """
import json, sys, torch
from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
v = build_visual(VisualConfig(), input_size=64)
a = build_audio(AudioConfig())
v(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)); a(torch.zeros(2, 16000))
print(json.dumps({m: m in sys.modules for m in ("timm", "torchvision", "torch._dynamo")}))
"""


def test_the_inference_path_imports_no_timm_torchvision_or_dynamo():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"timm": False, "torchvision": False, "torch._dynamo": False}
