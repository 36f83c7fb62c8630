"""Explainers of a trained head behind one interface.

An explainer answers *where* (a non-negative map per segment over the feature grid) and
*when* (a score per segment) for a batch of clips and a target class per clip::

    explanation = build_explainer("gradcam").explain(head, batch, target)   # batch: stan_head.batch.HeadBatch
    explanation.spatial   # float (B, T, H, W) >= 0
    explanation.temporal  # float (B, T) >= 0

Built in: ``attention`` (the head's own α and β^a), ``attention_v`` (α and β^v),
``gradcam`` (Grad-CAM on the visual feature maps), ``step`` (STEP in feature space),
``step_pixel`` (STEP on the frames through the frozen CNN), ``random`` and ``centre``
(baselines). A new explainer drops in with :func:`register_explainer`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from stan_head.batch import HeadBatch
from stan_head.evaluation.step import STEPConfig, step_attribution
from stan_head.models import HeadOutput
from stan_head.models.base import masked_mean

logger = logging.getLogger(__name__)


@dataclass
class Explanation:
    """Where and when for a batch of clips.

    Attributes:
        spatial: float (B, T, H, W) >= 0, one "where" map per segment on the feature grid.
        temporal: float (B, T) >= 0, one "when" score per segment (0 on padded segments).
    """

    spatial: np.ndarray
    temporal: np.ndarray

    def __post_init__(self) -> None:
        self.spatial = np.asarray(self.spatial, dtype=np.float32)
        self.temporal = np.asarray(self.temporal, dtype=np.float32)
        if self.spatial.ndim != 4 or self.temporal.ndim != 2 or self.spatial.shape[:2] != self.temporal.shape:
            raise ValueError(
                f"Explanation needs spatial (B,T,H,W) and temporal (B,T); got {self.spatial.shape}, {self.temporal.shape}"
            )

    def volume(self, segment_mask: np.ndarray) -> np.ndarray:
        """Joint space-time relevance of every region, float (B, T, H, W), summing to 1 per clip.

        The spatial map is normalised per segment (uniform where it is all zero), the temporal
        map over the valid segments (uniform where it is all zero), and the two multiplied:
        the relevance of region (t, h, w) is p(t) · p(h, w | t). Padded segments get 0.
        """
        valid = np.asarray(segment_mask, dtype=bool)
        s = np.clip(self.spatial.astype(np.float64), 0, None)
        ssum = s.sum(axis=(2, 3), keepdims=True)
        hw = s.shape[2] * s.shape[3]
        s = np.where(ssum > 0, s / np.where(ssum > 0, ssum, 1.0), 1.0 / hw)
        t = np.clip(self.temporal.astype(np.float64), 0, None) * valid
        tsum = t.sum(axis=1, keepdims=True)
        uniform = valid / np.maximum(valid.sum(axis=1, keepdims=True), 1)
        t = np.where(tsum > 0, t / np.where(tsum > 0, tsum, 1.0), uniform)
        return s * t[:, :, None, None]


@runtime_checkable
class Explainer(Protocol):
    """What every explainer offers.

    Attributes:
        name: the registered name.
        slow: True for optimisation-based explainers (the evaluation shows a progress bar
            and may run them on fewer clips).
    """

    name: str
    slow: bool

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        """Explain ``head``'s score for class ``target`` (int (B,)) on ``batch``."""
        ...


_REGISTRY: dict[str, Callable[..., Explainer]] = {}


def register_explainer(name: str) -> Callable[[Callable[..., Explainer]], Callable[..., Explainer]]:
    """Class/factory decorator: make an explainer available to :func:`build_explainer` by name."""

    def wrap(factory: Callable[..., Explainer]) -> Callable[..., Explainer]:
        if name in _REGISTRY:
            raise ValueError(f"explainer {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_explainers() -> list[str]:
    """Registered explainer names, sorted."""
    return sorted(_REGISTRY)


def build_explainer(name: str, **options: Any) -> Explainer:
    """Instantiate the explainer registered as ``name`` with keyword ``options``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; available: {', '.join(available_explainers())}") from None
    return factory(**options)


@register_explainer("attention")
class AttentionExplainer:
    """The head's own explanation: α as the spatial map, β^a (or β^v) as the temporal one.

    :meth:`from_output` is the one place α and β are read out of a :class:`HeadOutput`; ``explain``
    runs the head and calls it, and ``stan_head.explain`` calls it on the output it already has.

    Args:
        modality: ``"audio"`` for β^a, ``"visual"`` for β^v.
    """

    slow = False

    def __init__(self, modality: str = "audio") -> None:
        if modality not in ("audio", "visual"):
            raise ValueError(f"modality must be 'audio' or 'visual', got {modality!r}")
        self.modality = modality
        self.name = "attention" if modality == "audio" else "attention_v"

    def from_output(self, out: HeadOutput, segment_mask: torch.Tensor) -> Explanation:
        """α (B, T, H, W) and this modality's β (B, T), zero on padded segments, as an :class:`Explanation`."""
        beta = out.beta_a if self.modality == "audio" else out.beta_v
        return Explanation(out.alpha.float().cpu().numpy(), (beta.float() * segment_mask).cpu().numpy())

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        with torch.no_grad():
            out = head(batch.visual, batch.audio, batch.segment_mask)
        return self.from_output(out, batch.segment_mask)


@register_explainer("attention_v")
def _attention_visual() -> AttentionExplainer:
    return AttentionExplainer(modality="visual")


@register_explainer("gradcam")
class GradCAMExplainer:
    """Grad-CAM (Selvaraju et al. 2017) on the visual feature maps the head reads.

    With ``g = ∂y_target/∂V`` for V the (T, H, W, C) features, the channel weights of segment t
    are ``w_tc = mean_hw g_thwc`` and the map is ``ReLU(Σ_c w_tc V_thwc)``. The temporal score is
    ``ReLU`` of the gradient × input summed per segment over both modalities.
    """

    name = "gradcam"
    slow = False

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        visual = batch.visual.detach().clone().requires_grad_(True)
        audio = batch.audio.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = head(visual, audio, batch.segment_mask)
            score = out.logits.gather(1, target.view(-1, 1).to(out.logits.device)).sum()
            gv, ga = torch.autograd.grad(score, [visual, audio], allow_unused=True)
        gv = torch.zeros_like(visual) if gv is None else gv  # a head may ignore a modality
        ga = torch.zeros_like(audio) if ga is None else ga
        weights = gv.mean(dim=(2, 3), keepdim=True)  # (B, T, 1, 1, C)
        cam = torch.relu((weights * visual.detach()).sum(dim=-1))  # (B, T, H, W)
        temporal = (gv * visual.detach()).sum(dim=(2, 3, 4)) + (ga * audio.detach()).sum(dim=-1)
        temporal = torch.relu(temporal) * batch.segment_mask
        return Explanation(cam.cpu().numpy(), temporal.cpu().numpy())


def _clip_seed(seed: int, clip_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class _Baseline:
    """A model-free baseline: its maps depend on the batch's shape and clip ids only, never on the head."""

    slow = False

    def maps(self, batch: HeadBatch) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """spatial (B, T, H, W) and temporal (B, T) before padding is zeroed."""
        raise NotImplementedError

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        spatial, temporal = self.maps(batch)
        return Explanation(spatial, temporal * batch.segment_mask.cpu().numpy())


@register_explainer("random")
class RandomExplainer(_Baseline):
    """Baseline: i.i.d. uniform maps, reproducible per (seed, clip id)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def maps(self, batch: HeadBatch) -> tuple[np.ndarray, np.ndarray]:
        b, t, h, w = batch.visual.shape[:4]
        spatial = np.empty((b, t, h, w), np.float32)
        temporal = np.empty((b, t), np.float32)
        for i, cid in enumerate(batch.clip_id):
            rng = np.random.default_rng(_clip_seed(self.seed, cid))
            spatial[i] = rng.random((t, h, w))
            temporal[i] = rng.random(t)
        return spatial, temporal


def centre_prior(t: int, h: int, w: int, sigma: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian centre prior: spatial (H, W) and temporal (T,) maps peaking at the centre.

    ``sigma`` is a fraction of each side. Even sides peak on the two middle cells; the
    spatial map is the same for every segment.
    """

    def bump(n: int) -> np.ndarray:
        x = (np.arange(n) + 0.5) / n - 0.5
        return np.exp(-0.5 * (x / sigma) ** 2)

    return np.outer(bump(h), bump(w)).astype(np.float32), bump(t).astype(np.float32)


@register_explainer("centre")
class CentreExplainer(_Baseline):
    """Baseline: a Gaussian centre prior in space and in time (see :func:`centre_prior`)."""

    name = "centre"

    def __init__(self, sigma: float = 0.25) -> None:
        self.sigma = sigma

    def maps(self, batch: HeadBatch) -> tuple[np.ndarray, np.ndarray]:
        b, t, h, w = batch.visual.shape[:4]
        spatial, temporal = centre_prior(t, h, w, self.sigma)
        return np.broadcast_to(spatial, (b, t, h, w)).copy(), np.broadcast_to(temporal, (b, t))


def _temporal_from_masks(saliency: torch.Tensor, segment_mask: torch.Tensor) -> np.ndarray:
    """Mask mass per segment, float (B, T)."""
    return (saliency.sum(dim=(2, 3)) * segment_mask.to(saliency.dtype)).cpu().numpy()


STEPScore = Literal["auto", "segment_evidence", "evidence", "neutral_audio", "full"]
"""What STEP's preservation game keeps high:

* ``"segment_evidence"``: every segment's own visual evidence (``HeadOutput.segment_visual_logits``,
  STAN's e_t): the game maximises the mean over the clip's segments of log p_t(target), so the kept
  content of each segment must keep that segment's evidence;
* ``"evidence"``: ``HeadOutput.visual_logits``, the head's visual-evidence pathway (real audio);
* ``"neutral_audio"``: the final logits with the audio held at a neutral reference in every segment;
* ``"full"``: the final logits with the clip's own audio;
* ``"auto"`` (default): the first of ``segment_evidence``, ``evidence`` that the head has, else
  ``neutral_audio`` when a reference is given, else ``full``.

Why not ``full`` by default: STEP perturbs only the visual input, and a head that decides from the
sound keeps p(target) whatever the mask hides (on the hard preset's val split the base STAN head
gave p(target) 0.72 with every visual cell kept and 0.67 with every cell at the most blurred
level), so the preservation game has nothing to find and its masks go wherever the area and
smoothness terms push them.

Why ``segment_evidence`` before ``evidence``: STAN's ℓ^v weights the segments by β^v, which often sits on
one segment (a silent one, where the object is visible too). Preserving ℓ^v then needs the object in that
segment only; every other segment's mask is left to the area and smoothness terms and the initial jitter (on
hard's val split at 448 px, its first 8 clips: pointing 0.231 with ``evidence``, 0.646 with
``segment_evidence``; Grad-CAM 0.488; docs/DESIGN.md "STEP"). The mean is over log-probabilities, not logits:
on a mean of logits a few well-kept segments saturate the softmax and the rest get no gradient. It is also
what the report's primary "where" test deletes (``visual_segment_evidence``).
"""


@dataclass(frozen=True)
class STEPObjective:
    """What one STEP run preserves, resolved for a head.

    Attributes:
        logits_of: ``(visual, audio, mask) -> (N, K)`` scores of the perturbed clips.
        reward: how :func:`~stan_head.evaluation.step.step_attribution` reads them (its ``STEPConfig.reward``):
            ``"log_prob"`` (logits: log-softmax taken there) or ``"score"`` (already log-probabilities).
    """

    logits_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    reward: Literal["log_prob", "score"]

    def config(self, cfg: STEPConfig) -> STEPConfig:
        """``cfg`` with the reward this objective needs (a ``"score"`` objective overrides ``cfg.reward``)."""
        return cfg if self.reward == "log_prob" else cfg.model_copy(update={"reward": self.reward})


def step_objective(head: torch.nn.Module, score: str, audio_reference: torch.Tensor | None,
                   probe: HeadBatch) -> STEPObjective:
    """What STEP preserves for ``head`` (see :data:`STEPScore`), ``"auto"`` resolved on one clip of ``probe``."""
    if score == "auto":
        with torch.no_grad():
            out = head(probe.visual[:1], probe.audio[:1], probe.segment_mask[:1])
        score = ("segment_evidence" if out.segment_visual_logits is not None
                 else "evidence" if out.visual_logits is not None
                 else "neutral_audio" if audio_reference is not None else "full")
        logger.debug("STEP preserves the %s scores", score)
    if score == "segment_evidence":
        def segment_evidence(visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            out = head(visual, audio, mask).segment_visual_logits
            if out is None:
                raise ValueError("STEP score 'segment_evidence' needs a head with per-segment visual evidence "
                                 "(HeadOutput.segment_visual_logits)")
            return masked_mean(F.log_softmax(out, dim=-1), mask)
        return STEPObjective(segment_evidence, "score")
    if score == "evidence":
        def evidence(visual: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            out = head(visual, audio, mask).visual_logits
            if out is None:
                raise ValueError("STEP score 'evidence' needs a head with visual-evidence logits (HeadOutput.visual_logits)")
            return out
        return STEPObjective(evidence, "log_prob")
    if score == "neutral_audio":
        if audio_reference is None:
            raise ValueError("STEP score 'neutral_audio' needs an audio reference (the train split's mean audio feature)")
        ref = audio_reference.reshape(1, 1, -1)
        return STEPObjective(lambda visual, audio, mask: head(visual, ref.to(audio).expand_as(audio), mask).logits,
                             "log_prob")
    if score == "full":
        return STEPObjective(lambda visual, audio, mask: head(visual, audio, mask).logits, "log_prob")
    raise ValueError(f"unknown STEP score {score!r}; use auto, segment_evidence, evidence, neutral_audio or full")


@register_explainer("step")
class STEPFeatureExplainer:
    """STEP in feature space: perturb the cached visual feature maps (audio untouched).

    The mask for segment t blends its (H, W, C) feature map with blurred copies of it
    (a pyramid whose coarsest level, sigma = ``max(H, W)`` cells by default, is close to the
    map's spatial mean). The spatial map is the sum of the area masks; the temporal score is
    the mask mass per segment.

    Args:
        config: :class:`STEPConfig`; ``max_blur`` is taken in feature cells.
        batch_size: clips optimised together.
        on_step: progress callback (called once per optimisation step).
        score: which logits the masks preserve (:data:`STEPScore`).
        audio_reference: float (Ca,) neutral audio feature for ``score="neutral_audio"``.
    """

    name = "step"
    slow = True

    def __init__(self, config: STEPConfig | None = None, batch_size: int = 8, on_step: Callable[[int], None] | None = None,
                 score: STEPScore = "auto", audio_reference: torch.Tensor | None = None) -> None:
        self.config = config
        self.batch_size = batch_size
        self.on_step = on_step
        self.score = score
        self.audio_reference = audio_reference

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        h, w = batch.visual.shape[2:4]
        objective = step_objective(head, self.score, self.audio_reference, batch)
        logits_of, cfg = objective.logits_of, objective.config(self.config or STEPConfig(max_blur=float(max(h, w))))
        spatial, temporal = [], []
        for start in range(0, len(batch), self.batch_size):
            sl = slice(start, start + self.batch_size)
            audio, mask = batch.audio[sl], batch.segment_mask[sl]
            reps = len(cfg.areas)

            def model(video: torch.Tensor, audio=audio, mask=mask, reps=reps) -> torch.Tensor:
                return logits_of(video.permute(0, 1, 3, 4, 2), audio.repeat(reps, 1, 1), mask.repeat(reps, 1))

            video = batch.visual[sl].permute(0, 1, 4, 2, 3)  # (b, T, C, H, W)
            result = step_attribution(model, video, target[sl], cfg, frame_valid=mask, on_step=self.on_step)
            spatial.append(result.saliency.cpu().numpy())
            temporal.append(_temporal_from_masks(result.saliency, mask))
        return Explanation(np.concatenate(spatial), np.concatenate(temporal))


FrameLoader = Callable[[list[str]], torch.Tensor]
"""``clip_ids -> float (B, T, F, 3, S, S)`` frames in [0, 1] (F frames per segment)."""

VisualFromFloat = Callable[[torch.Tensor], torch.Tensor]
"""Differentiable frozen CNN: float frames (N, 3, S, S) in [0, 1] -> features (N, H, W, C)."""


@register_explainer("step_pixel")
class STEPPixelExplainer:
    """STEP in pixel space: per-frame masks on the frames → frozen CNN → head.

    Each of the T·F frames gets its own mask; features of the F frames of a segment are
    averaged (as the feature store does). The summed masks are averaged over the F frames
    and pooled to the feature grid (H, W).

    Args:
        frames: :data:`FrameLoader` giving the clips' frames.
        visual_from_float: :data:`VisualFromFloat`, the store's visual extractor.
        config: :class:`STEPConfig` (``max_blur`` in pixels; default 20).
        on_step: progress callback.
        score: which logits the masks preserve (:data:`STEPScore`).
        audio_reference: float (Ca,) neutral audio feature for ``score="neutral_audio"``.
    """

    name = "step_pixel"
    slow = True

    def __init__(
        self,
        frames: FrameLoader,
        visual_from_float: VisualFromFloat,
        config: STEPConfig | None = None,
        on_step: Callable[[int], None] | None = None,
        score: STEPScore = "auto",
        audio_reference: torch.Tensor | None = None,
    ) -> None:
        self.frames = frames
        self.visual_from_float = visual_from_float
        self.config = config or STEPConfig()
        self.on_step = on_step
        self.score = score
        self.audio_reference = audio_reference

    def explain(self, head: torch.nn.Module, batch: HeadBatch, target: torch.Tensor) -> Explanation:
        h, w = batch.visual.shape[2:4]
        objective = step_objective(head, self.score, self.audio_reference, batch)
        logits_of, cfg = objective.logits_of, objective.config(self.config)
        spatial, temporal = [], []
        for i in range(len(batch)):
            frames = self.frames([batch.clip_id[i]]).to(batch.visual.device, torch.float32)
            _, t, f, c, s1, s2 = frames.shape
            audio, mask = batch.audio[i : i + 1], batch.segment_mask[i : i + 1]

            def model(video: torch.Tensor, audio=audio, mask=mask, t=t, f=f) -> torch.Tensor:
                n = video.shape[0]
                feats = self.visual_from_float(video.reshape(n * t * f, c, s1, s2))
                feats = feats.reshape(n, t, f, *feats.shape[1:]).mean(dim=2)
                return logits_of(feats, audio.repeat(n, 1, 1), mask.repeat(n, 1))

            valid = mask.repeat_interleave(f, dim=1)
            result = step_attribution(
                model, frames.reshape(1, t * f, c, s1, s2), target[i : i + 1], cfg, valid, self.on_step
            )
            sal = result.saliency.reshape(1, t, f, s1, s2).mean(dim=2)
            pooled = F.adaptive_avg_pool2d(sal.reshape(t, 1, s1, s2), (h, w)).reshape(1, t, h, w)
            spatial.append(pooled.cpu().numpy())
            temporal.append(_temporal_from_masks(pooled, mask))
        return Explanation(np.concatenate(spatial), np.concatenate(temporal))
