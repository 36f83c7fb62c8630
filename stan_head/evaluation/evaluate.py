"""``evaluate_run``: score a trained head's explanations against post-hoc explainers and baselines.

Loads the run (``stan_head.checkpoint.load_run``) and its feature store, explains the chosen
split's clips with every requested explainer (the ground-truth class is the target), and
scores each explanation on the same clips:

* where: pointing game (per class, then averaged) against the store's boxes;
* when: temporal pointing and ROC-AUC against the event segments;
* deletion / insertion AUC over regions (T×H×W cells) and over segments, in feature space
  (and over regions in pixel space with ``pixel_space=True``);
* the reliability α of every per-clip metric across the explainers.

The random and centre-prior baselines are always added. Writes ``report.json``,
``report.md`` and PNG figures to ``out`` (see :mod:`stan_head.evaluation.report`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from features.geometry import GridGeometry
from features.store import FeatureBatch, FeatureStore
from stan_head.checkpoint import load_run
from features.runtime import resolve_device
from stan_head.evaluation.deletion import Curves, pixel_region_curves, region_curves, segment_curves
from stan_head.evaluation.explainers import (
    EvalBatch,
    Explanation,
    STEPFeatureExplainer,
    STEPPixelExplainer,
    available_explainers,
    build_explainer,
)
from stan_head.evaluation.metrics import pointing_game, temporal_localisation, top1_accuracy
from stan_head.evaluation.reliability import reliability_alpha
from stan_head.evaluation.report import EvaluationReport, ExplainerScores, write_report
from stan_head.evaluation.step import STEPConfig

logger = logging.getLogger(__name__)

BASELINES = ("random", "centre")

#: metric name -> higher is better (the direction the reliability weighting needs).
METRIC_DIRECTIONS: dict[str, bool] = {
    "pointing": True,
    "temporal_pointing": True,
    "temporal_auc": True,
    "deletion_regions": False,
    "insertion_regions": True,
    "deletion_segments": False,
    "insertion_segments": True,
    "deletion_pixels": False,
    "insertion_pixels": True,
}


class EvaluateConfig(BaseModel):
    """What to evaluate and how.

    Attributes:
        run: run folder written by ``wherewhen train``.
        store: the feature store the run was trained on.
        out: report folder (created).
        split: split to evaluate.
        explainers: explainers to score; ``random`` and ``centre`` are always added.
        pixel_space: also run pixel-space deletion/insertion (and ``step_pixel`` if listed):
            frames are decoded from the store's dataset and pass through the frozen CNN.
        max_clips: evaluate at most this many clips of the split (the first ones in index order).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: clips per explainer call.
        deletion_steps: K steps of the region deletion/insertion curves.
        reference: what a removed region/segment becomes: the clip's mean feature or zero.
        step_iterations: optimisation steps of STEP (the authors use ~1000).
        step_max_clips: STEP (slow) runs on the first this-many clips only; None = all.
        overlays: clips shown in the overlay figure.
        seed: seed of the random baseline and of deletion tie-breaks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path
    store: Path
    out: Path
    split: str = "test"
    explainers: tuple[str, ...] = ("attention", "attention_v", "gradcam", "step")
    pixel_space: bool = False
    max_clips: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(32, ge=1)
    deletion_steps: int = Field(10, ge=1)
    reference: Literal["mean", "zero"] = "mean"
    step_iterations: int = Field(300, ge=1)
    step_max_clips: int | None = Field(8, ge=1)
    overlays: int = Field(4, ge=0)
    seed: int = 0

    @field_validator("explainers")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in v if name not in available_explainers()]
        if unknown:
            raise ValueError(f"unknown explainer(s) {unknown}; available: {available_explainers()}")
        return v


class EvaluationSummary(BaseModel):
    """Small record of an evaluation: where the report is and the headline figures."""

    out: Path
    report_json: Path
    report_md: Path
    figures: list[Path]
    split: str
    clips: int
    accuracy: float | None
    headline: dict[str, float | None]
    reliability: dict[str, float | None]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _box_arrays(store: FeatureStore, clip_ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of ``clip_ids``: rows (into clip_ids), segments, xyxy normalised."""
    if store.boxes is None or len(store.boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4))
    row_of = {cid: i for i, cid in enumerate(clip_ids)}
    b = store.boxes[store.boxes["clip_id"].isin(row_of)]
    rows = b["clip_id"].map(row_of).to_numpy(np.int64)
    return rows, b["segment"].to_numpy(np.int64), b[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)


class _FrameSource:
    """Decoded frames of a store's clips, through the store's own featuriser (for pixel-space work)."""

    def __init__(self, store: FeatureStore, device: torch.device) -> None:
        from features.clip import ClipFeaturizer
        from pipelines.manifest import load_dataset

        if not store.card.dataset_dir:
            raise FileNotFoundError(f"{store.path}: the store card names no dataset folder; frames are unreachable")
        self.dataset = load_dataset(store.card.dataset_dir)
        self.featurizer = ClipFeaturizer.from_card(store.card, device=device)
        self.device = device
        self._cache: dict[str, np.ndarray] = {}

    def uint8(self, clip_id: str) -> np.ndarray:
        """uint8 (T, F, S, S, 3) frames of one clip."""
        if clip_id not in self._cache:
            self._cache[clip_id] = self.featurizer.featurize_video(self.dataset.clip_path(clip_id)).decoded.frames
        return self._cache[clip_id]

    def __call__(self, clip_ids: list[str]) -> torch.Tensor:
        """float (B, T, F, 3, S, S) in [0, 1]."""
        frames = np.stack([self.uint8(c) for c in clip_ids])
        return torch.from_numpy(frames).to(self.device).permute(0, 1, 2, 5, 3, 4).float() / 255.0


def _explain_all(
    name: str,
    explainer: Any,
    head: torch.nn.Module,
    fb: FeatureBatch,
    n: int,
    batch_size: int,
    device: torch.device,
    iterations: int,
) -> Explanation:
    """Explain the first ``n`` clips in chunks; slow explainers get a progress bar (clips, and
    the optimisation step of the current chunk as its postfix)."""
    slow = bool(getattr(explainer, "slow", False))
    spatial, temporal = [], []
    with tqdm(total=n, desc=f"explain[{name}]", unit="clip", disable=not slow, leave=False) as bar:
        if slow and hasattr(explainer, "on_step"):
            def on_step(i: int) -> None:
                if i % 25 == 0 or i == iterations - 1:
                    bar.set_postfix_str(f"step {i + 1}/{iterations}")

            explainer.on_step = on_step
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            batch = EvalBatch.from_arrays(fb.clip_id[sl], fb.visual[sl], fb.audio[sl], fb.segment_mask[sl], device)
            target = torch.as_tensor(fb.label_idx[sl], device=device)
            exp = explainer.explain(head, batch, target)
            spatial.append(exp.spatial)
            temporal.append(exp.temporal)
            bar.update(len(batch))
    return Explanation(np.concatenate(spatial), np.concatenate(temporal))


def _curves_all(kind: str, head, fb: FeatureBatch, exp: Explanation, n: int, cfg: EvaluateConfig, device, frames=None) -> Curves:
    parts: list[Curves] = []
    for start in range(0, n, cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, n))
        batch = EvalBatch.from_arrays(fb.clip_id[sl], fb.visual[sl], fb.audio[sl], fb.segment_mask[sl], device)
        target = torch.as_tensor(fb.label_idx[sl], device=device)
        if kind == "regions":
            vol = Explanation(exp.spatial[sl], exp.temporal[sl]).volume(fb.segment_mask[sl])
            parts.append(region_curves(head, batch, target, vol, cfg.deletion_steps, cfg.reference, seed=cfg.seed))
        elif kind == "segments":
            parts.append(segment_curves(head, batch, target, exp.temporal[sl], cfg.reference, seed=cfg.seed))
        else:
            vol = Explanation(exp.spatial[sl], exp.temporal[sl]).volume(fb.segment_mask[sl])
            parts.append(
                pixel_region_curves(head, batch, target, vol, frames(batch.clip_id), frames.featurizer.visual_from_float,
                                    cfg.deletion_steps, seed=cfg.seed)
            )
    return Curves(parts[0].fractions, np.concatenate([p.deletion for p in parts]), np.concatenate([p.insertion for p in parts]))


def evaluate_run(config: EvaluateConfig) -> EvaluationSummary:
    """Evaluate a run's explanations on ``config.split`` of ``config.store``; write the report.

    Returns:
        :class:`EvaluationSummary` (report paths, accuracy, headline metrics, reliability α).
    """
    cfg = config
    device = resolve_device(cfg.device)
    store = FeatureStore.open(cfg.store)
    run = load_run(cfg.run, store=store, device=device)
    head = run.head.eval()
    for p in head.parameters():
        p.requires_grad_(False)

    positions = store.positions(cfg.split)
    if len(positions) == 0:
        raise ValueError(f"{cfg.store}: split {cfg.split!r} has no clips")
    if cfg.max_clips is not None:
        positions = positions[: cfg.max_clips]
    fb = store.read(positions)
    n = len(fb)
    classes = list(store.card.classes)
    background = len(classes)
    logger.info("evaluating %d %s clips of %s with %s", n, cfg.split, cfg.store, ", ".join(cfg.explainers))

    parts = []
    with torch.no_grad():
        for s in range(0, n, 256):
            b = EvalBatch.from_arrays(fb.clip_id[s:s + 256], fb.visual[s:s + 256], fb.audio[s:s + 256],
                                      fb.segment_mask[s:s + 256], device)
            parts.append(head(b.visual, b.audio, b.segment_mask).logits.float().cpu().numpy())
    logits = np.concatenate(parts)
    accuracy = top1_accuracy(logits, fb.label_idx)

    frames = None
    if cfg.pixel_space or "step_pixel" in cfg.explainers:
        frames = _FrameSource(store, device)

    names = list(dict.fromkeys([*cfg.explainers, *BASELINES]))
    step_n = n if cfg.step_max_clips is None else min(n, cfg.step_max_clips)
    box_rows, box_segs, boxes = _box_arrays(store, fb.clip_id)
    # Where the feature map's cells look in the frame (half a cell off the naive tiling for
    # padded stride-2 CNNs): the pointing game and the overlays use the real centres.
    geometry = GridGeometry.from_card(store.card.visual, store.card.visual_shape)
    centres = geometry.centres()
    scores: dict[str, ExplainerScores] = {}
    explanations: dict[str, Explanation] = {}
    for name in names:
        if name == "step":
            explainer = STEPFeatureExplainer(
                STEPConfig(iterations=cfg.step_iterations, max_blur=float(max(store.card.visual_shape[:2])), seed=cfg.seed),
                batch_size=8,
            )
        elif name == "step_pixel":
            if frames is None:
                raise ValueError("step_pixel needs pixel_space frames")
            explainer = STEPPixelExplainer(frames, frames.featurizer.visual_from_float, STEPConfig(iterations=cfg.step_iterations, seed=cfg.seed))
        elif name == "random":
            explainer = build_explainer("random", seed=cfg.seed)
        else:
            explainer = build_explainer(name)
        m = step_n if getattr(explainer, "slow", False) else n
        chunk = {"step": 8, "step_pixel": 1}.get(name, cfg.batch_size)
        exp = _explain_all(name, explainer, head, fb, m, chunk, device, cfg.step_iterations)
        explanations[name] = exp

        keep = box_rows < m
        pg = pointing_game(exp.spatial, fb.label_idx[:m], box_rows[keep], box_segs[keep], boxes[keep], centres=centres)
        tl = temporal_localisation(exp.temporal, fb.segment_label[:m], fb.segment_mask[:m], background)
        per_clip: dict[str, np.ndarray] = {
            "pointing": pg.per_clip(m),
            "temporal_pointing": tl.per_clip_hit,
            "temporal_auc": tl.per_clip_auc,
        }
        curves: dict[str, Curves] = {
            "regions": _curves_all("regions", head, fb, exp, m, cfg, device),
            "segments": _curves_all("segments", head, fb, exp, m, cfg, device),
        }
        if cfg.pixel_space and frames is not None:
            curves["pixels"] = _curves_all("pixels", head, fb, exp, m, cfg, device, frames)
        for unit, c in curves.items():
            per_clip[f"deletion_{unit}"] = c.deletion_auc
            per_clip[f"insertion_{unit}"] = c.insertion_auc
        scores[name] = ExplainerScores(
            name=name,
            clips=m,
            pointing=_nan_to_none(pg.accuracy),
            pointing_per_class={classes[k]: v for k, v in pg.per_class.items()},
            pointing_pairs=int(len(pg.hits)),
            temporal_pointing=_nan_to_none(tl.pointing),
            temporal_auc=_nan_to_none(tl.roc_auc),
            temporal_clips=tl.scored,
            auc={k: _nan_to_none(float(np.nanmean(v))) if np.isfinite(v).any() else None
                 for k, v in per_clip.items() if k.startswith(("deletion", "insertion"))},
            curves={unit: {"fractions": c.fractions.tolist(), "deletion": c.deletion.mean(0).tolist(),
                           "insertion": c.insertion.mean(0).tolist()} for unit, c in curves.items()},
            per_clip={k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in per_clip.items()},
        )

    # Reliability over the clips every explainer saw.
    common = min(s.clips for s in scores.values())
    reliability: dict[str, float | None] = {}
    rand_idx = names.index("random")
    for metric, higher in METRIC_DIRECTIONS.items():
        if not all(metric in s.per_clip for s in scores.values()):
            continue
        table = np.array([[np.nan if x is None else x for x in scores[nm].per_clip[metric][:common]] for nm in names]).T
        reliability[metric] = _nan_to_none(reliability_alpha(table, rand_idx, higher_is_better=higher))

    report = EvaluationReport(
        run=str(cfg.run), store=str(cfg.store), store_id=store.card.store_id, split=cfg.split, clips=n,
        classes=classes, accuracy=_nan_to_none(accuracy), explainers=names, reliability=reliability,
        reliability_clips=common, scores=scores, config=cfg.model_dump(mode="json"),
    )
    overlay_frames = None
    if cfg.overlays:
        overlay_frames = _overlay_frames(store, fb.clip_id[: cfg.overlays], frames, device)
    paths = write_report(
        Path(cfg.out), report, fb, explanations, box_rows, box_segs, boxes, overlay_frames, geometry,
    )
    headline: dict[str, float | None] = {}
    for name, s in scores.items():
        headline[f"{name}.pointing"] = s.pointing
        headline[f"{name}.temporal_pointing"] = s.temporal_pointing
        headline[f"{name}.deletion_regions"] = s.auc.get("deletion_regions")
    return EvaluationSummary(
        out=Path(cfg.out), report_json=paths["json"], report_md=paths["md"], figures=paths["figures"], split=cfg.split,
        clips=n, accuracy=_nan_to_none(accuracy), headline=headline, reliability=reliability,
    )


def _overlay_frames(store: FeatureStore, clip_ids: list[str], frames: _FrameSource | None, device) -> list[np.ndarray] | None:
    """uint8 (T, S, S, 3) centre frame per segment for the overlay clips, or None when the videos are unreachable."""
    try:
        source = frames or _FrameSource(store, device)
        return [source.uint8(c)[:, source.uint8(c).shape[1] // 2] for c in clip_ids]
    except Exception as exc:  # noqa: BLE001 - any reason the videos cannot be read: fall back to feature energy
        logger.info("overlays on feature energy: the dataset videos are not reachable (%s)", exc)
        return None
