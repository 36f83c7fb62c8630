"""Perturbation tests per modality: deletion/insertion curves that measure what an explanation claims.

A head that decides from the sound alone gives the same p(target) whether 0 % or 100 % of the
frame is deleted; scored on its final logits, a "where" test then ranks explainers by noise.
So the tests here isolate one modality each, and every test checks that deleting everything
moves p(target) before its AUCs are read (:func:`deletion_effect`):

===========================  ==================================================  =========================================
test                          units ranked by the explanation                     p(target) from
===========================  ==================================================  =========================================
``visual_segment_evidence``   visual cells, per segment by its spatial map        ``HeadOutput.segment_visual_logits``:
                                                                                  each valid segment's own visual evidence
                                                                                  (real audio), p(target) averaged over
                                                                                  the segments; n/a for heads without one
``visual_evidence``           visual cells, per segment by its spatial map        ``HeadOutput.visual_logits`` (the same
                                                                                  evidence pooled over the segments by
                                                                                  β^v); n/a for heads without one
``visual_neutral_audio``      visual cells, per segment by its spatial map        ``logits`` with the audio held at the
                                                                                  neutral reference in every segment
``audio_segments``            audio segments, by the temporal ("when") scores     ``logits``, the visual input untouched
``pixels_evidence``,          frame blocks under each cell (pixel space: frames   as the two visual tests
``pixels_neutral_audio``      → frozen CNN → head), per segment
===========================  ==================================================  =========================================

Why the per-segment test: the maps are ranked segment by segment (the question is *where* in
each frame), but a clip-level score pools the segments, and a head whose temporal attention
finds the segment that shows the object gives a random ranking T chances at every fraction:
its insertion curve climbs almost as fast as the best ranking's. On the hard preset's val split
STAN's α restored all of the clip-level p(target) with the first 10 % of each frame's cells, and
its ``visual_evidence`` insertion AUC was still only 1.19× random's, while random's first 10 %
already restored half. Scoring each segment on its own removes that pooling: a random ranking
then finds the object in a segment only as often as its share of the cells says (the same α:
1.40× random's).

The neutral reference (:class:`NeutralReference`) is the mean feature of the store's train split:
the mean visual feature over every cell of every valid segment, the mean audio feature over
every valid segment. A deleted visual cell becomes the mean visual cell, a deleted audio segment
the mean audio segment. Why the train mean: it is what the head saw most of in training (in
distribution for its LayerNorm'd projections), it holds no class evidence when the classes are
balanced, it needs neither the video nor the extractors (AVE-layout stores have neither), and
it differs from every clip — the clip's own mean, the previous reference, is invisible to a
mean-pooling head (late fusion: deleting every cell leaves its pooled vector unchanged) and
carries the clip's own sound into every deleted audio segment. Silence was the other candidate:
its log-mel statistics lie outside anything the head was trained on. In pixel space a deleted
block takes its frame's mean colour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from features.store import FeatureStore
from stan_head.batch import HeadBatch
from stan_head.evaluation.deletion import Curves, keep_masks, score_curves, segment_region_keep_masks
from stan_head.evaluation.explainers import Explanation

logger = logging.getLogger(__name__)

__all__ = ["EVIDENCE_FIELDS", "MIN_DELETION_EFFECT", "TESTS", "NeutralReference", "PerturbationCheck", "PerturbationTest", "check_test",
           "deletion_effect", "missing_scorers", "perturbation_curves", "run_tests", "unavailable"]

#: A perturbation test is informative for a head only when deleting every unit lowers the mean
#: p(target) by at least this much (absolute); otherwise its AUCs rank explainers by noise.
MIN_DELETION_EFFECT = 0.10


@dataclass(frozen=True)
class PerturbationTest:
    """One deletion/insertion test: its units and the logits it reads.

    Attributes:
        name: the key in reports (``deletion_<name>`` / ``insertion_<name>`` per explainer).
        unit: ``"visual"`` (feature cells), ``"pixels"`` (frame blocks) or ``"audio"`` (segments).
        scorer: ``"segment_evidence"`` (segment_visual_logits, mean p(target) over the valid
            segments), ``"evidence"`` (visual_logits), ``"neutral_audio"`` (logits, audio at the
            reference) or ``"full"`` (logits).
        title: what a figure calls it.
    """

    name: str
    unit: str
    scorer: str
    title: str


TESTS: dict[str, PerturbationTest] = {t.name: t for t in (
    PerturbationTest("visual_segment_evidence", "visual", "segment_evidence", "visual cells → each segment's visual evidence"),
    PerturbationTest("visual_evidence", "visual", "evidence", "visual cells → visual-evidence logits"),
    PerturbationTest("visual_neutral_audio", "visual", "neutral_audio", "visual cells → full head, audio neutral"),
    PerturbationTest("audio_segments", "audio", "full", "audio segments ranked by 'when' → full head"),
    PerturbationTest("pixels_evidence", "pixels", "evidence", "frame blocks → visual-evidence logits"),
    PerturbationTest("pixels_neutral_audio", "pixels", "neutral_audio", "frame blocks → full head, audio neutral"),
)}


@dataclass
class NeutralReference:
    """What a deleted unit becomes: the train split's mean features (see the module doc).

    Attributes:
        visual: float (Cv,) mean visual cell; audio: float (Ca,) mean audio segment.
        split: the split they were computed on; clips: how many clips.
    """

    visual: torch.Tensor
    audio: torch.Tensor
    split: str
    clips: int

    @classmethod
    def from_store(cls, store: FeatureStore, split: str = "train", chunk: int = 64) -> "NeutralReference":
        """Mean features of ``split`` (every clip of the store when the split is empty)."""
        positions = store.positions(split)
        if len(positions) == 0:
            logger.warning("%s: no %r clips; the neutral reference is the mean over every clip", store.path, split)
            positions, split = store.positions(None), "all"
        vis = aud = None
        cells = segments = 0
        for fb in store.iter_batches(positions, chunk):
            m = np.asarray(fb.segment_mask, dtype=bool)
            v = np.asarray(fb.visual)[m].astype(np.float64)  # (n_valid, H, W, Cv)
            a = np.asarray(fb.audio)[m].astype(np.float64)
            vs, as_ = v.sum(axis=(0, 1, 2)), a.sum(axis=0)
            vis = vs if vis is None else vis + vs
            aud = as_ if aud is None else aud + as_
            cells += v.shape[0] * v.shape[1] * v.shape[2]
            segments += a.shape[0]
        return cls(torch.from_numpy(vis / max(cells, 1)).float(), torch.from_numpy(aud / max(segments, 1)).float(),
                   split, int(len(positions)))

    def to(self, device: torch.device | str) -> "NeutralReference":
        """The same reference on ``device``."""
        return NeutralReference(self.visual.to(device), self.audio.to(device), self.split, self.clips)


def _probs(logits: torch.Tensor, target: int) -> np.ndarray:
    return F.softmax(logits.float(), dim=-1)[:, target].cpu().numpy()


#: The scorers that read a visual-evidence pathway, and the HeadOutput field each needs.
EVIDENCE_FIELDS = {"evidence": "visual_logits", "segment_evidence": "segment_visual_logits"}


def missing_scorers(head: torch.nn.Module, batch: HeadBatch) -> dict[str, str]:
    """Scorers of :data:`EVIDENCE_FIELDS` this head cannot serve -> the HeadOutput field it lacks."""
    with torch.no_grad():
        out = head(batch.visual[:1], batch.audio[:1], batch.segment_mask[:1])
    return {scorer: name for scorer, name in EVIDENCE_FIELDS.items() if getattr(out, name) is None}


def _segment_probs(segment_logits: torch.Tensor, mask: torch.Tensor, target: int) -> np.ndarray:
    """Mean over each row's valid segments of p(target) from per-segment logits (n, T, K) -> (n,)."""
    p = F.softmax(segment_logits.float(), dim=-1)[..., target]
    m = mask.float()
    return ((p * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)).cpu().numpy()


def perturbation_curves(
    head: torch.nn.Module,
    batch: HeadBatch,
    target: torch.Tensor,
    explanations: dict[str, Explanation],
    reference: NeutralReference,
    tests: list[str],
    steps: int = 10,
    seed: int = 0,
    chunk: int = 32,
    pixel_chunk: int = 64,
    frames: torch.Tensor | None = None,
    visual_from_float: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, dict[str, Curves]]:
    """Deletion/insertion curves of every test in ``tests`` for every explainer, on one batch of clips.

    Args:
        head: the head (eval mode, frozen).
        batch: the clips (float32 on the head's device).
        target: int (B,) class per clip.
        explanations: explainer -> :class:`Explanation` of the first ``n ≤ B`` clips of the batch
            (an explainer run on fewer clips, such as STEP, gets curves for those only).
        reference: :class:`NeutralReference` on the batch's device.
        tests: names in :data:`TESTS` (``pixels_*`` need ``frames`` and ``visual_from_float``).
        steps: K, steps of the visual curves (the audio curve has one step per segment).
        seed: tie-break seed.
        chunk: keep-masks per head call.
        pixel_chunk: frames per CNN call in the pixel tests.
        frames: float (B, T, F, 3, S, S) in [0, 1], for the pixel tests.
        visual_from_float: the store's differentiable CNN, float (N, 3, S, S) -> (N, H, W, C).

    Returns:
        test -> explainer -> :class:`Curves` (rows = the clips that explainer explained).
    """
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        raise ValueError(f"unknown perturbation test(s) {unknown}; known: {sorted(TESTS)}")
    if any(TESTS[t].unit == "pixels" for t in tests) and (frames is None or visual_from_float is None):
        raise ValueError("pixel-space tests need the decoded frames and the store's CNN")
    b, t, h, w, c = batch.visual.shape
    valid_all = batch.segment_mask.cpu().numpy()
    visual_fractions = np.linspace(0.0, 1.0, steps + 1)
    audio_fractions = np.linspace(0.0, 1.0, t + 1)
    rows: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {x: {n: [] for n in explanations} for x in tests}
    for i in range(b):
        names = [n for n, e in explanations.items() if i < len(e.spatial)]
        mask_i = batch.segment_mask[i : i + 1]
        tgt = int(target[i])
        v_i, a_i = batch.visual[i : i + 1], batch.audio[i : i + 1]
        neutral_audio = reference.audio.view(1, 1, -1).expand(1, t, -1)

        def scores_for(visual: torch.Tensor, scorers: list[str]) -> np.ndarray:
            """p(target) (n, len(scorers)) of perturbed visual inputs under each scorer."""
            n = len(visual)
            m = mask_i.expand(n, -1)
            cols = []
            with torch.no_grad():
                own = head(visual, a_i.expand(n, -1, -1), m) if EVIDENCE_FIELDS.keys() & set(scorers) else None
                for s in scorers:
                    if s == "segment_evidence":
                        cols.append(_segment_probs(own.segment_visual_logits, m, tgt))  # type: ignore[union-attr]
                    elif s == "evidence":
                        cols.append(_probs(own.visual_logits, tgt))  # type: ignore[union-attr]
                    else:  # neutral_audio
                        cols.append(_probs(head(visual, neutral_audio.expand(n, -1, -1), m).logits, tgt))
            return np.stack(cols, axis=1)

        for unit in ("visual", "pixels"):
            unit_tests = [x for x in tests if TESTS[x].unit == unit]
            if not unit_tests or not names:
                continue
            masks = {n: segment_region_keep_masks(explanations[n].spatial[i], valid_all[i], visual_fractions, seed)
                     for n in names}
            scorers = [TESTS[x].scorer for x in unit_tests]

            def scorer(keep: np.ndarray, unit: str = unit, scorers: list[str] = scorers) -> np.ndarray:
                k = torch.from_numpy(keep).to(batch.visual.device)
                if unit == "visual":
                    visual = torch.where(k[..., None], v_i, reference.visual)
                else:
                    visual = _pixel_features(frames[i], k, visual_from_float)  # type: ignore[index,arg-type]
                return scores_for(visual, scorers)

            per_call = chunk if unit == "visual" else max(1, pixel_chunk // (t * frames.shape[2]))  # type: ignore[union-attr]
            for name, (dele, ins) in score_curves(masks, scorer, per_call).items():
                for col, x in enumerate(unit_tests):
                    rows[x][name].append((dele[:, col], ins[:, col]))

        if "audio_segments" in tests and names:
            masks = {n: keep_masks(explanations[n].temporal[i], valid_all[i], audio_fractions, seed) for n in names}

            def audio_scorer(keep: np.ndarray) -> np.ndarray:
                k = torch.from_numpy(keep).to(batch.audio.device)[..., None]
                audio = torch.where(k, a_i, reference.audio)
                with torch.no_grad():
                    return _probs(head(v_i.expand(len(keep), -1, -1, -1, -1), audio, mask_i.expand(len(keep), -1)).logits, tgt)

            for name, pair in score_curves(masks, audio_scorer, chunk).items():
                rows["audio_segments"][name].append(pair)

    out: dict[str, dict[str, Curves]] = {}
    for x in tests:
        fractions = audio_fractions if TESTS[x].unit == "audio" else visual_fractions
        out[x] = {n: Curves(fractions, np.stack([d for d, _ in r]), np.stack([s for _, s in r]))
                  for n, r in rows[x].items() if r}
    return out


def _pixel_features(clip_frames: torch.Tensor, keep: torch.Tensor,
                    visual_from_float: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Features of one clip's frames with the blocks under deleted cells at the frame's mean colour.

    Args:
        clip_frames: float (T, F, 3, S, S); keep: bool (m, T, H, W).

    Returns:
        float (m, T, H, W, C): features averaged over the F frames of each segment.
    """
    m, t, h, w = keep.shape
    f, cc, s1, s2 = clip_frames.shape[1:]
    keep_px = F.interpolate(keep.reshape(m * t, 1, h, w).float(), size=(s1, s2), mode="nearest")
    keep_px = keep_px.reshape(m, t, 1, 1, s1, s2) > 0.5
    clip = clip_frames.unsqueeze(0)
    pert = torch.where(keep_px, clip, clip.mean(dim=(4, 5), keepdim=True))  # (m, T, F, 3, S, S)
    with torch.no_grad():
        feats = visual_from_float(pert.reshape(m * t * f, cc, s1, s2))
    return feats.reshape(m, t, f, *feats.shape[1:]).mean(dim=2)


def deletion_effect(curves: dict[str, Curves]) -> tuple[np.ndarray, np.ndarray]:
    """p(target) with every unit kept and with every unit deleted, per clip, for one test.

    Both ends of a deletion curve are the same inputs for every explainer (nothing deleted,
    everything deleted), so they are read from the explainer that covers the most clips.

    Returns:
        (p_kept (n,), p_deleted (n,)).
    """
    widest = max(curves.values(), key=lambda c: len(c.deletion))
    return widest.deletion[:, 0], widest.deletion[:, -1]


class PerturbationCheck(BaseModel):
    """Whether one test can rank explainers for this head: does deleting everything move p(target)?

    Attributes:
        test, title: the test's name and what figures call it.
        available: False when the head cannot be scored this way (no visual-evidence logits).
        informative: mean (p_kept − p_deleted) ≥ ``threshold``; None when not available.
        p_kept, p_deleted: mean p(target) with every unit kept / deleted.
        effect: p_kept − p_deleted.
        threshold: :data:`MIN_DELETION_EFFECT`.
        clips: clips the figures are over.
        note: one sentence for the report.
    """

    model_config = ConfigDict(frozen=True)

    test: str
    title: str
    available: bool
    informative: bool | None
    p_kept: float | None
    p_deleted: float | None
    effect: float | None
    threshold: float
    clips: int
    note: str


def unavailable(test: str, reason: str) -> PerturbationCheck:
    """The check of a test this head cannot be scored by."""
    return PerturbationCheck(test=test, title=TESTS[test].title, available=False, informative=None, p_kept=None,
                             p_deleted=None, effect=None, threshold=MIN_DELETION_EFFECT, clips=0, note=reason)


def check_test(test: str, curves: dict[str, Curves], threshold: float = MIN_DELETION_EFFECT) -> PerturbationCheck:
    """:class:`PerturbationCheck` of one test from its curves (see :func:`deletion_effect`)."""
    kept, deleted = deletion_effect(curves)
    p_kept, p_deleted = float(np.mean(kept)), float(np.mean(deleted))
    effect = p_kept - p_deleted
    informative = effect >= threshold
    what = {"audio": "audio segment", "visual": "visual cell", "pixels": "frame block"}[TESTS[test].unit]
    note = (f"deleting every {what} moves mean p(target) from {p_kept:.3f} to {p_deleted:.3f} "
            f"(drop {effect:.3f} {'≥' if informative else '<'} {threshold:.2f})")
    if not informative:
        note += "; uninformative for this head: its AUCs would rank explainers by noise, so none are reported"
    return PerturbationCheck(test=test, title=TESTS[test].title, available=True, informative=informative, p_kept=p_kept,
                             p_deleted=p_deleted, effect=effect, threshold=threshold, clips=len(kept), note=note)


def run_tests(
    head: torch.nn.Module,
    clips: HeadBatch,
    explanations: dict[str, Explanation],
    reference: NeutralReference,
    pixel_space: bool,
    device: torch.device,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    frames: Callable[[list[str]], torch.Tensor] | None = None,
    visual_from_float: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, dict[str, Curves]], dict[str, PerturbationCheck]]:
    """Every test that fits the head over ``clips``, batch by batch, and its check.

    Args:
        clips: the evaluated clips (float16 on the CPU; batches go to ``device``); targets are their labels.
        explanations: explainer -> :class:`Explanation` of the first ``n_e`` clips.
        pixel_space: add the ``pixels_*`` tests (``frames``: clip ids -> float (B, T, F, 3, S, S)).

    Returns:
        (test -> explainer -> :class:`Curves`, test -> :class:`PerturbationCheck`) for every test of
        :data:`TESTS` that was asked for (checks also for the unavailable ones).
    """
    missing = missing_scorers(head, clips.take(slice(0, 1), device))
    asked = ["visual_segment_evidence", "visual_evidence", "visual_neutral_audio", "audio_segments"]
    if pixel_space:
        asked += ["pixels_evidence", "pixels_neutral_audio"]
    tests = [x for x in asked if TESTS[x].scorer not in missing]
    reference = reference.to(device)
    parts: dict[str, dict[str, list[Curves]]] = {x: {} for x in tests}
    for start in range(0, len(clips), batch_size):
        stop = min(start + batch_size, len(clips))
        exps = {n: Explanation(e.spatial[start:stop], e.temporal[start:stop])
                for n, e in explanations.items() if len(e.spatial) > start}
        batch = clips.take(slice(start, stop), device)
        px = frames(batch.clip_id) if pixel_space and frames is not None else None
        got = perturbation_curves(head, batch, batch.label, exps, reference, tests, steps, seed, frames=px,
                                  visual_from_float=visual_from_float)
        for x, per in got.items():
            for n, c in per.items():
                parts[x].setdefault(n, []).append(c)
    curves = {x: {n: Curves.concat(cs) for n, cs in per.items()} for x, per in parts.items()}
    checks = {x: check_test(x, curves[x]) if x in curves else
              unavailable(x, f"the head has no visual-evidence pathway (HeadOutput.{missing[TESTS[x].scorer]} is None)")
              for x in asked}
    return curves, checks
