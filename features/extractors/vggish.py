"""VGGish (Hershey et al. 2017): 0.96-s log-mel patches (96 frames x 64 bands) -> 128-d embeddings.

The network follows the released VGGish (conv 64-128-256-256-512-512 with four max-pools, then
fully connected 4096-4096-128, ReLU after each) in torchvggish's parameter naming
(``features.N``, ``embeddings.N``), so torchvggish's converted checkpoint loads strictly. The
front end is VGGish's: 16 kHz, 25 ms window, 10 ms hop, 64 mel bands in 125-7500 Hz,
log(mel + 0.01). The PCA/quantisation post-processing is not applied. Weights come from a path;
a missing file is an error (no random init unless asked for by name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from features.extractors.base import AudioExtractor
from features.extractors.logmel import log_mel
from features.runtime import resolve_device
from features.weights import WeightsAsset, WeightsError

__all__ = ["VGGishNet", "VGGish", "from_config"]

PATCH_FRAMES = 96
N_MELS = 64


class VGGishNet(nn.Module):
    """log-mel patches (B, 1, 96, 64) -> embeddings (B, 128)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, 128), nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)                      # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)   # TF's NHWC flatten order
        return self.embeddings(x)


class VGGish(AudioExtractor):
    """Per-segment VGGish embedding: (N, samples) -> (N, 128), the mean over the segment's patches."""

    def __init__(self, weights: str | Path | None, device: str | torch.device = "cpu", sample_rate: int = 16000) -> None:
        if sample_rate != 16000:
            raise ValueError(f"vggish needs 16 kHz audio, got {sample_rate}")
        self.name = "vggish"
        self.dim = 128
        self.sample_rate = sample_rate
        self.device = resolve_device(device)
        if weights == "random":
            with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
                torch.manual_seed(0)
                self.net = VGGishNet()
            self.weights_sha256, self.weights_source = None, "random"
        else:
            self.net = VGGishNet()
            if weights is None:
                raise WeightsError(
                    "weights 'vggish': no checkpoint given. Provide a VGGish state dict in torchvggish naming "
                    "(features.N / embeddings.N, e.g. vggish-10086976.pth) with --audio-weights PATH, "
                    "or ask for weights='random' explicitly."
                )
            state, digest = WeightsAsset("vggish", Path(weights)).load_state_dict()
            state = {k: v for k, v in state.items() if not k.startswith("pproc")}
            try:
                self.net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise WeightsError(f"weights 'vggish': {weights} does not fit VGGish: {exc}") from exc
            self.weights_sha256, self.weights_source = digest, str(weights)
        self.net.eval().to(self.device)

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "audio", "layer": "embeddings (128, before PCA)", "sample_rate": 16000,
            "patch": [PATCH_FRAMES, N_MELS], "dim": self.dim, "weights_sha256": self.weights_sha256,
            "weights": self.weights_source,
        }

    def patches(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, samples) -> log-mel patches (N, P, 96, 64); P = max(1, frames // 96), short audio zero-padded."""
        spec = log_mel(audio.float(), 16000, N_MELS, fmin=125.0, fmax=7500.0, offset=0.01).transpose(1, 2)
        frames = spec.shape[1]
        if frames < PATCH_FRAMES:
            spec = torch.nn.functional.pad(spec, (0, 0, 0, PATCH_FRAMES - frames), value=float(torch.log(torch.tensor(0.01))))
        p = max(1, spec.shape[1] // PATCH_FRAMES)
        return spec[:, : p * PATCH_FRAMES].reshape(spec.shape[0], p, PATCH_FRAMES, N_MELS)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = self.patches(audio.to(self.device))
            n, p = x.shape[:2]
            emb = self.net(x.reshape(n * p, 1, PATCH_FRAMES, N_MELS)).reshape(n, p, -1)
            return emb.mean(1).float().cpu()


def from_config(cfg: Any, device: str | torch.device, sample_rate: int) -> VGGish:
    """The registry's builder: ``cfg.weights`` is a path or ``"random"``."""
    return VGGish(cfg.weights, device=device, sample_rate=sample_rate)
