"""STAN's spatial attention: α goes to the cells whose class agrees with the sound.

Hand-set weights give heads whose answer is known (which cell shows which class, what the audio
names); a constructed store with a silent distractor checks that training through the real
trainer finds the sounding object rather than the distractor.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from head_store import make_feature_store

from features.store import FeatureStore
from stan_head.checkpoint import load_run
from stan_head.data import load_split
from stan_head.models import HeadConfig, build_head
from stan_head.models.base import HeadOutput
from stan_head.models.stan import agreement, neighbourhood_kernel, pool_neighbourhood
from stan_head.train import TrainConfig, absence_loss, compute_loss, train_head

K, H, W, T = 4, 4, 5, 3


def _known_head(neighbourhood: float = 0.0, passes: int = 2) -> torch.nn.Module:
    """A STAN whose region classifier reads class k off channel k and whose audio classifier reads
    the heard class off audio channel k (visual_dim = audio_dim = d_model = K, dropout off; β^v uniform)."""
    cfg = HeadConfig(model="stan", num_classes=K, visual_dim=K, audio_dim=K, d_model=K, attn_dim=4,
                     dropout=0.0, attention_neighbourhood=neighbourhood, attention_passes=passes)
    head = build_head(cfg).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        ln_r, lin_r = head.region_classifier
        ln_r.weight.fill_(1.0)
        lin_r.weight.copy_(torch.eye(K) * 4.0)
        lin_a, ln_a = head.proj_a
        lin_a.weight.copy_(torch.eye(K))
        ln_a.weight.fill_(1.0)
        head.audio_classifier.weight.copy_(torch.eye(K) * 4.0)
        head.proj_v[1].weight.fill_(1.0)
    return head


def _scene(objects: dict[tuple[int, int], int], heard: list[int]) -> tuple[torch.Tensor, ...]:
    """One clip: ``objects`` maps a cell to the class drawn there (one-hot channel), the audio holds
    the ``heard`` classes in every segment; all segments valid."""
    visual = torch.zeros(1, T, H, W, K)
    for (y, x), k in objects.items():
        visual[0, :, y, x, k] = 1.0
    audio = torch.zeros(1, T, K)
    audio[0, :, heard] = 1.0
    return visual, audio, torch.ones(1, T, dtype=torch.bool)


def _argmax_cell(alpha: torch.Tensor) -> set[tuple[int, int]]:
    """The cells where α (1, T', H, W) peaks, over its segments (the same in every segment here)."""
    flat = alpha[0].reshape(alpha.shape[1], -1).argmax(-1)
    return {divmod(int(i), W) for i in flat}


@pytest.mark.parametrize("neighbourhood", [0.0, 0.5])
def test_alpha_goes_to_the_object_the_audio_names_and_moves_with_the_audio(neighbourhood):
    head = _known_head(neighbourhood)
    objects = {(1, 1): 0, (2, 4): 2}  # class 0 at (1, 1), class 2 at (2, 4); both silent in the pixels
    with torch.no_grad():
        hear0 = head(*_scene(objects, heard=[0]))
        hear2 = head(*_scene(objects, heard=[2]))
    assert _argmax_cell(hear0.alpha) == {(1, 1)}
    assert _argmax_cell(hear2.alpha) == {(2, 4)}
    assert hear0.logits.argmax(-1).item() == 0 and hear2.logits.argmax(-1).item() == 2
    # α is a distribution over the cells of every segment, far higher on the agreeing object
    assert torch.allclose(hear0.alpha.sum((-1, -2)), torch.ones(1, T), atol=1e-5)
    assert (hear0.alpha[0, :, 1, 1] > 10 * hear0.alpha[0, :, 2, 4]).all()
    assert (hear2.alpha[0, :, 2, 4] > 10 * hear2.alpha[0, :, 1, 1]).all()


def test_a_sound_shared_by_two_classes_points_at_the_one_that_is_visible_and_the_view_decides():
    head = _known_head()
    # the sound names classes 0 and 1 alike; class 1 is visible, the distractor is class 2
    with torch.no_grad():
        out = head(*_scene({(0, 3): 1, (3, 0): 2}, heard=[0, 1]))
    assert _argmax_cell(out.alpha) == {(0, 3)}
    heard_only = head.audio_classifier(head.proj_a(torch.zeros(1, K).index_fill_(1, torch.tensor([0, 1]), 1.0)))
    assert heard_only[0, 0].item() == pytest.approx(heard_only[0, 1].item())  # the sound cannot tell 0 from 1
    assert out.logits.argmax(-1).item() == 1  # the attended object can


def test_the_second_pass_asks_with_what_is_heard_and_seen_and_drops_a_brief_sound_alike():
    # The sound names classes 0 and 1 alike. A class-0 object is in view all clip long, a class-1 object
    # only in segment 0. Asked with the sound alone, α in segment 0 cannot choose between them; the clip's
    # visual evidence (class 0 in every segment) resolves the pair, and the second pass, asked with
    # ℓ^a + ℓ^v, looks at the class-0 object there too.
    visual = torch.zeros(1, T, H, W, K)
    visual[0, :, 1, 1, 0] = 1.0
    visual[0, 0, 3, 4, 1] = 1.0
    audio = torch.zeros(1, T, K)
    audio[0, :, [0, 1]] = 1.0
    scene = (visual, audio, torch.ones(1, T, dtype=torch.bool))
    with torch.no_grad():
        one = _known_head(passes=1)(*scene)
        two = _known_head(passes=2)(*scene)
    assert _known_head().config.attention_passes == 2  # the default
    first = one.alpha[0, 0, 1, 1] / one.alpha[0, 0, 3, 4]
    second = two.alpha[0, 0, 1, 1] / two.alpha[0, 0, 3, 4]
    assert 0.5 < first < 2.0, first
    assert second > 10.0, second
    assert one.logits.argmax(-1).item() == two.logits.argmax(-1).item() == 0
    # where only the class-0 object shows, both passes look at it
    for out in (one, two):
        assert _argmax_cell(out.alpha[:, 1:]) == {(1, 1)}


def test_a_temperature_given_for_the_call_replaces_tau_and_none_keeps_it():
    head = _known_head()
    scene = _scene({(1, 1): 0, (2, 4): 2}, heard=[0])
    with torch.no_grad():
        default = head(*scene)
        same = head(*scene, attention_temperature=head.config.attention_temperature)
        soft = head(*scene, attention_temperature=4.0)
        softer = head(*scene, attention_temperature=1e4)
    assert torch.equal(default.alpha, same.alpha)
    # the same peak, far less of the mass on it: the warm-up's soft α spreads over the frame
    assert _argmax_cell(soft.alpha) == {(1, 1)}
    assert (soft.alpha[0, :, 1, 1] < 0.5 * default.alpha[0, :, 1, 1]).all()
    assert torch.allclose(softer.alpha, torch.full_like(softer.alpha, 1.0 / (H * W)), atol=1e-3)


def test_region_dropout_masks_the_cells_features_in_training_and_never_in_evaluation():
    head = _known_head()
    assert head.config.region_dropout == 0.5  # the default
    scene = _scene({(1, 1): 0, (2, 4): 2}, heard=[0])
    with torch.no_grad():
        evaluated = head(*scene)
        head.train()
        torch.manual_seed(0)
        trained = head(*scene)
        head.region_dropout.p = 0.0  # the same weights with the dropout off: training-mode α is evaluation's
        undropped = head(*scene)
    assert torch.equal(evaluated.alpha, undropped.alpha)
    assert torch.equal(evaluated.region_presence, undropped.region_presence)
    # half the cells' normalised features are zeroed (the rest doubled): the region classifier's view
    # changes, and α is still a distribution over each segment's cells
    assert (trained.region_presence - evaluated.region_presence).abs().max() > 0.1
    assert torch.allclose(trained.alpha.sum((-1, -2)), torch.ones(1, T), atol=1e-5)


def test_the_absence_loss_charges_a_shown_sound_alike_and_nothing_else():
    """Sound shared by classes 0 and 1, label 1. Showing class 0 (the sound-alike the label rules
    out) costs q_0 · −log(1 − P_0) per segment; showing the label itself, or class 2 that the sound
    rules out (a silent object of another sound), costs nothing more than the floor."""
    head = _known_head()

    def loss_of(objects):
        with torch.no_grad():
            out = head(*_scene(objects, heard=[0, 1]))
        return out, absence_loss(out.region_presence, out.audio_logits, torch.tensor([1]), torch.ones(1, T, dtype=torch.bool))

    out, with_alike = loss_of({(0, 3): 1, (3, 0): 0})
    _, label_only = loss_of({(0, 3): 1})
    _, other_sound = loss_of({(0, 3): 1, (3, 0): 2})
    q0 = torch.softmax(out.audio_logits, -1)[0, 0]
    assert q0.item() == pytest.approx(0.5, abs=0.05)
    q = torch.softmax(out.audio_logits, -1)[0]
    presence = out.region_presence[0]  # (T, K): class 0's comes from the class-0 cell
    want = sum(float(q[k] * -torch.log1p(-presence[:, k]).mean()) for k in (0, 2, 3))
    assert with_alike.item() == pytest.approx(want, rel=1e-4)
    assert float(q0 * -torch.log1p(-presence[:, 0]).mean()) > 0.9 * want  # nearly all of it from the sound-alike
    assert with_alike > 5 * label_only
    assert other_sound < 1.02 * label_only  # q_2 ≈ 0.01: the silent object of another sound is left alone
    # masked segments do not count: the same clip with the sound-alike only in a masked segment
    visual, audio, mask = _scene({(0, 3): 1}, heard=[0, 1])
    visual[0, 0, 3, 0, 0] = 1.0
    mask[0, 0] = False
    with torch.no_grad():
        out = head(visual, audio, mask)
    masked = absence_loss(out.region_presence, out.audio_logits, torch.tensor([1]), mask)
    assert masked.item() == pytest.approx(label_only.item(), rel=1e-4)


def test_the_absence_loss_pushes_the_sound_alike_down_where_it_shows_and_is_off_at_weight_zero():
    head = _known_head()
    visual, audio, mask = _scene({(0, 3): 1, (3, 0): 0}, heard=[0, 1])
    label = torch.tensor([1])
    out = head(visual, audio, mask)
    config = TrainConfig(store=Path("."), out=Path("."), visual_loss_weight=0.0)
    base = compute_loss(out, label, mask, torch.zeros(1, T, dtype=torch.long), config.model_copy(update={"absence_loss_weight": 0.0}))
    full = compute_loss(out, label, mask, torch.zeros(1, T, dtype=torch.long), config)
    assert full.item() == pytest.approx(base.item() + 5.0 * absence_loss(out.region_presence, out.audio_logits, label, mask).item(), rel=1e-4)
    head.zero_grad()
    absence_loss(out.region_presence, out.audio_logits, label, mask).backward()
    lin_r = head.region_classifier[1]
    # a gradient step lowers class 0's score on what the class-0 cell shows (channel 0) ...
    assert lin_r.weight.grad[0, 0].item() > 0
    # ... and the audio is not asked to change
    assert all(p.grad is None or torch.all(p.grad == 0) for p in head.audio_classifier.parameters())


def test_the_audio_loss_corrects_an_audio_preference_that_the_visual_evidence_hides():
    # classes 0 and 1 share a sound; the audio prefers 0, the visual evidence says 1 (the label) clearly
    audio_logits = torch.tensor([[3.0, 0.0, -5.0, -5.0]], requires_grad=True)
    visual_logits = torch.tensor([[0.0, 6.0, -5.0, -5.0]])
    label, mask = torch.tensor([1]), torch.ones(1, T, dtype=torch.bool)
    fused_only = TrainConfig(store=Path("."), out=Path("."), visual_loss_weight=0.0, absence_loss_weight=0.0,
                             audio_loss_weight=0.0)
    grads = []
    for config in (fused_only, fused_only.model_copy(update={"audio_loss_weight": 1.0})):
        out = HeadOutput(logits=audio_logits + visual_logits, alpha=torch.full((1, T, H, W), 1.0 / (H * W)),
                         beta_a=torch.full((1, T), 1.0 / T), beta_v=torch.full((1, T), 1.0 / T),
                         visual_logits=visual_logits, audio_logits=audio_logits)
        loss = compute_loss(out, label, mask, torch.zeros(1, T, dtype=torch.long), config)
        (grad,) = torch.autograd.grad(loss, audio_logits)
        grads.append(grad[0])
    q = torch.softmax(audio_logits.detach(), -1)[0]
    assert q[0] > 0.9  # α's query asks for class 0, which is not in view
    # the fused loss is nearly met by the visual evidence: it barely asks the audio to change its mind
    assert grads[0][0] - grads[0][1] < 0.1
    # the audio loss adds its own cross-entropy's gradient, q − onehot(label): class 0 down, class 1 up
    assert torch.allclose(grads[1] - grads[0], q - torch.nn.functional.one_hot(label, K)[0].float(), atol=1e-6)
    assert grads[1][0] - grads[1][1] > 10 * (grads[0][0] - grads[0][1])


def test_agreement_is_the_log_probability_that_heard_and_seen_classes_coincide():
    q = torch.tensor([[0.7, 0.2, 0.1]])
    p = torch.tensor([[0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])  # two regions
    got = agreement(q.log(), p.log()[None, None])  # (1, 1, 2)
    want = (p * q).sum(-1).log()
    assert torch.allclose(got[0, 0], want, atol=1e-6)


def test_neighbourhood_pooling_peaks_on_the_middle_of_a_blob_not_on_a_lone_cell():
    scores = torch.full((1, 1, 5, 5), 1e-3)
    scores[0, 0, 0, 4] = 0.6  # one cell alone, the highest
    scores[0, 0, 2, 1:4] = 0.5  # a blob of three cells
    logs = scores.log().reshape(1, 1, 25)
    pooled = pool_neighbourhood(logs, neighbourhood_kernel(0.5), 5, 5)
    assert divmod(int(logs.argmax()), 5) == (0, 4)
    assert divmod(int(pooled.argmax()), 5) == (2, 2)
    # c = 0 leaves the scores as they are; hugely negative scores stay finite
    assert torch.allclose(pool_neighbourhood(logs, neighbourhood_kernel(0.0), 5, 5), logs, atol=1e-5)
    far = pool_neighbourhood(torch.full((1, 1, 25), -1e4), neighbourhood_kernel(0.5), 5, 5)
    assert torch.isfinite(far).all()


@pytest.fixture(scope="module")
def distractor_store(tmp_path_factory) -> Path:
    """90 clips, 3 classes, 5×5 cells: the sounding object and a silent distractor of another class in every segment."""
    return make_feature_store(tmp_path_factory.mktemp("distractor_store"), store_id="distract01", clips=90, t=4,
                              h=5, w=5, cv=16, ca=8, shard_size=45, distractor=True)


@pytest.mark.xfail(strict=True, reason=(
    "known gap (issue 13): trained through the visual-evidence loss (the absence loss has nothing to do "
    "here: every sound names one class), the region classifier also learns confident classes for noise "
    "cells, and α picks whichever noise cell looks like the heard class (0.09 here; the previous additive "
    "STAN: 0.00). strict: this test fails the day it passes."))
def test_trained_alpha_finds_the_sounding_object_not_the_silent_distractor(distractor_store, tmp_path):
    from stan_head.models import HeadOptions

    out = tmp_path / "run"
    train_head(TrainConfig(store=distractor_store, out=out, epochs=15, min_steps=0, batch_size=16, lr=3e-3, num_threads=1,
                           progress=False, head=HeadOptions(d_model=16, attn_dim=8, dropout=0.1)))
    store = FeatureStore.open(distractor_store)
    run = load_run(out, store)
    clips = load_split(store, "test")
    batch = clips.take(slice(None))
    with torch.no_grad():
        alpha = run.head(batch.visual, batch.audio, batch.segment_mask).alpha.numpy()
    boxes = store.boxes.set_index("clip_id")
    hits = []
    for i, cid in enumerate(batch.clip_id):
        for _, row in boxes.loc[[cid]].iterrows():
            y, x = divmod(int(alpha[i, int(row.segment)].argmax()), 5)
            hits.append(math.isclose(x / 5, row.x0) and math.isclose(y / 5, row.y0))
    # the distractor is as strong as the object and never adjacent: an α that ignored the sound
    # would land on it about half the time
    assert np.mean(hits) >= 0.85, np.mean(hits)
