"""The plan of one synthetic clip — a pure function of (config, clip index) — and its boxes.

A plan fixes the event interval, the sounding object and the silent distractors (class, size,
start position, velocity), the off-screen spell, the occluder, the event amplitude and the seed
of the render. Draws for parameters the easy generator has (event, objects, off-screen spell,
amplitude) come from one generator in the order they always did; the occluder comes from a
generator of its own, so easy clips are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.synthetic_catalog import sound_group
from pipelines.sources.synthetic_config import RenderParams, SyntheticSource

__all__ = [
    "MAX_OCCLUDED",
    "NOISE_RMS",
    "ClipPlan",
    "Occluder",
    "PlacedObject",
    "clip_boxes",
    "clip_labels",
    "object_xy",
    "occluder_x",
    "plan_clip",
]

#: RMS of the white noise floor of every clip's audio; the SNR is measured against it.
NOISE_RMS = 0.02
#: A segment's box is kept only while the occluder covers at most this share of it.
MAX_OCCLUDED = 0.25


@dataclass(frozen=True)
class PlacedObject:
    """One object of a clip: its class, side and straight-line motion (reflected at the frame edges)."""

    cls: int
    size: int  # sprite side in px
    pos0: tuple[float, float]  # top-left at t=0
    vel: tuple[float, float]  # px/s


@dataclass(frozen=True)
class Occluder:
    """A full-height bar crossing the frame: its left edge is at ``x0 + vx·t`` pixels."""

    x0: float
    vx: float
    width: int
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip (and its CSV rows) deterministically."""

    index: int
    video_id: str
    label: int
    start_s: int
    end_s: int
    event: PlacedObject
    distractors: tuple[PlacedObject, ...]
    hidden_segments: tuple[int, ...]  # event object off-screen in these segments
    amplitude: float  # RMS of the event sound
    seed: int
    occluder: Occluder | None = None


def clip_labels(cfg: SyntheticSource) -> np.ndarray:
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


def object_xy(obj: PlacedObject, t: np.ndarray | float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of ``obj`` at time ``t`` in a width × height frame."""
    return (_bounce(obj.pos0[0], obj.vel[0], t, 0, width - obj.size),
            _bounce(obj.pos0[1], obj.vel[1], t, 0, height - obj.size))


def occluder_x(occ: Occluder, t: float) -> float:
    """Left edge of the occluder at time ``t`` (may lie outside the frame)."""
    return occ.x0 + occ.vx * t


def _distractor_classes(rng: np.random.Generator, p: RenderParams, classes: int, label: int) -> list[int]:
    """Classes of the silent distractors: never one of the sounding object's sound group.

    Without shared sounds any other class (the easy generator's draw). With shared sounds one
    member of each other group first, in a seeded group order, then second members, so a scene
    holds both members of a group only when there are more distractors than other groups.
    """
    group = sound_group(label, p.shared_sounds)
    others = [k for k in range(classes) if sound_group(k, p.shared_sounds) != group]
    n = int(rng.integers(p.distractors[0], p.distractors[1] + 1))
    if not p.shared_sounds:
        return [int(c) for c in rng.choice(others, size=min(n, len(others)), replace=False)]
    groups = sorted({sound_group(k, True) for k in others})
    first, second = [], []
    for g in rng.permutation(len(groups)):
        members = [int(k) for k in rng.permutation([k for k in others if sound_group(k, True) == groups[g]])]
        first.append(members[0])
        second.extend(members[1:])
    return (first + second)[:n]


def _amplitude_bounds(p: RenderParams) -> tuple[float, float]:
    """RMS bounds of the event sound for the SNR range (rounded to 1e-12 so easy's are 0.125 and 0.2)."""
    lo, hi = (round(NOISE_RMS * 10 ** (db / 20), 12) for db in p.snr_db)
    return lo, hi


def _occluder(cfg: SyntheticSource, index: int, start: int, end: int) -> Occluder | None:
    """The occluder of clip ``index`` (or None): it crosses the frame in 3-6 s, mid-way during the event."""
    p = cfg.resolved
    if p.occlusion_fraction <= 0:
        return None
    rng = np.random.default_rng([cfg.seed, index, 0x0CC1])
    if rng.random() >= p.occlusion_fraction:
        return None
    bar = int(round(rng.uniform(0.12, 0.25) * p.width))
    cross_s = float(rng.uniform(3.0, 6.0))
    speed = (p.width + bar) / cross_s
    enter = float(rng.uniform(start, end)) - cross_s / 2  # the crossing's middle falls inside the event
    colour = tuple(int(c) for c in rng.integers(40, 110, size=3))
    if rng.random() < 0.5:  # left to right: at t=enter the bar's right edge is at x=0
        return Occluder(-bar - speed * enter, speed, bar, colour)  # type: ignore[arg-type]
    return Occluder(p.width + speed * enter, -speed, bar, colour)  # type: ignore[arg-type]


def plan_clip(cfg: SyntheticSource, index: int, label: int) -> ClipPlan:
    """The seeded plan of clip ``index`` (independent of every other clip)."""
    p = cfg.resolved
    rng = np.random.default_rng([cfg.seed, index])
    w, h = p.width, p.height
    s = min(w, h)
    length = int(rng.integers(p.event_s[0], p.event_s[1] + 1))
    start = int(rng.integers(0, cfg.duration_s - length + 1))
    d_classes = _distractor_classes(rng, p, cfg.classes, label)

    def make(cls: int, lo: float, hi: float, taken: list[tuple[float, float, int]]) -> PlacedObject:
        size = int(round(rng.uniform(lo, hi) * s))
        best = None
        for _ in range(30):  # spread the objects out at t=0
            pos = (float(rng.uniform(0, w - size)), float(rng.uniform(0, h - size)))
            gap = min((abs(pos[0] - q[0]) + abs(pos[1] - q[1]) - (size + q[2]) / 2 for q in taken), default=1e9)
            if best is None or gap > best[0]:
                best = (gap, pos)
            if gap > 0:
                break
        speed = rng.uniform(3, 10) * s / 160.0
        ang = rng.uniform(0, 2 * np.pi)
        taken.append((best[1][0], best[1][1], size))
        return PlacedObject(int(cls), size, best[1], (float(speed * np.cos(ang)), float(speed * np.sin(ang))))

    taken: list[tuple[float, float, int]] = []
    event = make(label, *p.scale, taken)
    distractors = tuple(make(c, *p.distractor_scale, taken) for c in d_classes)
    hidden: tuple[int, ...] = ()
    if rng.random() < p.offscreen_fraction:
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
        amplitude=float(rng.uniform(*_amplitude_bounds(p))),
        seed=int(rng.integers(0, 2**31 - 1)),
        occluder=_occluder(cfg, index, start, start + length),
    )


def _occluded_share(plan: ClipPlan, x: float, t: float) -> float:
    """Share of the event object's columns [x, x + size) under the occluder at time ``t``."""
    occ = plan.occluder
    if occ is None:
        return 0.0
    left = occluder_x(occ, t)
    n = plan.event.size
    return max(0.0, min(x + n, left + occ.width) - max(x, left)) / n


def clip_boxes(cfg: SyntheticSource, plan: ClipPlan) -> list[tuple[int, int, int, int, int]]:
    """(segment, x0, y0, x1, y1) in pixels for every event segment where the object is visible.

    The box is the object's square at the segment centre (where a 1-frame decoder samples).
    Visible: not off-screen, and the occluder covers at most :data:`MAX_OCCLUDED` of it at the
    centre and one frame either side (a decoder may pick the neighbouring frame).
    """
    p = cfg.resolved
    rows = []
    for seg in range(plan.start_s, plan.end_s):
        if seg in plan.hidden_segments:
            continue
        centre = seg + 0.5
        x, y = (float(v) for v in object_xy(plan.event, centre, p.width, p.height))
        if max(_occluded_share(plan, x, centre + d / p.fps) for d in (-1, 0, 1)) > MAX_OCCLUDED:
            continue
        x0, y0 = int(round(x)), int(round(y))
        rows.append((seg, x0, y0, x0 + plan.event.size, y0 + plan.event.size))
    return rows
