"""Log-mel statistics per segment: 64 mel bands, 25 ms window / 10 ms hop at 16 kHz.

For each segment's audio the extractor computes log(mel + 1e-6) frames and returns the mean and
the standard deviation over time of each band: 64 + 64 = 128 values. No weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torchaudio

from features.extractors.base import AudioExtractor

__all__ = ["LogMel", "log_mel", "from_config"]


def log_mel(
    audio: torch.Tensor, sample_rate: int = 16000, n_mels: int = 64, fmin: float = 0.0, fmax: float | None = None,
    offset: float = 1e-6,
) -> torch.Tensor:
    """float audio (N, samples) -> log-mel (N, n_mels, frames), 25 ms Hann window, 10 ms hop."""
    win = int(round(0.025 * sample_rate))
    hop = int(round(0.010 * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, f_min=fmin, f_max=fmax,
        n_mels=n_mels, power=2.0, center=False,
    ).to(audio.device)
    return torch.log(mel(audio) + offset)


class LogMel(AudioExtractor):
    """Per-segment log-mel mean and std: (N, samples) -> (N, 2 * n_mels)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64) -> None:
        self.name = "logmel"
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.dim = 2 * n_mels
        self.weights_sha256 = None

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "audio", "layer": "log-mel mean+std over time",
            "sample_rate": self.sample_rate, "n_mels": self.n_mels, "window_s": 0.025, "hop_s": 0.010,
            "dim": self.dim, "weights_sha256": self.weights_sha256, "weights": None,
        }

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            spec = log_mel(audio.float(), self.sample_rate, self.n_mels)
            return torch.cat([spec.mean(-1), spec.std(-1, unbiased=False)], dim=-1).cpu()


def from_config(cfg: Any, device: Any, sample_rate: int) -> LogMel:
    """The registry's builder (no weights; computed where the audio is)."""
    return LogMel(sample_rate=sample_rate)
