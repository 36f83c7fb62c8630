"""Contract 1: a user's folder of videos with annotations.csv (and optional boxes.csv).

The videos stay where they are; the manifest refers to them relative to the folder, which
dataset.json records as the media root.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipelines.manifest import FailureRecord
from pipelines.sources.base import BoxRow, Candidate, Collected, is_hidden, media_root_for_card

__all__ = ["FolderSource", "collect_folder", "read_annotations", "read_boxes"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class FolderSource(BaseModel):
    """A contract-1 folder: ``<root>/videos/<video_id>.<ext>``, ``annotations.csv``, ``boxes.csv``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"] = "folder"
    root: Path
    name: str | None = None  # defaults to the folder's name
    videos_dir: str = "videos"


def _float_or_none(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def read_annotations(path: Path) -> tuple[list[dict], list[FailureRecord]]:
    """Parse annotations.csv (video_id,label[,split][,start_s,end_s]).

    Returns (rows, failures): rows are dicts with video_id, label, split, start_s, end_s
    (None where absent); a bad row becomes a failure (stage ``annotate``) naming the line.
    Raises ValueError when the file lacks the video_id or label column.
    """
    rows: list[dict] = []
    failures: list[FailureRecord] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
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
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                fail("bad_split", f"split {split!r} is not one of train/val/test; fix it or leave it empty")
                continue
            try:
                start, end = _float_or_none(row.get("start_s")), _float_or_none(row.get("end_s"))
            except ValueError as exc:
                fail("bad_annotation", f"start_s/end_s must be numbers of seconds ({exc})")
                continue
            if start is not None and end is not None and not (0 <= start < end):
                fail("bad_annotation", f"event interval [{start}, {end}] is empty or negative; need 0 <= start_s < end_s")
                continue
            seen.add(vid)
            rows.append({"video_id": vid, "label": label, "split": split, "start_s": start, "end_s": end})
    return rows, failures


def read_boxes(path: Path) -> tuple[dict[str, list[BoxRow]], list[FailureRecord]]:
    """Parse boxes.csv (video_id,segment,x0,y0,x1,y1 pixels). Bad lines become failures (stage ``boxes``)."""
    boxes: dict[str, list[BoxRow]] = {}
    failures: list[FailureRecord] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
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
