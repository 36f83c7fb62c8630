"""VGGSound / Kinetics-Sounds style lists fetched with yt-dlp and cut to a fixed window.

The CSV has one row per clip: youtube_id, start seconds, label, split. Accepted forms:
VGGSound's header-less ``youtube_id,start,label,split`` and any CSV with a header naming
``youtube_id`` (or ``id`` / ``ytid``), ``start_s`` (or ``start`` / ``time_start`` /
``start_seconds``), ``label`` and optionally ``split`` (train / val / test; ``training`` /
``validation`` / ``testing`` are read as those). Each video is fetched with yt-dlp (the optional ``youtube`` extra, imported only
here) from ``url_template.format(youtube_id=...)`` and the window [start, start + window_s)
is re-encoded with PyAV into ``<out>/videos/<youtube_id>_<start:06d>.mp4``. A video that
cannot be fetched or cut becomes a failure row; the rest goes on.
"""

from __future__ import annotations

import csv
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.atomic import atomic_path
from pipelines.encode import cut_clip
from pipelines.manifest import FailureRecord
from pipelines.sources.base import Candidate, Collected, is_hidden
from pipelines.sources.folder import SPLITS, read_csv_text

__all__ = ["YoutubeCsvSource", "read_clip_list", "collect_youtube_csv", "fetch_with_ytdlp"]

log = logging.getLogger(__name__)


class YoutubeCsvSource(BaseModel):
    """Configuration of the youtube-csv source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["youtube-csv"] = "youtube-csv"
    csv: Path
    url_template: str = "https://www.youtube.com/watch?v={youtube_id}"
    window_s: float = Field(10.0, gt=0)
    name: str | None = None
    ytdlp_format: str = "best[ext=mp4]/best"
    ytdlp_retries: int = Field(3, ge=0)
    keep_downloads: bool = False


def read_clip_list(path: Path) -> list[dict[str, Any]]:
    """Rows {youtube_id, start_s, label, split|None}; raises ValueError naming a bad line."""
    with read_csv_text(path) as fh:  # a file that is not UTF-8 is an error naming the line
        lines = list(csv.reader(fh))
    lines = [ln for ln in lines if ln and any(c.strip() for c in ln)]
    if not lines:
        return []
    head = [c.strip().lower() for c in lines[0]]
    id_col = next((c for c in ("youtube_id", "id", "ytid") if c in head), None)
    if id_col is not None:
        start_col = next((c for c in ("start_s", "start", "time_start", "start_seconds") if c in head), None)
        if start_col is None or "label" not in head:
            raise ValueError(f"{path}: the header needs youtube_id, start_s and label columns, got {lines[0]}")
        idx = {name: head.index(name) for name in head}
        cols = (idx[id_col], idx[start_col], idx["label"], idx.get("split"))
        body = enumerate(lines[1:], start=2)
    else:
        cols = (0, 1, 2, 3)  # VGGSound: youtube_id,start,label,split
        body = enumerate(lines, start=1)
    rows = []
    for line_no, ln in body:
        try:
            split = ln[cols[3]].strip() if cols[3] is not None and cols[3] < len(ln) else ""
            split = {"training": "train", "validation": "val", "testing": "test"}.get(split, split) or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"split {split!r} is not train/val/test")
            rows.append({"youtube_id": ln[cols[0]].strip(), "start_s": float(ln[cols[1]]),
                         "label": ln[cols[2]].strip(), "split": split})
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path} line {line_no}: {exc}: {ln}") from None
    return rows


def fetch_with_ytdlp(url: str, out_stem: Path, fmt: str, retries: int) -> Path:
    """Download ``url`` with yt-dlp to ``<out_stem>.<ext>`` and return the file.

    Raises RuntimeError with a clear message when yt-dlp (the ``youtube`` extra) is missing.
    """
    try:
        import yt_dlp
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError("the youtube-csv source needs yt-dlp: pip install 'wherewhen[youtube]'") from None
    opts = {
        "outtmpl": str(out_stem) + ".%(ext)s",
        "format": fmt,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "retries": retries,
        "noplaylist": True,
        "overwrites": True,
        "logger": logging.getLogger("yt_dlp"),
    }
    with yt_dlp.YoutubeDL(opts) as ydl:
        ydl.download([url])
    found = [p for p in sorted(out_stem.parent.glob(out_stem.name + ".*")) if not is_hidden(p)]
    if not found:
        raise RuntimeError(f"yt-dlp finished but wrote no file for {url}")
    return found[0]


def collect_youtube_csv(cfg: YoutubeCsvSource, out_dir: Path, workers: int = 1) -> Collected:
    """Fetch and cut every listed clip (skipping clips already cut), returning candidates + failures."""
    out_dir = Path(out_dir)
    rows = read_clip_list(cfg.csv)
    videos, downloads = out_dir / "videos", out_dir / "downloads"
    videos.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    col = Collected(source="youtube-csv", name=cfg.name or Path(cfg.csv).stem, media_root=out_dir.resolve(),
                    media_root_card=".", all_labels=[r["label"] for r in rows])

    def one(r: dict[str, Any]) -> Candidate | FailureRecord:
        clip_id = f"{r['youtube_id']}_{int(r['start_s']):06d}"
        dst = videos / f"{clip_id}.mp4"
        rel = dst.relative_to(out_dir).as_posix()
        if not dst.is_file():
            url = cfg.url_template.format(youtube_id=r["youtube_id"])
            try:
                src = fetch_with_ytdlp(url, downloads / clip_id, cfg.ytdlp_format, cfg.ytdlp_retries)
            except Exception as exc:  # noqa: BLE001 - yt-dlp raises many kinds; each becomes a failure row
                return FailureRecord(clip_id=clip_id, relpath=rel, stage="download", error="download_failed",
                                     message=f"could not fetch {url} with yt-dlp ({str(exc).splitlines()[0][:300]}); "
                                             "the video may be private or removed: retry later or drop the row")
            try:
                with atomic_path(dst) as tmp:
                    cut_clip(src, tmp, r["start_s"], cfg.window_s)
            except Exception as exc:  # noqa: BLE001 - a broken download is a failure row, not a crash
                return FailureRecord(clip_id=clip_id, relpath=rel, stage="cut", error="cut_failed",
                                     message=f"{src}: cannot cut [{r['start_s']}, {r['start_s'] + cfg.window_s}) s "
                                             f"({str(exc).splitlines()[0][:300]}); check the start time or re-download")
            finally:
                if not cfg.keep_downloads:
                    src.unlink(missing_ok=True)
        return Candidate(clip_id=clip_id, path=dst.resolve(), relpath=rel, label=r["label"], split=r["split"])

    unique, seen = [], set()
    for line_no, r in enumerate(rows, start=1):
        key = f"{r['youtube_id']}_{int(r['start_s']):06d}"
        if key in seen:
            col.failures.append(FailureRecord(clip_id=key, relpath="", stage="annotate", error="duplicate_id",
                                              message=f"{cfg.csv} row {line_no}: {r['youtube_id']} at {r['start_s']} s is listed twice; keep one row"))
            continue
        seen.add(key)
        unique.append(r)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for res in pool.map(one, unique):
            if isinstance(res, FailureRecord):
                log.warning("%s", res.message)
                col.failures.append(res)
            else:
                col.candidates.append(res)
    return col
