"""aiSFX (Ma & Lerch, ISMIR 2022): a 9-layer 2-D CNN on 96-band log-mel at 44.1 kHz, 512-d embedding.

The network is the package's ``EmbeddingNet('max', ks=3, strd=1, hl1=64)`` (DCASE 2018 cross-task
baseline, "Cnn_9layers"): four blocks of two 3×3 convolutions (no bias) + BatchNorm + ReLU with
64-128-256-512 channels, 2×2 max-pooling after the first three blocks, then the mean over
frequency and the max over time. Parameter names are the package's, so its state dict loads
strictly. Weights: the safetensors file :mod:`features.audio_weights` converts from the
``aisfx==0.1.2`` wheel (CC BY 4.0, Ma & Lerch 2022).

Front end: the one the model was trained with (the package's Essentia path, re-implemented in
torch): mono audio resampled to 44.1 kHz, frames of 2048 samples every 1024 (a frame centred at
every hop, zero-padded at the ends), symmetric Hann window without normalisation, the magnitude
spectrum squared, 96 mel bands from 0 to 22050 Hz (HTK mel, triangles linear in mel, each band
normalised to unit sum), ``log10(1e4 · x + 1)``, divided by the package's ``original`` maximum
9.4578. Each 1-s segment is one input: its own frames only (centres inside [t, t+1) s), so the
embedding of segment t depends on that second's audio only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from features.extractors.base import AudioExtractor
from features.runtime import resolve_device

__all__ = ["ConvBlock", "AisfxNet", "Aisfx", "log_mel_aisfx", "mel_filters", "SAMPLE_RATE", "from_config"]

SAMPLE_RATE = 44100
N_FFT, HOP, N_MELS = 2048, 1024, 96
#: The package's ``spec_norm="original"`` scale (max over its training spectrograms; min 0).
SPEC_MAX = 9.457798957824707


class ConvBlock(nn.Module):
    """Two 3×3 conv (no bias) + BN + ReLU, then max-pooling (package names conv1, conv2, bn1, bn2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, pool) if pool > 1 else x


class AisfxNet(nn.Module):
    """Log-mel (B, frames, 96) -> embedding (B, 512): mean over frequency, max over time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(64, 128)
        self.conv_block3 = ConvBlock(128, 256)
        self.conv_block4 = ConvBlock(256, 512)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec.unsqueeze(1)
        for block, pool in ((self.conv_block1, 2), (self.conv_block2, 2), (self.conv_block3, 2), (self.conv_block4, 1)):
            x = block(x, pool)
        return x.mean(dim=3).max(dim=2).values


def _hz2mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.01048 * torch.log1p(f / 700.0)


def mel_filters(n_fft: int = N_FFT, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE,
                f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float64 mel filterbank: HTK mel, triangles linear in mel, unit sum per band."""
    f_max = sample_rate / 2 if f_max is None else f_max
    n_bins = n_fft // 2 + 1
    lo, hi = _hz2mel(torch.tensor(f_min, dtype=torch.float64)), _hz2mel(torch.tensor(f_max, dtype=torch.float64))
    edges = 700.0 * torch.expm1(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64) / 1127.01048)
    scale = (sample_rate / 2) / (n_bins - 1)
    freqs = torch.arange(n_bins, dtype=torch.float64) * scale
    mel = _hz2mel(freqs)
    medges = _hz2mel(edges)
    fb = torch.zeros(n_bins, n_mels, dtype=torch.float64)
    for i in range(n_mels):
        up = (freqs >= edges[i]) & (freqs < edges[i + 1])
        down = (freqs >= edges[i + 1]) & (freqs < edges[i + 2])
        inside = torch.arange(n_bins) < int(float(edges[i + 2]) / scale + 0.5)
        fb[:, i] = torch.where(up & inside, (mel - medges[i]) / (medges[i + 1] - medges[i]), fb[:, i])
        fb[:, i] = torch.where(down & inside, (medges[i + 2] - mel) / (medges[i + 2] - medges[i + 1]), fb[:, i])
    total = fb.sum(0)
    return fb / torch.where(total > 0, total, torch.ones_like(total))


def log_mel_aisfx(audio: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(N, samples) at 44.1 kHz -> normalised log-mel (N, frames, 96), frames = 1 + samples // 1024."""
    window = torch.hann_window(N_FFT, periodic=False, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(audio, N_FFT, HOP, window=window, center=True, pad_mode="constant", return_complex=True)
    power = spec.abs().pow(2).transpose(1, 2)                     # (N, frames, bins)
    mel = power @ filters.to(audio.device, audio.dtype)
    return torch.log10(mel * 1e4 + 1.0) / SPEC_MAX


class Aisfx(AudioExtractor):
    """Per-segment aiSFX embedding: (N, samples) at ``sample_rate`` -> (N, 512).

    ``weights``: None (the fetched file, pinned), a path to a safetensors file in the same layout,
    or ``"random"`` (seeded random init).
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 sample_rate: int = 16000) -> None:
        from features.audio_weights import frozen_network

        self.name, self.dim, self.sample_rate = "aisfx", 512, int(sample_rate)
        self.device = resolve_device(device)
        loaded = frozen_network("aisfx", AisfxNet, weights, self.device)
        self.net = loaded.net
        self.weights_sha256, self.weights_source, self.licence = loaded.sha256, loaded.source, loaded.licence
        self._filters = mel_filters().float().to(self.device)

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "audio", "layer": "embedding (mean over mel, max over the segment's frames)",
            "sample_rate": self.sample_rate, "network_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP,
            "n_mels": N_MELS, "dim": self.dim, "weights_sha256": self.weights_sha256,
            "weights": self.weights_source, "licence": self.licence,
        }

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, samples) at ``sample_rate`` -> the network's input (N, frames, 96)."""
        import torchaudio

        x = audio.to(self.device, torch.float32)
        if self.sample_rate != SAMPLE_RATE:
            x = torchaudio.functional.resample(x, self.sample_rate, SAMPLE_RATE)
        return log_mel_aisfx(x, self._filters)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            spec = self.spectrogram(audio)
            if spec.shape[1] < 8:   # three 2× poolings need 8 frames
                spec = F.pad(spec, (0, 0, 0, 8 - spec.shape[1]))
            return self.net(spec).float().cpu()


def from_config(cfg: Any, device: str | torch.device, sample_rate: int) -> Aisfx:
    """The registry's builder: ``cfg.weights`` is None (the fetched file), a path or ``"random"``."""
    return Aisfx(cfg.weights, device=device, sample_rate=sample_rate)
