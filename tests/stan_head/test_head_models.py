"""Heads: output shapes, attention normalisation, masking, and the shared contract."""

from __future__ import annotations

import pytest
import torch

from stan_head.models import HEADS, HeadConfig, build_head

B, T, H, W, CV, CA, K = 3, 5, 4, 3, 24, 12, 6


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(B, T, H, W, CV, generator=g)
    audio = torch.randn(B, T, CA, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return visual, audio, mask


def _head(model: str, segment_head: bool = True):
    torch.manual_seed(0)
    head = build_head(
        HeadConfig(model=model, num_classes=K, visual_dim=CV, audio_dim=CA, d_model=16, attn_dim=8, hidden_dim=16,
                   lstm_hidden=8, segment_head=segment_head)
    )
    return head.eval()


@pytest.mark.parametrize("model", sorted(HEADS))
def test_shapes_and_normalisation(model):
    visual, audio, mask = _inputs()
    out = _head(model)(visual, audio, mask)
    assert out.logits.shape == (B, K)
    assert out.alpha.shape == (B, T, H, W)
    assert out.beta_a.shape == out.beta_v.shape == (B, T)
    assert out.segment_logits is not None and out.segment_logits.shape == (B, T, K + 1)
    torch.testing.assert_close(out.alpha.sum(dim=(2, 3)), torch.ones(B, T))
    assert (out.alpha >= 0).all()
    for beta in (out.beta_a, out.beta_v):
        torch.testing.assert_close(beta.sum(dim=1), torch.ones(B))
        assert (beta[~mask] == 0).all(), "masked segments must get zero temporal attention"
        assert (beta[mask] > 0).all()


@pytest.mark.parametrize("model", sorted(HEADS))
def test_masked_segments_do_not_influence_the_prediction(model):
    visual, audio, mask = _inputs()
    head = _head(model)
    ref = head(visual, audio, mask)
    visual2, audio2 = visual.clone(), audio.clone()
    visual2[~mask] = 100.0 * torch.randn_like(visual2[~mask])
    audio2[~mask] = -50.0
    out = head(visual2, audio2, mask)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.beta_a, ref.beta_a)
    torch.testing.assert_close(out.alpha[mask], ref.alpha[mask])


def test_stan_attention_is_not_uniform_and_late_fusion_is():
    visual, audio, mask = _inputs()
    stan = _head("stan")(visual, audio, mask)
    late = _head("late_fusion")(visual, audio, mask)
    assert stan.alpha[0].std() > 1e-4
    assert stan.beta_a[0].std() > 1e-5
    torch.testing.assert_close(late.alpha, torch.full((B, T, H, W), 1.0 / (H * W)))
    torch.testing.assert_close(late.beta_v[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0]))


def test_segment_head_off_gives_none():
    visual, audio, mask = _inputs()
    assert _head("stan", segment_head=False)(visual, audio, mask).segment_logits is None


@pytest.mark.parametrize("model", sorted(HEADS))
def test_gradients_are_finite_with_masks(model):
    visual, audio, mask = _inputs()
    head = _head(model).train()
    out = head(visual, audio, mask)
    loss = out.logits.logsumexp(-1).sum() + out.segment_logits.sum()
    if out.visual_logits is not None:  # the trainer's visual-evidence loss reaches that classifier
        loss = loss + out.visual_logits.logsumexp(-1).sum()
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_wrong_inputs_are_named():
    visual, audio, mask = _inputs()
    head = _head("stan")
    with pytest.raises(ValueError, match="visual has 7 channels, the head expects 24"):
        head(visual[..., :7], audio, mask)
    with pytest.raises(ValueError, match="segment_mask must be bool"):
        head(visual, audio, mask.float())


def test_ave_att_refuses_non_trailing_padding():
    visual, audio, _ = _inputs()
    mask = torch.tensor([[0, 1, 1, 1, 1]] * B, dtype=torch.bool)
    with pytest.raises(ValueError, match="trail"):
        _head("ave_att")(visual, audio, mask)


def test_stan_has_a_visual_evidence_classifier_and_the_baselines_do_not():
    visual, audio, mask = _inputs()
    out = _head("stan")(visual, audio, mask)
    assert out.visual_logits is not None and out.visual_logits.shape == (B, K)
    # per segment, the same evidence before β^v pools it over the valid segments
    seg = out.segment_visual_logits
    assert seg is not None and seg.shape == (B, visual.shape[1], K)
    assert torch.allclose(torch.einsum("bt,btk->bk", out.beta_v, seg), out.visual_logits, atol=1e-5)
    # it sees vision only: the audio reaches it through the attention weights, not as a feature
    out.visual_logits.sum().backward()
    for name in ("late_fusion", "ave_att"):
        other = _head(name)(visual, audio, mask)
        assert other.visual_logits is None and other.segment_visual_logits is None


def test_the_registry_is_the_one_list_of_head_names():
    import typing

    from stan_head.models import HEAD_NAMES, HeadName

    assert HEAD_NAMES == tuple(HEADS) and HEAD_NAMES[0] == "stan"
    assert typing.get_args(HeadName) == HEAD_NAMES
    for name, spec in HEADS.items():
        assert spec.name == name and spec.summary
        assert type(_head(name)) is spec.head
    with pytest.raises(ValueError, match="stan"):
        HeadConfig(model="nope", num_classes=K, visual_dim=CV, audio_dim=CA)
