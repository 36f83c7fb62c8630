"""STEP recovers evidence whose place is known by construction."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stan_head.batch import HeadBatch
from stan_head.evaluation.explainers import STEPFeatureExplainer, STEPPixelExplainer
from stan_head.evaluation.step import STEPConfig, step_attribution
from stan_head.evaluation.step_masks import MaskGenerator, Perturbation, SmoothnessLoss, ellipsoid_kernel
from stan_head.models.base import HeadOutput

T, H, W, C = 6, 7, 7, 8
T0, H0, W0 = 2, 1, 5  # the one region the constructed head reads
DISTRACTOR = (4, 5, 1)  # the same evidence elsewhere, which the head ignores


class OneRegionHead(nn.Module):
    """A head that reads only region (T0, H0, W0): class 0 iff the pattern is there, else class 1."""

    def __init__(self, pattern: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", torch.stack([pattern, -pattern], dim=1) * 4.0)
        self.register_buffer("b", torch.tensor([-4.0, 0.0]))

    def forward(self, visual, audio, segment_mask):
        b, t, h, w, _ = visual.shape
        logits = visual[:, T0, H0, W0, :] @ self.w + self.b
        alpha = torch.full((b, t, h, w), 1.0 / (h * w))
        beta = segment_mask.float() / segment_mask.float().sum(dim=1, keepdim=True)
        return HeadOutput(logits=logits, alpha=alpha, beta_a=beta, beta_v=beta)


def _features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randn(C, generator=g)
    pattern = pattern / pattern.norm()
    visual = 0.1 * torch.randn(1, T, H, W, C, generator=g)
    visual[0, T0, H0, W0] += 3 * pattern
    visual[0, DISTRACTOR[0], DISTRACTOR[1], DISTRACTOR[2]] += 3 * pattern
    return visual, pattern


def test_feature_space_step_peaks_on_the_region_the_head_reads():
    visual, pattern = _features()
    head = OneRegionHead(pattern).eval()
    batch = HeadBatch(["c0"], visual, torch.zeros(1, T, 4), torch.ones(1, T, dtype=torch.bool))
    assert head(batch.visual, batch.audio, batch.segment_mask).logits.argmax().item() == 0
    steps = []
    explainer = STEPFeatureExplainer(STEPConfig(iterations=150, max_blur=7.0), on_step=steps.append)
    exp = explainer.explain(head, batch, torch.tensor([0]))
    assert len(steps) == 150
    assert exp.spatial.shape == (1, T, H, W) and exp.temporal.shape == (1, T)
    peak = np.unravel_index(np.argmax(exp.spatial[0]), exp.spatial[0].shape)
    assert peak == (T0, H0, W0)
    # the map sums the four area masks: the true cell is in all four, the distractor at most in the broad ones
    assert exp.spatial[0][DISTRACTOR] < 0.75 * exp.spatial[0][T0, H0, W0]
    assert np.argmax(exp.temporal[0]) == T0


class AudioDominatedHead(OneRegionHead):
    """Hears the class (class 0 whatever the frames show) and sees it in one interior cell of segment T0
    (the pattern's weights as :class:`OneRegionHead`'s).

    The final logits are the audio's: hiding any part of the frames leaves p(target) where it was, so a
    preservation game on them has nothing to find. The visual-evidence logits read cell (T0, 3, 3) only.
    """

    def forward(self, visual, audio, segment_mask):
        b, t, h, w, _ = visual.shape
        visual_logits = visual[:, T0, 3, 3, :] @ self.w + self.b
        logits = torch.stack([audio[:, :, 0].mean(dim=1) * 8.0, torch.zeros(b)], dim=1) + 0.0 * visual_logits
        alpha = torch.full((b, t, h, w), 1.0 / (h * w))
        beta = segment_mask.float() / segment_mask.float().sum(dim=1, keepdim=True)
        return HeadOutput(logits=logits, alpha=alpha, beta_a=beta, beta_v=beta, visual_logits=visual_logits)


def test_step_explains_the_visual_evidence_of_a_head_that_decides_from_the_sound():
    """score="auto" preserves the visual-evidence logits: STEP finds the interior cell the head sees, not the border."""
    g = torch.Generator().manual_seed(3)
    pattern = torch.randn(C, generator=g)
    pattern = pattern / pattern.norm()
    visual = 0.1 * torch.randn(1, T, H, W, C, generator=g)
    visual[0, T0, 3, 3] += 3 * pattern
    audio = torch.ones(1, T, 4)
    batch = HeadBatch(["c0"], visual, audio, torch.ones(1, T, dtype=torch.bool))
    head = AudioDominatedHead(pattern).eval()
    exp = STEPFeatureExplainer(STEPConfig(iterations=150, max_blur=7.0)).explain(head, batch, torch.tensor([0]))
    peak = np.unravel_index(np.argmax(exp.spatial[0]), exp.spatial[0].shape)
    assert peak == (T0, 3, 3)
    border = np.ones((H, W), bool)
    border[1:-1, 1:-1] = False
    assert exp.spatial[0][T0][border].max() < exp.spatial[0][T0, 3, 3]
    with pytest.raises(ValueError, match="audio reference"):
        STEPFeatureExplainer(STEPConfig(iterations=1), score="neutral_audio").explain(head, batch, torch.tensor([0]))


PLACES = [(1, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 5)]  # where segment t's object is (it moves), t = 0..5


class TimeWeightedEvidenceHead(OneRegionHead):
    """Sees the object of segment t at ``PLACES[t]`` (per-segment evidence e_t) but weights the segments
    like a β^v that falls on one of them: its visual-evidence logits are segment 0's evidence alone, and
    its final logits the sound's."""

    def forward(self, visual, audio, segment_mask):
        b, t, h, w, _ = visual.shape
        evidence = torch.stack([visual[:, i, y, x, :] @ self.w + self.b for i, (y, x) in enumerate(PLACES)], dim=1)
        beta_v = torch.zeros(b, t)
        beta_v[:, 0] = 1.0
        visual_logits = torch.einsum("bt,btk->bk", beta_v, evidence)
        logits = torch.stack([audio[:, :, 0].mean(dim=1) * 8.0, torch.zeros(b)], dim=1) + 0.0 * visual_logits
        alpha = torch.full((b, t, h, w), 1.0 / (h * w))
        beta_a = segment_mask.float() / segment_mask.float().sum(dim=1, keepdim=True)
        return HeadOutput(logits=logits, alpha=alpha, beta_a=beta_a, beta_v=beta_v, visual_logits=visual_logits,
                          segment_visual_logits=evidence)


def test_step_finds_the_object_in_every_segment_when_it_preserves_each_segments_evidence():
    """score="auto" on a head with per-segment evidence preserves e_t averaged over the segments, so every
    segment's mask is drawn by its own evidence, also where the head's temporal weights are 0."""
    g = torch.Generator().manual_seed(5)
    pattern = torch.randn(C, generator=g)
    pattern = pattern / pattern.norm()
    visual = 0.1 * torch.randn(1, T, H, W, C, generator=g)
    for t, (y, x) in enumerate(PLACES):
        visual[0, t, y, x] += 3 * pattern
    batch = HeadBatch(["c0"], visual, torch.ones(1, T, 4), torch.ones(1, T, dtype=torch.bool))
    head = TimeWeightedEvidenceHead(pattern).eval()
    exp = STEPFeatureExplainer(STEPConfig(iterations=150, max_blur=7.0)).explain(head, batch, torch.tensor([0]))
    peaks = [np.unravel_index(np.argmax(exp.spatial[0, t]), (H, W)) for t in range(T)]
    assert peaks == PLACES


def test_mask_grid_is_centred_on_the_frame():
    """The bumps sit symmetrically in the frame (an off-centre grid made every map lean to the top-left)."""
    gen = MaskGenerator((16, 16), step=1, sigma=11 / 7)
    p = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cropped, full = gen.generate(p)
    flipped, full_flipped = gen.generate(p.flip(-1).flip(-2))
    assert torch.allclose(cropped.flip(-1).flip(-2), flipped, atol=1e-5)
    assert torch.allclose(full.flip(-1).flip(-2), full_flipped, atol=1e-5)


@pytest.mark.parametrize("side", [7, 10])
def test_masks_do_not_lean_to_a_corner_without_evidence(side: int):
    """With a model that ignores its input only the area and smoothness terms shape the masks, and
    nothing in them prefers a side: the top-left and bottom-right halves keep about as much. Equal
    initial bumps (near-ties broken by float rounding) and smoothness windows tiled from the top-left
    (the bottom and right edges unseen) made them lean up-left."""
    video = torch.randn(2, 4, 3, side, side, generator=torch.Generator().manual_seed(1))
    result = step_attribution(
        lambda v: torch.zeros(len(v), 2) + 0.0 * v.sum(), video, torch.tensor([0, 1]),
        STEPConfig(iterations=250, max_blur=float(side), smooth_start=50),
    )
    sal = result.saliency.mean(dim=(0, 1))  # (side, side)
    half = side // 2
    top, bottom = sal[:half].mean(), sal[-half:].mean()
    left, right = sal[:, :half].mean(), sal[:, -half:].mean()
    assert abs(float(top - bottom)) < 0.08 * float(sal.mean()), (top, bottom)
    assert abs(float(left - right)) < 0.08 * float(sal.mean()), (left, right)


def test_normalised_blur_does_not_paint_the_border_over_the_frame():
    """At a blur wider than a 7x7 map, a normalised blur tends to the map's mean; replicate padding to its border."""
    from stan_head.evaluation.step_masks import gaussian_blur

    border = torch.ones(1, 1, 7, 7)
    border[..., 1:-1, 1:-1] = 0.0  # 24 of 49 cells
    assert float(gaussian_blur(border, 7.0, "normalised").mean()) == pytest.approx(24 / 49, abs=0.03)
    assert float(gaussian_blur(border, 7.0, "replicate").mean()) > 0.9
    x = torch.rand(2, 3, 7, 7)
    assert torch.allclose(gaussian_blur(x, 50.0), x.mean(dim=(2, 3), keepdim=True).expand_as(x), atol=1e-3)


def test_pixel_space_step_peaks_on_the_region_the_head_reads():
    """Frames -> a fixed differentiable 'CNN' (8x8 average pooling into a 7x7 grid) -> the head."""
    s = 28
    g = torch.Generator().manual_seed(1)
    frames = 0.45 + 0.05 * torch.rand(1, T, 1, 3, s, s, generator=g)
    colour = torch.tensor([0.9, 0.1, 0.1])
    cell = s // W
    for t, r, c in [(T0, H0, W0), DISTRACTOR]:
        frames[0, t, 0, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = colour.view(3, 1, 1)

    def visual_from_float(x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 7, 7, 3), centred
        return F.avg_pool2d(x, cell).permute(0, 2, 3, 1) - 0.5

    pattern = (colour - 0.5) / (colour - 0.5).norm()
    head = OneRegionHead(pattern).eval()
    visual = visual_from_float(frames.reshape(-1, 3, s, s)).reshape(1, T, H, W, 3)
    batch = HeadBatch(["c0"], visual, torch.zeros(1, T, 4), torch.ones(1, T, dtype=torch.bool))
    assert head(visual, batch.audio, batch.segment_mask).logits.argmax().item() == 0

    explainer = STEPPixelExplainer(lambda ids: frames, visual_from_float, STEPConfig(iterations=120))
    exp = explainer.explain(head, batch, torch.tensor([0]))
    peak = np.unravel_index(np.argmax(exp.spatial[0]), exp.spatial[0].shape)
    assert peak == (T0, H0, W0)
    assert exp.spatial[0][DISTRACTOR] < exp.spatial[0][T0, H0, W0]


def test_step_masks_meet_their_areas_without_evidence_pressure():
    """A constant model gives no reward gradient: the area constraint alone sets each mask's size.

    The constraint holds on the mask with its margin (as in TorchRay's and the authors' code): here a
    16-px mask with a 2-px margin, 20² = 400 values of which the frame shows 256. A mask that spends
    none of its area in the margin keeps a · 400 / 256 of the frame, so the frame's mean lies between
    a and 1.5625 · a."""
    video = torch.rand(1, 3, 3, 16, 16)
    result = step_attribution(
        lambda v: torch.zeros(len(v), 2) + 0.0 * v.sum(), video, torch.tensor([0]),
        STEPConfig(areas=(0.1, 0.5), iterations=200, smooth_weight=0.0),
    )
    means = result.masks[0].mean(dim=(1, 2, 3)).numpy()
    for area, mean in zip((0.1, 0.5), means):
        assert 0.8 * area < mean < area * 400 / 256 + 0.03
    assert result.saliency.shape == (1, 3, 16, 16)


def test_padded_frames_get_no_mask():
    video = torch.rand(1, 3, 3, 16, 16)
    result = step_attribution(
        lambda v: v.mean(dim=(1, 3, 4)), video, torch.tensor([0]), STEPConfig(iterations=5),
        frame_valid=torch.tensor([[True, True, False]]),
    )
    assert float(result.saliency[0, 2].abs().sum()) == 0.0


def test_perturbation_levels_run_from_most_blurred_to_the_input():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    pert = Perturbation(x, num_levels=4, max_blur=2.0)
    assert torch.equal(pert.pyramid[0, -1], x[0])
    peaks = [float(pert.pyramid[0, level].max()) for level in range(4)]
    assert peaks == sorted(peaks) and peaks[0] < 0.1
    keep = pert.apply(torch.ones(1, 1, 1, 9, 9))
    assert torch.allclose(keep[0], x)
    half = pert.apply(torch.full((1, 1, 1, 9, 9), 0.5))  # halfway between levels 1 and 2
    assert torch.allclose(half[0], 0.5 * (pert.pyramid[:, 1] + pert.pyramid[:, 2]))


def test_mask_generator_is_smooth_and_bounded():
    gen = MaskGenerator((32, 32), step=2, sigma=3.0)
    assert gen.shape_in == [16, 16]
    p = torch.zeros(1, 1, 16, 16)
    p[0, 0, 8, 8] = 1.0
    cropped, full = gen.generate(p)
    assert cropped.shape == (1, 1, 32, 32) and full.shape[2:] == tuple(gen.shape_out)
    assert float(cropped.min()) >= 0.0 and float(cropped.max()) <= 1.0
    assert float(cropped.max()) > 0.9 and float(cropped[0, 0, 0, 0]) < 0.01
    ones, _ = gen.generate(torch.ones(1, 1, 16, 16))
    assert float(ones.min()) > 0.95


def test_ellipsoid_and_smoothness_term():
    k = ellipsoid_kernel(3, 3)
    assert k.shape == (1, 1, 3, 3, 3) and int(k.sum()) == 7  # centre + 6 face neighbours
    loss = SmoothnessLoss((3, 6, 6), areas=(0.1,), kernel_frames=3, kernel_size=3)
    blob = torch.zeros(1, 1, 3, 6, 6)
    blob[..., 0:3, 0:3] = 1.0  # one filled kernel box: its response is 1
    assert loss.topk == [2]
    value = loss(blob)
    # k = ceil(0.1 * 108 / 7) = 2; responses sorted: [1, 0, 0, 0]; top-2 -> (0 + 1)/2, rest -> 0
    assert value.shape == (1, 1) and float(value) == pytest.approx(0.5)
