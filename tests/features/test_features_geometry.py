"""Where a feature map's cells sit in the frame: the extractors' cards and the upsampling that uses them."""

from __future__ import annotations

import numpy as np

from features.geometry import PADDED_STRIDE32, POOLED_STRIDE32, GridGeometry, upsample_to_frame


def test_padded_stride32_cells_sit_half_a_cell_up_left_of_the_naive_tiling():
    g = GridGeometry.from_card({"input_size": 224, "grid": PADDED_STRIDE32}, (7, 7, 1280))
    xs, ys = g.centres()
    np.testing.assert_allclose(xs * 224, 0.5 + 32 * np.arange(7))
    naive_xs, _ = GridGeometry.naive(7, 7, 224).centres()
    np.testing.assert_allclose((naive_xs - xs) * 224, 15.5)


def test_pooled_stride32_is_the_naive_tiling_and_cards_without_grid_fall_back_to_it():
    pooled = GridGeometry.from_card({"input_size": 224, "grid": POOLED_STRIDE32}, (7, 7, 512)).centres()
    naive = GridGeometry.from_card({"input_size": 224}, (7, 7, 512)).centres()
    for a, b in zip(pooled, naive):
        np.testing.assert_allclose(a, b)


def test_upsampled_map_peaks_on_the_cell_centre_the_geometry_gives():
    g = GridGeometry.from_card({"input_size": 224, "grid": PADDED_STRIDE32}, (7, 7, 8))
    maps = np.zeros((1, 7, 7), np.float32)
    maps[0, 2, 5] = 1.0
    up = upsample_to_frame(maps, (224, 224), g)[0]
    y, x = np.unravel_index(up.argmax(), up.shape)
    assert (x, y) == (32 * 5, 32 * 2)  # pixel 32 j holds the centre 32 j + 0.5
    assert up.shape == (224, 224) and np.isclose(up.max(), 1.0, atol=1e-3)
    # the naive tiling puts the same cell 16 px further right and down
    up_naive = upsample_to_frame(maps, (224, 224), GridGeometry.naive(7, 7, 224))[0]
    y2, x2 = np.unravel_index(up_naive.argmax(), up_naive.shape)
    assert abs(x2 - (32 * 5 + 16)) <= 1 and abs(y2 - (32 * 2 + 16)) <= 1


def test_extractor_cards_record_their_grid():
    from features.extractors import VisualConfig, build_visual

    assert build_visual(VisualConfig(), input_size=64).card()["grid"] == PADDED_STRIDE32
    assert build_visual(VisualConfig(name="vgg19", weights="random"), input_size=64).card()["grid"] == POOLED_STRIDE32
