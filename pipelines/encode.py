"""Writing h264 + AAC mp4 files with PyAV (no ffmpeg binary needed), byte-identical on every x86-64 CPU.

Used by the synthetic generator, by the explain command's mp4 and by the youtube-csv source
to cut a window out of a downloaded video. The same frames and samples give the same bytes on
any x86-64 machine, with or without AVX-512, because nothing on the encode path picks code by
the CPU it runs on:

- colour conversion (RGB → yuv420p, BT.601 limited range, 2×2 chroma mean) is integer numpy
  here, not swscale;
- libx264 runs its portable C path (``asm=0``): its AVX-512 kernels in the libx264 that PyAV's
  wheel bundles are not deterministic (the same frames gave 4 different files in 4 encodes on an
  AVX-512 EPYC), and its SSE/AVX2 kernels give other bytes than each other;
- FFmpeg's own SIMD (the AAC encoder's MDCT and float DSP) is switched off while the encoders
  open (:func:`portable_ffmpeg_cpu`), so the AAC encoder runs FFmpeg's C code;
- one thread everywhere, and the muxer in bitexact mode (no version strings or creation times).

:data:`ENCODER_SETTING` names this setting; synthetic datasets record it (with the library
versions) in their card and in ``manifest.parquet``'s metadata, so a change of setting changes
the dataset fingerprint on purpose.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["Mp4Writer", "ENCODER_SETTING", "encoder_identity", "rgb_to_yuv420p", "portable_ffmpeg_cpu", "cut_clip"]

log = logging.getLogger(__name__)

#: The one encoder setting every mp4 this project writes uses. Change it only on purpose: it
#: enters synthetic datasets' fingerprints, and the golden test's hashes must be re-recorded.
ENCODER_SETTING = "libx264 asm=0 threads=1; aac ffmpeg-cpuflags=0 threads=1; rgb->yuv420p bt601-limited numpy; mp4 bitexact"
_X264_PARAMS = "threads=1:sliced-threads=0:asm=0"

_cpu_lock = threading.Lock()


def encoder_identity() -> dict[str, str]:
    """The setting plus the library versions that produce the bytes (for dataset cards)."""
    return {"setting": ENCODER_SETTING, "pyav": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}


@functools.lru_cache(maxsize=1)
def _pyav_libavutil() -> ctypes.CDLL:
    """The libavutil that PyAV itself loaded (not decord's own copy), found in this process's maps once."""
    av_dir = Path(av.__file__).resolve().parent.parent
    with open("/proc/self/maps", encoding="utf-8") as fh:
        paths = sorted(set(re.findall(r"(/\S*libavutil\S*\.so\S*)", fh.read())))
    ours = [p for p in paths if "decord" not in p] or paths
    preferred = [p for p in ours if Path(p).resolve().is_relative_to(av_dir)] or ours
    if not preferred:
        raise RuntimeError("cannot find PyAV's libavutil in this process; the encoder cannot switch FFmpeg's SIMD off")
    return ctypes.CDLL(preferred[0])


@contextmanager
def portable_ffmpeg_cpu() -> Iterator[None]:
    """FFmpeg's SIMD off while encoders are opened inside the block (they pick their kernels at open).

    The CPU flags are process-wide in FFmpeg; they are restored when the block ends, so only codecs
    opened inside it (by any thread, at a cost in speed, never in correctness) run the C code.
    """
    lib = _pyav_libavutil()
    lib.av_get_cpu_flags.restype = ctypes.c_int
    lib.av_force_cpu_flags.argtypes = [ctypes.c_int]
    with _cpu_lock:
        before = lib.av_get_cpu_flags()
        lib.av_force_cpu_flags(0)
        try:
            yield
        finally:
            lib.av_force_cpu_flags(before)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB → uint8 (H·3/2, W) planar yuv420p, BT.601 limited range, in integer arithmetic.

    Chroma is computed from the rounded mean RGB of each 2×2 block. H and W must be even.
    """
    h, w = rgb.shape[:2]
    x = rgb.astype(np.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    m = (x.reshape(h // 2, 2, w // 2, 2, 3).sum(axis=(1, 3)) + 2) >> 2
    r2, g2, b2 = m[..., 0], m[..., 1], m[..., 2]
    u = ((-38 * r2 - 74 * g2 + 112 * b2 + 128) >> 8) + 128
    v = ((112 * r2 - 94 * g2 - 18 * b2 + 128) >> 8) + 128
    planes = [np.clip(p, 0, 255).astype(np.uint8).ravel() for p in (y, u, v)]
    return np.concatenate(planes).reshape(h * 3 // 2, w)  # any even H, not only multiples of 4


class Mp4Writer:
    """Stream RGB frames and mono float audio into an h264 + AAC mp4, with :data:`ENCODER_SETTING`.

    Args:
        path: output file (written directly; wrap in :func:`pipelines.atomic.atomic_path`).
        width, height: frame size in pixels (even numbers).
        fps: frames per second (constant frame rate).
        audio_rate: audio sample rate in Hz, or None for a video without an audio track.
        audio_layout: the audio channel layout (FFmpeg's name: "mono", "stereo", "5.1", ...).
        crf: x264 constant rate factor (lower = better quality, bigger file).
        preset: x264 preset.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float | Fraction,
                 audio_rate: int | None = 16000, crf: int = 23, preset: str = "veryfast",
                 audio_layout: str = "mono") -> None:
        if width % 2 or height % 2:
            raise ValueError(f"h264 needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self._size = (height, width)
        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"fflags": "+bitexact"})
        self._container.metadata.clear()
        rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        vs = self._container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"preset": preset, "crf": str(crf), "threads": "1", "x264-params": _X264_PARAMS}
        self._video = vs
        self._audio = None
        self._audio_rate = audio_rate
        self._audio_pts = 0
        if audio_rate:
            a = self._container.add_stream("aac", rate=int(audio_rate))
            a.layout = audio_layout
            a.codec_context.thread_count = 1
            self._audio = a
        with portable_ffmpeg_cpu():
            self._container.start_encoding()  # opens both encoders now, with FFmpeg's SIMD off
        self._frames = 0

    def write_frame(self, rgb: np.ndarray) -> None:
        """Append one frame: uint8 (height, width, 3) RGB."""
        rgb = np.asarray(rgb, dtype=np.uint8)
        if rgb.shape != (*self._size, 3):
            raise ValueError(f"{self.path}: frame of shape {rgb.shape}, expected {(*self._size, 3)}")
        frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
        frame.pts = self._frames
        self._frames += 1
        for packet in self._video.encode(frame):
            self._container.mux(packet)
    def write_audio(self, samples: np.ndarray) -> None:
        """Append audio: float32 (n,) mono or (channels, n) planar, in [-1, 1] at ``audio_rate``."""
        if self._audio is None:
            raise ValueError(f"{self.path}: this writer has no audio track")
        layout = self._audio.layout
        data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0).reshape(layout.nb_channels, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout.name)
        frame.sample_rate = int(self._audio_rate)  # type: ignore[arg-type]
        frame.pts = self._audio_pts
        frame.time_base = Fraction(1, int(self._audio_rate))  # type: ignore[arg-type]
        self._audio_pts += data.shape[1]
        for packet in self._audio.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            for packet in self._audio.encode(None):
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.close()
        else:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("closing %s after an error failed", self.path, exc_info=True)


def cut_clip(src: Path, dst: Path, start_s: float, duration_s: float, crf: int = 20) -> None:
    """Re-encode the window [start_s, start_s + duration_s) of ``src`` into ``dst`` (h264 + AAC mp4).

    Video keeps its frame size (rounded down to even) and average frame rate; audio is mixed
    to mono at its native rate. ``dst`` is written directly (wrap it in
    :func:`pipelines.atomic.atomic_path`). Raises ValueError when the window holds no video frame.
    """
    end_s = start_s + duration_s
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise ValueError(f"{src} has no video stream")
        vstream = inp.streams.video[0]
        astream = inp.streams.audio[0] if inp.streams.audio else None
        fps = vstream.average_rate or vstream.guessed_rate or Fraction(25)
        width = (vstream.codec_context.width // 2) * 2
        height = (vstream.codec_context.height // 2) * 2
        rate = int(astream.rate) if astream is not None else None
        if start_s > 0:
            inp.seek(int(start_s * 1_000_000), any_frame=False, backward=True)  # AV_TIME_BASE units
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate) if rate else None
        audio_parts: list[np.ndarray] = []
        n_frames = 0
        video_done = False
        audio_done = astream is None
        with Mp4Writer(dst, width, height, fps, audio_rate=rate, crf=crf) as writer:
            streams = [vstream] + ([astream] if astream is not None else [])
            for frame in inp.decode(*streams):
                t = frame.time
                if t is None:
                    continue
                if isinstance(frame, av.VideoFrame):
                    if t >= end_s:
                        video_done = True
                    elif t >= start_s:
                        writer.write_frame(frame.to_ndarray(format="rgb24", width=width, height=height))
                        n_frames += 1
                else:
                    n = frame.samples
                    if t >= end_s:
                        audio_done = True
                    elif t + n / rate > start_s:  # type: ignore[operator]
                        mono = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)])  # type: ignore[union-attr]
                        first = max(0, int(round((start_s - t) * rate)))  # type: ignore[operator]
                        last = min(len(mono), int(round((end_s - t) * rate)))  # type: ignore[operator]
                        if last > first:
                            audio_parts.append(mono[first:last])
                if video_done and audio_done:
                    break
            if n_frames == 0:
                raise ValueError(f"{src}: no video frame in [{start_s}, {end_s}) s (the video is {float(inp.duration or 0) / 1e6:.1f} s)")
            if rate and audio_parts:
                writer.write_audio(np.concatenate(audio_parts))
