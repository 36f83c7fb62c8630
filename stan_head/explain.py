"""Explain a trained head's prediction on any video file: where (α) and when (β^a, β^v).

``explain_video(ExplainConfig) -> ExplanationResult``: the video is decoded and featurised by the
store's own frozen extractors (``features.clip.ClipFeaturizer`` rebuilt from the store card that
the run carries, weights checked by sha256), then the head predicts; α and β come from the
``attention`` explainer (:meth:`AttentionExplainer.from_output`). Written to ``out`` (names and the
JSON model in :mod:`stan_head.explanation`):

    explanation_grid.png   the sampled frames, one panel per segment, α_t as a heat map over each
    temporal_attention.png β^a and β^v over time (masked/padded segments shaded)
    explanation.json       the :class:`ExplanationResult` (``write_explanation``)
    explanation.mp4        (``mp4=True``) the overlaid frames, each shown for its segment, with the
                           clip's decoded audio

Plots use matplotlib's object API on the Agg canvas (``stan_head.figures``; no pyplot).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field

from features.clip import ClipFeatures, ClipFeaturizer
from features.geometry import GridGeometry, upsample_to_frame
from features.runtime import resolve_device
from pipelines.atomic import atomic_path
from pipelines.encode import Mp4Writer
from stan_head.checkpoint import LoadedRun, load_run
from stan_head.evaluation.explainers import AttentionExplainer
from stan_head.explanation import (
    BETA_PNG,
    GRID_PNG,
    JSON_NAME,
    MP4_NAME,
    ClassScore,
    ExplanationResult,
    write_explanation,
)
from stan_head.figures import save_png

log = logging.getLogger(__name__)

__all__ = ["BETA_PNG", "GRID_PNG", "JSON_NAME", "MP4_NAME", "ExplainConfig", "ExplanationResult", "HeadEvidence",
           "explain_features", "explain_video", "plot_grid", "plot_temporal", "upsample_alpha", "write_overlay_mp4"]


class ExplainConfig(BaseModel):
    """What to explain and where to write it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path
    video: Path
    out: Path
    device: str = "auto"
    mp4: bool = False
    top_k: int = Field(5, ge=1)
    heat_opacity: float = Field(0.45, ge=0.0, le=1.0)
    decode_timeout_s: float = Field(120.0, gt=0)


@dataclass
class HeadEvidence:
    """The head's answer on one clip: probs (K,), α (T, H, W), β^a (T,), β^v (T,) as numpy arrays."""

    probs: np.ndarray
    alpha: np.ndarray
    beta_a: np.ndarray
    beta_v: np.ndarray


def _heat_rgb(alpha_map: np.ndarray, vmax: float) -> np.ndarray:
    """α (S, S) -> RGB float (S, S, 3) in [0, 1] through the 'jet' colour map on the scale [0, vmax]."""
    return colormaps["jet"](np.clip(alpha_map / max(vmax, 1e-12), 0.0, 1.0))[..., :3]


def _shared_vmax(alpha_up: np.ndarray, mask: np.ndarray) -> float:
    """One colour scale for all panels: the largest upsampled α over the valid segments."""
    return float(alpha_up[mask].max()) if mask.any() else 1.0


def upsample_alpha(alpha: np.ndarray, size: int, geometry: GridGeometry | None = None) -> np.ndarray:
    """α (T, H, W) -> (T, size, size), bilinear with the cells at the extractor's real centres
    (``geometry``; the naive tiling when None), renormalised to sum to 1 per segment."""
    t, h, w = alpha.shape
    up = upsample_to_frame(alpha, (size, size), geometry or GridGeometry.naive(h, w))
    up = np.clip(up, 0, None)
    return up / np.clip(up.sum(axis=(1, 2), keepdims=True), 1e-12, None)


def _frames_for_display(feats: ClipFeatures) -> np.ndarray:
    """The middle sampled frame of each segment: uint8 (T, S, S, 3)."""
    frames = np.asarray(feats.decoded.frames)
    return frames[:, frames.shape[1] // 2]


def plot_grid(
    frames: np.ndarray, alpha_up: np.ndarray, mask: np.ndarray, beta_a: np.ndarray, beta_v: np.ndarray,
    segment_s: float, title: str, path: Path, opacity: float = 0.45,
) -> Path:
    """PNG grid: frame t with α_t over it, one panel per segment (frames uint8 (T,S,S,3), α (T,S,S))."""
    t = len(frames)
    vmax = _shared_vmax(alpha_up, mask)
    cols = min(t, 5)
    rows = math.ceil(t / cols)
    fig = Figure(figsize=(3.0 * cols, 3.2 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= t:
            continue
        ax.imshow(frames[i])
        label = f"{i * segment_s:g}–{(i + 1) * segment_s:g} s"
        if mask[i]:
            ax.imshow(alpha_up[i], cmap="jet", alpha=opacity, interpolation="bilinear", vmin=0.0, vmax=vmax)
            ax.set_title(f"{label}  $\\beta^a$ {beta_a[i]:.2f}  $\\beta^v$ {beta_v[i]:.2f}", fontsize=9)
        else:
            ax.set_title(f"{label}  (padding)", fontsize=9, color="grey")
    fig.suptitle(f"{title}\nwhere: $\\alpha_t$ over each sampled frame (one colour scale, 0 to {vmax:.2g} per pixel)",
                 fontsize=11)
    return save_png(fig, path)


def plot_temporal(beta_a: np.ndarray, beta_v: np.ndarray, mask: np.ndarray, segment_s: float, title: str, path: Path) -> Path:
    """PNG: β^a and β^v per segment over time (seconds); padded segments shaded."""
    t = len(beta_a)
    centres = (np.arange(t) + 0.5) * segment_s
    width = 0.38 * segment_s
    fig = Figure(figsize=(max(6.0, 0.6 * t + 2), 3.4))
    ax = fig.subplots()
    ax.bar(centres - width / 2, beta_a, width=width, label=r"$\beta^a$ (audio)", color="tab:orange")
    ax.bar(centres + width / 2, beta_v, width=width, label=r"$\beta^v$ (vision)", color="tab:blue")
    for i in np.flatnonzero(~mask):
        ax.axvspan(i * segment_s, (i + 1) * segment_s, color="0.85", zorder=0)
    ax.set_xlim(0, t * segment_s)
    ax.set_ylim(0, max(1e-3, float(max(beta_a.max(initial=0), beta_v.max(initial=0)))) * 1.15)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("when: temporal attention")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    return save_png(fig, path)


def write_overlay_mp4(
    frames: np.ndarray, alpha_up: np.ndarray, mask: np.ndarray, audio: np.ndarray | None, audio_rate: int,
    segment_s: float, path: Path, opacity: float = 0.45, fps: int = 8,
) -> Path:
    """mp4 (h264 + AAC via pipelines.encode.Mp4Writer): each segment's overlaid frame held for ``segment_s``."""
    s = frames.shape[1] - frames.shape[1] % 2
    repeat = max(1, round(fps * segment_s))
    vmax = _shared_vmax(alpha_up, mask)
    with atomic_path(path) as tmp, Mp4Writer(tmp, s, s, fps, audio_rate=audio_rate if audio is not None else None) as w:
        for i in range(len(frames)):
            img = frames[i, :s, :s].astype(np.float32) / 255.0
            if mask[i]:
                img = (1 - opacity) * img + opacity * _heat_rgb(alpha_up[i, :s, :s], vmax)
            rgb = (img * 255).round().clip(0, 255).astype(np.uint8)
            for _ in range(repeat):
                w.write_frame(rgb)
        if audio is not None:
            w.write_audio(np.asarray(audio, np.float32).reshape(-1))
    return path


def explain_features(run: LoadedRun, visual: np.ndarray, audio: np.ndarray, segment_mask: np.ndarray,
                     device: torch.device) -> HeadEvidence:
    """Run the head once on one clip's features (visual (T,H,W,C), audio (T,Ca), mask (T,)).

    The probabilities come from the logits; α, β^a and β^v from the ``attention`` explainer's
    reading of the same output.
    """
    mask = torch.from_numpy(np.asarray(segment_mask, bool))[None].to(device)
    with torch.inference_mode():
        out = run.head(
            torch.from_numpy(np.asarray(visual, np.float32))[None].to(device),
            torch.from_numpy(np.asarray(audio, np.float32))[None].to(device),
            mask,
        )
        where_when_a = AttentionExplainer("audio").from_output(out, mask)
        when_v = AttentionExplainer("visual").from_output(out, mask).temporal
        probs = torch.softmax(out.logits[0].float(), -1).cpu().numpy()
    return HeadEvidence(probs=probs, alpha=where_when_a.spatial[0], beta_a=where_when_a.temporal[0], beta_v=when_v[0])


def explain_video(config: ExplainConfig) -> ExplanationResult:
    """Decode ``config.video``, featurise it like the run's store did, predict, and write the evidence."""
    video = Path(config.video)
    if not video.is_file():
        raise FileNotFoundError(f"{video}: no such video file")
    device = resolve_device(config.device)
    run = load_run(config.run, device=device)
    featurizer = ClipFeaturizer.from_card(run.card.store_card, device)
    feats = featurizer.featurize_video(video, timeout_s=config.decode_timeout_s)
    ev = explain_features(run, feats.visual, feats.audio, feats.segment_mask, device)
    classes = run.card.classes
    mask = np.asarray(feats.segment_mask, bool)
    order = np.argsort(-ev.probs)[: config.top_k]
    pred = int(order[0])
    segment_s = float(featurizer.spec.segment_s)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = _frames_for_display(feats)
    geometry = GridGeometry.from_card(run.card.store_card.get("visual", {}), tuple(run.card.visual_shape))
    alpha_up = upsample_alpha(ev.alpha, frames.shape[1], geometry)
    title = f"{video.name}: {classes[pred]} (p={ev.probs[pred]:.2f}) — {run.card.head.model}"
    files: dict[str, Path] = {
        GRID_PNG: plot_grid(frames, alpha_up, mask, ev.beta_a, ev.beta_v, segment_s, title, out / GRID_PNG,
                            config.heat_opacity),
        BETA_PNG: plot_temporal(ev.beta_a, ev.beta_v, mask, segment_s, title, out / BETA_PNG),
    }
    has_audio = bool(feats.decoded.has_audio)
    if config.mp4:
        audio = np.asarray(feats.decoded.audio, np.float32) if has_audio else None
        files[MP4_NAME] = write_overlay_mp4(
            frames, alpha_up, mask, audio, int(featurizer.spec.audio_rate), segment_s, out / MP4_NAME, config.heat_opacity
        )
    files[JSON_NAME] = out / JSON_NAME
    result = ExplanationResult(
        video=video.resolve(), run_dir=Path(config.run).resolve(), model=run.card.head.model, store_id=run.card.store_id,
        predicted_class=classes[pred], predicted_index=pred, probability=float(ev.probs[pred]),
        top_k=[ClassScore(label=classes[i], index=int(i), probability=float(ev.probs[i])) for i in order],
        segment_s=segment_s, segment_start_s=[i * segment_s for i in range(len(mask))], segment_mask=mask.tolist(),
        has_audio=has_audio, beta_a=[float(x) for x in ev.beta_a], beta_v=[float(x) for x in ev.beta_v],
        alpha=np.round(ev.alpha.astype(np.float64), 6).tolist(), files=files,
    )
    write_explanation(result)
    log.info("%s", result.summary_line())
    return result
