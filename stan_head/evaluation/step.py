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

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger(__name__)

#: Reference frame size (pixels) at which the authors' spatial defaults are given.
_REFERENCE_SIZE = 112


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
        seed: seed for the shuffling that breaks ties before sorting.
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
    seed: int = 0

    @field_validator("areas")
    @classmethod
    def _areas_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < a < 1.0 for a in v):
            raise ValueError(f"areas must be a non-empty list of fractions in (0, 1), got {v}")
        return v


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with replicate padding; identity for sigma ≤ 0.

    The kernel is truncated at 3 sigma (in pixels of ``x``).
    """
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3.0 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


class Perturbation:
    """Blur pyramid of a batch of frames and its mask-driven interpolation.

    Level ``l`` (of ``L``) is the input blurred with sigma ``max_blur · (1 − l / (L − 1))``:
    level 0 is the most perturbed, level ``L − 1`` the input itself.

    Args:
        frames: float (N, C, H, W) — N frames (clips × segments).
        num_levels: L.
        max_blur: sigma of level 0, in pixels of ``frames``.
    """

    def __init__(self, frames: torch.Tensor, num_levels: int = 8, max_blur: float = 20.0) -> None:
        if num_levels < 2:
            raise ValueError("num_levels must be at least 2")
        self.num_levels = num_levels
        with torch.no_grad():
            levels = [
                gaussian_blur(frames, float(max_blur * (1.0 - s)))
                for s in torch.linspace(0.0, 1.0, num_levels).tolist()
            ]
        self.pyramid = torch.stack(levels, dim=1)  # (N, L, C, H, W)

    def apply(self, mask: torch.Tensor) -> torch.Tensor:
        """Perturb every frame with every mask.

        Args:
            mask: float (A, N, 1, H, W) in [0, 1]: 1 keeps the input, 0 blurs it the most.

        Returns:
            float (A, N, C, H, W).
        """
        pos = mask * (self.num_levels - 1)  # (A, N, 1, H, W)
        out = None
        for level in range(self.num_levels):
            weight = torch.relu(1.0 - (pos - level).abs())
            term = weight * self.pyramid[None, :, level]
            out = term if out is None else out + term
        return out


class MaskGenerator:
    """Smooth masks from a coarse parameter grid (TorchRay's smooth-max of bumps).

    Every parameter cell ``(i, j)`` of a ``shape_in`` grid places a bump of height
    ``p_ij`` centred on its pixel ``(margin + step·i, margin + step·j)``; the kernel is
    ``exp(−2 · max(0, d/sigma − 0.5)²)`` of the distance ``d``. The mask at a pixel is the
    smooth maximum (softmax weights with coldness 20) of the bumps that reach it.

    Args:
        shape: (H, W) of the mask in pixels.
        step: grid step in pixels (an integer).
        sigma: bump width in pixels.
        coldness: sharpness of the smooth maximum.
    """

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, coldness: float = 20.0) -> None:
        if int(step) != step or step < 1:
            raise ValueError(f"step must be a positive integer, got {step}")
        self.shape = tuple(int(s) for s in shape)
        self.step = int(step)
        self.sigma = float(sigma)
        self.coldness = coldness
        self.margin = self.sigma
        self.padding = 1 + math.ceil((self.margin + self.sigma) / self.step)
        self.radius = 1 + math.ceil(self.sigma / self.step)
        self.shape_in = [math.ceil(z / self.step) for z in self.shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [self.step * z for z in self.shape_mid]
        self.shape_out = [z - self.step + 1 for z in self.shape_up]

        k = 2 * self.radius + 1
        uy, ux = torch.meshgrid(
            torch.arange(self.shape_out[0], dtype=torch.float32),
            torch.arange(self.shape_out[1], dtype=torch.float32),
            indexing="ij",
        )
        ratio_y = self.shape_mid[0] / self.shape_up[0]
        ratio_x = self.shape_mid[1] / self.shape_up[1]
        weight = torch.zeros(1, k * k, *self.shape_out)
        for ky in range(k):
            for kx in range(k):
                iy = torch.floor(ratio_y * uy) + ky - self.padding
                ix = torch.floor(ratio_x * ux) + kx - self.padding
                delta = torch.sqrt(
                    (uy - (self.margin + self.step * iy)) ** 2 + (ux - (self.margin + self.step * ix)) ** 2
                )
                weight[0, ky * k + kx] = torch.exp(-2.0 * ((delta / self.sigma - 0.5).clamp(min=0) ** 2))
        self.weight = weight

    def to(self, device: torch.device | str) -> "MaskGenerator":
        """Move the bump weights to ``device``; returns self."""
        self.weight = self.weight.to(device)
        return self

    def generate(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks from parameters.

        Args:
            params: float (N, 1, *shape_in) bump heights in [0, 1].

        Returns:
            (cropped, full): float (N, 1, *shape) masks in [0, 1], and the same with the
            margin kept, (N, 1, *shape_out) — the area and smoothness terms use the latter.
        """
        k = 2 * self.radius + 1
        mask = F.unfold(params, (k, k), padding=(self.padding,) * 2)
        mask = mask.reshape(len(params), -1, *self.shape_mid)
        mask = F.interpolate(mask, size=self.shape_up, mode="nearest")
        mask = F.pad(mask, (0, -self.step + 1, 0, -self.step + 1))
        mask = self.weight * mask
        mask = (mask * F.softmax(self.coldness * mask, dim=1)).sum(dim=1, keepdim=True)
        mask = mask.clamp(0.0, 1.0)
        m = round(self.margin)
        cropped = mask[:, :, m : m + self.shape[0], m : m + self.shape[1]]
        return cropped, mask


def ellipsoid_kernel(frames: int, size: int) -> torch.Tensor:
    """Binary ellipsoid filling a (frames, size, size) box, as float (1, 1, frames, size, size)."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in (frames, size, size)]
    v1, v2, v3 = np.meshgrid(*axes, indexing="ij")
    inside = np.sqrt(v1**2 + v2**2 + v3**2) <= 1.0
    return torch.from_numpy(inside[None, None].astype(np.float32))


class SmoothnessLoss:
    """STEP's spatio-temporal smoothness ("core") term for masks of one shape.

    The mask volume (T, H, W) is correlated with an ellipsoid kernel (stride = the kernel's
    spatial size, 1 in time); the responses, divided by the kernel's volume, are sorted and
    the top ``k`` pulled to 1, the rest to 0, where ``k = ceil(a · T·H·W / |kernel|)`` — the
    number of kernel-sized blobs that fill the target area.

    Args:
        volume: (T, H, W) of the mask volume (the masks with their margin).
        areas: target areas.
        kernel_frames, kernel_size: ellipsoid extent (clipped to the volume).
    """

    def __init__(self, volume: tuple[int, int, int], areas: tuple[float, ...], kernel_frames: int, kernel_size: int) -> None:
        t, h, w = volume
        kt = max(1, min(kernel_frames, t))
        ks = max(1, min(kernel_size, h, w))
        self.kernel = ellipsoid_kernel(kt, ks)
        self.stride = (1, ks, ks)
        self.kernel_sum = float(self.kernel.sum())
        responses = (t - kt + 1) * ((h - ks) // ks + 1) * ((w - ks) // ks + 1)
        self.topk = [int(min(max(1, math.ceil(a * t * h * w / self.kernel_sum)), responses)) for a in areas]

    def __call__(self, masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss per (area, clip) for masks (A, B, T, H, W); returns (A, B)."""
        a, b = masks.shape[:2]
        kernel = self.kernel.to(masks.device, masks.dtype)
        conv = F.conv3d(masks.reshape(a * b, 1, *masks.shape[2:]), kernel, stride=self.stride)
        conv = conv.reshape(a, b, -1) / self.kernel_sum
        perm = torch.randperm(conv.shape[-1], generator=generator).to(masks.device)
        conv = conv[..., perm].sort(dim=-1, descending=True)[0]
        losses = []
        for i, k in enumerate(self.topk):
            top = ((conv[i, :, :k] - 1.0) ** 2).mean(dim=-1)
            rest = (conv[i, :, k:] ** 2).mean(dim=-1) if k < conv.shape[-1] else torch.zeros_like(top)
            losses.append(top + rest)
        return torch.stack(losses, dim=0)


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

    perturbation = Perturbation(video.detach().reshape(b * t, c, s1, s2), cfg.num_levels, cfg.max_blur)
    perturbation.pyramid = perturbation.pyramid.to(device)

    # Area reference: per (area, clip), a step vector over the valid part of the volume.
    n_valid = valid.sum(dim=1)  # (B,)
    vol_per_frame = out_h * out_w
    max_volume = t * vol_per_frame
    reference = torch.zeros(n_area, b, max_volume, device=device)
    for i, a in enumerate(areas):
        for j in range(b):
            n = int(n_valid[j]) * vol_per_frame
            ones = int(round(n * a))
            if ones:
                reference[i, j, max_volume - ones :] = 1.0
    kernel_size = max(3, int(round(cfg.kernel_size * mask_size / _REFERENCE_SIZE)))
    smoothness = SmoothnessLoss((t, out_h, out_w), areas, cfg.kernel_frames, kernel_size)

    params = torch.ones(n_area * b * t, 1, gh, gw, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([params], lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.momentum)
    area_weight = cfg.area_weight
    smooth_weight = 0.0
    frame_keep = valid.to(video.dtype).reshape(1, b, t, 1, 1)
    energies: list[float] = []

    def masks_from(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cropped, full = generator.generate(p)
        cropped = cropped.reshape(n_area, b, t, mask_size, mask_size)
        full = full.reshape(n_area, b, t, out_h, out_w)
        if (s1, s2) != (mask_size, mask_size):
            small = F.adaptive_avg_pool2d(cropped.reshape(-1, 1, mask_size, mask_size), (s1, s2))
            cropped = small.reshape(n_area, b, t, s1, s2)
        # Padded frames stay unperturbed in the input and out of the area budget.
        return cropped, full * frame_keep

    def perturbed(cropped: torch.Tensor) -> torch.Tensor:
        # Padded frames: mask 1, i.e. the input passes unchanged.
        m = cropped * frame_keep + (1.0 - frame_keep)
        x = perturbation.apply(m.reshape(n_area, b * t, 1, s1, s2))
        return x.reshape(n_area * b, t, c, s1, s2)

    tgt = target.repeat(n_area)
    for it in range(cfg.iterations):
        cropped, full = masks_from(params)
        logits = model(perturbed(cropped))
        logp = F.log_softmax(logits, dim=-1).gather(1, tgt[:, None]).reshape(n_area, b)
        reward = -logp
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
