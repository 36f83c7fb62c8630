r"""Metric reliability (Li et al. 2021, "Spatio-Temporal Perturbations for Video Attribution").

A metric is reliable when it ranks the explainers the same way on every clip. Per clip
``i`` the explainers are ranked by the metric; a clip is weighted by how badly the random
explainer does on it (``w_i = 1`` when random is last, 0 when it is first — a clip on which
random wins says little about the others); then

.. math::

    \alpha = \frac{\sum_{i<j} w_i w_j (\rho_{ij} + 1)}{\sum_{i<j} w_i w_j} - 1

with :math:`\rho_{ij}` the Spearman correlation of the explainer rankings of clips i and j.
α = 1 for perfectly consistent rankings, about 0 for unrelated ones, −1 when they flip.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def reliability_alpha(scores: np.ndarray, random_index: int, higher_is_better: bool = True) -> float:
    """Weighted mean pairwise Spearman correlation of per-clip explainer rankings.

    Args:
        scores: float (N_clips, M_explainers), the metric per clip and explainer. Clips with a
            NaN anywhere, or with all explainers tied, are left out.
        random_index: column of the random explainer (used for the clip weights).
        higher_is_better: the metric's direction (False for deletion AUC).

    Returns:
        α in [−1, 1]; NaN when fewer than two clips are usable or all weights are 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (clips, explainers) with at least 2 explainers, got {scores.shape}")
    if not 0 <= random_index < scores.shape[1]:
        raise ValueError(f"random_index {random_index} out of range for {scores.shape[1]} explainers")
    good = scores if higher_is_better else -scores
    usable = np.isfinite(good).all(axis=1) & (np.ptp(good, axis=1) > 0)
    good = good[usable]
    if len(good) < 2:
        return float("nan")
    m = good.shape[1]
    ranks = rankdata(good, axis=1)  # 1 = worst, m = best; ties averaged
    weights = (m - ranks[:, random_index]) / (m - 1)  # 1 when random is worst
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    rho = centred @ centred.T  # Spearman = Pearson of ranks
    cross = np.outer(weights, weights)
    upper = np.triu_indices(len(good), k=1)
    denom = cross[upper].sum()
    if denom <= 0:
        return float("nan")
    return float((cross[upper] * (rho[upper] + 1.0)).sum() / denom - 1.0)
