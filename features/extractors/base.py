"""Shared behaviour of the frozen extractors: normalisation, memory format, device, cards.

``VisualExtractor`` wraps a torch module that maps normalised float images (N, 3, S, S) to a
feature map (N, C, H, W). Calling it on uint8 frames (N, S, S, 3) normalises inside, runs in
``torch.inference_mode`` with channels-last tensors, and returns float32 (N, H, W, C) on the CPU.
:meth:`VisualExtractor.forward_float` is the differentiable path used by pixel-space explanations
(always the eager module).

Inference engine on the CPU (``engine``): ``"graph"`` (default) runs a frozen TorchScript graph of
the module (``torch.jit.trace`` → ``torch.jit.freeze`` → ``torch.jit.optimize_for_inference``:
BatchNorm folded into the convolutions, activations fused, oneDNN weights pre-packed), built once
from the first batch (or by :meth:`VisualExtractor.warm_up`, which the shard engine calls in the
model load). It is faster than the eager channels-last module at every batch size on the
CPU (docs/BENCHMARKS.md, ``bench/extract_sweep.py``); outputs differ from eager in the last float32
bits and are bit-identical from run to run at a fixed batch size and thread count. One extractor
may be called from several threads at once (the graph is built once, under a lock). ``"eager"``
runs the module as is. On CUDA the eager module always runs (cuDNN). ``torch.compile`` is not
used: it compiles for many seconds per process and was no faster here. TorchScript is deprecated
in torch 2.14 (a FutureWarning, silenced here); when a torch release cannot build the graph, the
first call raises and says to choose ``engine="eager"``
(never a silent fallback: the engine is part of the store-id, so its values must be the graph's).
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import torch
from torch import nn

from features.extractors.registry import VisualEngine
from features.geometry import PADDED_STRIDE32
from features.runtime import resolve_device

__all__ = ["VisualExtractor", "AudioExtractor", "freeze_graph", "TRACE_PROBE_SIDE", "IMAGENET_MEAN", "IMAGENET_STD"]

log = logging.getLogger(__name__)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: The side of the black frame the frozen graph is traced on. The trace records the same operations at any
#: frame and batch size, so the graph and its values are the same as one traced on the real frames
#: (tests/features/test_throughput_fixed_costs.py); tracing runs the eager model once, and on a batch of
#: 448-px frames that took 0.26 s more of the model load (0.90 s against 0.64 s, batch 2, one thread).
TRACE_PROBE_SIDE = 64


class _OneModule(nn.Module):
    """``inner`` seen by the tracer as one module: every parameter and buffer of it registered here (as
    buffers ``t0``, ``t1``, ...), and ``inner`` kept out of the module tree.

    Why: ``torch.jit.trace`` makes one ScriptModule for every submodule of what it traces (174 for
    EfficientNet-Lite0), and that was most of the trace's time; the ops it records and the tensors they read are
    the same objects either way, so the frozen graph and its values are too (tests/features/test_throughput_fixed_costs.py).
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", inner)   # not a child: the tracer must not walk its tree
        for i, tensor in enumerate([*inner.parameters(), *inner.buffers()]):
            self.register_buffer(f"t{i}", tensor)   # the same tensor objects the inner modules read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def freeze_graph(module: nn.Module, example: torch.Tensor, name: str = "module") -> torch.nn.Module:
    """A frozen, inference-optimised TorchScript graph of ``module`` traced on ``example`` (N, 3, S, S).

    The graph is not specialised to ``example``'s batch size. Raises RuntimeError, naming ``name``
    and the way out (``engine="eager"``), when this torch cannot trace, freeze or optimise it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.14, still supported
            with torch.inference_mode():
                traced = torch.jit.trace(_OneModule(module), example, check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    except Exception as exc:
        raise RuntimeError(
            f"{name}: torch {torch.__version__} could not build the frozen TorchScript graph "
            f"({type(exc).__name__}: {exc}); extract with the eager engine instead "
            f"(VisualConfig(name=..., engine='eager'), a different store-id)") from exc


class VisualExtractor:
    """A frozen image CNN producing a spatial feature map.

    Attributes:
        name: extractor name (``efficientnet_lite0``, ``resnet18``, ...).
        layer: which layer the map comes from (for the card).
        input_size: S, the square input side in pixels.
        feature_shape: (H, W, C) of the output at ``input_size``.
        grid: where the map's cells sit in the frame, ``{stride_px, origin_px}``
            (see :mod:`features.geometry`).
        engine: CPU inference engine, ``"graph"`` or ``"eager"`` (see the module docstring);
            set it before the first call; recorded in the card.
    """

    def __init__(
        self,
        name: str,
        layer: str,
        module: nn.Module,
        feature_shape: tuple[int, int, int],
        weights_sha256: str | None,
        weights_source: str,
        input_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        device: str | torch.device = "cpu",
        grid: dict[str, float] | None = None,
        engine: VisualEngine = "graph",
    ) -> None:
        self.name = name
        self.grid = dict(grid or PADDED_STRIDE32)
        self.layer = layer
        self.input_size = input_size
        self.feature_shape = feature_shape
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source
        self.mean = mean
        self.std = std
        self.device = resolve_device(device)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module.to(self.device, memory_format=torch.channels_last)
        self.engine: VisualEngine = engine
        self._graph: torch.nn.Module | None = None
        self._graph_lock = threading.Lock()   # shard tasks in threads share one extractor
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def card(self) -> dict[str, Any]:
        """What the store card records about this extractor."""
        return {
            "name": self.name,
            "kind": "visual",
            "layer": self.layer,
            "input_size": self.input_size,
            "feature_shape": list(self.feature_shape),
            "grid": dict(self.grid),
            "engine": self.engine,
            "normalisation": {"mean": list(self.mean), "std": list(self.std), "scale": "uint8/255"},
            "weights_sha256": self.weights_sha256,
            "weights": self.weights_source,
        }

    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: float images (N, 3, S, S) in [0, 1] -> feature map (N, H, W, C).

        Gradients flow to ``x``; the weights stay frozen. Runs on ``x``'s device (move it first).
        """
        x = (x - self._mean.to(x.device, x.dtype)) / self._std.to(x.device, x.dtype)
        y = self.module(x.contiguous(memory_format=torch.channels_last))
        return y.permute(0, 2, 3, 1)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, S, S, 3) RGB -> float32 feature maps (N, H, W, C) on the CPU."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected uint8 (N, S, S, 3) frames, got {frames.dtype} {tuple(frames.shape)}")
        with torch.inference_mode():
            x = self.model_input(frames)
            y = self._inference_module()(x)
            return y.permute(0, 2, 3, 1).float().cpu().contiguous()

    def model_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, S, S, 3) RGB -> the CNN's input: normalised float (N, 3, S, S), channels-last, on
        this extractor's device."""
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def warm_up(self, batch_size: int) -> None:
        """Build the inference module now and run it once on ``batch_size`` black frames, so that
        a caller's first real batch runs at speed (the graph build and oneDNN's first-call set-up are
        one-off costs of the model load). The graph is traced on a small probe, not on these frames:
        the trace records the same operations whatever the values, batch and frame size
        (tests/features/test_throughput_fixed_costs.py)."""
        s = self.input_size
        self(torch.zeros(batch_size, s, s, 3, dtype=torch.uint8))

    def _inference_module(self) -> Any:
        """The module inference runs: the frozen graph on the CPU with engine "graph" (built on first use,
        traced on one black frame of at most :data:`TRACE_PROBE_SIDE` px)."""
        if self.engine != "graph" or self.device.type != "cpu":
            return self.module
        if self._graph is None:
            with self._graph_lock:   # built once; calls from several threads then share it
                if self._graph is None:
                    side = min(self.input_size, TRACE_PROBE_SIDE)
                    probe = torch.zeros(1, 3, side, side, device=self.device).contiguous(memory_format=torch.channels_last)
                    self._graph = freeze_graph(self.module, probe, self.name)
                    log.debug("%s: built the frozen TorchScript graph", self.name)
        return self._graph


class AudioExtractor:
    """A per-segment audio embedding: float audio (N, samples) at ``sample_rate`` -> (N, dim).

    Attributes:
        name: extractor name (``logmel``, ``vggish``, ...).
        dim: Ca, the embedding size.
        sample_rate: Hz of the audio it takes.
        weights_sha256: sha256 of the loaded weights; None for extractors without weights (logmel)
            or with random ones (checked against the plan and the store card).
    """

    name: str
    dim: int
    sample_rate: int
    weights_sha256: str | None = None

    def card(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
