"""Deletion and insertion curves (Petsiuk et al. 2018) for space-time explanations.

Units — regions (the T×H×W cells of the feature grid) or whole segments — are ranked by an
explanation, most relevant first. *Deletion* replaces the top fraction of units by a
reference and records the target probability; *insertion* starts from the reference
everywhere and puts the top fraction back. A good explanation makes the deletion curve fall
fast (small AUC) and the insertion curve rise fast (large AUC).

Two paths: the feature-space path edits the cached features (fast, the default); the
pixel-space path edits the frames and runs them through the frozen CNN
(:func:`pixel_region_curves`). Padded segments are never touched nor counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stan_head.batch import HeadBatch
from stan_head.evaluation.metrics import normalised_auc

Perturb = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(clip row i, keep float (m, U) in {0, 1}) -> (visual, audio)``: the head inputs of clip i with
the units where ``keep`` is 0 replaced by the reference, one row per keep-mask."""


@dataclass
class Curves:
    """Deletion and insertion curves for a batch of clips.

    Attributes:
        fractions: float (K+1,) fraction of units removed/added, 0 → 1.
        deletion: float (B, K+1) target probability after deleting the top fraction.
        insertion: float (B, K+1) target probability after inserting the top fraction.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        """float (B,): normalised AUC of the deletion curves (lower is better)."""
        return normalised_auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> np.ndarray:
        """float (B,): normalised AUC of the insertion curves (higher is better)."""
        return normalised_auc(self.fractions, self.insertion)


def rank_units(scores: np.ndarray, valid: np.ndarray, seed: int = 0) -> np.ndarray:
    """Order of units, most relevant first, valid units only; ties broken by a seeded shuffle.

    Args:
        scores: float (U,) relevance per unit.
        valid: bool (U,) units that may be removed.
        seed: tie-break seed.

    Returns:
        int (V,) unit indices, V = valid.sum().
    """
    idx = np.flatnonzero(valid)
    tie = np.random.default_rng(seed).random(len(idx))
    order = np.lexsort((tie, -np.asarray(scores, dtype=np.float64)[idx]))
    return idx[order]


def _keep_masks(order: np.ndarray, units: int, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool (K+1, units) keep-masks for deletion and for insertion."""
    n = len(order)
    counts = np.rint(fractions * n).astype(int)
    top = np.zeros((len(fractions), units), dtype=bool)
    for k, c in enumerate(counts):
        top[k, order[:c]] = True
    return ~top, top


def _reference(batch: HeadBatch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip reference features: visual (B, C), audio (B, Ca) — the clip mean over valid cells, or 0."""
    if kind == "zero":
        return (
            torch.zeros(len(batch), batch.visual.shape[-1], device=batch.visual.device),
            torch.zeros(len(batch), batch.audio.shape[-1], device=batch.audio.device),
        )
    if kind != "mean":
        raise ValueError(f"reference must be 'mean' or 'zero', got {kind!r}")
    m = batch.segment_mask.to(batch.visual.dtype)
    h, w = batch.visual.shape[2:4]
    n = m.sum(dim=1).clamp(min=1)
    vis = (batch.visual * m[:, :, None, None, None]).sum(dim=(1, 2, 3)) / (n * h * w)[:, None]
    aud = (batch.audio * m[:, :, None]).sum(dim=1) / n[:, None]
    return vis, aud


def unit_curves(
    head: torch.nn.Module,
    batch: HeadBatch,
    target: torch.Tensor,
    scores: np.ndarray,
    valid: np.ndarray,
    fractions: np.ndarray,
    perturb: Perturb,
    chunk: int,
    seed: int = 0,
) -> Curves:
    """The deletion/insertion loop every unit kind shares.

    Per clip: rank the valid units by ``scores`` (:func:`rank_units`), build the deletion and
    insertion keep-masks for every fraction (padded units are always kept), let ``perturb`` turn
    each ``chunk`` of keep-masks into head inputs, and record the target's probability.

    Args:
        scores: float (B, U) relevance per unit.
        valid: bool (B, U) units that may be removed.
        fractions: float (K+1,) fractions of the valid units removed / inserted.
        perturb: :data:`Perturb`.
        chunk: keep-masks per head call.
    """
    b, units, k = len(batch), valid.shape[1], len(fractions)
    deletion = np.zeros((b, k))
    insertion = np.zeros((b, k))
    for i in range(b):
        order = rank_units(np.asarray(scores[i]).reshape(-1), valid[i], seed)
        keep_del, keep_ins = _keep_masks(order, units, fractions)
        keep_ins |= ~valid[i]  # padded units stay as they are
        keep = torch.as_tensor(np.concatenate([keep_del, keep_ins]), device=batch.visual.device, dtype=batch.visual.dtype)
        probs = []
        with torch.no_grad():
            for s in range(0, len(keep), chunk):
                visual, audio = perturb(i, keep[s : s + chunk])
                mask = batch.segment_mask[i : i + 1].expand(len(visual), -1)
                logits = head(visual, audio, mask).logits
                probs.append(F.softmax(logits.float(), dim=-1)[:, int(target[i])].cpu().numpy())
        p = np.concatenate(probs)
        deletion[i], insertion[i] = p[:k], p[k:]
    return Curves(fractions, deletion, insertion)


def _valid_cells(batch: HeadBatch) -> np.ndarray:
    """bool (B, T·H·W): the cells of the valid segments."""
    b, t, h, w = batch.visual.shape[:4]
    return np.broadcast_to(batch.segment_mask.cpu().numpy()[:, :, None, None], (b, t, h, w)).reshape(b, -1)


def region_curves(
    head: torch.nn.Module,
    batch: HeadBatch,
    target: torch.Tensor,
    relevance: np.ndarray,
    steps: int = 10,
    reference: str = "mean",
    chunk: int = 32,
    seed: int = 0,
) -> Curves:
    """Feature-space deletion/insertion over the T×H×W regions.

    Args:
        head: the head (eval mode).
        batch: the clips.
        target: int (B,) class per clip.
        relevance: float (B, T, H, W) region relevance (e.g. :meth:`Explanation.volume`).
        steps: K, the number of steps between fraction 0 and 1.
        reference: what a removed region becomes: ``"mean"`` (the clip's mean feature) or ``"zero"``.
        chunk: head batch size.
        seed: tie-break seed.
    """
    b, t, h, w, c = batch.visual.shape
    ref_v, _ = _reference(batch, reference)

    def perturb(i: int, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = keep.reshape(-1, t, h, w, 1)
        visual = keep * batch.visual[i : i + 1] + (1 - keep) * ref_v[i].view(1, 1, 1, 1, c)
        return visual, batch.audio[i : i + 1].expand(len(keep), -1, -1)

    fractions = np.linspace(0.0, 1.0, steps + 1)
    scores = np.asarray(relevance).reshape(b, -1)
    return unit_curves(head, batch, target, scores, _valid_cells(batch), fractions, perturb, chunk, seed)


def segment_curves(
    head: torch.nn.Module,
    batch: HeadBatch,
    target: torch.Tensor,
    temporal: np.ndarray,
    reference: str = "mean",
    chunk: int = 32,
    seed: int = 0,
) -> Curves:
    """Feature-space deletion/insertion over whole segments (visual and audio together).

    The curve has one step per segment (K = T); fraction k/T removes round(k/T · valid) segments.

    Args:
        temporal: float (B, T) segment relevance.
        (others as in :func:`region_curves`.)
    """
    t, c = batch.visual.shape[1], batch.visual.shape[-1]
    ref_v, ref_a = _reference(batch, reference)

    def perturb(i: int, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(keep)
        kv = keep.view(n, t, 1, 1, 1)
        visual = kv * batch.visual[i : i + 1] + (1 - kv) * ref_v[i].view(1, 1, 1, 1, c)
        audio = keep.view(n, t, 1) * batch.audio[i : i + 1] + (1 - keep.view(n, t, 1)) * ref_a[i].view(1, 1, -1)
        return visual, audio

    fractions = np.linspace(0.0, 1.0, t + 1)
    valid = batch.segment_mask.cpu().numpy()
    return unit_curves(head, batch, target, np.asarray(temporal), valid, fractions, perturb, chunk, seed)


def pixel_region_curves(
    head: torch.nn.Module,
    batch: HeadBatch,
    target: torch.Tensor,
    relevance: np.ndarray,
    frames: torch.Tensor,
    visual_from_float: Callable[[torch.Tensor], torch.Tensor],
    steps: int = 10,
    seed: int = 0,
    chunk: int = 64,
) -> Curves:
    """Pixel-space deletion/insertion: regions are the frame blocks under each feature cell.

    A removed block takes the frame's mean colour; the perturbed frames go through the frozen
    CNN (``visual_from_float``: float (N, 3, S, S) in [0, 1] → (N, H, W, C)), features are
    averaged over the F frames of a segment, then the head scores them.

    Args:
        frames: float (B, T, F, 3, S, S) in [0, 1].
        chunk: frames per CNN call (the head then sees ``chunk // (T·F)`` perturbed clips at a time).
        (others as in :func:`region_curves`.)
    """
    b, t, h, w, _ = batch.visual.shape
    f, cc, s1, s2 = frames.shape[2:]

    def perturb(i: int, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = len(keep)
        keep_px = F.interpolate(keep.reshape(m * t, 1, h, w), size=(s1, s2), mode="nearest").reshape(m, t, 1, 1, s1, s2)
        clip = frames[i : i + 1]
        pert = keep_px * clip + (1 - keep_px) * clip.mean(dim=(4, 5), keepdim=True)  # (m, T, F, 3, S, S)
        feats = visual_from_float(pert.reshape(m * t * f, cc, s1, s2))
        return feats.reshape(m, t, f, *feats.shape[1:]).mean(dim=2), batch.audio[i : i + 1].expand(m, -1, -1)

    fractions = np.linspace(0.0, 1.0, steps + 1)
    return unit_curves(head, batch, target, np.asarray(relevance).reshape(b, -1), _valid_cells(batch), fractions, perturb,
                       max(1, chunk // (t * f)), seed)
