"""Where each cell of a CNN feature map looks in the frame.

A map of H×W cells is not a tiling of the frame into H×W equal boxes whose centres are
``(j + 0.5) / W``. A CNN built from stride-2 convolutions with symmetric padding (``k // 2``,
ResNet, EfficientNet) centres output cell ``j`` of each stride-2 layer on input pixel ``2j``, so
after a total stride of 32 cell ``j`` is centred on pixel ``32 j`` (continuous coordinate
``32 j + 0.5``): half a cell up-left of the naive tiling. VGG's unpadded 2×2 max-pools centre
cell ``j`` on ``32 j + 16``, which is the naive tiling. Explanations drawn over the frame and the
pointing game both need the real centres; getting this wrong moves every "where" map by half a
cell (16 px at 224²), which is more than the pointing game's 15-px tolerance.

The visual extractor's card records ``grid: {stride_px, origin_px}``; cards without it (older
stores, AVE's released features) fall back to the naive tiling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

__all__ = ["GridGeometry", "PADDED_STRIDE32", "POOLED_STRIDE32", "upsample_to_frame"]

#: Stride-2 convolutions with symmetric padding (ResNet, EfficientNet): cell j centred on pixel 32 j.
PADDED_STRIDE32 = {"stride_px": 32.0, "origin_px": 0.5}
#: Five unpadded 2×2 max-pools (VGG pool5): cell j centred on pixel 32 j + 16 (the naive tiling).
POOLED_STRIDE32 = {"stride_px": 32.0, "origin_px": 16.0}


class GridGeometry(BaseModel):
    """Cell centres of an H×W feature map over an ``input_size``² frame, in frame pixels.

    Cell ``j`` is centred on ``origin_px + stride_px * j`` (continuous coordinates, pixel ``i``
    spans ``[i, i + 1)``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int
    width: int
    input_size: int
    stride_px: float
    origin_px: float

    @classmethod
    def naive(cls, height: int, width: int, input_size: int = 224) -> "GridGeometry":
        """Equal boxes: cell j centred on ``(j + 0.5) / W`` of the frame."""
        stride = input_size / width
        return cls(height=height, width=width, input_size=input_size, stride_px=stride, origin_px=stride / 2)

    @classmethod
    def from_card(cls, visual_card: dict[str, Any], visual_shape: tuple[int, int, int]) -> "GridGeometry":
        """From a store card's ``visual`` entry and ``visual_shape`` (H, W, C)."""
        h, w = int(visual_shape[0]), int(visual_shape[1])
        size = int(visual_card.get("input_size") or 224)
        grid = visual_card.get("grid")
        if not grid:
            return cls.naive(h, w, size)
        return cls(height=h, width=w, input_size=size, stride_px=float(grid["stride_px"]), origin_px=float(grid["origin_px"]))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised cell centres: xs (W,), ys (H,), in [0, 1] of the frame."""
        xs = (self.origin_px + self.stride_px * np.arange(self.width)) / self.input_size
        ys = (self.origin_px + self.stride_px * np.arange(self.height)) / self.input_size
        return xs, ys


def upsample_to_frame(maps: np.ndarray, size: tuple[int, int], geometry: GridGeometry) -> np.ndarray:
    """Bilinear upsampling of cell maps (P, H, W) to frames (P, h, w) with the cells at their centres.

    Outside the outermost centres the map is held constant (border), as a CNN's edge cells also
    describe the frame's margin.
    """
    maps = np.asarray(maps, dtype=np.float32)
    p, hh, ww = maps.shape
    xs, ys = geometry.centres()
    h, w = size
    px = (np.arange(w) + 0.5) / w  # normalised pixel centres of the output
    py = (np.arange(h) + 0.5) / h
    # Fractional cell coordinates of every output pixel, mapped to grid_sample's [-1, 1] with
    # align_corners=True (-1 = centre of the first cell, +1 = centre of the last one).
    cx = np.interp(px, xs, np.arange(ww)) if ww > 1 else np.zeros(w)
    cy = np.interp(py, ys, np.arange(hh)) if hh > 1 else np.zeros(h)
    gx = 2 * cx / max(ww - 1, 1) - 1
    gy = 2 * cy / max(hh - 1, 1) - 1
    grid = torch.from_numpy(np.stack(np.meshgrid(gx, gy), axis=-1).astype(np.float32))[None].expand(p, h, w, 2)
    out = F.grid_sample(torch.from_numpy(maps)[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, 0].numpy()
