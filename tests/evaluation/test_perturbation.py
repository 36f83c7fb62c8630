"""Perturbation tests per modality on constructed heads whose answer is known.

* ``RegionHead`` reads its visual evidence from one cell of every segment (and the class from the
  audio too): an explanation that points at that cell makes the visual curves fall at once, a
  random one does not.
* ``FindingHead`` pools the segments' evidence by its largest segment, as a sharp temporal
  attention does: a map that is right in one segment only looks perfect to the clip-level test
  and is caught by the per-segment one.
* ``DeafHead`` never looks at the frames: deleting every visual cell leaves p(target) where it
  was, so both visual tests are flagged uninformative and report no AUC; its audio test is
  informative and ranks the right "when" first.
"""

import numpy as np
import pytest
import torch
from torch import nn

from stan_head.batch import HeadBatch
from stan_head.evaluation.deletion import keep_masks, score_curves, segment_region_keep_masks
from stan_head.evaluation.explainers import Explanation
from stan_head.evaluation.perturbation import (
    MIN_DELETION_EFFECT,
    NeutralReference,
    check_test,
    perturbation_curves,
    run_tests,
)
from stan_head.models.base import HeadOutput

T, H, W, C, CA = 4, 3, 3, 8, 6
R, S = 1, 2  # the cell RegionHead reads in every segment
EVENT = 2  # the segment whose audio names the class for DeafHead


def _uniform_beta(mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    return m / m.sum(dim=1, keepdim=True)


class RegionHead(nn.Module):
    """Visual evidence = the pattern's presence in cell (R, S), averaged over segments; class 0 iff present.

    The final logits add an audio term, so with the clip's own audio the class is also heard.
    """

    def __init__(self, pattern: torch.Tensor, audio_pattern: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("p", pattern)
        self.register_buffer("q", audio_pattern)

    def forward(self, visual, audio, segment_mask):
        b, t, h, w, _ = visual.shape
        m = segment_mask.float()
        s_t = visual[:, :, R, S, :] @ self.p  # (B, T)
        segment_visual_logits = torch.stack([4.0 * s_t - 2.0, torch.zeros_like(s_t)], dim=-1)  # (B, T, 2)
        visual_logits = self.pool(segment_visual_logits, segment_mask)
        heard = ((audio @ self.q) * m).sum(dim=1) / m.sum(dim=1)
        logits = visual_logits + torch.stack([2.0 * heard, torch.zeros_like(heard)], dim=1)
        alpha = torch.full((b, t, h, w), 1.0 / (h * w))
        return HeadOutput(logits=logits, alpha=alpha, beta_a=_uniform_beta(segment_mask), beta_v=_uniform_beta(segment_mask),
                          visual_logits=visual_logits, segment_visual_logits=segment_visual_logits)

    @staticmethod
    def pool(segment_logits: torch.Tensor, segment_mask: torch.Tensor) -> torch.Tensor:
        """The mean over the valid segments (B, T, K) -> (B, K)."""
        return torch.einsum("bt,btk->bk", _uniform_beta(segment_mask), segment_logits)


class FindingHead(RegionHead):
    """RegionHead whose clip-level evidence is its most confident valid segment's."""

    @staticmethod
    def pool(segment_logits: torch.Tensor, segment_mask: torch.Tensor) -> torch.Tensor:
        margin = (segment_logits[..., 0] - segment_logits[..., 1]).masked_fill(~segment_mask, -torch.inf)
        best = margin.argmax(dim=1)
        return segment_logits[torch.arange(len(best)), best]


class DeafHead(nn.Module):
    """Decides from the audio of segment EVENT only; no visual-evidence pathway."""

    def __init__(self, audio_pattern: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("q", audio_pattern)

    def forward(self, visual, audio, segment_mask):
        b, t, h, w, _ = visual.shape
        heard = audio[:, EVENT] @ self.q
        logits = torch.stack([4.0 * heard - 2.0, torch.zeros_like(heard)], dim=1) + 0.0 * visual.sum(dim=(1, 2, 3, 4))[:, None]
        alpha = torch.full((b, t, h, w), 1.0 / (h * w))
        return HeadOutput(logits=logits, alpha=alpha, beta_a=_uniform_beta(segment_mask), beta_v=_uniform_beta(segment_mask))


def _clips(n: int = 3, seed: int = 0) -> tuple[HeadBatch, torch.Tensor, torch.Tensor, NeutralReference]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(C, generator=g)
    p = p / p.norm()
    q = torch.randn(CA, generator=g)
    q = q / q.norm()
    visual = 0.1 * torch.randn(n, T, H, W, C, generator=g)
    visual[:, :, R, S] += p  # the evidence in every segment
    audio = 0.1 * torch.randn(n, T, CA, generator=g)
    audio[:, EVENT] += q
    mask = torch.ones(n, T, dtype=torch.bool)
    mask[-1, -1] = False  # one clip shorter than the others
    batch = HeadBatch([f"c{i}" for i in range(n)], visual, audio, mask, label=torch.zeros(n, dtype=torch.long))
    reference = NeutralReference(torch.zeros(C), torch.zeros(CA), "train", 10)
    return batch, p, q, reference


def _good_and_random(batch: HeadBatch) -> dict[str, Explanation]:
    n = len(batch)
    good = np.zeros((n, T, H, W))
    good[:, :, R, S] = 1.0
    when = np.zeros((n, T))
    when[:, EVENT] = 1.0
    rng = np.random.default_rng(0)
    return {"good": Explanation(good, when), "random": Explanation(rng.random((n, T, H, W)), rng.random((n, T)))}


def test_region_keep_masks_remove_the_top_cells_of_every_valid_segment():
    spatial = np.arange(T * H * W, dtype=float).reshape(T, H, W)
    valid = np.array([True, True, True, False])
    fractions = np.linspace(0, 1, 4)
    keep_del, keep_ins = segment_region_keep_masks(spatial, valid, fractions)
    assert keep_del.shape == (4, T, H, W)
    removed = (~keep_del).reshape(4, T, -1).sum(-1)
    assert removed[:, :3].tolist() == [[0] * 3, [3] * 3, [6] * 3, [9] * 3]  # round(f · 9) per valid segment
    assert removed[:, 3].tolist() == [0, 0, 0, 0] and keep_ins[:, 3].all()  # padding is never touched
    assert not keep_del[1, 0, H - 1, W - 1] and keep_del[1, 0, 0, 0]  # the highest cell goes first
    assert (keep_ins[:, :3] == ~keep_del[:, :3]).all()


def test_score_curves_scores_each_distinct_mask_once():
    fractions = np.linspace(0, 1, 5)
    scores = np.array([0.9, 0.1, 0.5, 0.3])
    valid = np.ones(4, bool)
    masks = {"a": keep_masks(scores, valid, fractions), "b": keep_masks(scores, valid, fractions),
             "c": keep_masks(scores[::-1], valid, fractions)}
    seen = []

    def scorer(keep):
        seen.append(len(keep))
        return keep.sum(axis=1) / 4.0

    got = score_curves(masks, scorer, chunk=100)
    # a and b are the same ranking; c shares the all-kept and all-deleted ends with them
    assert sum(seen) == len(np.unique(np.concatenate([np.concatenate(m) for m in masks.values()]), axis=0))
    assert np.array_equal(got["a"][0], got["b"][0]) and np.array_equal(got["a"][1], got["b"][1])
    assert got["a"][0].tolist() == [1.0, 0.75, 0.5, 0.25, 0.0] and got["a"][1].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_visual_curves_fall_first_for_the_cell_the_head_reads():
    batch, p, q, reference = _clips()
    head = RegionHead(p, q).eval()
    exps = _good_and_random(batch)
    curves = perturbation_curves(head, batch, batch.label, exps, reference,
                                 ["visual_segment_evidence", "visual_evidence", "visual_neutral_audio", "audio_segments"], steps=9)
    for test in ("visual_segment_evidence", "visual_evidence", "visual_neutral_audio"):
        good, rnd = curves[test]["good"], curves[test]["random"]
        assert good.deletion.shape == (3, 10)
        # deleting the one cell per segment (fraction 1/9) takes the evidence away at once
        assert (good.deletion[:, 1] < 0.2).all() and (good.deletion[:, 0] > 0.7).all()
        assert (good.insertion[:, 1] > 0.7).all()
        assert good.deletion_auc.mean() < rnd.deletion_auc.mean() - 0.2
        assert good.insertion_auc.mean() > rnd.insertion_auc.mean() + 0.2
        check = check_test(test, curves[test])
        assert check.available and check.informative and check.effect > MIN_DELETION_EFFECT
    # with the clip's own audio the evidence logits are the visual ones; with neutral audio the
    # full head is the visual logits plus a zero audio term: the same numbers
    assert np.allclose(curves["visual_evidence"]["good"].deletion, curves["visual_neutral_audio"]["good"].deletion)


def test_a_map_right_in_one_segment_only_is_caught_by_the_per_segment_test():
    batch, p, q, reference = _clips()
    n = len(batch)
    exps = _good_and_random(batch)
    once = np.zeros((n, T, H, W))
    once[:, 0, R, S] = 1.0  # the right cell first in segment 0 ...
    once[:, 1:] = 1.0
    once[:, 1:, R, S] = 0.0  # ... and last everywhere else
    exps["once"] = Explanation(once, exps["good"].temporal)
    curves = perturbation_curves(FindingHead(p, q).eval(), batch, batch.label, exps, reference,
                                 ["visual_segment_evidence", "visual_evidence"], steps=9)
    clip, seg = curves["visual_evidence"], curves["visual_segment_evidence"]
    with torch.no_grad():
        out = FindingHead(p, q)(batch.visual, batch.audio, batch.segment_mask)
    p_full = torch.softmax(out.segment_visual_logits, dim=-1)[..., 0].numpy()  # (n, T)
    # the clip's evidence is its best segment's, so the one right segment restores it
    assert np.allclose(clip["once"].insertion[:, 1], p_full[:, 0], atol=1e-5) and (clip["once"].insertion[:, 1] > 0.7).all()
    assert abs(clip["once"].insertion_auc.mean() - clip["good"].insertion_auc.mean()) < 0.05
    # scored segment by segment, the first cell restores the evidence of segment 0 only
    nothing = reference.visual.expand(1, T, H, W, C)  # every cell deleted
    p_none = float(torch.softmax(FindingHead(p, q)(nothing, batch.audio[:1], batch.segment_mask[:1]).segment_visual_logits,
                                 dim=-1)[0, 0, 0])
    valid = batch.segment_mask.numpy()
    expected = (p_full[:, 0] + p_none * (valid.sum(1) - 1)) / valid.sum(1)
    assert np.allclose(seg["once"].insertion[:, 1], expected, atol=1e-5)
    assert (seg["good"].insertion[:, 1] > 0.7).all() and (seg["once"].insertion[:, 1] < 0.5).all()
    assert seg["good"].insertion_auc.mean() > seg["once"].insertion_auc.mean() + 0.2


def test_a_head_that_ignores_vision_is_flagged_and_gets_no_visual_auc():
    batch, p, q, reference = _clips()
    head = DeafHead(q).eval()
    curves, checks = run_tests(head, batch, _good_and_random(batch), reference, pixel_space=False,
                               device=torch.device("cpu"), steps=9, batch_size=2)
    assert not checks["visual_evidence"].available and "visual_logits" in checks["visual_evidence"].note
    assert not checks["visual_segment_evidence"].available and "segment_visual_logits" in checks["visual_segment_evidence"].note
    assert not {"visual_evidence", "visual_segment_evidence"} & set(curves)
    flat = checks["visual_neutral_audio"]
    assert flat.available and flat.informative is False and flat.effect == pytest.approx(0.0, abs=1e-6)
    assert "uninformative" in flat.note
    heard = checks["audio_segments"]
    assert heard.informative and heard.p_kept > 0.8 and heard.p_deleted < 0.2
    audio = curves["audio_segments"]
    assert audio["good"].deletion.shape == (3, T + 1)
    assert audio["good"].deletion_auc.mean() < audio["random"].deletion_auc.mean()
    assert (audio["good"].deletion[:, 1] < 0.2).all()  # the first segment deleted is the one the head hears


def test_an_explainer_run_on_fewer_clips_gets_curves_for_those_only():
    batch, p, q, reference = _clips(n=4)
    exps = _good_and_random(batch)
    exps["few"] = Explanation(exps["good"].spatial[:1], exps["good"].temporal[:1])
    curves, checks = run_tests(RegionHead(p, q).eval(), batch, exps, reference, pixel_space=False,
                               device=torch.device("cpu"), steps=3, batch_size=3)
    assert len(curves["visual_evidence"]["few"].deletion) == 1
    assert len(curves["visual_evidence"]["random"].deletion) == 4
    assert np.allclose(curves["visual_evidence"]["few"].deletion, curves["visual_evidence"]["good"].deletion[:1])
    assert checks["visual_evidence"].clips == 4
