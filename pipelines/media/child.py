"""The decord child process: ``python -m pipelines.media.child``.

decord can hang or crash on broken files (dmlc/decord issue 373), so every call that opens a
file with decord runs here, in a fresh interpreter that the parent
(:class:`pipelines.media.decoder.ClipDecoder`) can kill. The child answers probe and decode
requests as :mod:`pipelines.media.protocol` describes until its stdin closes; it reports each
failure to the parent and stays alive.
"""

from __future__ import annotations

import os
import traceback
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pipelines.lifetime import exit_with_parent
from pipelines.media.protocol import (
    DECODE,
    ERR,
    OK,
    PROBE,
    THREADS_ENV,
    ClipLayout,
    DecodeHeader,
    MediaInfo,
    attach_shared,
)
from pipelines.segments import SegmentSpec, audio_bounds, frame_times, segment_mask

__all__ = ["probe_file", "probe_audio", "decode_into", "serve", "main", "PROBE_AUDIO_S"]


def _open_audio(path: str, rate: int) -> np.ndarray | None:
    """The whole audio track resampled to ``rate`` Hz mono, float32 (n,); None without audio.

    decord's ``AudioReader`` decodes and resamples the track when it opens and keeps the samples
    as a numpy array (channels, n); ``ar[:]`` would copy them through a Python list of n indices
    and a fancy-index (about 18 ms of a 10-s clip's 31 ms, docs/BENCHMARKS.md), so the array is
    read directly: the same values (tests/pipelines/test_media_decode_path.py checks them against ``ar[:]``).
    """
    import decord

    try:
        ar = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=rate, mono=True)
    except decord.DECORDError:  # no audio stream
        return None
    samples = getattr(ar, "_array", None)   # decord 0.6's decoded samples; another version: its public ar[:]
    if not isinstance(samples, np.ndarray):
        samples = ar[:].asnumpy()
    return np.ascontiguousarray(samples.reshape(-1), dtype=np.float32)


#: seconds of audio a probe decodes to check that the track decodes (never the whole track)
PROBE_AUDIO_S = 1.0


def probe_audio(path: str, window_s: float = PROBE_AUDIO_S) -> tuple[int | None, float | None, float]:
    """The first audio stream's native rate and duration from the container's header, checked by
    decoding its first ``window_s`` seconds only (PyAV); (None, None, 0.0) without a decodable one.

    Returns (native rate in Hz, duration in seconds, seconds of audio decoded). The duration is
    the stream's (or, when the stream gives none, the container's); a long video costs the same
    as a short one here.
    """
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return None, None, 0.0
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0) or None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = None
            decoded = 0.0
            for frame in container.decode(stream):
                decoded += frame.samples / float(frame.sample_rate or rate or 1)
                if decoded >= window_s:
                    break
    except (av.error.FFmpegError, OSError, ValueError):   # an undecodable audio track counts as none
        return None, None, 0.0
    if decoded == 0.0:
        return None, None, 0.0
    return rate, duration, decoded


def _video_times(vr: Any) -> tuple[np.ndarray, float, float]:
    """Frame start times (n,), the duration (end of last frame) and the average fps."""
    n = len(vr)
    fps = float(vr.get_avg_fps())
    ts = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64).reshape(n, 2)
    starts = ts[:, 0]
    duration = float(ts[-1, 1]) if n else 0.0
    if not np.isfinite(duration) or duration <= 0 or not np.all(np.diff(starts) >= 0):
        starts = np.arange(n, dtype=np.float64) / fps
        duration = n / fps
    return starts, duration, fps


def probe_file(path: str, num_threads: int, audio_rate: int) -> MediaInfo:
    """Open ``path`` with decord and decode its first and last frame (a truncated stream fails there);
    the audio track's header and first second (:func:`probe_audio`). Reads the same few frames and
    one second of audio whatever the file's length. ``audio_rate`` is unused (kept for the protocol)."""
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    n = len(vr)
    if n == 0:
        raise RuntimeError("no video frames")
    _, duration, fps = _video_times(vr)
    first = vr[0].asnumpy()
    vr.get_batch([n - 1]).asnumpy()
    rate, audio_duration, _ = probe_audio(path)
    has_audio = rate is not None
    return MediaInfo(
        duration_s=round(duration, 6),
        fps=round(fps, 6),
        num_frames=int(n),
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        has_audio=has_audio,
        audio_sample_rate=rate,
        audio_duration_s=round(audio_duration, 6) if audio_duration is not None else None,
    )


def decode_into(path: str, spec: SegmentSpec, num_threads: int, buf: memoryview) -> DecodeHeader:
    """Decode ``path`` into ``buf`` laid out as ``ClipLayout.for_spec(spec)``; return the reply header."""
    import decord

    s = spec.frame_size
    frames, seg_audio = ClipLayout.for_spec(spec).views(buf)
    vr = decord.VideoReader(path, ctx=decord.cpu(0), width=s, height=s, num_threads=num_threads)
    n = len(vr)
    if n == 0:
        raise RuntimeError("no video frames")
    starts, duration, _fps = _video_times(vr)
    mask = segment_mask(spec, duration)
    idx = np.searchsorted(starts, frame_times(spec), side="right") - 1  # (T, F) frame shown at each time
    idx = np.clip(idx, 0, n - 1)
    frames[~mask] = 0
    if mask.any():
        wanted = np.unique(idx[mask])
        batch = vr.get_batch(wanted.tolist()).asnumpy()
        frames[mask] = batch[np.searchsorted(wanted, idx[mask])]
    audio = _open_audio(path, spec.audio_rate)
    seg_audio[:] = 0.0
    if audio is not None:
        for t, (a, b) in enumerate(audio_bounds(spec)):
            if not mask[t] or a >= len(audio):
                continue
            chunk = audio[a:b]
            seg_audio[t, : len(chunk)] = chunk
        np.clip(seg_audio, -1.0, 1.0, out=seg_audio)
    return {"duration_s": duration, "has_audio": audio is not None, "mask": mask.tolist()}


def serve(rx: Connection, tx: Connection, num_threads: int) -> None:
    """Answer requests from ``rx`` on ``tx`` until ``rx`` closes (see :mod:`pipelines.media.protocol`)."""
    shm: shared_memory.SharedMemory | None = None
    while True:
        try:
            op, path, arg = rx.recv()
        except (EOFError, OSError):
            return
        try:
            if op == PROBE:
                tx.send((OK, probe_file(path, num_threads, int(arg)).model_dump()))
            elif op == DECODE:
                spec_dict, block_name = arg
                if shm is None or shm.name != block_name:
                    if shm is not None:
                        shm.close()
                    shm = attach_shared(block_name)
                tx.send((OK, decode_into(path, SegmentSpec(**spec_dict), num_threads, shm.buf)))
            else:
                tx.send((ERR, f"unknown op {op!r}"))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, the child stays alive
            text = f"{type(exc).__name__}: {exc}"
            if not str(exc):
                text += "\n" + traceback.format_exc(limit=3)
            tx.send((ERR, text))


def main() -> None:
    """Entry of ``python -m pipelines.media.child``: the protocol runs on the original stdin/stdout.

    Stray writes to stdout by native libraries would corrupt the protocol, so the protocol gets
    its own duplicate of fd 1 and fd 1 is pointed at stderr. The process ends itself when the
    parent that started it dies (:data:`pipelines.lifetime.PARENT_PID_ENV`), even mid-decode: a
    closed stdin is only noticed between requests.
    """
    exit_with_parent()
    proto_out = os.dup(1)
    os.dup2(2, 1)
    num_threads = int(os.environ.get(THREADS_ENV, "1"))
    serve(Connection(0, writable=False), Connection(proto_out, readable=False), num_threads)


if __name__ == "__main__":
    main()
