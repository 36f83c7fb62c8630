"""Explain a trained head's prediction on any video file: where (α) and when (β^a, β^v).

``explain_video(ExplainConfig) -> ExplanationResult``: the video is decoded and featurised by the
store's own frozen extractors (``features.clip.ClipFeaturizer`` rebuilt from the store card that
the run carries, weights checked by sha256), then the head predicts; α and β come from the
``attention`` explainer (:meth:`AttentionExplainer.from_output`). Written to ``out`` (names and the
JSON model in :mod:`stan_head.explanation`):

    explanation_grid.png   the sampled frames, one panel per segment, α_t as a heat map over each (the
                           annotated event's segments framed when the video is a clip of the run's dataset)
    temporal_attention.png β^a and β^v over time (masked/padded segments shaded)
    explanation.json       the :class:`ExplanationResult` (``write_explanation``)
    explanation.mp4        (``mp4=True``) the source video with α over every frame, at its frame rate
                           and size (longer side at most ``explain_figures.MP4_MAX_SIDE``), with its audio

The pictures are drawn by :mod:`stan_head.explain_figures`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from features.clip import ClipFeatures, ClipFeaturizer
from features.geometry import GridGeometry, upsample_to_frame
from features.runtime import resolve_device
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
from stan_head.explain_figures import annotated_event, plot_grid, plot_temporal, write_overlay_mp4

log = logging.getLogger(__name__)

__all__ = ["BETA_PNG", "GRID_PNG", "JSON_NAME", "MP4_NAME", "ExplainConfig", "ExplanationResult", "HeadEvidence",
           "explain_features", "explain_video", "plot_grid", "plot_temporal", "upsample_alpha", "write_overlay_mp4"]


class ExplainConfig(BaseModel):
    """What to explain and where to write it.

    Attributes:
        run: a run folder written by ``wherewhen train`` (run.json, model.safetensors).
        video: any video file (mp4, mkv, webm, avi, mov); featurised like the run's store.
        out: folder for explanation_grid.png, temporal_attention.png, explanation.json (and explanation.mp4).
        device: auto (CUDA when available), cpu or cuda.
        mp4: also write explanation.mp4: the video with α over every frame, its own frame rate, size
            (longer side at most 854 px) and audio.
        top_k: classes listed with their probabilities.
        heat_opacity: opacity of the heat map at the top of α's scale (it falls to 0 at uniform attention).
        decode_timeout_s: seconds the video's decode may take before its child process is killed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path
    video: Path
    out: Path
    device: str = "auto"
    mp4: bool = False
    top_k: int = Field(5, ge=1)
    heat_opacity: float = Field(0.7, ge=0.0, le=1.0)
    decode_timeout_s: float = Field(120.0, gt=0)


@dataclass
class HeadEvidence:
    """The head's answer on one clip: probs (K,), α (T, H, W), β^a (T,), β^v (T,) as numpy arrays."""

    probs: np.ndarray
    alpha: np.ndarray
    beta_a: np.ndarray
    beta_v: np.ndarray


def upsample_alpha(alpha: np.ndarray, size: int, geometry: GridGeometry | None = None) -> np.ndarray:
    """α (T, H, W) -> (T, size, size), bilinear with the cells at the extractor's real centres
    (``geometry``; the naive tiling when None), renormalised to sum to 1 per segment."""
    t, h, w = alpha.shape
    up = upsample_to_frame(alpha, (size, size), geometry or GridGeometry.naive(h, w))
    up = np.clip(up, 0, None)
    return up / np.clip(up.sum(axis=(1, 2), keepdims=True), 1e-12, None)


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
    geometry = GridGeometry.from_card(run.card.store_card.get("visual", {}), tuple(run.card.visual_shape))
    title = f"{video.name}: {classes[pred]} (p={ev.probs[pred]:.2f}) — {run.card.head.model}"
    has_audio = bool(feats.decoded.has_audio)
    event = annotated_event(run.card.store_card.get("dataset_dir"), video)
    files: dict[str, Path] = {
        GRID_PNG: plot_grid(video, ev.alpha, mask, ev.beta_a, ev.beta_v, has_audio, segment_s, title, out / GRID_PNG,
                            geometry, config.heat_opacity, event=event),
        BETA_PNG: plot_temporal(ev.beta_a, ev.beta_v, mask, has_audio, segment_s, title, out / BETA_PNG, event),
    }
    if config.mp4:
        files[MP4_NAME] = write_overlay_mp4(video, ev.alpha, mask, ev.beta_a, ev.beta_v, has_audio, segment_s, geometry,
                                            out / MP4_NAME, config.heat_opacity, label=f"{classes[pred]} p={ev.probs[pred]:.2f}")
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
