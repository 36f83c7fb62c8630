"""Reliability α on constructed rankings."""

import numpy as np
import pytest

from stan_head.evaluation.reliability import reliability_alpha


def test_perfectly_consistent_rankings_give_one():
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.6, 0.2], [0.7, 0.3, 0.0]])  # random (col 2) always last
    assert reliability_alpha(scores, random_index=2) == pytest.approx(1.0)


def test_reversed_pairs_give_minus_one():
    # two clips whose rankings are exact reverses: rho = -1; random (col 1) sits in the middle (w = 0.5)
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert reliability_alpha(scores, random_index=1) == pytest.approx(-1.0)


def test_hand_computed_weighting():
    # 3 explainers, random = col 2. Clip A ranks (best..worst) e0,e1,random; clip B: e1,e0,random;
    # clip C: random best. Weights: A 1, B 1, C 0 -> only pair (A, B) counts: rho = 0.5 -> alpha 0.5.
    scores = np.array([[3.0, 2.0, 1.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0]])
    assert reliability_alpha(scores, random_index=2) == pytest.approx(0.5)


def test_lower_is_better_flips_the_weights():
    scores = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]])  # deletion AUC: random (col 2) worst = largest
    assert reliability_alpha(scores, random_index=2, higher_is_better=False) == pytest.approx(1.0)
    # read as higher-is-better, random would be best everywhere: no weight at all
    assert np.isnan(reliability_alpha(scores, random_index=2, higher_is_better=True))


def test_nan_and_tied_clips_are_left_out():
    scores = np.array([[0.9, 0.5, 0.1], [np.nan, 0.5, 0.1], [0.4, 0.4, 0.4], [0.8, 0.6, 0.2]])
    assert reliability_alpha(scores, random_index=2) == pytest.approx(1.0)
    assert np.isnan(reliability_alpha(scores[:3], random_index=2))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        reliability_alpha(np.zeros((3, 1)), 0)
    with pytest.raises(ValueError):
        reliability_alpha(np.zeros((3, 2)), 5)
