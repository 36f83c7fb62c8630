"""AVE (Tian et al., ECCV 2018): ``Annotations.txt`` + ``*_order.h5`` splits + the video archive.

``Annotations.txt`` lines are ``Category&YouTubeID&Quality&Start&End`` (an optional header
line starting ``Category&``, UTF-8 with or without BOM, LF or CRLF). ``train_order.h5`` /
``val_order.h5`` / ``test_order.h5`` hold int64 row indices into the annotation list under the
key ``order``. Classes are ordered by first appearance in the file, which is the label index
order of AVE's released ``labels.h5`` / ``mil_labels.h5``.

The videos (``AVE/<youtube_id>.mp4``) come from an archive downloaded from a configurable URL
(optionally sha256-checked) and extracted safely, or from an existing folder. A few YouTube
ids appear on several annotation lines (different events in one video), so clip ids are
``<row:04d>_<youtube_id>`` — unique, and sorting them gives the annotation order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from pipelines.archive import extract_archive
from pipelines.atomic import atomic_write_text
from pipelines.download import download
from pipelines.runtime import file_sha256
from pipelines.manifest import FailureRecord
from pipelines.sources.base import Candidate, Collected, is_hidden, media_root_for_card

__all__ = ["AVESource", "AVERow", "parse_annotations", "read_splits", "collect_ave", "ave_classes"]

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


class AVESource(BaseModel):
    """Configuration of the AVE source.

    Attributes:
        annotations: path of ``Annotations.txt``.
        splits_dir: folder with ``train_order.h5``/``val_order.h5``/``test_order.h5`` (default: beside annotations).
        archive_url: URL of the video archive (zip or tar); required unless ``videos_dir`` is given.
        archive_sha256: expected sha256 of the archive, or None.
        videos_dir: a folder that already holds the videos (searched recursively for ``<youtube_id>.<ext>``).
        name: dataset name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ave"] = "ave"
    annotations: Path
    splits_dir: Path | None = None
    archive_url: str | None = None
    archive_sha256: str | None = None
    videos_dir: Path | None = None
    name: str = "AVE"


@dataclass(frozen=True)
class AVERow:
    """One line of Annotations.txt. Times in whole seconds of the 10-s clip."""

    row: int
    category: str
    youtube_id: str
    quality: str
    start_s: float
    end_s: float

    @property
    def clip_id(self) -> str:
        return f"{self.row:04d}_{self.youtube_id}"


def parse_annotations(path: Path) -> list[AVERow]:
    """Parse AVE's Annotations.txt; raise ValueError naming the line on a malformed one."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows: list[AVERow] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split("&")
        if parts[0].strip().lower() == "category":
            continue  # header line
        if len(parts) != 5:
            raise ValueError(f"{path} line {line_no}: expected Category&YouTubeID&Quality&Start&End, got {line!r}")
        try:
            start, end = float(parts[3]), float(parts[4])
        except ValueError:
            raise ValueError(f"{path} line {line_no}: Start/End must be numbers, got {parts[3]!r}/{parts[4]!r}") from None
        rows.append(AVERow(len(rows), parts[0].strip(), parts[1].strip(), parts[2].strip(), start, end))
    return rows


def ave_classes(rows: list[AVERow]) -> list[str]:
    """Class names in order of first appearance (AVE's label index order)."""
    return list(dict.fromkeys(r.category for r in rows))


def read_splits(splits_dir: Path, n_rows: int) -> dict[int, str]:
    """{row: split} from ``<split>_order.h5`` (key ``order``). Raises ValueError on overlaps or bad indices."""
    import h5py

    out: dict[int, str] = {}
    for split in ("train", "val", "test"):
        path = Path(splits_dir) / f"{split}_order.h5"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: AVE's split files train_order.h5/val_order.h5/test_order.h5 are needed")
        with h5py.File(path, "r") as fh:
            if "order" not in fh:
                raise ValueError(f"{path}: no dataset 'order' (found {list(fh.keys())})")
            order = fh["order"][()].reshape(-1)
        for idx in order.tolist():
            if not 0 <= idx < n_rows:
                raise ValueError(f"{path}: row index {idx} outside the {n_rows} annotation lines")
            if idx in out:
                raise ValueError(f"{path}: row {idx} is already in the {out[idx]} split")
            out[int(idx)] = split
    return out


def _archive_name(url: str) -> str:
    name = Path(urlparse(url).path).name
    return name or "ave-archive"


def _obtain_videos(cfg: AVESource, out_dir: Path) -> Path:
    """Download + extract the archive (once) and return the folder holding the videos."""
    if cfg.videos_dir is not None:
        return Path(cfg.videos_dir).resolve()
    if not cfg.archive_url:
        raise ValueError("the AVE source needs archive_url (the video archive) or videos_dir (already extracted videos)")
    archive = download(cfg.archive_url, out_dir / "downloads" / _archive_name(cfg.archive_url), sha256=cfg.archive_sha256)
    media = out_dir / "media"
    digest = file_sha256(archive)
    marker = media / ".extracted"
    if not (marker.is_file() and marker.read_text().strip() == digest):
        extract_archive(archive, media)
        atomic_write_text(marker, digest + "\n")
    return media.resolve()


def collect_ave(cfg: AVESource, out_dir: Path, workers: int = 1) -> Collected:
    """AVE rows → candidates; rows whose video is not in the archive become failures (stage ``locate``)."""
    rows = parse_annotations(cfg.annotations)
    splits = read_splits(cfg.splits_dir or Path(cfg.annotations).parent, len(rows))
    media = _obtain_videos(cfg, Path(out_dir))
    found: dict[str, Path] = {}
    for p in sorted(media.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS and not is_hidden(p):
            found.setdefault(p.stem, p)
    col = Collected(source="ave", name=cfg.name, media_root=media, media_root_card=media_root_for_card(media, out_dir),
                    classes=ave_classes(rows), all_labels=[r.category for r in rows])
    where = cfg.archive_url or str(cfg.videos_dir)
    for r in rows:
        path = found.get(r.youtube_id)
        if path is None:
            col.failures.append(FailureRecord(
                clip_id=r.clip_id, relpath=f"AVE/{r.youtube_id}.mp4", stage="locate", error="missing_file",
                message=f"video {r.youtube_id}.mp4 (Annotations.txt row {r.row}) is not in {where}; "
                        "get a complete copy of the AVE archive or accept the missing clip"))
            continue
        col.candidates.append(Candidate(
            clip_id=r.clip_id, path=path, relpath=path.relative_to(media).as_posix(), label=r.category,
            split=splits.get(r.row, None), event_start_s=r.start_s, event_end_s=r.end_s))
    log.info("AVE: %d rows, %d videos found, %d missing", len(rows), len(col.candidates), len(col.failures))
    return col
