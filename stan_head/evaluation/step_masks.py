"""STEP's mask parameterisation: smooth masks from a parameter grid, the blur pyramid they drive, and
the spatio-temporal smoothness term (:mod:`stan_head.evaluation.step` runs the optimisation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MaskGenerator", "Perturbation", "SmoothnessLoss", "ellipsoid_kernel", "gaussian_blur"]


def gaussian_blur(x: torch.Tensor, sigma: float, edges: str = "normalised") -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W); identity for sigma ≤ 0. The kernel is truncated at 3 sigma.

    ``edges`` says what the kernel sees past the frame:

    * ``"normalised"`` (default): nothing — each output is the Gaussian-weighted mean of the pixels
      (cells) *inside* the frame (normalised convolution: blur of the zero-padded input divided by
      the blur of the frame's indicator). At a large sigma every output tends to the frame's mean.
    * ``"replicate"``: the border pixels, repeated. On a 7 × 7 feature map with sigma 7 (radius 21)
      the padding outweighs the map: 93 % of every blurred cell comes from the 24 border cells, so
      "deleting" a region paints the border's content over it (measured; see DESIGN.md "STEP").
    * ``"zero"``: zeros (TorchRay's ``imsmooth`` default): the blurred frame darkens towards its edges.
    """
    if sigma <= 0:
        return x
    if edges not in ("normalised", "replicate", "zero"):
        raise ValueError(f"edges must be 'normalised', 'replicate' or 'zero', got {edges!r}")
    radius = max(1, int(math.ceil(3.0 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = x.shape
    mode = "replicate" if edges == "replicate" else "constant"
    if mode == "constant" and radius >= max(h, w):  # taps past the frame only ever meet zeros: drop them
        cut = radius - max(h, w) + 1
        kernel, radius = kernel[cut:-cut], max(h, w) - 1

    def blur(y: torch.Tensor) -> torch.Tensor:
        y = F.pad(y, (radius, radius, 0, 0), mode=mode)
        y = F.conv2d(y, kernel.view(1, 1, 1, -1))
        y = F.pad(y, (0, 0, radius, radius), mode=mode)
        return F.conv2d(y, kernel.view(1, 1, -1, 1))

    out = blur(x.reshape(n * c, 1, h, w))
    if edges == "normalised":
        out = out / blur(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))
    return out.reshape(n, c, h, w)


class Perturbation:
    """Blur pyramid of a batch of frames and its mask-driven interpolation.

    Level ``l`` (of ``L``) is the input blurred with sigma ``max_blur · (1 − l / (L − 1))``:
    level 0 is the most perturbed, level ``L − 1`` the input itself. The levels are held channels
    last, so that picking a level per pixel moves whole channel vectors (1280 floats per feature
    cell) rather than single values.

    Args:
        frames: float (N, C, H, W) — N frames (clips × segments).
        num_levels: L.
        max_blur: sigma of level 0, in pixels of ``frames``.
        edges: how the blur treats the frame's edges (see :func:`gaussian_blur`).
    """

    def __init__(self, frames: torch.Tensor, num_levels: int = 8, max_blur: float = 20.0, edges: str = "normalised") -> None:
        if num_levels < 2:
            raise ValueError("num_levels must be at least 2")
        self.num_levels = num_levels
        with torch.no_grad():
            levels = [
                gaussian_blur(frames, float(max_blur * (1.0 - s)), edges)
                for s in torch.linspace(0.0, 1.0, num_levels).tolist()
            ]
            self._levels = torch.stack(levels, dim=-1).permute(0, 2, 3, 4, 1).contiguous()  # (N, H, W, L, C)

    @property
    def pyramid(self) -> torch.Tensor:
        """float (N, L, C, H, W): the levels (a view)."""
        return self._levels.permute(0, 3, 4, 1, 2)

    def to(self, device: torch.device | str) -> "Perturbation":
        """Move the pyramid to ``device``; returns self."""
        self._levels = self._levels.to(device)
        return self

    def apply(self, mask: torch.Tensor) -> torch.Tensor:
        """Perturb every frame with every mask.

        A mask value m sits at position ``m · (L − 1)`` on the pyramid and interpolates linearly
        between the two levels around it (only those two are read).

        Args:
            mask: float (A, N, 1, H, W) in [0, 1]: 1 keeps the input, 0 blurs it the most.

        Returns:
            float (A, N, C, H, W) (a channels-last tensor seen through a permuted view).
        """
        top = self.num_levels - 1
        pos = mask.clamp(0.0, 1.0) * top
        low = pos.detach().floor().clamp(max=top - 1)
        frac = pos - low  # carries the gradient
        a, n, _, h, w = mask.shape
        c = self._levels.shape[-1]
        cells = torch.arange(n * h * w, device=mask.device).view(1, n, 1, h, w) * self.num_levels
        index = (cells + low.long()).reshape(-1)
        flat = self._levels.reshape(-1, c)
        below = flat.index_select(0, index).view(a, n, h, w, c)
        above = flat.index_select(0, index + 1).view(a, n, h, w, c)
        return torch.lerp(below, above, frac.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)


class MaskGenerator:
    """Smooth masks from a coarse parameter grid (TorchRay's smooth-max of bumps).

    Every parameter cell ``(i, j)`` of a ``shape_in`` grid places a bump of height
    ``p_ij`` centred on its pixel ``(margin + step·i, margin + step·j)``; the kernel is
    ``exp(−2 · max(0, d/sigma − 0.5)²)`` of the distance ``d``. The mask at a pixel is the
    smooth maximum (softmax weights with coldness 20) of the bumps that reach it.

    ``margin`` is ``round(sigma)`` pixels, the same offset the frame is cropped at, so bump ``(i, j)``
    sits exactly on frame pixel ``(step·i, step·j)`` and the grid is symmetric in the frame (TorchRay
    uses ``sigma`` itself, an integer at its pixel sizes). With a fractional sigma — 11/7 px for STEP's
    16-step grid on a 7 × 7 feature map — the unrounded margin put every bump 0.43 px up-left of where
    the crop assumed, and masks leaned to the top-left border (DESIGN.md "STEP").

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
        self.margin = float(round(self.sigma))
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
    spatial size, 1 in time; the windows' tiling centred on the mask); the responses, divided by
    the kernel's volume, are sorted and the top ``k`` pulled to 1, the rest to 0, where
    ``k = ceil(a · T·H·W / |kernel|)`` — the number of kernel-sized blobs that fill the target area.

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
        rows, cols = (h - ks) // ks + 1, (w - ks) // ks + 1
        # The windows tile rows·ks × cols·ks pixels; centre that tiling on the mask, so the pixels no
        # window sees are split between opposite edges (from the top-left corner, the right and bottom
        # edges went unseen and the masks leaned up-left).
        self.offset = ((h - rows * ks) // 2, (w - cols * ks) // 2)
        self.extent = (rows * ks, cols * ks)
        responses = (t - kt + 1) * rows * cols
        self.topk = [int(min(max(1, math.ceil(a * t * h * w / self.kernel_sum)), responses)) for a in areas]

    def __call__(self, masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss per (area, clip) for masks (A, B, T, H, W); returns (A, B)."""
        a, b = masks.shape[:2]
        kernel = self.kernel.to(masks.device, masks.dtype)
        (oy, ox), (ey, ex) = self.offset, self.extent
        masks = masks[..., oy : oy + ey, ox : ox + ex]
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
