"""The synthetic classes: how each looks (shape, colour, texture) and how it sounds.

Class k is :data:`CLASS_CATALOG`\\ [k]. With ``shared_sounds`` the classes come in pairs
(0, 1), (2, 3), … that share one sound family, the sound of the pair's first member: the sound
then names the pair (:func:`sound_group`) and only the visible object names the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLASS_CATALOG", "GROUP_SIZE", "ObjectKind", "class_sound", "sound", "sound_group", "sprite"]


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

#: Classes per sound family when sounds are shared.
GROUP_SIZE = 2


def sound_group(label: int, shared_sounds: bool) -> int:
    """The sound family of class ``label``: the class itself, or its pair ``label // 2`` when shared."""
    return label // GROUP_SIZE if shared_sounds else label


def class_sound(label: int, shared_sounds: bool) -> str:
    """The sound of class ``label``: its own, or its pair's first member's when shared."""
    first = sound_group(label, shared_sounds) * GROUP_SIZE if shared_sounds else label
    return CLASS_CATALOG[first].sound


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


def sprite(kind: ObjectKind, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (n, n), rgb uint8 (n, n, 3)) of an object kind at side n."""
    mask = _shape_mask(kind.shape, n)
    rgb = (np.asarray(kind.colour, dtype=np.float64)[None, None, :] * _texture(kind.texture, n)[..., None])
    return mask, rgb.astype(np.uint8)


def sound(kind: str, t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Float (len(t),) unit-RMS waveform with the spectral signature of sound ``kind``."""
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
