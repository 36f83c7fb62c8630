"""Realistic clips for bench/extract.py, generated reproducibly (same seed -> same frames and samples).

Web-like video: a textured scene panned by the camera, a moving object and film grain, h264 at
30 fps with x264's default GOP (keyint 250, scene-cut) through ``pipelines.encode.Mp4Writer``,
AAC 44.1 kHz stereo (a tone that comes and goes over noise). At 640x360 a 10-s clip is about
0.6 MB (~500 kbit/s), like a 360p web video. Written as a dataset folder the ``folder`` source
builds (videos/ + annotations.csv), so the bench measures the library on a real built dataset.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.encode import Mp4Writer

__all__ = ["render_clip", "write_web_dataset"]

AUDIO_RATE = 44100


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 (h, w, 3) scene in [0, 255]: coarse blocks of colour plus finer detail."""
    def blocks(cell: int) -> np.ndarray:
        small = rng.random((h // cell + 2, w // cell + 2, 3), dtype=np.float32)
        return np.kron(small, np.ones((cell, cell, 1), np.float32))[:h, :w]
    return (0.6 * blocks(max(8, w // 13)) + 0.4 * blocks(max(2, w // 80))) * 255.0


def render_clip(path: Path, seed: int, width: int, height: int, fps: int = 30, duration_s: int = 10) -> None:
    """Write one realistic clip to ``path`` (atomically)."""
    rng = np.random.default_rng(seed)
    tex = _texture(rng, height * 2, width * 2)
    n = fps * duration_s
    colour = rng.integers(0, 256, 3)
    side = height // 6
    with atomic_path(path) as tmp, Mp4Writer(tmp, width, height, fps, audio_rate=AUDIO_RATE,
                                             audio_layout="stereo") as writer:
        for i in range(n):
            y = int(height / 2 * (1 + np.sin(i / 90 + seed)) / 2)
            x = int(width * i / n)
            frame = tex[y:y + height, x:x + width].copy()
            cy = int(height / 2 + height / 3 * np.sin(i / 20 + seed))
            cx = int(width / 2 + width / 3 * np.cos(i / 27 + seed))
            frame[max(0, cy - side):cy + side, max(0, cx - side):cx + side] = colour
            frame += rng.normal(0.0, 4.0, frame.shape).astype(np.float32)
            writer.write_frame(np.clip(frame, 0, 255).astype(np.uint8))
        t = np.arange(AUDIO_RATE * duration_s) / AUDIO_RATE
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * (seed % 8)) * t) * (np.sin(t + seed) > 0)
        left = tone + 0.05 * rng.standard_normal(t.shape)
        writer.write_audio(np.stack([left, 0.8 * left]).astype(np.float32))


def _render(args: tuple[Path, int, int, int, int, int]) -> None:
    path, seed, width, height, fps, duration_s = args
    if not path.is_file():
        render_clip(path, seed, width, height, fps, duration_s)


def write_web_dataset(root: Path, clips: int, width: int, height: int, fps: int = 30, duration_s: int = 10,
                      classes: int = 4, workers: int = 1) -> Path:
    """``root``/videos/*.mp4 + annotations.csv for the folder source (clips already there are kept)."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    jobs = [(videos / f"web{i:04d}.mp4", i, width, height, fps, duration_s) for i in range(clips)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(_render, jobs)
    else:
        for job in jobs:
            _render(job)
    with atomic_path(root / "annotations.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["video_id", "label", "start_s", "end_s"])
        for i in range(clips):
            out.writerow([f"web{i:04d}", f"class{i % classes}", duration_s / 3, 2 * duration_s / 3])
    return root
