"""Metric unit tests against hand-computed values."""

import numpy as np
import pytest

from stan_head.evaluation.metrics import (
    POINTING_TOLERANCE,
    argmax_point,
    normalised_auc,
    pointing_game,
    temporal_localisation,
    top1_accuracy,
)


def _one_hot_maps(n: int, t: int, h: int, w: int, peaks: dict[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    maps = np.zeros((n, t, h, w), np.float32)
    for (i, s), (r, c) in peaks.items():
        maps[i, s, r, c] = 1.0
    return maps


def test_argmax_point_lands_on_the_cell_centre():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 1, 2] = 1.0  # row 1, col 2: centre (2.5/4, 1.5/4)
    maps[1, 3, 0] = 5.0
    pts = argmax_point(maps)
    assert pts[0] == pytest.approx([2.5 / 4, 1.5 / 4], abs=1e-9)
    assert pts[1] == pytest.approx([0.5 / 4, 3.5 / 4], abs=1e-9)


def test_pointing_game_per_class_then_mean():
    # 3 clips, 2 segments, 4x4 grid. Class 0: clips 0,1; class 1: clip 2.
    maps = _one_hot_maps(3, 2, 4, 4, {(0, 0): (0, 0), (0, 1): (3, 3), (1, 0): (0, 0), (2, 1): (1, 1)})
    labels = np.array([0, 0, 1])
    box = [0.0, 0.0, 0.25, 0.25]  # the top-left cell
    rows = np.array([0, 0, 1, 2])
    segs = np.array([0, 1, 0, 1])
    boxes = np.array([box, box, box, [0.25, 0.25, 0.5, 0.5]])
    res = pointing_game(maps, labels, rows, segs, boxes)
    # class 0: pairs (0,0) hit, (0,1) miss (peak bottom-right), (1,0) hit -> 2/3; class 1: hit -> 1
    assert res.per_class == {0: pytest.approx(2 / 3), 1: pytest.approx(1.0)}
    assert res.accuracy == pytest.approx((2 / 3 + 1.0) / 2)
    assert res.per_clip(3) == pytest.approx([0.5, 1.0, 1.0])


def test_pointing_tolerance_is_15_px_at_224():
    maps = np.zeros((1, 1, 8, 8), np.float32)
    maps[0, 0, 0, 4] = 1.0  # peak centre x = 4.5/8 = 0.5625
    x = 4.5 / 8
    just_inside = np.array([[0.0, 0.0, x - POINTING_TOLERANCE + 0.01, 0.2]])
    just_outside = np.array([[0.0, 0.0, x - POINTING_TOLERANCE - 0.01, 0.2]])
    assert pointing_game(maps, np.array([0]), [0], [0], just_inside).accuracy == 1.0
    assert pointing_game(maps, np.array([0]), [0], [0], just_outside).accuracy == 0.0
    assert POINTING_TOLERANCE == pytest.approx(15 / 224)


def test_pointing_any_of_several_boxes_counts_once():
    maps = _one_hot_maps(1, 1, 4, 4, {(0, 0): (3, 3)})
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.75, 0.75, 1.0, 1.0]])
    res = pointing_game(maps, np.array([2]), [0, 0], [0, 0], boxes)
    assert res.accuracy == 1.0 and len(res.hits) == 1


def test_pointing_without_boxes_is_nan():
    res = pointing_game(np.zeros((2, 3, 4, 4)), np.array([0, 1]), [], [], np.zeros((0, 4)))
    assert np.isnan(res.accuracy) and res.per_class == {} and np.isnan(res.per_clip(2)).all()


def test_pointing_rejects_boxes_outside_the_maps():
    with pytest.raises(ValueError):
        pointing_game(np.zeros((1, 2, 4, 4)), np.array([0]), [1], [0], np.array([[0, 0, 1, 1.0]]))


def test_temporal_pointing_and_auc():
    bg = 5
    seg_label = np.array([[bg, 2, 2, bg], [bg, bg, 1, bg], [3, 3, 3, 3], [bg, bg, bg, bg]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    temporal = np.array(
        [
            [0.1, 0.5, 0.3, 0.1],  # hit; event scores 0.5,0.3 > 0.1,0.1 -> AUC 1
            [0.6, 0.1, 0.3, 0.9],  # argmax over valid (first 3) = 0 -> miss; AUC: event 0.3 vs 0.6, 0.1 -> 0.5
            [0.2, 0.2, 0.2, 0.4],  # all event: not scored
            [0.2, 0.2, 0.2, 0.4],  # all background: not scored
        ]
    )
    res = temporal_localisation(temporal, seg_label, mask, background=bg)
    assert res.scored == 2
    assert res.pointing == pytest.approx(0.5)
    assert res.roc_auc == pytest.approx(0.75)
    assert np.isnan(res.per_clip_hit[2:]).all()


def test_temporal_all_background_is_nan():
    res = temporal_localisation(np.ones((2, 3)), np.full((2, 3), 4), np.ones((2, 3), bool), background=4)
    assert res.scored == 0 and np.isnan(res.pointing) and np.isnan(res.roc_auc)


def test_normalised_auc_trapezoid():
    fr = np.linspace(0, 1, 5)
    assert normalised_auc(fr, np.ones(5)) == pytest.approx(1.0)
    assert normalised_auc(fr, np.array([1.0, 0.0, 0.0, 0.0, 0.0])) == pytest.approx(0.125)
    assert normalised_auc(fr, np.stack([fr, 1 - fr])) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError):
        normalised_auc(np.array([0.0, 0.5]), np.ones(2))


def test_top1_accuracy():
    assert top1_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
    assert np.isnan(top1_accuracy(np.zeros((0, 2)), np.zeros(0)))


def test_pointing_game_uses_the_extractors_cell_centres():
    """A box just up-left of the naive centre of the peak cell is a miss on the naive tiling and a
    hit with padded-CNN centres (cell j centred on 32 j + 0.5 px at 224)."""
    from features.geometry import PADDED_STRIDE32, GridGeometry

    spatial = np.zeros((1, 1, 7, 7))
    spatial[0, 0, 3, 3] = 1.0
    box = np.array([[60 / 224, 60 / 224, 90 / 224, 90 / 224]])  # ends 6.5 px before cell 3's real centre (96.5)
    naive = pointing_game(spatial, np.array([0]), np.array([0]), np.array([0]), box)
    centres = GridGeometry.from_card({"input_size": 224, "grid": PADDED_STRIDE32}, (7, 7, 1)).centres()
    real = pointing_game(spatial, np.array([0]), np.array([0]), np.array([0]), box, centres=centres)
    assert naive.accuracy == 0.0 and real.accuracy == 1.0


def test_a_flat_map_points_nowhere():
    """A head without attention returns uniform maps: no peak, so a miss (argmax's tie would go to the
    first cell / segment and score whenever the box or the event sits there)."""
    boxes = np.array([[0.0, 0.0, 0.3, 0.3]])  # the top-left cell, where argmax breaks the tie
    flat = np.full((1, 1, 4, 4), 1.0 / 16)
    assert pointing_game(flat, np.array([0]), [0], [0], boxes).accuracy == 0.0
    peaked = _one_hot_maps(1, 1, 4, 4, {(0, 0): (0, 0)})
    assert pointing_game(peaked, np.array([0]), [0], [0], boxes).accuracy == 1.0
    bg = 3
    res = temporal_localisation(np.full((1, 4), 0.25), np.array([[1, 1, bg, bg]]), np.ones((1, 4), bool), background=bg)
    assert res.scored == 1 and res.pointing == 0.0 and res.roc_auc == pytest.approx(0.5)
