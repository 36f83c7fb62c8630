"""The parent side of decoding: :class:`ClipDecoder` and the one-shot :func:`probe` / :func:`decode_clip`.

Every call that opens a file with decord runs in a child process (:mod:`pipelines.media.child`)
that this side can kill: decord can hang or crash on broken files. A :class:`ClipDecoder` keeps
one child alive across many clips; when a call times out or the child dies, the child is
killed, the call raises :class:`~pipelines.media.diagnose.MediaError` and the next call starts a
fresh child. Requests, replies and the shared-memory block that decoded clips come back through
are :mod:`pipelines.media.protocol`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import pipelines
from pipelines.lifetime import PARENT_PID_ENV
from pipelines.media.diagnose import MediaError, diagnose, explain, sniff_file
from pipelines.media.protocol import CHILD_MODULE, DECODE, OK, PROBE, THREADS_ENV, ClipLayout, DecodeHeader, MediaInfo
from pipelines.segments import SegmentSpec

__all__ = ["DecodedClip", "ClipDecoder", "probe", "decode_clip"]

log = logging.getLogger(__name__)


@dataclass
class DecodedClip:
    """One clip decoded into segments.

    Attributes:
        frames: uint8 (T, F, S, S, 3) RGB, resized by decord to S × S; padded segments are zeros.
        audio: float32 (T, segment_s * audio_rate) mono in [-1, 1]; silence without audio and in padding.
        segment_mask: bool (T,), True where the segment's centre lies inside the clip.
        has_audio: whether the file has an audio stream.
        duration_s: seconds of video in the file.
    """

    frames: np.ndarray
    audio: np.ndarray
    segment_mask: np.ndarray
    has_audio: bool
    duration_s: float

    def centre_frames(self) -> np.ndarray:
        """uint8 (T, S, S, 3): the middle sampled frame of each segment (the only one when F = 1), a view."""
        return self.frames[:, self.frames.shape[1] // 2]


#: extra seconds a probe or decode may take per MB of the file: decord decodes the whole audio
#: track on open (a 20-min 360p video, ~65 MB: 4.6 s of audio decoding on 2 cores) -> 0.5 s/MB
#: leaves ~7x headroom on a slow or loaded machine.
SECONDS_PER_MB = 0.5


class ClipDecoder:
    """A long-lived decord child process for probing and decoding many clips.

    Not thread-safe: use one ClipDecoder per thread. Use as a context manager or call
    :meth:`close`. A call waits at most ``timeout_s`` seconds plus ``seconds_per_mb`` for
    each MB of the file (decord decodes a file's whole audio track when it opens it, so a long
    good video takes longer than a short one); then the child is killed, :class:`MediaError`
    (``timeout``) is raised and the next call starts a new child.

    The child is a fresh interpreter (``python -m pipelines.media.child``, started with
    :class:`subprocess.Popen`: spawn semantics, nothing forked from a parent holding torch
    threads, and it works inside daemonic processes such as Dask workers, where
    :mod:`multiprocessing` may not start children). Requests and replies travel over its
    stdin/stdout; decoded clips come back through a shared-memory block this decoder owns
    (see :mod:`pipelines.media.protocol`). The child ends itself within a fraction of a second
    when this process dies, SIGKILL included (:func:`pipelines.lifetime.exit_with_parent`), also
    in the middle of a decode.

    Args:
        timeout_s: seconds one probe or decode of a small file may take (grown with the file's size).
        num_threads: decord decoding threads inside the child.
        seconds_per_mb: what the limit grows by per MB of the file.
    """

    def __init__(self, timeout_s: float = 60.0, num_threads: int = 1, seconds_per_mb: float = SECONDS_PER_MB) -> None:
        self.timeout_s = float(timeout_s)
        self.seconds_per_mb = float(seconds_per_mb)
        self.num_threads = int(num_threads)
        self._proc: subprocess.Popen[bytes] | None = None
        self._tx: Connection | None = None
        self._conn: Connection | None = None
        self._shm: shared_memory.SharedMemory | None = None   # decoded clips come back through it
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The decoder child's process id (None before the first call or after ``close``)."""
        return self._proc.pid if self._alive() else None  # type: ignore[union-attr]

    # lifecycle ------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        env = dict(os.environ)
        root = str(Path(pipelines.__file__).resolve().parents[1])  # so the child imports this very package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[THREADS_ENV] = str(self.num_threads)
        env[PARENT_PID_ENV] = str(os.getpid())   # the child ends itself when this process dies, even by SIGKILL
        env.setdefault("OMP_NUM_THREADS", "1")
        # set by Dask's nanny in worker processes; it freezes glibc's mmap threshold, which slows decoding
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        self._tx = Connection(os.dup(proc.stdin.fileno()), readable=False)
        self._conn = Connection(os.dup(proc.stdout.fileno()), writable=False)
        proc.stdin.close()
        proc.stdout.close()

    def _kill(self) -> None:
        for c in (self._tx, self._conn):
            if c is not None:
                try:
                    c.close()
                except OSError:
                    pass
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a kill -9 that does not end
                log.error("decoder process %d did not exit after SIGKILL", self._proc.pid)
        self._proc, self._tx, self._conn = None, None, None

    def _release_shared(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def _shared_block(self, nbytes: int) -> shared_memory.SharedMemory:
        """The shared-memory block decoded clips are written to, grown to at least ``nbytes``."""
        if self._shm is None or self._shm.size < nbytes:
            self._release_shared()
            self._shm = shared_memory.SharedMemory(create=True, size=max(1, nbytes))
        return self._shm

    def close(self) -> None:
        """Stop the child process (closing its stdin ends its loop; killed if it does not exit)."""
        if self._alive() and self._tx is not None:
            try:
                self._tx.close()
            except OSError:
                pass
            self._tx = None
            try:
                self._proc.wait(timeout=2)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._release_shared()

    def __enter__(self) -> "ClipDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self._kill()
            self._release_shared()
        except Exception:  # noqa: BLE001
            pass

    # calls ----------------------------------------------------------------------------------
    def timeout_for(self, path: Path) -> float:
        """Seconds a call on ``path`` may take: ``timeout_s`` plus ``seconds_per_mb`` per MB of the file."""
        try:
            size_mb = path.stat().st_size / 1e6
        except OSError:
            size_mb = 0.0
        return self.timeout_s + self.seconds_per_mb * size_mb

    def _recv(self, path: Path, what: str) -> tuple[str, Any]:
        """The child's next message; kills the child and raises MediaError on timeout or death."""
        assert self._conn is not None
        timeout_s = self.timeout_for(path)
        if not self._conn.poll(timeout_s):
            log.warning("%s: %s timed out after %.1f s; killing the decoder process", path, what, timeout_s)
            self._kill()
            self.restarts += 1
            raise explain(path, "timeout", timeout_s=timeout_s)
        try:
            return self._conn.recv()
        except (EOFError, OSError, ConnectionError) as exc:
            code = self._proc.poll() if self._proc is not None else None
            self._kill()
            self.restarts += 1
            raise explain(path, "crashed", f"exit code {code}: {type(exc).__name__}") from None

    def _call(self, op: str, path: Path, arg: Any, frame_size: int | None = None) -> Any:
        """Send one request (starting a child when none is alive) and return the payload of its reply."""
        sniff = sniff_file(path)
        if sniff is not None:
            raise explain(path, sniff)
        if not self._alive():
            if self._proc is not None:
                self._kill()
            self._start()
        assert self._tx is not None
        try:
            self._tx.send((op, str(path), arg))
        except (OSError, BrokenPipeError):
            self._kill()
            self._start()
            assert self._tx is not None
            self._tx.send((op, str(path), arg))
        status, payload = self._recv(path, op)
        if status != OK:
            raise diagnose(path, str(payload), frame_size)
        return payload

    def probe(self, path: str | os.PathLike[str], audio_rate: int = 16000) -> MediaInfo:
        """Open ``path`` with decord and return its :class:`MediaInfo`.

        Decodes the first and the last frame (a truncated stream fails there) and the first
        seconds of the audio track (:data:`pipelines.media.child.PROBE_AUDIO_S`). Raises :class:`MediaError` on any failure.
        """
        path = Path(path)
        return MediaInfo(**self._call(PROBE, path, int(audio_rate)))

    def decode(self, path: str | os.PathLike[str], spec: SegmentSpec) -> DecodedClip:
        """Decode ``path`` into ``spec.num_segments`` segments; see :class:`DecodedClip` for shapes.

        Frames are sampled at :func:`pipelines.segments.frame_times` (segment centres for F=1)
        and resized by decord to ``spec.frame_size`` squared. Segments whose centre is past the
        end of the clip are zeros and False in ``segment_mask``; a clip is never stretched.
        Raises :class:`MediaError` when the file cannot be decoded, ValueError when decord
        cannot resize to ``spec.frame_size`` (a decord bug at a few sizes, e.g. 16, 24, 48).
        """
        path = Path(path)
        layout = ClipLayout.for_spec(spec)
        shm = self._shared_block(layout.nbytes)
        header: DecodeHeader = self._call(DECODE, path, (spec.model_dump(), shm.name), spec.frame_size)
        frames, audio = layout.views(shm.buf)
        return DecodedClip(
            frames=frames.copy(),   # the block is reused by the next call
            audio=audio.copy(),
            segment_mask=np.asarray(header["mask"], dtype=bool),
            has_audio=bool(header["has_audio"]),
            duration_s=float(header["duration_s"]),
        )


def probe(path: str | os.PathLike[str], timeout_s: float = 30.0, audio_rate: int = 16000) -> MediaInfo:
    """Probe one file in a fresh child process (see :meth:`ClipDecoder.probe`)."""
    with ClipDecoder(timeout_s=timeout_s) as dec:
        return dec.probe(path, audio_rate=audio_rate)


def decode_clip(path: str | os.PathLike[str], spec: SegmentSpec, timeout_s: float = 60.0) -> DecodedClip:
    """Decode one file in a fresh child process (see :meth:`ClipDecoder.decode`).

    For many clips, keep a :class:`ClipDecoder` open instead: each call here starts an interpreter.
    """
    with ClipDecoder(timeout_s=timeout_s) as dec:
        return dec.decode(path, spec)
