"""Deletion and insertion curves (Petsiuk et al. 2018): the machinery every perturbation test shares.

Units (visual cells, audio segments, frame blocks) are ranked by an explanation, most relevant
first. *Deletion* replaces the top fraction of units by a reference and records the target
probability; *insertion* starts from the reference everywhere and puts the top fraction back.
A good explanation makes the deletion curve fall fast (small AUC) and the insertion curve rise
fast (large AUC).

This module is model-free: it ranks units, builds the keep-masks of every fraction and scores
them through a callback, computing each distinct keep-mask of a clip once even when several
explainers rank the same units first (deleting nothing / everything is the same input for every
explainer, and α-based explainers often share their maps).
:mod:`stan_head.evaluation.perturbation` defines the tests (which units, which reference, which
logits) on top of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stan_head.evaluation.metrics import normalised_auc

__all__ = ["Curves", "MaskScorer", "keep_masks", "rank_units", "score_curves", "segment_region_keep_masks"]

MaskScorer = Callable[[np.ndarray], np.ndarray]
"""``keep bool (m, *unit_shape) -> p(target) float (m,)`` — or (m, S) for S scorings of the same inputs — for one
clip; False = unit replaced by the reference."""


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

    @staticmethod
    def concat(parts: list["Curves"]) -> "Curves":
        """The clips of several batches, in order (all parts share their fractions)."""
        return Curves(parts[0].fractions, np.concatenate([p.deletion for p in parts]),
                      np.concatenate([p.insertion for p in parts]))


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


def keep_masks(scores: np.ndarray, valid: np.ndarray, fractions: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion keep-masks over one ranking of units.

    Fraction f removes (deletion) or keeps only (insertion) the top ``round(f · V)`` of the V valid
    units; invalid units are always kept.

    Args:
        scores: float (U,) relevance; valid: bool (U,); fractions: float (K+1,) from 0 to 1.

    Returns:
        (keep_del, keep_ins), each bool (K+1, U).
    """
    valid = np.asarray(valid, dtype=bool)
    order = rank_units(scores, valid, seed)
    counts = np.rint(np.asarray(fractions) * len(order)).astype(int)
    top = np.zeros((len(fractions), len(valid)), dtype=bool)
    for k, c in enumerate(counts):
        top[k, order[:c]] = True
    return ~top, top | ~valid


def segment_region_keep_masks(spatial: np.ndarray, valid: np.ndarray, fractions: np.ndarray,
                              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep-masks of the "where" test: every valid segment loses (or keeps only) its own top cells.

    Fraction f removes the top ``round(f · H·W)`` cells of each valid segment, ranked by that
    segment's map: the test asks *where* in each frame the evidence is, independent of *when*
    (which segments an explainer prefers); padded segments are always kept.

    Args:
        spatial: float (T, H, W) one clip's maps; valid: bool (T,); fractions: float (K+1,).

    Returns:
        (keep_del, keep_ins), each bool (K+1, T, H, W).
    """
    t, h, w = spatial.shape
    keep_del = np.ones((len(fractions), t, h * w), dtype=bool)
    keep_ins = np.ones_like(keep_del)
    cells = np.ones(h * w, dtype=bool)
    for s in np.flatnonzero(valid):
        keep_del[:, s], keep_ins[:, s] = keep_masks(spatial[s].reshape(-1), cells, fractions, seed + int(s))
    return keep_del.reshape(-1, t, h, w), keep_ins.reshape(-1, t, h, w)


def score_curves(masks: dict[str, tuple[np.ndarray, np.ndarray]], scorer: MaskScorer,
                 chunk: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score one clip's deletion/insertion keep-masks of several explainers, each distinct mask once.

    Args:
        masks: explainer -> (keep_del, keep_ins), bool (K+1, *unit_shape) each.
        scorer: :data:`MaskScorer` for this clip.
        chunk: keep-masks per scorer call.

    Returns:
        explainer -> (deletion p(target), insertion p(target)), each (K+1,) or (K+1, S) as the scorer gives.
    """
    if not masks:
        return {}
    names = list(masks)
    stacked = np.concatenate([np.concatenate(masks[n]) for n in names])
    flat = np.ascontiguousarray(stacked.reshape(len(stacked), -1))
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    unique = unique.reshape(-1, *stacked.shape[1:])
    probs = np.concatenate([np.asarray(scorer(unique[s : s + chunk]), dtype=np.float64)
                            for s in range(0, len(unique), chunk)])
    p = probs[inverse]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    start = 0
    for n in names:
        k = len(masks[n][0])
        out[n] = (p[start : start + k], p[start + k : start + 2 * k])
        start += 2 * k
    return out
