"""Writing h264 + AAC mp4 files with PyAV (no ffmpeg binary needed).

Used by the synthetic generator and by the youtube-csv source to cut a window out of a
downloaded video. Encoding is deterministic: libx264 with one thread and fixed options, and
the muxer in bitexact mode (no encoder version strings or creation times that vary), so the
same frames and samples give byte-identical files.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["Mp4Writer"]

log = logging.getLogger(__name__)


class Mp4Writer:
    """Stream RGB frames and mono float audio into an h264 + AAC mp4.

    Args:
        path: output file (written directly; wrap in :func:`pipelines.atomic.atomic_path`).
        width, height: frame size in pixels (even numbers).
        fps: frames per second (constant frame rate).
        audio_rate: audio sample rate in Hz, or None for a video without an audio track.
        crf: x264 constant rate factor (lower = better quality, bigger file).
        preset: x264 preset.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float | Fraction,
                 audio_rate: int | None = 16000, crf: int = 23, preset: str = "veryfast") -> None:
        if width % 2 or height % 2:
            raise ValueError(f"h264 needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"fflags": "+bitexact"})
        self._container.metadata.clear()
        rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        vs = self._container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"preset": preset, "crf": str(crf), "threads": "1", "x264-params": "threads=1:sliced-threads=0"}
        self._video = vs
        self._audio = None
        self._audio_rate = audio_rate
        self._audio_pts = 0
        if audio_rate:
            a = self._container.add_stream("aac", rate=int(audio_rate))
            a.layout = "mono"
            a.codec_context.thread_count = 1
            self._audio = a
        self._frames = 0

    def write_frame(self, rgb: np.ndarray) -> None:
        """Append one frame: uint8 (height, width, 3) RGB."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
        frame.pts = self._frames
        self._frames += 1
        for packet in self._video.encode(frame):
            self._container.mux(packet)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono audio: float32 (n,) in [-1, 1] at ``audio_rate``."""
        if self._audio is None:
            raise ValueError(f"{self.path}: this writer has no audio track")
        data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout="mono")
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
