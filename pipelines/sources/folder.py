"""Contract 1: a user's folder of videos with annotations.csv (and optional boxes.csv).

The videos stay where they are; the manifest refers to them relative to the folder, which
dataset.json records as the media root.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.manifest import FailureRecord
from pipelines.sources.base import BoxRow, Candidate, Collected, is_hidden, media_root_for_card

__all__ = ["FolderSource", "collect_folder", "read_annotations", "read_boxes", "normalise_split", "SPLITS",
           "SPLIT_ALIASES", "FOLDER_HELP"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Other spellings of a split name (any case) read as the split they mean (Hugging Face says "validation").
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "training": "train", "testing": "test"}

#: The folder format for people (``wherewhen dataset build folder --help`` shows it; so does the README).
FOLDER_HELP = """Your own videos: ROOT holds a videos folder, annotations.csv and optionally boxes.csv.
The videos stay where they are; the dataset folder (--out) refers to them.

\b
ROOT/
  videos/<video_id>.<ext>   any container decord reads (mp4, mkv, webm, avi, mov)
  annotations.csv           video_id,label[,split][,start_s,end_s]
  boxes.csv                 optional: video_id,segment,x0,y0,x1,y1 (pixels of the source frame)

\b
annotations.csv example:
  video_id,label,split,start_s,end_s
  dog_park,dog,train,2.0,5.5
  violin_01,violin,val,,
  street_03,car,,0,10

\b
split: train, val or test (validation/valid/dev count as val); empty = a
class-stratified split of --split-fractions, seeded by --split-seed.
start_s/end_s: the event in seconds; empty = the whole clip.
boxes.csv: segment is the 1-s segment index (0-based).
Every clip is read as 10 segments of 1 s from its start: a longer clip's tail
is not used (the build warns), a shorter one is padded and masked.
Bad rows and files never stop a build; they are listed in failures.parquet.
"""


class FolderSource(BaseModel):
    """A contract-1 folder: ``<root>/videos/<video_id>.<ext>``, ``annotations.csv``, ``boxes.csv``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"] = "folder"
    root: Path = Field(description="the folder holding videos/, annotations.csv and optionally boxes.csv")
    name: str | None = Field(None, description="the dataset's name (the store folder is named after it); "
                                               "None = the folder's name")
    videos_dir: str = Field("videos", description="the videos' subfolder of ROOT")


def _float_or_none(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def normalise_split(split: str | None) -> str | None:
    """A split name as the manifest spells it: ``Validation`` -> ``val``; unknown names are returned as given."""
    if split is None:
        return None
    lowered = split.strip().lower()
    return lowered if lowered in SPLITS else SPLIT_ALIASES.get(lowered, split)


def read_csv_text(path: Path) -> io.StringIO:
    """The text of a CSV file that must be UTF-8 (a BOM is allowed), ready for :class:`csv.DictReader`.

    Raises ValueError naming the file, the line and the byte when it is not UTF-8 (e.g. saved as latin-1).
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"{path} line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 text (the file was probably "
            "saved as latin-1 / Windows-1252); save it as UTF-8 and run again"
        ) from None
    return io.StringIO(text, newline="")


def read_annotations(path: Path) -> tuple[list[dict], list[FailureRecord]]:
    """Parse annotations.csv (video_id,label[,split][,start_s,end_s]).

    Returns (rows, failures): rows are dicts with video_id, label, split, start_s, end_s
    (None where absent); a bad row becomes a failure (stage ``annotate``) naming the line.
    Raises ValueError when the file lacks the video_id or label column.
    """
    rows: list[dict] = []
    failures: list[FailureRecord] = []
    with read_csv_text(path) as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = {"video_id", "label"} - set(fields)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header must be video_id,label[,split][,start_s,end_s]")
        seen: set[str] = set()
        for line_no, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            vid, label = row.get("video_id", ""), row.get("label", "")
            where = f"{path.name} line {line_no}"

            def fail(error: str, message: str, vid: str = vid) -> None:
                failures.append(FailureRecord(clip_id=vid or f"line-{line_no}", relpath="", stage="annotate",
                                              error=error, message=f"{where}: {message}"))

            if not vid or not label:
                fail("bad_annotation", "video_id and label must not be empty; fill them in or delete the line")
                continue
            if vid in seen:
                fail("duplicate_id", f"video_id {vid!r} appears more than once; keep one row per video")
                continue
            split = normalise_split(row.get("split") or None)
            if split is not None and split not in SPLITS:
                fail("bad_split", f"split {row.get('split')!r} is not one of train/val/test (or validation/valid/dev "
                                  f"for val); fix it or leave it empty for an automatic split")
                continue
            try:
                start, end = _float_or_none(row.get("start_s")), _float_or_none(row.get("end_s"))
            except ValueError as exc:
                fail("bad_annotation", f"start_s/end_s must be numbers of seconds ({exc})")
                continue
            if start is not None and end is not None and not (0 <= start < end):
                fail("bad_annotation", f"event interval [{start}, {end}] is empty or negative; need 0 <= start_s < end_s")
                continue
            if (start is not None and start < 0) or (end is not None and end <= 0):
                fail("bad_annotation", f"event interval [{start if start is not None else 'clip start'}, "
                                       f"{end if end is not None else 'clip end'}] is empty or negative; "
                                       "need 0 <= start_s < end_s (an empty side means the clip's start or end)")
                continue
            seen.add(vid)
            rows.append({"video_id": vid, "label": label, "split": split, "start_s": start, "end_s": end})
    return rows, failures


def read_boxes(path: Path) -> tuple[dict[str, list[BoxRow]], list[FailureRecord]]:
    """Parse boxes.csv (video_id,segment,x0,y0,x1,y1 pixels). Bad lines become failures (stage ``boxes``)."""
    boxes: dict[str, list[BoxRow]] = {}
    failures: list[FailureRecord] = []
    with read_csv_text(path) as fh:
        reader = csv.DictReader(fh)
        need = {"video_id", "segment", "x0", "y0", "x1", "y1"}
        missing = need - {f.strip() for f in (reader.fieldnames or [])}
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header must be video_id,segment,x0,y0,x1,y1")
        for line_no, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                box = BoxRow(int(row["segment"]), *(float(row[k]) for k in ("x0", "y0", "x1", "y1")))
                if box.x1 <= box.x0 or box.y1 <= box.y0 or box.segment < 0:
                    raise ValueError("need x0 < x1, y0 < y1 and segment >= 0")
            except (ValueError, KeyError) as exc:
                failures.append(FailureRecord(clip_id=row.get("video_id", ""), relpath="", stage="boxes", error="bad_box",
                                              message=f"{path.name} line {line_no}: {exc}; fix or delete the line"))
                continue
            boxes.setdefault(row["video_id"], []).append(box)
    return boxes, failures


def collect_folder(cfg: FolderSource, out_dir: Path, source: str = "folder") -> Collected:
    """Turn a contract-1 folder into build candidates (no decoding happens here)."""
    root = Path(cfg.root).resolve()
    ann_path = root / "annotations.csv"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path} not found: a folder dataset needs annotations.csv (video_id,label[,split][,start_s,end_s])")
    rows, failures = read_annotations(ann_path)
    video_dir = root / cfg.videos_dir
    by_stem: dict[str, list[Path]] = {}
    if video_dir.is_dir():
        for p in sorted(video_dir.iterdir()):
            if p.is_file() and not is_hidden(p):
                by_stem.setdefault(p.stem, []).append(p)
    col = Collected(source=source, name=cfg.name or root.name, media_root=root,
                    media_root_card=media_root_for_card(root, out_dir),
                    all_labels=[r["label"] for r in rows], failures=list(failures))
    bad_rows = {f.clip_id for f in failures}
    annotated = set()
    for r in rows:
        vid = r["video_id"]
        annotated.add(vid)
        files = by_stem.get(vid, [])
        if not files:
            col.failures.append(FailureRecord(
                clip_id=vid, relpath=f"{cfg.videos_dir}/{vid}.*", stage="locate", error="missing_file",
                message=f"no file {video_dir}/{vid}.<ext> for annotations.csv row {vid!r}; add the video or delete the row"))
            continue
        if len(files) > 1:
            log.warning("%s: several files for %s (%s); using %s", video_dir, vid, [f.name for f in files], files[0].name)
        path = files[0]
        col.candidates.append(Candidate(clip_id=vid, path=path, relpath=path.relative_to(root).as_posix(),
                                        label=r["label"], split=r["split"], event_start_s=r["start_s"], event_end_s=r["end_s"]))
    for stem, files in sorted(by_stem.items()):
        if stem not in annotated and stem not in bad_rows:
            col.failures.append(FailureRecord(
                clip_id=stem, relpath=files[0].relative_to(root).as_posix(), stage="annotate", error="unannotated",
                message=f"{files[0]} has no row in {ann_path}; add a row (video_id,label) to use it, or move the file out"))
    boxes_path = root / "boxes.csv"
    if boxes_path.is_file():
        boxes, box_failures = read_boxes(boxes_path)
        col.failures.extend(box_failures)
        for vid in sorted(set(boxes) - annotated):
            col.failures.append(FailureRecord(
                clip_id=vid, relpath="boxes.csv", stage="boxes", error="unknown_id",
                message=f"{boxes_path} has {len(boxes[vid])} box(es) for video_id {vid!r}, which annotations.csv does not list; fix the id or delete those lines"))
        col.boxes = {k: v for k, v in boxes.items() if k in annotated}
    return col
