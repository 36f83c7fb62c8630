"""A seeded generator of audio-visual event clips, written in contract 1's folder layout.

Each of K classes (default 8) is a visible object kind with its own shape, colour and texture,
and its own sound with a distinct spectral signature (chord, chirp, noise band, click train,
AM tone, buzz, FM warble, beeps). In every clip (10 s, AVE style 10 × 1-s segments):

- the event object moves slowly inside the frame; its box is known for every segment;
- it sounds during a known interval [start_s, end_s) of whole seconds (at least 3 s);
- 1–2 silent distractor objects of other classes share the frame;
- the background has visual texture + per-frame noise and audio noise;
- in about 20 % of clips the sounding object is off-screen for part of the event (no box there).

Output (``root`` is the dataset folder): ``videos/<video_id>.mp4`` (h264 + AAC 16 kHz mono, encoded
with :data:`pipelines.encode.ENCODER_SETTING`, byte-identical on every x86-64 CPU),
``annotations.csv`` (video_id,label,start_s,end_s — no split column: the build assigns a
seeded class-stratified split, exactly as for a user's folder) and ``boxes.csv``
(video_id,segment,x0,y0,x1,y1 in pixels). Same seed and parameters → byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.atomic import atomic_path, atomic_write_text
from pipelines.encode import ENCODER_SETTING, Mp4Writer

__all__ = ["SyntheticSource", "CLASS_CATALOG", "generate_synthetic", "SyntheticResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectKind:
    """One synthetic class: how it looks and how it sounds."""

    name: str
    shape: str
    colour: tuple[int, int, int]
    texture: str
    sound: str


CLASS_CATALOG: tuple[ObjectKind, ...] = (
    ObjectKind("red_disc", "disc", (225, 25, 25), "hstripes", "chord"),
    ObjectKind("green_square", "square", (20, 190, 50), "checker", "chirp"),
    ObjectKind("blue_triangle", "triangle", (30, 60, 235), "dots", "noise_band"),
    ObjectKind("yellow_star", "star", (245, 225, 20), "diagonal", "clicks"),
    ObjectKind("magenta_diamond", "diamond", (225, 30, 205), "grid", "am_tone"),
    ObjectKind("cyan_hexagon", "hexagon", (20, 215, 225), "vstripes", "buzz"),
    ObjectKind("orange_cross", "cross", (250, 135, 10), "rings", "fm_warble"),
    ObjectKind("white_ring", "ring", (245, 245, 245), "fine_checker", "beeps"),
)


class SyntheticSource(BaseModel):
    """Configuration of the synthetic source (``wherewhen dataset build synthetic``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["synthetic"] = "synthetic"
    clips: int = Field(60, ge=1, description="number of clips")
    classes: int = Field(8, ge=2, le=len(CLASS_CATALOG), description="K classes")
    seed: int = 0
    duration_s: int = Field(10, ge=3, description="clip length in whole seconds (1-s segments)")
    size: int = Field(160, ge=64, description="frame side in pixels (even)")
    fps: int = Field(10, ge=2, le=30)
    audio_rate: int = Field(16000, ge=8000)
    min_event_s: int = Field(3, ge=1)
    offscreen_fraction: float = Field(0.2, ge=0, le=1)
    crf: int = Field(23, ge=0, le=51)

    @model_validator(mode="after")
    def _check(self) -> "SyntheticSource":
        if self.size % 2:
            raise ValueError(f"size must be even for h264, got {self.size}")
        if self.min_event_s > self.duration_s:
            raise ValueError(f"min_event_s={self.min_event_s} exceeds duration_s={self.duration_s}")
        return self


# ---------------------------------------------------------------------------------------------
# the plan of one clip: a pure function of (config, index)


@dataclass(frozen=True)
class _Obj:
    cls: int
    size: int  # sprite side in px
    pos0: tuple[float, float]  # top-left at t=0
    vel: tuple[float, float]  # px/s


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip (and its CSV rows) deterministically."""

    index: int
    video_id: str
    label: int
    start_s: int
    end_s: int
    event: _Obj
    distractors: tuple[_Obj, ...]
    hidden_segments: tuple[int, ...]  # event object off-screen in these segments
    gain: float
    seed: int


def _labels(cfg: SyntheticSource) -> np.ndarray:
    """Balanced class labels for all clips, in a seeded order."""
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    labels = np.arange(cfg.clips) % cfg.classes
    return rng.permutation(labels)


def _bounce(p0: float, v: float, t: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """Position at time t of a point moving at v inside [lo, hi], reflecting at the walls."""
    span = hi - lo
    if span <= 0:
        return np.full_like(np.asarray(t, dtype=float), lo)
    x = (p0 - lo + v * np.asarray(t, dtype=float)) % (2 * span)
    return lo + np.where(x > span, 2 * span - x, x)


def _obj_xy(obj: _Obj, t: np.ndarray | float, frame: int) -> tuple[np.ndarray, np.ndarray]:
    hi = frame - obj.size
    return _bounce(obj.pos0[0], obj.vel[0], t, 0, hi), _bounce(obj.pos0[1], obj.vel[1], t, 0, hi)


def plan_clip(cfg: SyntheticSource, index: int, label: int) -> ClipPlan:
    """The seeded plan of clip ``index`` (independent of every other clip)."""
    rng = np.random.default_rng([cfg.seed, index])
    s = cfg.size
    longest = max(cfg.min_event_s, cfg.duration_s - 2)  # leave background segments in most clips
    length = int(rng.integers(cfg.min_event_s, longest + 1))
    start = int(rng.integers(0, cfg.duration_s - length + 1))
    others = [k for k in range(cfg.classes) if k != label]
    n_distract = int(rng.integers(1, 3))
    d_classes = rng.choice(others, size=min(n_distract, len(others)), replace=False)

    def make(cls: int, lo: float, hi: float, taken: list[tuple[float, float, int]]) -> _Obj:
        size = int(round(rng.uniform(lo, hi) * s))
        best = None
        for _ in range(30):  # spread the objects out at t=0
            pos = (float(rng.uniform(0, s - size)), float(rng.uniform(0, s - size)))
            gap = min((abs(pos[0] - q[0]) + abs(pos[1] - q[1]) - (size + q[2]) / 2 for q in taken), default=1e9)
            if best is None or gap > best[0]:
                best = (gap, pos)
            if gap > 0:
                break
        speed = rng.uniform(3, 10) * s / 160.0
        ang = rng.uniform(0, 2 * np.pi)
        taken.append((best[1][0], best[1][1], size))
        return _Obj(int(cls), size, best[1], (float(speed * np.cos(ang)), float(speed * np.sin(ang))))

    taken: list[tuple[float, float, int]] = []
    event = make(label, 0.28, 0.35, taken)
    distractors = tuple(make(int(c), 0.20, 0.27, taken) for c in d_classes)
    hidden: tuple[int, ...] = ()
    if rng.random() < cfg.offscreen_fraction:
        n_hidden = int(rng.integers(1, max(2, length // 2) + 1))
        n_hidden = min(n_hidden, length - 1)
        first = int(rng.integers(start, start + length - n_hidden + 1))
        hidden = tuple(range(first, first + n_hidden))
    return ClipPlan(
        index=index,
        video_id=f"syn{index:05d}",
        label=int(label),
        start_s=start,
        end_s=start + length,
        event=event,
        distractors=distractors,
        hidden_segments=hidden,
        gain=float(rng.uniform(0.25, 0.4)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def clip_boxes(cfg: SyntheticSource, plan: ClipPlan) -> list[tuple[int, int, int, int, int]]:
    """(segment, x0, y0, x1, y1) in pixels for every event segment where the object is visible.

    The box is the object's square at the segment centre (where a 1-frame decoder samples).
    """
    rows = []
    for seg in range(plan.start_s, plan.end_s):
        if seg in plan.hidden_segments:
            continue
        x, y = _obj_xy(plan.event, seg + 0.5, cfg.size)
        x0, y0 = int(round(float(x))), int(round(float(y)))
        rows.append((seg, x0, y0, x0 + plan.event.size, y0 + plan.event.size))
    return rows


# ---------------------------------------------------------------------------------------------
# rendering


def _shape_mask(shape: str, n: int) -> np.ndarray:
    """Bool (n, n) silhouette of a shape filling an n × n box."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    u, v = (xx + 0.5) / n * 2 - 1, (yy + 0.5) / n * 2 - 1  # [-1, 1]
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 0.98
    if shape == "square":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if shape == "triangle":
        return (v >= 2 * np.abs(u) - 0.95) & (v <= 0.95)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "hexagon":
        return (np.abs(v) <= 0.85) & (np.abs(v) * 0.577 + np.abs(u) <= 0.98)
    if shape == "cross":
        return ((np.abs(u) <= 0.33) & (np.abs(v) <= 0.98)) | ((np.abs(v) <= 0.33) & (np.abs(u) <= 0.98))
    if shape == "ring":
        return (r <= 0.98) & (r >= 0.55)
    if shape == "star":
        ang = np.arctan2(v, u)
        edge = 0.6 + 0.38 * (0.5 + 0.5 * np.cos(5 * ang + np.pi / 2)) ** 2
        return r <= edge
    raise ValueError(f"unknown shape {shape}")


def _texture(texture: str, n: int) -> np.ndarray:
    """Float (n, n) in {0.35, 1}: the pattern multiplying the colour."""
    yy, xx = np.mgrid[0:n, 0:n]
    p = max(4, n // 6)
    if texture == "hstripes":
        on = (yy // (p // 2)) % 2 == 0
    elif texture == "vstripes":
        on = (xx // (p // 2)) % 2 == 0
    elif texture == "checker":
        on = ((xx // p) + (yy // p)) % 2 == 0
    elif texture == "fine_checker":
        on = ((xx // max(2, p // 2)) + (yy // max(2, p // 2))) % 2 == 0
    elif texture == "dots":
        on = np.hypot((xx % p) - p / 2, (yy % p) - p / 2) > p / 4
    elif texture == "diagonal":
        on = ((xx + yy) // (p // 2)) % 2 == 0
    elif texture == "grid":
        on = ((xx % p) > 1) & ((yy % p) > 1)
    elif texture == "rings":
        on = (np.hypot(xx - n / 2, yy - n / 2) // (p // 2)) % 2 == 0
    else:
        raise ValueError(f"unknown texture {texture}")
    return np.where(on, 1.0, 0.35)


def _sprite(kind: ObjectKind, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (n, n), rgb uint8 (n, n, 3)) of an object kind at side n."""
    mask = _shape_mask(kind.shape, n)
    rgb = (np.asarray(kind.colour, dtype=np.float64)[None, None, :] * _texture(kind.texture, n)[..., None])
    return mask, rgb.astype(np.uint8)


def _paste(frame: np.ndarray, mask: np.ndarray, rgb: np.ndarray, x: float, y: float) -> None:
    h, w = frame.shape[:2]
    n = mask.shape[0]
    x0, y0 = int(round(float(x))), int(round(float(y)))
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    m = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    frame[fy0:fy1, fx0:fx1][m] = rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0][m]


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Float (s, s, 3): a smooth, muted random colour field."""
    coarse = rng.uniform(50, 130, size=(5, 5, 3))
    idx = np.linspace(0, 4, s)
    i0 = np.floor(idx).astype(int).clip(0, 3)
    f = (idx - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]  # (s, 5, 3)
    cols = rows[:, i0] * (1 - f.T[..., None]) + rows[:, i0 + 1] * f.T[..., None]
    return cols


def _sound(kind: str, t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Float (len(t),) unit-RMS waveform with the class's spectral signature."""
    two_pi = 2 * np.pi
    if kind == "chord":  # major triad with harmonics
        x = sum(np.sin(two_pi * f * t) + 0.3 * np.sin(two_pi * 2 * f * t) for f in (262.0, 330.0, 392.0))
    elif kind == "chirp":  # rising sweep 400 -> 3200 Hz, twice a second
        ph = (t % 0.5) / 0.5
        f0, f1 = 400.0, 3200.0
        x = np.sin(two_pi * 0.5 * (f0 * ph + 0.5 * (f1 - f0) * ph**2))
    elif kind == "noise_band":  # band-limited noise 2-4 kHz
        spec = np.fft.rfft(rng.standard_normal(len(t)))
        freqs = np.fft.rfftfreq(len(t), 1 / rate)
        spec[(freqs < 2000) | (freqs > 4000)] = 0
        x = np.fft.irfft(spec, n=len(t))
    elif kind == "clicks":  # click train: 20-ms decaying noise bursts, 10 per second
        x = np.zeros_like(t)
        period, burst = int(rate / 10), int(0.02 * rate)
        env = np.exp(-np.arange(burst) / (0.004 * rate))
        for k in range(0, len(t), period):
            m = min(len(t), k + burst)
            x[k:m] = env[: m - k] * rng.standard_normal(m - k)
    elif kind == "am_tone":  # 700 Hz amplitude-modulated at 6 Hz
        x = np.sin(two_pi * 700 * t) * (0.5 + 0.5 * np.sin(two_pi * 6 * t))
    elif kind == "buzz":  # 150 Hz square wave (odd harmonics)
        x = np.sign(np.sin(two_pi * 150 * t)) * 0.6
    elif kind == "fm_warble":  # 1500 Hz +- 400 Hz at 5 Hz
        x = np.sin(two_pi * 1500 * t + (400 / 5) * np.sin(two_pi * 5 * t))
    elif kind == "beeps":  # 5 kHz beeps, 4 per second
        x = np.sin(two_pi * 5000 * t) * ((t % 0.25) < 0.12)
    else:
        raise ValueError(f"unknown sound {kind}")
    x = np.asarray(x, dtype=np.float64)
    return x / (np.sqrt(np.mean(x**2)) + 1e-9)


def render_media(cfg: SyntheticSource, plan: ClipPlan) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """(frames, audio) of one clip: uint8 (size, size, 3) RGB frames, lazily, and float32 mono audio.

    The audio is drawn first and the frames as they are iterated, from one seeded generator, so
    the same plan always gives the same pixels and samples.
    """
    rng = np.random.default_rng(plan.seed)
    s, fps = cfg.size, cfg.fps
    n_frames = cfg.duration_s * fps
    bg = _background(rng, s)
    sprites = {}
    for obj in (*plan.distractors, plan.event):
        sprites[id(obj)] = _sprite(CLASS_CATALOG[obj.cls], obj.size)
    # audio: noise floor + the event sound inside [start, end) with 10-ms fades
    rate = cfg.audio_rate
    n_samples = cfg.duration_s * rate
    t_audio = np.arange(n_samples) / rate
    audio = 0.02 * rng.standard_normal(n_samples)
    a, b = plan.start_s * rate, plan.end_s * rate
    seg = _sound(CLASS_CATALOG[plan.label].sound, t_audio[a:b] - plan.start_s, rng, rate)
    fade = np.ones(b - a)
    nf = min(int(0.01 * rate), (b - a) // 2)
    fade[:nf] = np.linspace(0, 1, nf)
    fade[-nf:] = np.linspace(1, 0, nf)
    audio[a:b] += 0.5 * plan.gain * seg * fade  # event RMS 0.12-0.2 over a 0.02 noise floor

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            t = i / fps
            frame = bg + rng.normal(0, 6, size=bg.shape)
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            for obj in plan.distractors:
                x, y = _obj_xy(obj, t, s)
                _paste(frame, *sprites[id(obj)], x, y)
            if int(t) not in plan.hidden_segments:
                x, y = _obj_xy(plan.event, t, s)
                _paste(frame, *sprites[id(plan.event)], x, y)
            yield frame

    return frames(), audio.astype(np.float32)


def render_clip(cfg: SyntheticSource, plan: ClipPlan, path: Path) -> None:
    """Render and encode one clip to ``path`` (atomically)."""
    frames, audio = render_media(cfg, plan)
    with atomic_path(path) as tmp:
        with Mp4Writer(tmp, cfg.size, cfg.size, cfg.fps, audio_rate=cfg.audio_rate, crf=cfg.crf) as writer:
            for frame in frames:
                writer.write_frame(frame)
            writer.write_audio(audio)


def _render_job(args: tuple[dict, ClipPlan, str]) -> str:
    cfg_dict, plan, path = args
    render_clip(SyntheticSource(**cfg_dict), plan, Path(path))
    return plan.video_id


@dataclass(frozen=True)
class SyntheticResult:
    """What :func:`generate_synthetic` wrote."""

    root: Path
    classes: list[str]
    rendered: int  # clips encoded in this call
    reused: int  # clips already present from an earlier identical run


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def generate_synthetic(cfg: SyntheticSource, root: Path, workers: int = 1) -> SyntheticResult:
    """Write contract 1 for ``cfg`` into ``root`` (videos/, annotations.csv, boxes.csv).

    Resumable: a clip already written by an earlier run with the same parameters and encoder
    setting (recorded in ``synthetic.json``) is kept, so a crashed generation continues where it stopped. Videos are
    encoded in a process pool of ``workers`` processes (spawn) when ``workers > 1`` and there
    are at least 8 clips to encode.
    """
    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    params_path = root / "synthetic.json"
    # the encoder setting is part of what the files depend on: another setting re-renders every clip
    params = json.dumps({**cfg.model_dump(), "encoder": ENCODER_SETTING}, sort_keys=True, indent=2) + "\n"
    same = params_path.is_file() and params_path.read_text(encoding="utf-8") == params
    if not same:
        for old in videos.glob("syn*.mp4"):
            old.unlink()
    atomic_write_text(params_path, params)

    labels = _labels(cfg)
    plans = [plan_clip(cfg, i, int(labels[i])) for i in range(cfg.clips)]
    todo = [p for p in plans if not (videos / f"{p.video_id}.mp4").is_file()]
    jobs = [(cfg.model_dump(), p, str(videos / f"{p.video_id}.mp4")) for p in todo]
    if workers > 1 and len(jobs) > 1 and current_process().daemon:
        log.info("running inside a daemonic process (e.g. a Dask worker): encoding %d clips in-process", len(jobs))
        workers = 1
    if workers > 1 and len(jobs) >= 8:  # below that, starting interpreters costs more than it saves
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            for vid in pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                log.debug("rendered %s", vid)
    else:
        for job in jobs:
            _render_job(job)

    classes = [k.name for k in CLASS_CATALOG[: cfg.classes]]
    ann = [[p.video_id, classes[p.label], p.start_s, p.end_s] for p in plans]
    atomic_write_text(root / "annotations.csv", _csv_text(["video_id", "label", "start_s", "end_s"], ann))
    boxes = [[p.video_id, *row] for p in plans for row in clip_boxes(cfg, p)]
    atomic_write_text(root / "boxes.csv", _csv_text(["video_id", "segment", "x0", "y0", "x1", "y1"], boxes))
    log.info("synthetic: %d clips in %s (%d rendered, %d reused)", len(plans), root, len(todo), len(plans) - len(todo))
    return SyntheticResult(root=root, classes=classes, rendered=len(todo), reused=len(plans) - len(todo))
