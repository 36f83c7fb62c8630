"""What every source hands to :mod:`pipelines.build`: candidate clips in contract-1 terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.manifest import FailureRecord

__all__ = ["Candidate", "Collected", "BoxRow", "media_root_for_card", "is_hidden"]


@dataclass(frozen=True)
class BoxRow:
    """A box from boxes.csv: segment index and pixels of the original frame."""

    segment: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class Candidate:
    """One annotated video the build should probe.

    Attributes:
        clip_id: unique in the dataset, by the source's rule (folder: the annotation's video_id;
            AVE: :attr:`pipelines.sources.ave.AVERow.clip_id`; youtube-csv: ``<youtube_id>_<start:06d>``).
        path: absolute path of the video file.
        relpath: POSIX path relative to the dataset's media root.
        label: class name.
        split: train | val | test, or None to let the build assign a seeded stratified split.
        event_start_s, event_end_s: the event interval, or None for the whole clip.
    """

    clip_id: str
    path: Path
    relpath: str
    label: str
    split: str | None = None
    event_start_s: float | None = None
    event_end_s: float | None = None


@dataclass
class Collected:
    """A source's output: candidates, failures found before probing, boxes and classes.

    ``classes`` is the ordered class list when the source defines one (AVE, synthetic), else
    None and the build sorts the labels. ``media_root`` is absolute; ``media_root_card`` is what
    dataset.json records (relative to the dataset folder where possible).
    """

    source: str
    name: str
    media_root: Path
    media_root_card: str
    candidates: list[Candidate] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    boxes: dict[str, list[BoxRow]] = field(default_factory=dict)
    classes: list[str] | None = None
    all_labels: list[str] = field(default_factory=list)  # labels of every annotation row


def media_root_for_card(media_root: Path, out_dir: Path) -> str:
    """How dataset.json records ``media_root``: relative to ``out_dir`` when inside it, else absolute."""
    media_root, out_dir = Path(media_root).resolve(), Path(out_dir).resolve()
    try:
        rel = media_root.relative_to(out_dir)
    except ValueError:
        return str(media_root)
    return rel.as_posix() or "."


def is_hidden(path: Path) -> bool:
    """Temp files of atomic writes and dotfiles are never videos."""
    return path.name.startswith(".") or path.name.endswith((".part", ".tmp"))

