"""Explanation metrics as pure functions over numpy arrays.

Where (spatial) and when (temporal) localisation scores, and the area under a
deletion/insertion curve. Everything here is model-free: the curves themselves are
produced by :mod:`stan_head.evaluation.deletion`, which calls the head.

Conventions (shared with the rest of ``stan_head.evaluation``):

* ``spatial``: float (N, T, H, W), a non-negative "where" map per clip and segment.
* ``temporal``: float (N, T), a "when" score per segment.
* ``segment_mask``: bool (N, T), True where the segment lies inside the clip.
* ``segment_label``: int (N, T), the clip's class inside the event, ``K`` (background)
  outside it (the feature store's convention).
* boxes: normalised to [0, 1] of the frame (x to the right, y downwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_auc_score

#: Pointing-game tolerance: 15 px at a 224-px frame, expressed as a fraction of the frame.
POINTING_TOLERANCE = 15.0 / 224.0


@dataclass(frozen=True)
class PointingResult:
    """Pointing-game outcome.

    Attributes:
        accuracy: mean over classes of the per-class hit rate (NaN when nothing was scored).
        per_class: class index -> hit rate over that class's (clip, segment) pairs.
        hits: bool (P,), one entry per scored (clip, segment) pair, in the order of ``pairs``.
        pairs: int (P, 2), the (clip row, segment) of each scored pair.
    """

    accuracy: float
    per_class: dict[int, float]
    hits: np.ndarray
    pairs: np.ndarray

    def per_clip(self, num_clips: int) -> np.ndarray:
        """Hit rate per clip, float (num_clips,); NaN for clips without a scored box."""
        out = np.full(num_clips, np.nan)
        if len(self.pairs) == 0:
            return out
        sums = np.bincount(self.pairs[:, 0], weights=self.hits.astype(float), minlength=num_clips)
        counts = np.bincount(self.pairs[:, 0], minlength=num_clips)
        scored = counts > 0
        out[scored] = sums[scored] / counts[scored]
        return out


def argmax_point(maps: np.ndarray, centres: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Where each map peaks once upsampled to the frame, in normalised coordinates.

    Cell ``(i, j)`` is centred on ``(centres[0][j], centres[1][i])`` — the feature extractor's
    real cell centres (:class:`features.geometry.GridGeometry`) — or, when ``centres`` is None,
    on the naive tiling ``((j + 0.5) / W, (i + 0.5) / H)``. Bilinear upsampling peaks exactly
    on the centre of the maximal cell — an interpolation is a convex combination of the nodes —
    so the peak is computed on the grid itself, at any frame size, without materialising the
    upsampled frame (and without the plateau ties that clamped borders create there). Ties
    between cells go to the first cell in row-major order.

    Args:
        maps: float (P, H, W), one spatial map per row.
        centres: normalised cell centres ``(xs (W,), ys (H,))``.

    Returns:
        float (P, 2): the (x, y) of the peak in [0, 1].
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (P, H, W), got shape {maps.shape}")
    p, h, w = maps.shape
    flat = maps.reshape(p, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    if centres is None:
        return np.stack([(xs + 0.5) / w, (ys + 0.5) / h], axis=1).astype(np.float64)
    cx, cy = (np.asarray(c, dtype=np.float64) for c in centres)
    if cx.shape != (w,) or cy.shape != (h,):
        raise ValueError(f"centres of shapes {cx.shape}, {cy.shape} do not fit maps of {h}x{w} cells")
    return np.stack([cx[xs], cy[ys]], axis=1)


def pointing_game(
    spatial: np.ndarray,
    labels: np.ndarray,
    box_rows: np.ndarray,
    box_segments: np.ndarray,
    boxes: np.ndarray,
    tolerance: float = POINTING_TOLERANCE,
    centres: tuple[np.ndarray, np.ndarray] | None = None,
) -> PointingResult:
    """Pointing game over (clip, segment) pairs that have a box.

    A pair is a hit when the argmax of the upsampled map lies inside one of the pair's
    boxes grown by ``tolerance`` on every side. A flat map (every cell equal: a head without
    spatial attention) points nowhere and is a miss, not a tie won by the first cell. Accuracy is the hit rate per class (the
    clip's ``labels``), then averaged over the classes that have at least one pair.

    Args:
        spatial: float (N, T, H, W) maps.
        labels: int (N,) the class of each clip.
        box_rows: int (M,) clip row (into ``spatial``) of each box.
        box_segments: int (M,) segment of each box.
        boxes: float (M, 4) ``x0, y0, x1, y1`` normalised to [0, 1].
        tolerance: growth of each box side, as a fraction of the frame (15/224).
        centres: where the map's cells sit in the frame (see :func:`argmax_point`).

    Returns:
        :class:`PointingResult`; accuracy NaN when no box was given.
    """
    box_rows = np.asarray(box_rows, dtype=np.int64)
    box_segments = np.asarray(box_segments, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not (len(box_rows) == len(box_segments) == len(boxes)):
        raise ValueError("box_rows, box_segments and boxes must have the same length")
    if len(boxes) == 0:
        return PointingResult(float("nan"), {}, np.zeros(0, bool), np.zeros((0, 2), np.int64))
    n, t = spatial.shape[:2]
    if box_rows.min() < 0 or box_rows.max() >= n or box_segments.min() < 0 or box_segments.max() >= t:
        raise ValueError(f"box rows/segments out of range for maps of shape {spatial.shape}")

    pairs, inverse = np.unique(np.stack([box_rows, box_segments], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    maps = spatial[pairs[:, 0], pairs[:, 1]]
    points = argmax_point(maps, centres)
    flat = (maps.max(axis=(1, 2)) == maps.min(axis=(1, 2)))[inverse]  # points nowhere: a miss, not a tie
    px, py = points[inverse, 0], points[inverse, 1]
    inside = (
        (px >= boxes[:, 0] - tolerance)
        & (px <= boxes[:, 2] + tolerance)
        & (py >= boxes[:, 1] - tolerance)
        & (py <= boxes[:, 3] + tolerance)
        & ~flat
    )
    hits = np.zeros(len(pairs), dtype=bool)
    np.logical_or.at(hits, inverse, inside)

    pair_labels = np.asarray(labels)[pairs[:, 0]]
    per_class = {int(c): float(hits[pair_labels == c].mean()) for c in np.unique(pair_labels)}
    accuracy = float(np.mean(list(per_class.values())))
    return PointingResult(accuracy, per_class, hits, pairs)


@dataclass(frozen=True)
class TemporalResult:
    """When-localisation of a temporal map against the event segments.

    Attributes:
        pointing: fraction of scored clips whose argmax segment lies inside the event.
        roc_auc: mean over scored clips of the per-clip ROC-AUC (event vs background).
        per_clip_hit: float (N,), 1/0 per scored clip, NaN where not scored.
        per_clip_auc: float (N,), NaN where not scored.
        scored: number of clips scored (valid segments hold both event and background).
    """

    pointing: float
    roc_auc: float
    per_clip_hit: np.ndarray
    per_clip_auc: np.ndarray
    scored: int = field(default=0)


def temporal_localisation(
    temporal: np.ndarray,
    segment_label: np.ndarray,
    segment_mask: np.ndarray,
    background: int,
) -> TemporalResult:
    """Temporal pointing and ROC-AUC of a "when" map against the event segments.

    Only clips whose valid segments contain both event and background are scored (a clip
    that is all event, or all background, says nothing about *when*). A map equal on every valid
    segment points nowhere: a miss (its ROC-AUC is 0.5). Padded segments
    (``segment_mask`` False) are ignored.

    Args:
        temporal: float (N, T) score per segment (higher = more relevant).
        segment_label: int (N, T), ``background`` outside the event.
        segment_mask: bool (N, T).
        background: the background label (K).

    Returns:
        :class:`TemporalResult`; NaN figures when no clip can be scored.
    """
    temporal = np.asarray(temporal, dtype=np.float64)
    event = np.asarray(segment_label) != background
    valid = np.asarray(segment_mask, dtype=bool)
    n = len(temporal)
    hit = np.full(n, np.nan)
    auc = np.full(n, np.nan)
    for i in range(n):
        v = valid[i]
        e = event[i][v]
        if e.all() or not e.any():
            continue
        scores = temporal[i][v]
        # a flat map (a head without temporal attention) points nowhere: a miss, not the first segment
        hit[i] = 0.0 if scores.max() == scores.min() else float(e[int(np.argmax(scores))])
        auc[i] = float(roc_auc_score(e.astype(int), scores))
    scored = int(np.isfinite(hit).sum())
    pointing = float(np.nanmean(hit)) if scored else float("nan")
    roc = float(np.nanmean(auc)) if scored else float("nan")
    return TemporalResult(pointing, roc, hit, auc, scored)


def normalised_auc(fractions: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Area under probability-vs-fraction curves by the trapezoid rule.

    Args:
        fractions: float (K+1,) increasing from 0 to 1 — the fraction of units removed
            (deletion) or added (insertion).
        probs: float (..., K+1) target-class probability at each fraction.

    Returns:
        float (...,): the area, in [0, 1] when probabilities are.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or len(fractions) < 2:
        raise ValueError("fractions must be 1-D with at least two points")
    if not np.isclose(fractions[0], 0.0) or not np.isclose(fractions[-1], 1.0):
        raise ValueError("fractions must run from 0 to 1")
    return np.trapezoid(np.asarray(probs, dtype=np.float64), fractions, axis=-1)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Video-level top-1 accuracy of logits (N, K) against labels (N,); NaN when N = 0."""
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())
