"""What every figure of the product shares: the Agg canvas, text sizes, frames at their own aspect, heat overlays.

Figures use matplotlib's object API on the Agg canvas, never pyplot or a backend switch, and are
saved at :data:`DPI` (100, so a 9-pt label is 12.5 px: readable at 100 % on a screen and in print).
No text is smaller than :data:`SMALL_PT`. Frames are shown at the source clip's aspect ratio (the
decoder returns squares; :func:`display_size` and :func:`resize_rgb` undo that), and heat maps are
blended with an opacity that rises with the value (:func:`heat_rgba`), so low-relevance areas show
the frame itself.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from pipelines.atomic import atomic_write_bytes

__all__ = ["DPI", "FONT_PT", "HEAT_CMAP", "SMALL_PT", "TITLE_PT", "add_colourbar", "blend_heat", "blend_rgba", "display_size",
           "heat_rgba", "new_figure", "render_rgba", "resize_rgb", "save_png"]

#: Pixels per inch of every saved figure.
DPI = 100
#: The smallest text in any figure (tick labels, panel badges, legends).
SMALL_PT = 9.0
#: Axis labels and panel titles.
FONT_PT = 10.0
#: Figure titles.
TITLE_PT = 12.0
#: The colour map of every heat map (perceptually ordered; dark = low, yellow = high).
HEAT_CMAP = "inferno"


def new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure with constrained layout (labels never overlap or leave the canvas) and the product's text sizes."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render_rgba(fig: Figure, dpi: int = DPI) -> np.ndarray:
    """The figure drawn at ``dpi`` as uint8 (H, W, 4), the whole canvas (no tight crop)."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def save_png(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Render ``fig`` on an Agg canvas and write it to ``path`` as PNG, atomically; returns ``path``."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return atomic_write_bytes(Path(path), buf.getvalue())


def display_size(height: int, width: int, max_side: int | None = None, even: bool = False) -> tuple[int, int]:
    """(h, w) with the aspect of ``height``×``width``, scaled down so the longer side is at most ``max_side``.

    ``even`` rounds both down to even numbers (what h264 needs). Never smaller than 2 px a side.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    h, w = max(2, int(round(height * scale))), max(2, int(round(width * scale)))
    if even:
        h, w = max(2, h - h % 2), max(2, w - w % 2)
    return h, w


def resize_rgb(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h0, w0, 3) -> uint8 (h, w, 3), bilinear (used to give square decoded frames back their aspect)."""
    h, w = size
    if frame.shape[:2] == (h, w):
        return np.asarray(frame, np.uint8)
    return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((w, h), Image.Resampling.BILINEAR))


def heat_rgba(values: np.ndarray, opacity: float, floor: float = 0.0, cmap: str = HEAT_CMAP) -> np.ndarray:
    """Values in [0, 1] (..., h, w) -> float RGBA in [0, 1] whose alpha rises with the value.

    Alpha is 0 up to ``floor`` (e.g. the level of uniform attention) and rises as a square root to
    ``opacity`` at 1, so the frame shows untouched wherever the map is not above ``floor``.
    """
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgba = colormaps[cmap](v).astype(np.float32)
    rgba[..., 3] = float(opacity) * np.sqrt(np.clip((v - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0))
    return rgba


def blend_rgba(frame: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """uint8 frame (h, w, 3) with float RGBA (h, w, 4) in [0, 1] composited over it -> uint8 (h, w, 3)."""
    a = rgba[..., 3:4]
    out = (1.0 - a) * (np.asarray(frame, np.float32) * (1.0 / 255.0)) + a * rgba[..., :3]
    return (out * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def blend_heat(frame: np.ndarray, values: np.ndarray, opacity: float, floor: float = 0.0) -> np.ndarray:
    """uint8 frame (h, w, 3) with the heat map of ``values`` (h, w) in [0, 1] blended over it -> uint8 (h, w, 3)."""
    return blend_rgba(frame, heat_rgba(values, opacity, floor))


def add_colourbar(fig: Figure, axes: Axes | list[Axes] | np.ndarray, vmin: float, vmax: float, label: str,
                  cmap: str = HEAT_CMAP, fraction: float = 0.04, mark: tuple[float, str] | None = None,
                  orientation: str = "vertical") -> Colorbar:
    """A colour bar of ``cmap`` on [vmin, vmax] beside ``axes`` (right of them, or under them when
    ``orientation`` is ``"horizontal"``), labelled with ``label`` (units).

    ``mark``: (value, text) drawn as a line across the bar (e.g. the level below which the overlay is transparent).
    """
    mappable = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=colormaps[cmap])
    ax_list = list(np.ravel(axes)) if not isinstance(axes, Axes) else [axes]
    horizontal = orientation == "horizontal"
    bar = fig.colorbar(mappable, ax=ax_list, fraction=fraction, pad=0.01 if not horizontal else 0.03, aspect=30 if not horizontal else 45,
                       orientation=orientation, shrink=1.0 if not horizontal else 0.6)
    bar.set_label(label, fontsize=FONT_PT)
    bar.ax.tick_params(labelsize=SMALL_PT)
    if mark is not None:
        if horizontal:
            bar.ax.axvline(mark[0], color="white", linewidth=1.5)
            bar.ax.text(mark[0], 1.15, mark[1], transform=bar.ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=SMALL_PT)
        else:
            bar.ax.axhline(mark[0], color="white", linewidth=1.5)
            bar.ax.text(-0.15, mark[0], mark[1], transform=bar.ax.get_yaxis_transform(), ha="right", va="center",
                        fontsize=SMALL_PT)
    return bar
