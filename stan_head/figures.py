"""Figures without global state: matplotlib's object API on the Agg canvas, never pyplot or a backend switch."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.atomic import atomic_write_bytes

__all__ = ["save_png"]


def save_png(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Render ``fig`` on an Agg canvas and write it to ``path`` as PNG, atomically; returns ``path``."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buf.getvalue())
