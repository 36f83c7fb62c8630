"""The pictures of ``wherewhen explain``: the where-grid PNG, the when-plot PNG and the overlay mp4.

* :func:`plot_grid` — one panel per segment inside the clip (segments past its end are left out
  and named in a note; the fewest rows, the fewest empty slots), the segment's sampled frame at the video's own display
  aspect with α_t over it, one colour scale for all panels and a colour bar in α's unit (share of
  the segment's attention per feature cell); the annotated event's segments framed in green when
  the video is a clip of the run's dataset (:func:`annotated_event`).
* :func:`plot_temporal` — β^v and β^a per segment over time, the annotated event span,
  segments past the clip's end shaded; a clip without an audio track says so instead of drawing a β^a.
* :func:`write_overlay_mp4` — the source video re-encoded with α over every frame (the map of the
  segment the frame lies in), at the source frame rate and display size (the longer side capped at
  :data:`MP4_MAX_SIDE`), with the source audio (its own channels and rate), as long as the clip up
  to the end of the segments the head saw, and a caption strip naming the segment and its β (a
  shorter caption on a narrow video, so that nothing runs off the frame).

Frames are decoded for the mp4 with PyAV in this process (the file was decoded already for the
features, so it is known to open); the sample aspect ratio and the rotation of phone videos are
applied. Drawing helpers come from :mod:`stan_head.figures`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from features.geometry import GridGeometry, upsample_to_frame
from pipelines.atomic import atomic_path
from pipelines.encode import Mp4Writer
from pipelines.manifest import load_dataset
from pipelines.runtime import file_sha256
from stan_head.figures import (
    DPI,
    FONT_PT,
    HEAT_CMAP,
    SMALL_PT,
    TITLE_PT,
    add_colourbar,
    blend_heat,
    blend_rgba,
    display_size,
    heat_rgba,
    new_figure,
    render_rgba,
    save_png,
)

log = logging.getLogger(__name__)

__all__ = ["GRID_MAX_SIDE", "MP4_MAX_SIDE", "EventSpan", "VideoGeometry", "annotated_event", "build_grid_figure",
           "build_temporal_figure", "plot_grid", "plot_temporal", "sample_frames", "video_geometry", "write_overlay_mp4"]

#: The explain mp4 keeps the source size unless its longer side exceeds this (then it is scaled down, aspect kept).
MP4_MAX_SIDE = 854
#: The grid's frames are scaled so that their longer side is at most this many pixels.
GRID_MAX_SIDE = 480
#: The annotated event's colour: its span on the when-plot, the frames of its segments' panels on the grid.
EVENT_COLOUR = "tab:green"
_GRID_COLS = 5
_GRID_MAX_W_IN = 15.0
_PANEL_H_IN = 2.2
_PANEL_MAX_W_IN = 3.6


@dataclass(frozen=True)
class VideoGeometry:
    """How a video is displayed: coded size, sample aspect ratio and rotation (degrees counter-clockwise)."""

    height: int
    width: int
    sample_aspect: float = 1.0
    rotation: int = 0

    @property
    def display_hw(self) -> tuple[int, int]:
        """(height, width) as a player shows it: the sample aspect applied, then the rotation."""
        h, w = self.height, max(1, int(round(self.width * self.sample_aspect)))
        return (w, h) if self.rotation % 180 else (h, w)

    @property
    def unrotated_hw(self) -> tuple[int, int]:
        """(height, width) with the sample aspect applied, before the rotation (the frame the features saw)."""
        return self.height, max(1, int(round(self.width * self.sample_aspect)))


@dataclass(frozen=True)
class EventSpan:
    """The annotated event of a clip: [start_s, end_s) and the clip id it was found under."""

    start_s: float
    end_s: float
    clip_id: str


def _rotation_k(rotation: int) -> int:
    """np.rot90's k (counter-clockwise quarter turns) for a display rotation in degrees."""
    return int(round(rotation / 90.0)) % 4


def video_geometry(video: Path) -> VideoGeometry:
    """Coded size, sample aspect ratio and rotation of ``video``'s first video stream (PyAV; one frame decoded)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        rotation = 0
        for frame in container.decode(stream):
            rotation = int(getattr(frame, "rotation", 0) or 0)
            break
        return VideoGeometry(int(stream.codec_context.height), int(stream.codec_context.width),
                             float(sar) if sar else 1.0, rotation)


def annotated_event(dataset_dir: Path | str | None, video: Path) -> EventSpan | None:
    """The event span the run's dataset manifest records for ``video`` (matched by the file's sha256), or None.

    None when there is no dataset folder (``dataset_dir`` None or gone) or no clip with the same bytes
    (a video the run's dataset does not hold).
    """
    if not dataset_dir or not (Path(dataset_dir) / "manifest.parquet").is_file():
        return None
    try:
        clips = load_dataset(Path(dataset_dir)).clips
    except (OSError, ValueError) as exc:
        log.info("no event span: the dataset %s cannot be read (%s)", dataset_dir, exc)
        return None
    rows = clips[clips["sha256"] == file_sha256(Path(video))]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return EventSpan(float(row["event_start_s"]), float(row["event_end_s"]), str(row["clip_id"]))


def _cell_vmax(alpha: np.ndarray, mask: np.ndarray) -> float:
    """The top of the shared colour scale: the largest α cell over the valid segments."""
    return float(alpha[mask].max()) if mask.any() and alpha[mask].size else 1.0


def _span(i: int, segment_s: float) -> str:
    return f"{i * segment_s:g}–{(i + 1) * segment_s:g} s"


# where: the grid ------------------------------------------------------------------------------
def sample_frames(video: Path, times: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (n, h, w, 3): the frame of ``video`` nearest each time (seconds from its first frame), scaled to ``size``.

    Times past the last frame get the last frame. Decoded with PyAV at the source resolution, then scaled.
    """
    h, w = size
    out: list[np.ndarray | None] = [None] * len(times)
    j, prev, prev_t, t0 = 0, None, 0.0, None
    with av.open(str(video)) as container:
        for frame in container.decode(container.streams.video[0]):
            if frame.time is None:
                continue
            t0 = frame.time if t0 is None else t0
            t = frame.time - t0
            while j < len(times) and t >= times[j]:
                pick = frame if prev is None or t - times[j] <= times[j] - prev_t else prev
                out[j] = pick.to_ndarray(format="rgb24", width=w, height=h)
                j += 1
            if j == len(times):
                break
            prev, prev_t = frame, t
    if prev is None and all(o is None for o in out):
        raise ValueError(f"{video}: no video frame could be decoded")
    last = prev.to_ndarray(format="rgb24", width=w, height=h) if prev is not None else out[j - 1]
    return np.stack([last if o is None else o for o in out]) if len(times) else np.zeros((0, h, w, 3), np.uint8)


def _in_event(i: int, segment_s: float, event: EventSpan | None) -> bool:
    """Whether segment ``i`` overlaps the annotated event."""
    return event is not None and i * segment_s < event.end_s and (i + 1) * segment_s > event.start_s


def build_grid_figure(video: Path, alpha: np.ndarray, mask: np.ndarray, beta_a: np.ndarray, beta_v: np.ndarray,
                      has_audio: bool, segment_s: float, title: str, geometry: GridGeometry,
                      opacity: float = 0.7, max_side: int = GRID_MAX_SIDE, event: EventSpan | None = None) -> Figure:
    """The where-grid of ``video`` (α cells (T, H, W) per segment); see the module doc.

    Panels fill the fewest rows of at most five with the fewest empty slots (10 panels: 5 + 5, never
    4 + 4 + 2); with an ``event``, the panels of the segments it overlaps are framed in green.
    """
    mask = np.asarray(mask, bool)
    valid = np.flatnonzero(mask)
    vgeo = video_geometry(video)
    size = display_size(*vgeo.unrotated_hw, max_side=max_side)
    k = _rotation_k(vgeo.rotation)
    dh, dw = (size[1], size[0]) if k % 2 else size
    vmax = _cell_vmax(alpha, mask)
    n = max(1, len(valid))
    # the fewest rows of at most _GRID_COLS panels, then the fewest empty slots (10 panels: 5 + 5, 5: one row)
    cols = min(range(1, min(n, _GRID_COLS) + 1), key=lambda c: (-(-n // c), -(-n // c) * c - n))
    rows = -(-n // cols)
    panel_w = min(_PANEL_MAX_W_IN, _PANEL_H_IN * dw / dh, _GRID_MAX_W_IN / cols)
    panel_h = panel_w * dh / dw
    fig = new_figure(cols * panel_w + 0.4, rows * (panel_h + 0.35) + 1.25)
    uniform = 1.0 / (alpha.shape[1] * alpha.shape[2])
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    frames = sample_frames(video, (valid + 0.5) * segment_s, size)
    maps = upsample_to_frame(alpha[valid], size, geometry) if len(valid) else np.zeros((0, *size))
    for ax in axes:
        ax.set_axis_off()
    for j, i in enumerate(valid):
        ax = axes[j]
        img = blend_heat(frames[j], maps[j] / max(vmax, 1e-12), opacity, floor=uniform / max(vmax, 1e-12))
        ax.imshow(np.rot90(img, k), interpolation="antialiased")
        when = f"$\\beta^v$ {beta_v[i]:.2f}" + (f"  $\\beta^a$ {beta_a[i]:.2f}" if has_audio else "")
        ax.set_title(f"{_span(i, segment_s)}   {when}", fontsize=FONT_PT)
        if _in_event(i, segment_s, event):
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor=EVENT_COLOUR,
                                   linewidth=4, clip_on=False))
    add_colourbar(fig, axes, 0.0, vmax,
                  f"α: share of the segment's attention per feature cell ({alpha.shape[1]}×{alpha.shape[2]} cells); "
                  f"the overlay is transparent below uniform", mark=(min(uniform, vmax), "uniform"),
                  orientation="horizontal", fraction=0.08)
    notes = [f"where: $\\alpha_t$ over the frame at each segment's centre ({vgeo.display_hw[1]}×{vgeo.display_hw[0]} video)"]
    if len(valid) < len(mask):
        notes.append(f"segments {len(valid) + 1}–{len(mask)} lie past the clip's end and are not shown")
    if not has_audio:
        notes.append("no audio track: $\\beta^a$ is not defined")
    if event is not None:
        notes.append(f"green frame: the annotated event ({event.start_s:g}–{event.end_s:g} s)")
    fig.suptitle(title + "\n" + "; ".join(notes), fontsize=FONT_PT + 1)
    return fig


def plot_grid(video: Path, alpha: np.ndarray, mask: np.ndarray, beta_a: np.ndarray, beta_v: np.ndarray,
              has_audio: bool, segment_s: float, title: str, path: Path, geometry: GridGeometry,
              opacity: float = 0.7, event: EventSpan | None = None) -> Path:
    """``explanation_grid.png``: see :func:`build_grid_figure`."""
    return save_png(build_grid_figure(video, alpha, mask, beta_a, beta_v, has_audio, segment_s, title, geometry,
                                      opacity, event=event), path)


# when: the temporal plot -----------------------------------------------------------------------
def build_temporal_figure(beta_a: np.ndarray, beta_v: np.ndarray, mask: np.ndarray, has_audio: bool, segment_s: float,
                          title: str, event: EventSpan | None = None) -> Figure:
    """β^v (and β^a with an audio track) per segment, the annotated event span, padding shaded."""
    mask = np.asarray(mask, bool)
    t = len(beta_v)
    centres = (np.arange(t) + 0.5) * segment_s
    width = (0.38 if has_audio else 0.7) * segment_s
    fig = new_figure(max(6.5, 0.65 * t + 3.0), 3.8)
    ax = fig.subplots()
    handles = []
    if event is not None:
        ax.axvspan(event.start_s, event.end_s, facecolor=EVENT_COLOUR, alpha=0.15, hatch="//", edgecolor=EVENT_COLOUR,
                   linewidth=0, zorder=0)
        handles.append(Patch(facecolor=EVENT_COLOUR, alpha=0.3, hatch="//", edgecolor=EVENT_COLOUR,
                             label=f"annotated event {event.start_s:g}–{event.end_s:g} s"))
    for i in np.flatnonzero(~mask):
        ax.axvspan(i * segment_s, (i + 1) * segment_s, color="0.88", zorder=0)
    if (~mask).any():
        handles.append(Patch(color="0.88", label="past the clip's end"))
    offset = width / 2 if has_audio else 0.0
    hv = ax.bar(centres[mask] + offset, beta_v[mask], width=width, label=r"$\beta^v$ (vision)", color="tab:blue")
    handles.insert(0, hv)
    peak = float(beta_v[mask].max(initial=0))
    if has_audio:
        ha = ax.bar(centres[mask] - offset, beta_a[mask], width=width, label=r"$\beta^a$ (audio)", color="tab:orange")
        handles.insert(0, ha)
        peak = max(peak, float(beta_a[mask].max(initial=0)))
    else:
        ax.text(0.99, 0.96, r"no audio track: $\beta^a$ is not defined", transform=ax.transAxes, ha="right",
                va="top", fontsize=FONT_PT, color="0.3")
    ax.set_xlim(0, t * segment_s)
    ax.set_ylim(0, max(1e-3, peak) * 1.25)
    ax.set_xticks(np.arange(t + 1) * segment_s)
    ax.tick_params(labelsize=SMALL_PT)
    ax.set_xlabel("time in the clip (s)", fontsize=FONT_PT)
    ax.set_ylabel("temporal attention\n(sums to 1 over the clip)", fontsize=FONT_PT)
    sub = "" if event is not None else "\nno annotated event: the video is not a clip of the run's dataset"
    ax.set_title(title + sub, fontsize=FONT_PT + 1)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL_PT, frameon=False)
    return fig


def plot_temporal(beta_a: np.ndarray, beta_v: np.ndarray, mask: np.ndarray, has_audio: bool, segment_s: float,
                  title: str, path: Path, event: EventSpan | None = None) -> Path:
    """``temporal_attention.png``: see :func:`build_temporal_figure`."""
    return save_png(build_temporal_figure(beta_a, beta_v, mask, has_audio, segment_s, title, event), path)


# the mp4 --------------------------------------------------------------------------------------
def _caption(variants: Sequence[str], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A caption strip (height, width): RGB float and alpha (…, 1), white text on translucent black.

    ``variants`` go from the longest text to the shortest (the last one the least worth keeping): the
    longest that fits beside a colour key of the overlay ("α low ▬ high") is drawn with it, else the
    longest that fits alone; so a narrow video gets a shorter caption and no key, never text that
    runs into the key or off the frame.
    """
    pt = 0.55 * height * 72.0 / DPI
    pad = max(2.0, 0.01 * width)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor=(0, 0, 0, 0.55))
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()

    def text(x_px: float, words: str, ha: str, size: float) -> float:
        """Draw ``words`` at x (pixels); returns its width in pixels."""
        t = fig.text(x_px / width, 0.5, words, color="white", fontsize=size, va="center", ha=ha)
        return t.get_window_extent(renderer).width

    # the key, laid out from the right edge in pixels: "α low" [bar] "high"
    high = text(width - pad, "high", "right", pt * 0.85)
    bar_w = max(12.0, 0.08 * width)
    bar_right = width - pad - high - 3
    low = text(bar_right - bar_w - 3, "α low", "right", pt * 0.85)
    key_left = bar_right - bar_w - 3 - low
    key_parts = fig.texts[:]
    # preference: every variant but the last (the span alone) with the key, then without it; the span last
    options = [(words, True) for words in variants[:-1]] + [(words, False) for words in variants[:-1]]
    options += [(variants[-1], True), (variants[-1], False)]
    for words, with_key in options:
        room = (key_left if with_key else width) - 2 * pad
        t = fig.text(pad / width, 0.5, words, color="white", fontsize=pt, va="center", ha="left")
        if t.get_window_extent(renderer).width <= room:
            break
        t.remove()
    if not with_key:
        for part in key_parts:   # no room for the key beside the text
            part.remove()
        key_parts = []
    if key_parts:
        key = fig.add_axes(((bar_right - bar_w) / width, 0.3, bar_w / width, 0.4))
        key.imshow(np.linspace(0, 1, 64)[None], cmap=HEAT_CMAP, aspect="auto")  # the overlay's colours, low to high
        key.set_axis_off()
    rgba = render_rgba(fig).astype(np.float32) / 255.0
    rgba = rgba[:height, :width]
    return rgba[..., :3], rgba[..., 3:4]


def _read_audio(container: av.container.InputContainer, end_s: float) -> tuple[np.ndarray, int, str] | None:
    """The first audio stream up to ``end_s``: float32 (channels, n) at its own rate and layout, or None."""
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    rate, layout = int(stream.rate), stream.layout.name
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    parts = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
    parts += [f.to_ndarray() for f in resampler.resample(None)]
    if not parts:
        return None
    samples = np.concatenate(parts, axis=1)[:, : int(round(end_s * rate))]
    return np.ascontiguousarray(samples, np.float32), rate, layout


def write_overlay_mp4(video: Path, alpha: np.ndarray, mask: np.ndarray, beta_a: np.ndarray, beta_v: np.ndarray,
                      has_audio: bool, segment_s: float, geometry: GridGeometry, path: Path, opacity: float = 0.7,
                      label: str = "", max_side: int | None = MP4_MAX_SIDE) -> Path:
    """``explanation.mp4``: the source video with α over every frame (see the module doc); returns ``path``.

    ``alpha`` (T, H, W) cells; a frame in a segment past the last valid one shows the last valid map.
    The video ends where the clip ends or where the T segments end, whichever is first.
    """
    mask = np.asarray(mask, bool)
    valid = np.flatnonzero(mask)
    if not len(valid):
        raise ValueError(f"{video}: no segment inside the clip; nothing to draw")
    vgeo = video_geometry(video)
    k = _rotation_k(vgeo.rotation)
    uh, uw = vgeo.unrotated_hw
    h, w = display_size(uh, uw, max_side, even=True)
    out_h, out_w = (w, h) if k % 2 else (h, w)
    vmax = _cell_vmax(alpha, mask)
    uniform = 1.0 / (alpha.shape[1] * alpha.shape[2])
    window_s = len(mask) * segment_s
    strip = min(out_h // 3, max(18, int(round(out_h * 0.07)) // 2 * 2))
    heat: dict[int, np.ndarray] = {}
    captions: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        duration = min(window_s, float(container.duration or 0) / 1e6 or window_s)
    with av.open(str(video)) as container:
        audio = _read_audio(container, duration) if has_audio else None
    n = 0
    with av.open(str(video)) as container, atomic_path(path) as tmp, \
            Mp4Writer(tmp, out_w, out_h, fps, audio_rate=audio[1] if audio else None,
                      audio_layout=audio[2] if audio else "mono") as writer:
        t0 = None
        for frame in container.decode(container.streams.video[0]):
            if frame.time is None:
                continue
            t0 = frame.time if t0 is None else t0
            t = frame.time - t0
            if t >= duration:
                break
            seg = int(min(t // segment_s, len(mask) - 1))
            seg = seg if mask[seg] else int(valid[valid <= seg].max() if (valid <= seg).any() else valid[0])
            if seg not in heat:
                heat[seg] = heat_rgba(upsample_to_frame(alpha[seg][None], (h, w), geometry)[0] / max(vmax, 1e-12), opacity,
                                      floor=uniform / max(vmax, 1e-12))
                when = rf"$\beta^v$ {beta_v[seg]:.2f}" + (rf"  $\beta^a$ {beta_a[seg]:.2f}" if has_audio else "  no audio track")
                span = _span(seg, segment_s)
                captions[seg] = _caption([f"{label}  {span}  {when}".strip(), f"{span}  {when}", span], out_w, strip)
            img = blend_rgba(frame.to_ndarray(format="rgb24", width=w, height=h), heat[seg])
            img = np.rot90(img, k).astype(np.float32) / 255.0
            rgb, a = captions[seg]
            img[-strip:] = (1 - a) * img[-strip:] + a * rgb
            writer.write_frame((img * 255).round().clip(0, 255).astype(np.uint8))
            n += 1
        if audio is not None:
            writer.write_audio(audio[0])
    log.info("%s: %d frames %dx%d at %s fps (%.2f s)%s", path, n, out_w, out_h, fps, n / float(fps),
             f", audio {audio[2]} {audio[1]} Hz" if audio else ", no audio track")
    return path
