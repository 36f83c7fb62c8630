"""Explainers on a real STAN head and on a constructed head whose evidence is known."""

import numpy as np
import pytest
import torch
from test_step import DISTRACTOR, H0, T0, W0, OneRegionHead, _features

from stan_head.batch import HeadBatch
from stan_head.evaluation.deletion import rank_units
from stan_head.evaluation.explainers import (
    Explanation,
    available_explainers,
    build_explainer,
    centre_prior,
    register_explainer,
)
from stan_head.models import HeadConfig, build_head

T, H, W, C, CA = 6, 7, 7, 8, 4


@pytest.fixture(scope="module")
def stan_and_batch():
    torch.manual_seed(0)
    head = build_head(HeadConfig(model="stan", num_classes=3, visual_dim=C, audio_dim=CA)).eval()
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, -2:] = False
    batch = HeadBatch(["a", "b"], torch.randn(2, T, H, W, C, generator=g), torch.randn(2, T, CA, generator=g), mask)
    return head, batch


def test_registry_lists_the_built_in_explainers():
    assert {"attention", "attention_v", "gradcam", "step", "step_pixel", "random", "centre"} <= set(available_explainers())
    with pytest.raises(ValueError, match="unknown explainer"):
        build_explainer("nope")


def test_a_new_explainer_drops_in_by_name():
    @register_explainer("test_uniform")
    class Uniform:
        name = "test_uniform"
        slow = False

        def explain(self, head, batch, target):
            b, t, h, w = batch.visual.shape[:4]
            return Explanation(np.ones((b, t, h, w)), np.ones((b, t)))

    exp = build_explainer("test_uniform").explain(None, HeadBatch(["x"], torch.zeros(1, 2, 3, 3, 1), torch.zeros(1, 2, 1),
                                                                  torch.ones(1, 2, dtype=torch.bool)), torch.tensor([0]))
    assert exp.spatial.shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("test_uniform")(Uniform)


@pytest.mark.parametrize("name", ["attention", "attention_v", "gradcam", "random", "centre"])
def test_shapes_and_padding(stan_and_batch, name):
    head, batch = stan_and_batch
    exp = build_explainer(name).explain(head, batch, torch.tensor([0, 2]))
    assert exp.spatial.shape == (2, T, H, W) and exp.temporal.shape == (2, T)
    assert (exp.spatial >= 0).all() and (exp.temporal >= 0).all()
    assert (exp.temporal[1, -2:] == 0).all()  # padded segments carry no "when"


def test_attention_is_the_heads_own_output(stan_and_batch):
    head, batch = stan_and_batch
    out = head(batch.visual, batch.audio, batch.segment_mask)
    exp = build_explainer("attention").explain(head, batch, torch.tensor([0, 0]))
    assert np.allclose(exp.spatial, out.alpha.detach().numpy())
    assert np.allclose(exp.temporal, out.beta_a.detach().numpy())
    exp_v = build_explainer("attention_v").explain(head, batch, torch.tensor([0, 0]))
    assert np.allclose(exp_v.temporal, out.beta_v.detach().numpy())


def test_random_is_reproducible_per_clip_and_seed(stan_and_batch):
    head, batch = stan_and_batch
    a = build_explainer("random", seed=1).explain(head, batch, torch.tensor([0, 0]))
    b = build_explainer("random", seed=1).explain(head, batch, torch.tensor([1, 1]))
    c = build_explainer("random", seed=2).explain(head, batch, torch.tensor([0, 0]))
    assert np.array_equal(a.spatial, b.spatial) and not np.array_equal(a.spatial, c.spatial)


def test_centre_prior_peaks_in_the_middle():
    spatial, temporal = centre_prior(5, 7, 7)
    assert np.unravel_index(spatial.argmax(), spatial.shape) == (3, 3)
    assert temporal.argmax() == 2 and spatial[0, 0] < spatial[3, 3]


def test_gradcam_finds_the_region_a_constructed_head_reads():
    visual, pattern = _features()
    head = OneRegionHead(pattern).eval()
    batch = HeadBatch(["c"], visual, torch.zeros(1, T, CA), torch.ones(1, T, dtype=torch.bool))
    exp = build_explainer("gradcam").explain(head, batch, torch.tensor([0]))
    assert np.unravel_index(exp.spatial[0].argmax(), exp.spatial[0].shape) == (T0, H0, W0)
    assert exp.spatial[0][DISTRACTOR] == 0.0  # another segment: no gradient at all
    assert exp.temporal[0].argmax() == T0


def test_volume_normalises_space_and_time():
    spatial = np.zeros((1, 3, 2, 2))
    spatial[0, 0, 0, 1] = 2.0  # all of segment 0's mass in one cell; segments 1-2 all zero -> uniform
    temporal = np.array([[3.0, 1.0, 5.0]])
    vol = Explanation(spatial, temporal).volume(np.array([[True, True, False]]))
    assert vol.sum() == pytest.approx(1.0)
    assert vol[0, 0, 0, 1] == pytest.approx(0.75)
    assert vol[0, 1] == pytest.approx(np.full((2, 2), 0.25 / 4))
    assert (vol[0, 2] == 0).all()


def test_rank_units_breaks_ties_and_skips_invalid():
    order = rank_units(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, True, True, False]), seed=0)
    assert order[0] == 1 and set(order[1:]) == {0, 2} and 3 not in order
