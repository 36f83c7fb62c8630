"""The explanation output: one model, :class:`ExplanationResult`, and the one function pair that writes and reads it.

``explain`` writes into its output folder

    explanation_grid.png   (:data:`GRID_PNG`) the sampled frames with α_t over each
    temporal_attention.png (:data:`BETA_PNG`) β^a and β^v over time
    explanation.json       (:data:`JSON_NAME`) this model: class, probability, top-k, segment
                           times, mask, β^a, β^v and α (T×H×W)
    explanation.mp4        (:data:`MP4_NAME`, optional) the overlaid frames with the clip's audio

:func:`write_explanation` / :func:`read_explanation` are the only code that touches
``explanation.json``; the flow's result and the ``--json`` output are the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipelines.atomic import atomic_write_text
from stan_head.models import HeadName

__all__ = ["BETA_PNG", "GRID_PNG", "JSON_NAME", "MP4_NAME", "ClassScore", "ExplanationResult",
           "read_explanation", "write_explanation"]

GRID_PNG = "explanation_grid.png"
BETA_PNG = "temporal_attention.png"
JSON_NAME = "explanation.json"
MP4_NAME = "explanation.mp4"


class ClassScore(BaseModel):
    """One class and its softmax probability."""

    model_config = ConfigDict(extra="forbid")

    label: str
    index: int
    probability: float


class ExplanationResult(BaseModel):
    """A head's prediction on one video with its where (α) and when (β^a, β^v) evidence, and the files written.

    Lists are per segment (T); ``alpha`` is (T, H, W) on the feature grid, summing to 1 per segment.
    """

    model_config = ConfigDict(extra="forbid")

    video: Path
    run_dir: Path
    model: HeadName
    store_id: str
    predicted_class: str
    predicted_index: int
    probability: float
    top_k: list[ClassScore]
    segment_s: float
    segment_start_s: list[float]
    segment_mask: list[bool]
    has_audio: bool
    beta_a: list[float]
    beta_v: list[float]
    alpha: list[list[list[float]]]
    files: dict[str, Path]

    def summary_line(self) -> str:
        """One line for the command line: class, probability and where the files went."""
        peak_a = int(np.argmax(self.beta_a)) if self.beta_a else -1
        peak_v = int(np.argmax(self.beta_v)) if self.beta_v else -1
        return (
            f"{self.video.name}: {self.predicted_class} (p={self.probability:.3f}); "
            f"β^a peaks at segment {peak_a}, β^v at segment {peak_v}; files in {self.files[JSON_NAME].parent}"
        )


def write_explanation(result: ExplanationResult) -> Path:
    """Write ``result`` to its ``files[JSON_NAME]`` atomically; returns that path."""
    path = Path(result.files[JSON_NAME])
    return atomic_write_text(path, result.model_dump_json(indent=1) + "\n")


def read_explanation(path: Path) -> ExplanationResult:
    """Read an ``explanation.json`` (or the folder holding one) back into the model."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    return ExplanationResult.model_validate_json(path.read_text(encoding="utf-8"))
