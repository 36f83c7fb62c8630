"""AVE (Tian et al., ECCV 2018): ``Annotations.txt`` + ``*_order.h5`` splits + the video archive.

This module is the one reader of AVE's annotation and split files; everything that needs AVE's
rows (the dataset build here, ``features.ave_interop``) calls it:

- ``parse_annotations(path) -> list[AVERow]``: the rows of ``Annotations.txt`` in file order.
  ``AVERow(row, category, youtube_id, quality, start_s, end_s)``; ``row`` is the 0-based index
  among the annotation lines (what the split files index), ``start_s``/``end_s`` the event in
  seconds of the 10-s clip. Raises ValueError naming the file, the line number and what is
  wrong for a malformed line; FileNotFoundError when the file is missing.
- ``AVERow.clip_id`` is THE clip id of an AVE clip: ``f"{row:04d}_{youtube_id}"``. A few
  YouTube ids label several lines (different events in one video; 45 in the released file), so
  the bare id is not unique; these ids are, and sorting them gives the annotation order.
- ``ave_classes(rows) -> list[str]``: class names in order of first appearance, which is the
  label index order of AVE's released ``labels.h5`` / ``mil_labels.h5``.
- ``read_splits(splits_dir, n_rows) -> dict[int, str]``: {row: "train" | "val" | "test"} from
  ``train_order.h5`` / ``val_order.h5`` / ``test_order.h5`` (int64 row indices under the key
  ``order``).

``Annotations.txt`` lines are ``Category&YouTubeID&Quality&Start&End``: UTF-8 with or without
BOM, LF or CRLF, blank lines ignored, an optional first line that is a header (its first field
is ``Category`` in any case). The videos (``AVE/<youtube_id>.mp4``) come from an archive
downloaded from a configurable URL (optionally sha256-checked) and extracted safely, or from an
existing folder (:func:`collect_ave`).
"""

from __future__ import annotations

import codecs
import logging
import math
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
    """One line of Annotations.txt. Times in seconds of the 10-s clip.

    Attributes:
        row: 0-based index among the annotation lines (header and blank lines not counted).
        category: the class name.
        youtube_id: the video's YouTube id (not unique: see :attr:`clip_id`).
        quality: AVE's quality flag (e.g. ``good``).
        start_s, end_s: the audio-visual event, 0 <= start_s <= end_s.
    """

    row: int
    category: str
    youtube_id: str
    quality: str
    start_s: float
    end_s: float

    @property
    def clip_id(self) -> str:
        """The clip's id everywhere in wherewhen: ``<row:04d>_<youtube_id>``."""
        return f"{self.row:04d}_{self.youtube_id}"


_FORMAT = "Category&YouTubeID&Quality&Start&End"


def _decode(path: Path, data: bytes) -> str:
    """The file's text (UTF-8, an optional BOM dropped); ValueError naming the line of bad bytes."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line_no}: not UTF-8 text ({exc.reason}); AVE's Annotations.txt is UTF-8") from None


def _parse_line(path: Path, line_no: int, line: str, row: int) -> AVERow:
    """One annotation line → AVERow; ValueError naming the file, the line and what is wrong."""
    where = f"{path} line {line_no}"
    parts = [p.strip() for p in line.split("&")]
    if len(parts) != 5:
        raise ValueError(f"{where}: expected 5 fields {_FORMAT}, got {len(parts)}: {line!r}")
    category, youtube_id, quality, start_text, end_text = parts
    for name, value in (("Category", category), ("YouTubeID", youtube_id)):
        if not value:
            raise ValueError(f"{where}: the {name} field is empty: {line!r}")
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        raise ValueError(f"{where}: Start/End must be numbers of seconds, got {start_text!r}/{end_text!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start <= end:
        raise ValueError(f"{where}: the event [{start_text}, {end_text}] must satisfy 0 <= Start <= End")
    return AVERow(row, category, youtube_id, quality, start, end)


def parse_annotations(path: Path) -> list[AVERow]:
    """Parse AVE's Annotations.txt into rows in file order (see the module docstring for the format).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a malformed line; the message names the file, the line number (1-based,
            counting every line of the file) and what is wrong.
    """
    path = Path(path)
    text = _decode(path, path.read_bytes())
    rows: list[AVERow] = []
    first = True
    for line_no, line in enumerate(text.split("\n"), start=1):  # LF or CRLF; the same numbers as an editor
        if not line.strip():
            continue
        if first and line.split("&", 1)[0].strip().lower() == "category":
            first = False
            continue  # the header line
        first = False
        rows.append(_parse_line(path, line_no, line.strip(), len(rows)))
    return rows


def ave_classes(rows: list[AVERow]) -> list[str]:
    """Class names in order of first appearance (AVE's label index order)."""
    return list(dict.fromkeys(r.category for r in rows))


def read_splits(splits_dir: Path, n_rows: int) -> dict[int, str]:
    """{row: split} from ``<split>_order.h5`` (split = train, val, test; int64 row indices under key ``order``).

    ``n_rows`` is the number of annotation rows the indices refer to. Rows in no file are absent
    from the result. Raises FileNotFoundError when one of the three files is missing, ValueError
    on an index outside ``[0, n_rows)`` or a row listed in two splits (naming the file).
    """
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


def collect_ave(cfg: AVESource, out_dir: Path) -> Collected:
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
