r"""STEP: spatio-temporal extremal perturbations for video attribution.

Li, Wang, Li, Huang and Sato, "Spatio-Temporal Perturbations for Video Attribution",
IEEE TCSVT 2021 — an extension of the extremal perturbations of Fong, Patrick and Vedaldi
(ICCV 2019, TorchRay's ``extremal_perturbation``) from images to videos.

The interface is :func:`step_attribution`: given a differentiable ``model(video) -> logits``,
a video ``x`` of shape (B, T, C, S1, S2) and target classes, it finds, for every target
area ``a``, a smooth mask volume ``m`` (one mask per frame) that keeps about a fraction
``a`` of the video and whose *kept* content alone still makes the model predict the
target (the *preservation game*):

.. math::

    m^*_a = \arg\min_m \; -\log p(y \mid \Phi(x; m))
            + \lambda_t \,\lVert \mathrm{sort}(m) - r_a \rVert^2
            + \mu_t \, L_\mathrm{core}(m; a)

The mask parameterisation (:class:`MaskGenerator`, :class:`Perturbation`, :class:`SmoothnessLoss`)
lives in :mod:`stan_head.evaluation.step_masks`; this module holds the configuration and the
optimisation loop.

* :class:`MaskGenerator`: a mask per frame is the smooth-max of Gaussian-like bumps whose
  heights are a ``grid × grid`` parameter array, upsampled to the frame (TorchRay's design).
* :class:`Perturbation`: a per-frame pyramid of ``num_levels`` increasingly blurred copies of
  the input; mask value 1 picks the original, 0 the most blurred copy, values in between
  interpolate linearly between neighbouring levels (:math:`\Phi`).
* Area constraint: the mean squared difference between the *sorted* mask values of the whole
  clip and a step vector ``r_a`` with a fraction ``a`` of ones; its weight
  :math:`\lambda_t` starts at ``area_weight`` and grows by ``area_growth`` per step.
* Spatio-temporal smoothness :math:`L_\mathrm{core}`: the mask volume is correlated with an
  ellipsoid kernel (``kernel_frames × kernel_size × kernel_size``, stride = kernel size in
  space); the top-``k`` responses (``k`` from the area) are pulled towards 1 and the rest
  towards 0. Its weight :math:`\mu_t` is 0 for the first ``smooth_start`` steps, then
  ``smooth_weight``.
* Optimiser: SGD (lr 0.05, momentum 0.9, dampening 0.9 as in the authors' code), the
  parameters clamped to [0, 1] after every step.

The masks for all areas are returned, and their sum is the attribution map.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stan_head.evaluation.step_masks import MaskGenerator, Perturbation, SmoothnessLoss

__all__ = ["STEPConfig", "STEPResult", "step_attribution"]

logger = logging.getLogger(__name__)

#: Reference frame size (pixels) at which the authors' spatial defaults are given.
_REFERENCE_SIZE = 112
#: Spread of the seeded jitter on the initial bump heights (see ``step_attribution``).
INIT_JITTER = 1e-3


class STEPConfig(BaseModel):
    """Parameters of one STEP optimisation (defaults: the authors' settings).

    Attributes:
        areas: target areas ``a`` (fractions of the clip volume kept); one mask per area,
            all summed into the attribution map.
        iterations: optimisation steps (the authors use about 1000; tests use fewer).
        lr: SGD learning rate.
        momentum: SGD momentum (dampening is set to the same value).
        grid: side of the per-frame parameter grid (16 → a 16 × 16 array of bump heights).
        sigma_per_step: bump width relative to the grid step (11 / 7 as in the authors' code:
            step 7 px, sigma 11 px at 112 px frames).
        num_levels: levels of the blur pyramid.
        max_blur: standard deviation, in input pixels (or feature cells), of the most
            blurred pyramid level.
        area_weight: initial weight λ of the area constraint.
        area_growth: multiplicative growth of λ per step (1.0008668 ≈ doubles over 800 steps).
        smooth_weight: weight of the spatio-temporal smoothness term once active.
        smooth_start: step after which the smoothness term is switched on.
        kernel_frames: temporal extent of the ellipsoid kernel (clipped to the clip length).
        kernel_size: spatial extent of the ellipsoid kernel in mask pixels at a 112-px mask;
            scaled with the mask size, never below 3.
        reward: what the kept content must keep high: ``"log_prob"``, log p(target) (the other
            classes' scores count too), or ``"score"``, the target's raw logit (TorchRay's ``simple_reward``).
        edges: what the blur pyramid sees past the frame (:func:`~stan_head.evaluation.step_masks.gaussian_blur`):
            ``"normalised"`` (only the pixels inside), ``"replicate"`` (the border repeated) or ``"zero"``
            (TorchRay's constant padding).
        area_with_margin: count the mask's margin (the ring around the frame that the model never
            sees) in the area constraint, as TorchRay's and the authors' code do; False counts the
            frame only.
        seed: seed for the shuffling that breaks ties before sorting and for the jitter on the initial
            bump heights (``INIT_JITTER``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    areas: tuple[float, ...] = (0.05, 0.1, 0.15, 0.5)
    iterations: int = Field(1000, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    grid: int = Field(16, ge=2)
    sigma_per_step: float = Field(11.0 / 7.0, gt=0)
    num_levels: int = Field(8, ge=2)
    max_blur: float = Field(20.0, gt=0)
    area_weight: float = Field(300.0, ge=0)
    area_growth: float = Field(1.0008668, ge=1)
    smooth_weight: float = Field(300.0, ge=0)
    smooth_start: int = Field(100, ge=0)
    kernel_frames: int = Field(5, ge=1)
    kernel_size: int = Field(11, ge=1)
    reward: Literal["log_prob", "score"] = "log_prob"
    edges: Literal["normalised", "replicate", "zero"] = "normalised"
    area_with_margin: bool = True
    seed: int = 0

    @field_validator("areas")
    @classmethod
    def _areas_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < a < 1.0 for a in v):
            raise ValueError(f"areas must be a non-empty list of fractions in (0, 1), got {v}")
        return v


@dataclass
class STEPResult:
    """Output of :func:`step_attribution`.

    Attributes:
        masks: float (B, A, T, S1, S2) — one mask volume per area, at the input's resolution.
        saliency: float (B, T, S1, S2) — the masks summed over areas (the attribution map).
        areas: the target areas, in the order of ``masks``' second axis.
        preserved_prob: float (B, A) — target probability of the final preserved videos.
        energy: float (iterations,) — the total objective per step (for diagnostics).
    """

    masks: torch.Tensor
    saliency: torch.Tensor
    areas: tuple[float, ...]
    preserved_prob: torch.Tensor
    energy: np.ndarray


def step_attribution(
    model: Callable[[torch.Tensor], torch.Tensor],
    video: torch.Tensor,
    target: torch.Tensor,
    config: STEPConfig | None = None,
    frame_valid: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
) -> STEPResult:
    """Run STEP's preservation game for a batch of videos.

    Args:
        model: differentiable ``video (N, T, C, S1, S2) -> logits (N, K)``; gradients flow to
            its input only (its own parameters are left untouched, but are best frozen).
        video: float (B, T, C, S1, S2) — frames (C = 3) or feature maps (C = channels).
        target: int (B,) the class to explain per video.
        config: :class:`STEPConfig` (the authors' defaults when None).
        frame_valid: optional bool (B, T): padded frames are neither perturbed nor counted in
            the area (their mask is forced to 0 in the returned maps).
        on_step: optional callback called with the step index after every step (progress).

    Returns:
        :class:`STEPResult`.
    """
    cfg = config or STEPConfig()
    if video.ndim != 5:
        raise ValueError(f"video must be (B, T, C, S1, S2), got shape {tuple(video.shape)}")
    device = video.device
    b, t, c, s1, s2 = video.shape
    areas = tuple(cfg.areas)
    n_area = len(areas)
    target = torch.as_tensor(target, dtype=torch.long, device=device).reshape(b)
    valid = (
        torch.ones(b, t, dtype=torch.bool, device=device)
        if frame_valid is None
        else torch.as_tensor(frame_valid, dtype=torch.bool, device=device).reshape(b, t)
    )
    gen = torch.Generator().manual_seed(cfg.seed)

    # Mask resolution: the grid times an integer step, at least the input size.
    size = max(s1, s2)
    step = max(1, math.ceil(size / cfg.grid))
    mask_size = cfg.grid * step
    sigma = cfg.sigma_per_step * step
    generator = MaskGenerator((mask_size, mask_size), step, sigma).to(device)
    gh, gw = generator.shape_in
    out_h, out_w = generator.shape_out

    perturbation = Perturbation(video.detach().reshape(b * t, c, s1, s2), cfg.num_levels, cfg.max_blur, cfg.edges).to(device)

    # The area and smoothness terms see the mask with its margin (TorchRay) or the frame's part only.
    area_h, area_w = (out_h, out_w) if cfg.area_with_margin else (mask_size, mask_size)
    # Area reference: per (area, clip), a step vector over the valid part of the volume.
    n_valid = valid.sum(dim=1)  # (B,)
    vol_per_frame = area_h * area_w
    max_volume = t * vol_per_frame
    reference = torch.zeros(n_area, b, max_volume, device=device)
    for i, a in enumerate(areas):
        for j in range(b):
            n = int(n_valid[j]) * vol_per_frame
            ones = int(round(n * a))
            if ones:
                reference[i, j, max_volume - ones :] = 1.0
    kernel_size = max(3, int(round(cfg.kernel_size * mask_size / _REFERENCE_SIZE)))
    smoothness = SmoothnessLoss((t, area_h, area_w), areas, cfg.kernel_frames, kernel_size)

    # Start every bump at 1 minus a tiny seeded jitter: equal starts leave the area term's sort to break
    # near-ties by float rounding, which differs by position and pushed the masks up-left.
    params = (1.0 - INIT_JITTER * torch.rand(n_area * b * t, 1, gh, gw, generator=gen)).to(device).requires_grad_(True)
    optimizer = torch.optim.SGD([params], lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.momentum)
    area_weight = cfg.area_weight
    smooth_weight = 0.0
    frame_keep = valid.to(video.dtype).reshape(1, b, t, 1, 1)
    energies: list[float] = []

    def masks_from(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cropped, full = generator.generate(p)
        cropped = cropped.reshape(n_area, b, t, mask_size, mask_size)
        area = full.reshape(n_area, b, t, out_h, out_w) if cfg.area_with_margin else cropped
        if (s1, s2) != (mask_size, mask_size):
            small = F.adaptive_avg_pool2d(cropped.reshape(-1, 1, mask_size, mask_size), (s1, s2))
            cropped = small.reshape(n_area, b, t, s1, s2)
        # Padded frames stay unperturbed in the input and out of the area budget.
        return cropped, area * frame_keep

    def perturbed(cropped: torch.Tensor) -> torch.Tensor:
        # Padded frames: mask 1, i.e. the input passes unchanged.
        m = cropped * frame_keep + (1.0 - frame_keep)
        x = perturbation.apply(m.reshape(n_area, b * t, 1, s1, s2))
        return x.reshape(n_area * b, t, c, s1, s2)

    tgt = target.repeat(n_area)
    for it in range(cfg.iterations):
        cropped, full = masks_from(params)
        logits = model(perturbed(cropped))
        scores = F.log_softmax(logits, dim=-1) if cfg.reward == "log_prob" else logits
        reward = -scores.gather(1, tgt[:, None]).reshape(n_area, b)
        flat = full.reshape(n_area, b, -1)
        perm = torch.randperm(flat.shape[-1], generator=gen).to(device)
        ordered = flat[..., perm].sort(dim=-1)[0]
        regul = ((ordered - reference) ** 2).mean(dim=-1) * area_weight
        energy = reward + regul
        if smooth_weight > 0:
            energy = energy + smoothness(full, gen) * smooth_weight
        total = energy.sum()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        with torch.no_grad():
            params.clamp_(0.0, 1.0)
        energies.append(float(total.detach()))
        area_weight *= cfg.area_growth
        if it == cfg.smooth_start:
            smooth_weight = cfg.smooth_weight
        if on_step is not None:
            on_step(it)

    with torch.no_grad():
        cropped, _ = masks_from(params)
        probs = F.softmax(model(perturbed(cropped)), dim=-1).gather(1, tgt[:, None]).reshape(n_area, b)
        masks = (cropped * frame_keep).permute(1, 0, 2, 3, 4).contiguous()  # (B, A, T, S1, S2)
    logger.debug("STEP: %d steps, final energy %.4f", cfg.iterations, energies[-1])
    return STEPResult(
        masks=masks,
        saliency=masks.sum(dim=1),
        areas=areas,
        preserved_prob=probs.transpose(0, 1).contiguous(),
        energy=np.asarray(energies),
    )
