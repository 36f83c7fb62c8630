"""Segmentation of a clip into T fixed-length segments (AVE style: 10 × 1 s).

The segment sampler here is the one the decoder uses, so every package samples frames and
audio at the same times.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SegmentSpec", "frame_times", "segment_mask", "audio_bounds"]


class SegmentSpec(BaseModel):
    """How a clip is cut into segments and what the decoder returns per segment.

    Attributes:
        num_segments: T, number of segments from the clip start.
        segment_s: length of one segment in seconds.
        frames_per_segment: F frames per segment, evenly spaced inside it (1 = the centre frame).
        frame_size: S; decord resizes every frame to S × S pixels (448: a 14×14 map from a stride-32
            CNN, where STAN's α finds small objects that 320's 10×10 and 224's 7×7 blur into their
            surroundings; docs/DESIGN.md "Frame size").
        audio_rate: sample rate (Hz) of the mono audio returned per segment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_segments: int = Field(10, ge=1)
    segment_s: float = Field(1.0, gt=0)
    frames_per_segment: int = Field(1, ge=1)
    frame_size: int = Field(448, ge=8)
    audio_rate: int = Field(16000, ge=1000)

    @property
    def samples_per_segment(self) -> int:
        """Audio samples in one segment: round(segment_s * audio_rate)."""
        return int(round(self.segment_s * self.audio_rate))


def frame_times(spec: SegmentSpec) -> np.ndarray:
    """Sampling times in seconds, float64 (T, F).

    Frame f of segment t is taken at ``(t + (f + 0.5) / F) * segment_s``: the centre for
    F = 1, evenly inside the segment otherwise. Times never depend on the clip's length: a
    short clip is padded (:func:`segment_mask`), not stretched.
    """
    t = np.arange(spec.num_segments, dtype=np.float64)[:, None]
    f = (np.arange(spec.frames_per_segment, dtype=np.float64)[None, :] + 0.5) / spec.frames_per_segment
    return (t + f) * spec.segment_s


def segment_mask(spec: SegmentSpec, duration_s: float) -> np.ndarray:
    """Bool (T,): True where the segment's centre lies inside a clip of ``duration_s`` seconds.

    A segment whose centre is past the clip end is padding (zeros) in the decoded clip.
    """
    centres = (np.arange(spec.num_segments, dtype=np.float64) + 0.5) * spec.segment_s
    return centres < float(duration_s)


def audio_bounds(spec: SegmentSpec) -> np.ndarray:
    """Int64 (T, 2): [start, end) sample indices of each segment at ``spec.audio_rate``."""
    n = spec.samples_per_segment
    starts = np.arange(spec.num_segments, dtype=np.int64) * n
    return np.stack([starts, starts + n], axis=1)
