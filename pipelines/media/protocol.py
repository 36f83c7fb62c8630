"""The one protocol between :class:`~pipelines.media.decoder.ClipDecoder` and its decord child.

The parent starts ``python -m`` :data:`CHILD_MODULE` with :data:`THREADS_ENV` set to the number
of decord threads. The child reads requests on its stdin and answers on its stdout, both as
:class:`multiprocessing.connection.Connection` messages (pickled tuples, length-prefixed):

====================================================  =============================================
request (parent → child)                              reply (child → parent)
====================================================  =============================================
``(PROBE, path, audio_rate)``                         ``(OK, MediaInfo fields as a dict)``
``(DECODE, path, (spec.model_dump(), block_name))``   ``(OK, DecodeHeader)``; frames and audio are in
                                                      the block, laid out as :class:`ClipLayout`
====================================================  =============================================

Any failure is ``(ERR, "<ExceptionType>: <message>")`` and the child stays alive for the next
request; :func:`pipelines.media.diagnose.diagnose` turns that text into an error. Closing the
child's stdin ends it.

Decoded clips travel through a shared-memory block, not the pipe: the parent creates the block
(:class:`multiprocessing.shared_memory.SharedMemory`, so Python's resource tracker removes it
even when the parent is killed), names it in each decode request and reuses it while it is big
enough; the child attaches with :func:`attach_shared` and never unlinks it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipelines.segments import SegmentSpec

__all__ = [
    "CHILD_MODULE",
    "THREADS_ENV",
    "PROBE",
    "DECODE",
    "OK",
    "ERR",
    "Request",
    "Reply",
    "MediaInfo",
    "DecodeHeader",
    "ClipLayout",
    "attach_shared",
]

CHILD_MODULE = "pipelines.media.child"  # run as ``python -m CHILD_MODULE``
THREADS_ENV = "WHEREWHEN_DECORD_THREADS"  # decord threads inside the child (default 1)

PROBE = "probe"
DECODE = "decode"
OK = "ok"
ERR = "err"

Request = tuple[str, str, Any]  # (op, path, argument)
Reply = tuple[str, Any]  # (OK, payload) or (ERR, text)


class MediaInfo(BaseModel):
    """What a probe learns about a video file (the payload of a probe reply).

    Attributes:
        duration_s: seconds of video (end time of the last frame).
        fps: average frames per second.
        num_frames: frames in the video stream.
        width, height: frame size in pixels of the original video.
        has_audio: whether decord found and decoded an audio stream.
        audio_sample_rate: the audio stream's native rate in Hz (None without audio).
        audio_duration_s: seconds of audio (None without audio).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool
    audio_sample_rate: int | None = None
    audio_duration_s: float | None = None


class DecodeHeader(TypedDict):
    """The payload of a decode reply: what is not in the shared block."""

    duration_s: float  # seconds of video in the file
    has_audio: bool
    mask: list[bool]  # (T,) True where the segment's centre lies inside the clip


@dataclass(frozen=True)
class ClipLayout:
    """How one decoded clip lies in a shared-memory block: frames first, then audio.

    Attributes:
        frames_shape: (T, F, S, S, 3), uint8 RGB.
        audio_shape: (T, samples_per_segment), float32 mono.
    """

    frames_shape: tuple[int, int, int, int, int]
    audio_shape: tuple[int, int]

    @classmethod
    def for_spec(cls, spec: SegmentSpec) -> ClipLayout:
        """The layout of a clip decoded with ``spec``."""
        s = spec.frame_size
        return cls((spec.num_segments, spec.frames_per_segment, s, s, 3), (spec.num_segments, spec.samples_per_segment))

    @property
    def frames_bytes(self) -> int:
        """Bytes of the frames array (where the audio array starts)."""
        return int(np.prod(self.frames_shape))

    @property
    def nbytes(self) -> int:
        """Bytes a block needs at least to hold the clip."""
        return self.frames_bytes + 4 * int(np.prod(self.audio_shape))

    def views(self, buf: memoryview) -> tuple[np.ndarray, np.ndarray]:
        """(frames, audio) arrays over ``buf`` (no copy); ``buf`` must hold :attr:`nbytes`."""
        frames = np.ndarray(self.frames_shape, dtype=np.uint8, buffer=buf, offset=0)
        audio = np.ndarray(self.audio_shape, dtype=np.float32, buffer=buf, offset=self.frames_bytes)
        return frames, audio


def attach_shared(name: str) -> shared_memory.SharedMemory:
    """Attach to the parent's block without adopting it: only the parent may unlink it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    from multiprocessing import resource_tracker

    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    return shm
