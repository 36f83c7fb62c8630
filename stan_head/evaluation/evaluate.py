"""``evaluate_run``: score a trained head's explanations against post-hoc explainers and baselines.

Loads the run (``stan_head.checkpoint.load_run``) and its feature store, explains the chosen
split's clips with every requested explainer (the ground-truth class is the target), and
scores each explanation on the same clips:

* where: pointing game (per class, then averaged) against the store's boxes;
* when: temporal pointing and ROC-AUC against the event segments;
* perturbation tests per modality (:mod:`stan_head.evaluation.perturbation`): deletion/insertion of
  visual cells scored on the visual-evidence logits and on the full head with the audio at the
  neutral reference, of audio segments on the full head (and of frame blocks in pixel space with
  ``pixel_space=True``); a test whose "delete everything" does not move p(target) by
  ``MIN_DELETION_EFFECT`` is reported as uninformative for the head, without AUCs;
* the reliability α of every per-clip metric across the explainers.

The random and centre-prior baselines are always added. Writes ``report.json``,
``report.md`` and PNG figures to ``out`` (see :mod:`stan_head.evaluation.report`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from features.clip import ClipFeaturizer
from features.geometry import GridGeometry
from features.malloc import HEAD_MMAP_BYTES, HEAD_TRIM_BYTES, raise_malloc_thresholds
from features.runtime import resolve_device
from features.store import FeatureStore
from stan_head.batch import HeadBatch
from stan_head.checkpoint import load_run
from stan_head.evaluation.explainers import (
    Explainer,
    Explanation,
    STEPFeatureExplainer,
    STEPPixelExplainer,
    STEPScore,
    available_explainers,
    build_explainer,
)
from stan_head.evaluation.frames import FrameSource
from stan_head.evaluation.metrics import pointing_game, temporal_localisation, top1_accuracy
from stan_head.evaluation.reliability import reliability_alpha
from stan_head.evaluation.perturbation import TESTS, NeutralReference, run_tests
from stan_head.evaluation.report import Boxes, EvaluationReport, ExplainerScores, OverlayInputs, write_report
from stan_head.evaluation.step import STEPConfig

logger = logging.getLogger(__name__)

BASELINES = ("random", "centre")

#: metric name -> higher is better (the direction the reliability weighting needs).
METRIC_DIRECTIONS: dict[str, bool] = {
    "pointing": True,
    "temporal_pointing": True,
    "temporal_auc": True,
    **{f"{kind}_{test}": kind == "insertion" for test in TESTS for kind in ("deletion", "insertion")},
}


#: the explainers that read the head's own attention (left out for heads without any).
ATTENTION_EXPLAINERS = ("attention", "attention_v")
#: What an evaluation scores unless told otherwise: the explainers that take seconds, not minutes.
#: STEP is on request (``explainers=(..., "step")``): minutes per clip on a CPU.
FAST_EXPLAINERS: tuple[str, ...] = ("attention", "attention_v", "gradcam")


class EvaluateConfig(BaseModel):
    """What to evaluate and how.

    Attributes:
        run: run folder written by ``wherewhen train``.
        store: the feature store the run was trained on.
        out: report folder (created).
        split: split to evaluate.
        explainers: explainers to score; ``random`` and ``centre`` are always added.
        pixel_space: also run pixel-space deletion/insertion (and ``step_pixel`` if listed):
            frames are decoded from the store's dataset and pass through the frozen CNN.
        max_clips: evaluate at most this many clips of the split (the first ones in index order).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: clips per explainer call.
        deletion_steps: K steps of the visual deletion/insertion curves (the audio curve has one
            step per segment); a deleted unit becomes the train split's mean feature (the neutral reference).
        step_iterations: optimisation steps of STEP (the authors use ~1000).
        step_max_clips: STEP (slow) runs on the first this-many clips only; None = all.
        step_score: what STEP's masks preserve (:data:`STEPScore`): segment_evidence (each segment's
            visual evidence), evidence (the head's visual-evidence logits), neutral_audio (the final logits,
            audio at the train mean), full (the final logits), or auto (the first the head has, in that order).
        overlays: clips shown in the overlay figure.
        seed: seed of the random baseline and of deletion tie-breaks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path
    store: Path
    out: Path
    split: str = "test"
    explainers: tuple[str, ...] = FAST_EXPLAINERS
    pixel_space: bool = False
    max_clips: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(32, ge=1)
    deletion_steps: int = Field(10, ge=1)
    step_iterations: int = Field(300, ge=1)
    step_max_clips: int | None = Field(8, ge=1)
    step_score: STEPScore = "auto"
    overlays: int = Field(4, ge=0)
    seed: int = 0

    @field_validator("explainers")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in v if name not in available_explainers()]
        if unknown:
            raise ValueError(f"unknown explainer(s) {unknown}; available: {available_explainers()}")
        return v


class EvaluationSummary(BaseModel):
    """Small record of an evaluation: where the report is and the headline figures."""

    out: Path
    report_json: Path
    report_md: Path
    figures: list[Path]
    split: str
    clips: int
    accuracy: float | None
    headline: dict[str, float | None]
    reliability: dict[str, float | None]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _boxes(store: FeatureStore, clip_ids: list[str]) -> Boxes:
    """Boxes of ``clip_ids``: rows (into clip_ids), segments, xyxy normalised."""
    if store.boxes is None or len(store.boxes) == 0:
        return Boxes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)))
    row_of = {cid: i for i, cid in enumerate(clip_ids)}
    b = store.boxes[store.boxes["clip_id"].isin(row_of)]
    rows = b["clip_id"].map(row_of).to_numpy(np.int64)
    return Boxes(rows, b["segment"].to_numpy(np.int64), b[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))


def _explain_all(
    name: str,
    explainer: Explainer,
    head: torch.nn.Module,
    clips: HeadBatch,
    n: int,
    batch_size: int,
    device: torch.device,
    iterations: int,
) -> Explanation:
    """Explain the first ``n`` clips in chunks; slow explainers get a progress bar (clips, and
    the optimisation step of the current chunk as its postfix, through their ``on_step``)."""
    spatial, temporal = [], []
    with tqdm(total=n, desc=f"explain[{name}]", unit="clip", disable=not explainer.slow, leave=False) as bar:
        if explainer.slow:
            def on_step(i: int) -> None:
                if i % 25 == 0 or i == iterations - 1:
                    bar.set_postfix_str(f"step {i + 1}/{iterations}")

            explainer.on_step = on_step  # type: ignore[attr-defined]
        for start in range(0, n, batch_size):
            batch = clips.take(slice(start, min(start + batch_size, n)), device)
            exp = explainer.explain(head, batch, batch.label)
            spatial.append(exp.spatial)
            temporal.append(exp.temporal)
            bar.update(len(batch))
    return Explanation(np.concatenate(spatial), np.concatenate(temporal))


def _overlay_frames(frames: FrameSource | None, store: FeatureStore, clip_ids: list[str], device: torch.device,
                    stack: contextlib.ExitStack) -> tuple[list[np.ndarray] | None, list[tuple[int, int]] | None]:
    """uint8 (T, S, S, 3) centre frame per segment of the overlay clips and each clip's source (height, width),
    or (None, None) when the videos are unreachable."""
    try:
        source = frames or stack.enter_context(FrameSource(store.card, device))
        sizes = source.dataset.clips.set_index("clip_id").loc[clip_ids, ["height", "width"]].to_numpy()
        return [source.centre_frames(c) for c in clip_ids], [(int(h), int(w)) for h, w in sizes]
    except Exception as exc:  # noqa: BLE001 - any reason the videos cannot be read: fall back to feature energy
        logger.info("overlays on feature energy: the dataset videos are not reachable (%s)", exc)
        return None, None


def evaluate_run(config: EvaluateConfig) -> EvaluationSummary:
    """Evaluate a run's explanations on ``config.split`` of ``config.store``; write the report.

    Returns:
        :class:`EvaluationSummary` (report paths, accuracy, headline metrics, reliability α).
    """
    raise_malloc_thresholds(HEAD_MMAP_BYTES, HEAD_TRIM_BYTES)  # explainer batches' cell tensors come from the heap
    with contextlib.ExitStack() as stack:
        return _evaluate(config, stack)


def _build_explainer(name: str, cfg: EvaluateConfig, store: FeatureStore, frames: FrameSource | None,
                     featurizer: ClipFeaturizer | None, reference: NeutralReference) -> Explainer:
    if name == "step":
        max_blur = float(max(store.card.visual_shape[:2]))
        return STEPFeatureExplainer(STEPConfig(iterations=cfg.step_iterations, max_blur=max_blur, seed=cfg.seed), batch_size=8,
                                    score=cfg.step_score, audio_reference=reference.audio)
    if name == "step_pixel":
        if frames is None or featurizer is None:
            raise ValueError("step_pixel needs pixel_space frames")
        return STEPPixelExplainer(frames, featurizer.visual_from_float, STEPConfig(iterations=cfg.step_iterations, seed=cfg.seed),
                                  score=cfg.step_score, audio_reference=reference.audio)
    if name == "random":
        return build_explainer("random", seed=cfg.seed)
    return build_explainer(name)


def _evaluate(cfg: EvaluateConfig, stack: contextlib.ExitStack) -> EvaluationSummary:
    device = resolve_device(cfg.device)
    store = FeatureStore.open(cfg.store)
    run = load_run(cfg.run, store=store, device=device)
    head = run.head.eval()
    for p in head.parameters():
        p.requires_grad_(False)

    positions = store.positions(cfg.split)
    if len(positions) == 0:
        raise ValueError(f"{cfg.store}: split {cfg.split!r} has no clips")
    if cfg.max_clips is not None:
        positions = positions[: cfg.max_clips]
    clips = HeadBatch.from_features(store.read(positions))
    n = len(clips)
    label = clips.label.numpy()
    segment_label, segment_mask = clips.segment_label.numpy(), clips.segment_mask.numpy()
    classes = list(store.card.classes)
    background = len(classes)
    logger.info("evaluating %d %s clips of %s with %s", n, cfg.split, cfg.store, ", ".join(cfg.explainers))

    with torch.no_grad():
        logits = np.concatenate([head(b.visual, b.audio, b.segment_mask).logits.float().cpu().numpy()
                                 for b in clips.batches(256, device)])
    accuracy = top1_accuracy(logits, label)

    frames, featurizer = None, None
    if cfg.pixel_space or "step_pixel" in cfg.explainers:
        frames = stack.enter_context(FrameSource(store.card, device))
        featurizer = ClipFeaturizer.from_card(store.card, device=device)

    names = list(dict.fromkeys([*cfg.explainers, *BASELINES]))
    if not head.attends:
        own = [name for name in names if name in ATTENTION_EXPLAINERS]
        if own:
            logger.info("%s has no attention of its own (uniform α and β): %s left out", run.card.head.model,
                        ", ".join(own))
            names = [name for name in names if name not in ATTENTION_EXPLAINERS]
    step_n = n if cfg.step_max_clips is None else min(n, cfg.step_max_clips)
    boxes = _boxes(store, clips.clip_id)
    reference = NeutralReference.from_store(store, "train").to(device)
    # Where the feature map's cells look in the frame (half a cell off the naive tiling for
    # padded stride-2 CNNs): the pointing game and the overlays use the real centres.
    geometry = GridGeometry.from_card(store.card.visual, store.card.visual_shape)
    centres = geometry.centres()
    explanations: dict[str, Explanation] = {}
    for name in names:
        explainer = _build_explainer(name, cfg, store, frames, featurizer, reference)
        m = step_n if explainer.slow else n
        chunk = {"step": 8, "step_pixel": 1}.get(name, cfg.batch_size)
        explanations[name] = _explain_all(name, explainer, head, clips, m, chunk, device, cfg.step_iterations)

    curves, checks = run_tests(head, clips, explanations, reference, cfg.pixel_space, device, cfg.deletion_steps, cfg.seed,
                               cfg.batch_size, frames, featurizer.visual_from_float if featurizer is not None else None)
    for x, c in checks.items():
        logger.info("perturbation test %s: %s", x, c.note)
    scores: dict[str, ExplainerScores] = {}
    common = min(len(exp.spatial) for exp in explanations.values())
    shared = boxes.first(common)
    for name, exp in explanations.items():
        m = len(exp.spatial)
        scored = boxes.first(m)
        pg = pointing_game(exp.spatial, label[:m], scored.rows, scored.segments, scored.xyxy, centres=centres)
        pg_common = pg if m == common else pointing_game(exp.spatial[:common], label[:common], shared.rows,
                                                         shared.segments, shared.xyxy, centres=centres)
        tl = temporal_localisation(exp.temporal, segment_label[:m], segment_mask[:m], background)
        per_clip: dict[str, np.ndarray] = {
            "pointing": pg.per_clip(m),
            "temporal_pointing": tl.per_clip_hit,
            "temporal_auc": tl.per_clip_auc,
        }
        mine = {x: per[name] for x, per in curves.items() if name in per}
        for x, c in mine.items():
            if checks[x].informative:  # an uninformative test ranks nothing: no AUCs anywhere
                per_clip[f"deletion_{x}"] = c.deletion_auc
                per_clip[f"insertion_{x}"] = c.insertion_auc
        scores[name] = ExplainerScores(
            name=name,
            clips=m,
            pointing=_nan_to_none(pg.accuracy),
            pointing_per_class={classes[k]: v for k, v in pg.per_class.items()},
            pointing_pairs=int(len(pg.hits)),
            pointing_common=_nan_to_none(pg_common.accuracy),
            temporal_pointing=_nan_to_none(tl.pointing),
            temporal_auc=_nan_to_none(tl.roc_auc),
            temporal_clips=tl.scored,
            auc={k: _nan_to_none(float(np.nanmean(v))) if np.isfinite(v).any() else None
                 for k, v in per_clip.items() if k.startswith(("deletion", "insertion"))},
            curves={x: {"fractions": c.fractions.tolist(), "deletion": c.deletion.mean(0).tolist(),
                        "insertion": c.insertion.mean(0).tolist()} for x, c in mine.items()},
            per_clip={k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in per_clip.items()},
        )

    # Reliability over the clips every explainer saw.
    reliability: dict[str, float | None] = {}
    rand_idx = names.index("random")
    for metric, higher in METRIC_DIRECTIONS.items():
        if not all(metric in s.per_clip for s in scores.values()):
            continue
        table = np.array([[np.nan if x is None else x for x in scores[nm].per_clip[metric][:common]] for nm in names]).T
        reliability[metric] = _nan_to_none(reliability_alpha(table, rand_idx, higher_is_better=higher))

    report = EvaluationReport(
        run=str(cfg.run), store=str(cfg.store), store_id=store.card.store_id, split=cfg.split, clips=n,
        classes=classes, accuracy=_nan_to_none(accuracy), explainers=names, reliability=reliability,
        reliability_clips=common, scores=scores, perturbation=checks,
        neutral_reference={"split": reference.split, "clips": reference.clips}, config=cfg.model_dump(mode="json"),
    )
    overlay_frames, sizes = _overlay_frames(frames, store, clips.clip_id[: cfg.overlays], device, stack) if cfg.overlays else (None, None)
    overlays = OverlayInputs(clips.clip_id, clips.visual.numpy(), segment_mask, explanations, boxes, overlay_frames, geometry,
                             frame_sizes=sizes, event_segments=(segment_label != background) & segment_mask,
                             segment_s=float(store.card.segment.get("segment_s", 1.0)))
    paths = write_report(Path(cfg.out), report, overlays)
    headline: dict[str, float | None] = {}
    # The "where" test of the headline: each segment's visual evidence when it is informative, else
    # the clip's, else the full head.
    primary = next((x for x in ("visual_segment_evidence", "visual_evidence", "visual_neutral_audio")
                    if checks[x].informative), None)
    for name, s in scores.items():
        headline[f"{name}.pointing"] = s.pointing
        headline[f"{name}.temporal_pointing"] = s.temporal_pointing
        if primary is not None:
            headline[f"{name}.deletion_{primary}"] = s.auc.get(f"deletion_{primary}")
    return EvaluationSummary(
        out=Path(cfg.out), report_json=paths["json"], report_md=paths["md"], figures=paths["figures"], split=cfg.split,
        clips=n, accuracy=_nan_to_none(accuracy), headline=headline, reliability=reliability,
    )
