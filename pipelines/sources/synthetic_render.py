"""Rendering one planned synthetic clip: background, objects, occluder and audio; encoding it.

Everything comes from one generator seeded by the plan, drawn in a fixed order (the
background's pattern, then the audio, then each frame's noise as the frames are iterated), so
the same plan always gives the same pixels and samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.encode import Mp4Writer
from pipelines.sources.synthetic_catalog import (
    CLASS_CATALOG,
    class_sound,
    sound,
    sprite,
)
from pipelines.sources.synthetic_config import SyntheticSource
from pipelines.sources.synthetic_plan import NOISE_RMS, ClipPlan, object_xy, occluder_x

__all__ = ["make_background", "render_clip", "render_media"]


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float (height, width, 3): a smooth, muted random colour field (5 × 5 control points)."""
    coarse = rng.uniform(50, 130, size=(5, 5, 3))

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.linspace(0, 4, n)
        i0 = np.floor(idx).astype(int).clip(0, 3)
        return i0, idx - i0

    iy, fy = axis(height)
    ix, fx = axis(width)
    rows = coarse[iy] * (1 - fy[:, None, None]) + coarse[iy + 1] * fy[:, None, None]  # (height, 5, 3)
    return rows[:, ix] * (1 - fx[None, :, None]) + rows[:, ix + 1] * fx[None, :, None]


def _stripes(rng: np.random.Generator, height: int, width: int, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(phase (n, height, width), drift (n,) rad/s) of ``n`` soft square-wave gratings at random angles."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    short = min(height, width)
    phases, drift = [], []
    for _ in range(n):
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.08, 0.2) * short
        phases.append(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period + rng.uniform(0, 2 * np.pi))
        drift.append(2 * np.pi * rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0]))  # 0.5-1.5 periods per second
    return np.stack(phases), np.asarray(drift)


def _pattern(phase: np.ndarray) -> np.ndarray:
    """Float (height, width) in [-1, 1]: the mean of the gratings' soft square waves."""
    return np.tanh(3 * np.cos(phase)).mean(axis=0)


def make_background(kind: str, rng: np.random.Generator, height: int, width: int) -> Callable[[float], np.ndarray]:
    """A function of time giving the uint8 (height, width, 3) background of each frame.

    ``gradient``: a smooth colour field with pixel noise (σ 6) in every frame; ``texture``: that
    field times a static pattern of stripes; ``noise``: the field with static blotches and heavy
    pixel noise (σ 16); ``moving``: the field times stripes that drift across the frame.
    The noise is drawn from ``rng`` at each call, so call it once per frame, in order.
    """
    field = _gradient(rng, height, width)

    def noisy(base: np.ndarray, sigma: float) -> np.ndarray:
        return np.clip(base + rng.normal(0, sigma, size=base.shape), 0, 255).astype(np.uint8)

    if kind == "gradient":
        return lambda t: noisy(field, 6)
    if kind == "texture":
        phase, _ = _stripes(rng, height, width)
        textured = field * (1 + 0.35 * _pattern(phase))[..., None]
        return lambda t: noisy(textured, 6)
    if kind == "noise":
        cell = max(2, min(height, width) // 12)
        blotches = rng.normal(0, 22, size=(height // cell + 1, width // cell + 1, 3))
        blotchy = field + np.repeat(np.repeat(blotches, cell, axis=0), cell, axis=1)[:height, :width]
        return lambda t: noisy(blotchy, 16)
    if kind == "moving":
        phase, drift = _stripes(rng, height, width)
        return lambda t: noisy(field * (1 + 0.35 * _pattern(phase + (drift * t)[:, None, None]))[..., None], 6)
    raise ValueError(f"unknown background {kind}")


def _paste(frame: np.ndarray, mask: np.ndarray, rgb: np.ndarray, x: float, y: float) -> None:
    h, w = frame.shape[:2]
    n = mask.shape[0]
    x0, y0 = int(round(float(x))), int(round(float(y)))
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    m = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    frame[fy0:fy1, fx0:fx1][m] = rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0][m]


def _audio(cfg: SyntheticSource, plan: ClipPlan, rng: np.random.Generator) -> np.ndarray:
    """Float64 mono audio: the noise floor plus the event sound inside [start, end) with 10-ms fades."""
    rate = cfg.resolved.audio_rate
    n_samples = cfg.duration_s * rate
    t_audio = np.arange(n_samples) / rate
    audio = NOISE_RMS * rng.standard_normal(n_samples)
    a, b = plan.start_s * rate, plan.end_s * rate
    seg = sound(class_sound(plan.label, cfg.resolved.shared_sounds), t_audio[a:b] - plan.start_s, rng, rate)
    fade = np.ones(b - a)
    nf = min(int(0.01 * rate), (b - a) // 2)
    fade[:nf] = np.linspace(0, 1, nf)
    fade[-nf:] = np.linspace(1, 0, nf)
    audio[a:b] += plan.amplitude * seg * fade
    return audio


def render_media(cfg: SyntheticSource, plan: ClipPlan) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """(frames, audio) of one clip: uint8 (height, width, 3) RGB frames, lazily, and float32 mono audio.

    Distractors are drawn first, the sounding object over them (unless off-screen in that
    second), the occluder over everything.
    """
    p = cfg.resolved
    rng = np.random.default_rng(plan.seed)
    background = make_background(p.background, rng, p.height, p.width)
    objects = (*plan.distractors, plan.event)
    sprites = [sprite(CLASS_CATALOG[obj.cls], obj.size) for obj in objects]
    audio = _audio(cfg, plan, rng)
    occ = plan.occluder

    def frames() -> Iterator[np.ndarray]:
        for i in range(cfg.duration_s * p.fps):
            t = i / p.fps
            frame = background(t)
            for obj, (mask, rgb) in zip(objects, sprites):
                if obj is plan.event and int(t) in plan.hidden_segments:
                    continue
                _paste(frame, mask, rgb, *object_xy(obj, t, p.width, p.height))
            if occ is not None:
                left = int(round(occluder_x(occ, t)))
                frame[:, max(0, left) : max(0, min(p.width, left + occ.width))] = occ.colour
            yield frame

    return frames(), audio.astype(np.float32)


def render_clip(cfg: SyntheticSource, plan: ClipPlan, path: Path) -> None:
    """Render and encode one clip to ``path`` (atomically)."""
    p = cfg.resolved
    frames, audio = render_media(cfg, plan)
    with atomic_path(path) as tmp:
        with Mp4Writer(tmp, p.width, p.height, p.fps, audio_rate=p.audio_rate, crf=cfg.crf) as writer:
            for frame in frames:
                writer.write_frame(frame)
            writer.write_audio(audio)
