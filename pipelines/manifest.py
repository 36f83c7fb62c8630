"""The dataset manifest (contract 2): records, writing and loading.

A dataset folder holds ``manifest.parquet`` (one row per usable clip), ``failures.parquet``
(one row per file or row that could not be used, with a reason a person can act on),
``boxes.parquet`` (when boxes exist) and ``dataset.json`` (the card: name, ordered classes,
build parameters, code version, media root and the fingerprint = sha256 of manifest.parquet).

Writes are deterministic (fixed schema, sorted rows, no timestamps, no absolute paths), so the
same inputs give a byte-identical ``manifest.parquet``, and atomic (:mod:`pipelines.atomic`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from pipelines.atomic import atomic_path, atomic_write_text
from pipelines.runtime import code_version, file_sha256

__all__ = [
    "ClipRecord",
    "FailureRecord",
    "BoxRecord",
    "DatasetCard",
    "Dataset",
    "write_dataset",
    "load_dataset",
    "MANIFEST_SCHEMA",
    "FAILURE_SCHEMA",
    "FAILURE_COLUMNS",
    "BOX_SCHEMA",
]

log = logging.getLogger(__name__)


class ClipRecord(BaseModel):
    """One row of manifest.parquet (contract 2). Times in seconds, sizes in pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_id: str
    relpath: str  # POSIX path relative to the dataset's media root
    sha256: str
    bytes: int
    duration_s: float
    fps: float
    width: int
    height: int
    has_audio: bool
    audio_sample_rate: int | None
    label: str
    label_idx: int
    split: str  # train | val | test
    event_start_s: float
    event_end_s: float
    source: str


class FailureRecord(BaseModel):
    """One row of failures.parquet: what could not be used, at which stage, and why.

    Its fields, in order, are :data:`FAILURE_SCHEMA` / :data:`FAILURE_COLUMNS`, the columns of
    every failures.parquet (a dataset's and a feature store's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_id: str
    relpath: str
    stage: str  # e.g. locate, download, extract, probe, annotate, boxes
    error: str  # short code, e.g. empty_file, truncated, not_video, missing_file, unknown_id
    message: str  # which file, what is wrong, what to do


class BoxRecord(BaseModel):
    """One row of boxes.parquet: the sounding object's box in one segment, pixels of the original frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_id: str
    segment: int
    x0: float
    y0: float
    x1: float
    y1: float
    width: int  # frame width the box refers to
    height: int


class DatasetCard(BaseModel):
    """dataset.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    classes: list[str]
    media_root: str  # relative to the dataset folder, or absolute
    build: dict[str, Any] = Field(default_factory=dict)
    code_version: str
    fingerprint: str  # sha256 of manifest.parquet
    num_clips: int
    num_failures: int
    split_counts: dict[str, int] = Field(default_factory=dict)
    # how the build wrote the media it made itself (synthetic: pipelines.encode.encoder_identity()):
    # its "setting" is also stored in manifest.parquet's metadata, so it enters the fingerprint
    media_encoder: dict[str, str] | None = None


MANIFEST_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("relpath", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("has_audio", pa.bool_()),
        ("audio_sample_rate", pa.int32()),
        ("label", pa.string()),
        ("label_idx", pa.int32()),
        ("split", pa.string()),
        ("event_start_s", pa.float64()),
        ("event_end_s", pa.float64()),
        ("source", pa.string()),
    ]
)
# the failure-rows contract, shared by failures.parquet of datasets and of feature stores
FAILURE_SCHEMA = pa.schema([(name, pa.string()) for name in FailureRecord.model_fields])
FAILURE_COLUMNS: list[str] = list(FAILURE_SCHEMA.names)  # clip_id, relpath, stage, error, message
BOX_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("segment", pa.int32()),
        ("x0", pa.float64()),
        ("y0", pa.float64()),
        ("x1", pa.float64()),
        ("y1", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def _write_table(path: Path, rows: Sequence[BaseModel], schema: pa.Schema,
                 metadata: dict[str, str] | None = None) -> None:
    cols = {name: [getattr(r, name) for r in rows] for name in schema.names}
    if metadata:
        schema = schema.with_metadata(dict(sorted(metadata.items())))
    table = pa.Table.from_pydict(cols, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True, store_schema=True)


def write_dataset(
    out_dir: Path,
    clips: Sequence[ClipRecord],
    failures: Sequence[FailureRecord],
    boxes: Sequence[BoxRecord],
    card: DatasetCard | dict[str, Any],
) -> DatasetCard:
    """Write contract 2 into ``out_dir`` and return the completed card.

    Rows are sorted (clips by clip_id; failures by stage, clip_id, relpath; boxes by clip_id,
    segment) so the files do not depend on the order the build finished its work.
    ``card`` may omit ``fingerprint``, ``num_clips``, ``num_failures``, ``split_counts`` and
    ``code_version``; they are filled in here. dataset.json is written last, so a folder with
    a dataset.json is complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = sorted(clips, key=lambda r: r.clip_id)
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate clip_id in manifest: {dup}")
    failures = sorted(failures, key=lambda r: (r.stage, r.clip_id, r.relpath, r.error))
    boxes = sorted(boxes, key=lambda r: (r.clip_id, r.segment))
    base = card.model_dump() if isinstance(card, DatasetCard) else dict(card)
    encoder = (base.get("media_encoder") or {}).get("setting")
    _write_table(out_dir / "manifest.parquet", clips, MANIFEST_SCHEMA,
                 {"wherewhen.media_encoder": encoder} if encoder else None)
    _write_table(out_dir / "failures.parquet", failures, FAILURE_SCHEMA)
    if boxes:
        _write_table(out_dir / "boxes.parquet", boxes, BOX_SCHEMA)
    else:
        (out_dir / "boxes.parquet").unlink(missing_ok=True)
    splits: dict[str, int] = {}
    for c in clips:
        splits[c.split] = splits.get(c.split, 0) + 1
    base.update(
        fingerprint=file_sha256(out_dir / "manifest.parquet"),
        num_clips=len(clips),
        num_failures=len(failures),
        split_counts=dict(sorted(splits.items())),
    )
    base.setdefault("code_version", code_version())
    full = DatasetCard(**base)
    atomic_write_text(out_dir / "dataset.json", json.dumps(full.model_dump(), indent=2, sort_keys=True) + "\n")
    return full


class Dataset:
    """A built dataset folder (contract 2), as returned by :func:`load_dataset`.

    Attributes:
        root: the dataset folder (holds manifest.parquet).
        media_root: where ``relpath`` is resolved.
        card: dataset.json.
        clips: manifest.parquet as a DataFrame (contract 2 columns, sorted by clip_id).
        boxes: boxes.parquet (clip_id, segment, x0, y0, x1, y1 in pixels, width, height) or None.
        failures: failures.parquet (clip_id, relpath, stage, error, message).
    """

    def __init__(self, root: Path, card: DatasetCard, clips: pd.DataFrame,
                 boxes: pd.DataFrame | None, failures: pd.DataFrame) -> None:
        self.root = root
        mr = Path(card.media_root)
        self.media_root = mr if mr.is_absolute() else (root / mr)
        self.card = card
        self.clips = clips
        self.boxes = boxes
        self.failures = failures

    @property
    def classes(self) -> list[str]:
        """Class names in label_idx order."""
        return list(self.card.classes)

    def clip_path(self, clip_id: str) -> Path:
        """Absolute path of the clip's video file. Raises KeyError for an unknown clip_id."""
        rows = self.clips.loc[self.clips["clip_id"] == clip_id, "relpath"]
        if rows.empty:
            raise KeyError(f"{clip_id!r} is not in {self.root / 'manifest.parquet'}")
        return (self.media_root / rows.iloc[0]).resolve()

    def paths(self) -> list[Path]:
        """Absolute video paths in manifest order."""
        return [(self.media_root / r).resolve() for r in self.clips["relpath"]]

    def info(self) -> dict[str, Any]:
        """What ``wherewhen dataset info`` prints: name, fingerprint, classes, counts, failures.

        Returns a JSON-able dict: ``classes`` (ordered), ``counts`` {split: {class: n}},
        ``split_counts`` {split: n}, ``failures`` [{clip_id, relpath, stage, error, message}],
        ``failure_counts`` {error: n}, ``has_audio`` / ``no_audio`` counts, ``boxes`` row count.
        """
        counts: dict[str, dict[str, int]] = {}
        for (split, label), n in self.clips.groupby(["split", "label"]).size().items():
            counts.setdefault(str(split), {})[str(label)] = int(n)
        return {
            "name": self.card.name,
            "source": self.card.source,
            "root": str(self.root),
            "media_root": str(self.media_root),
            "fingerprint": self.card.fingerprint,
            "classes": self.classes,
            "num_clips": int(len(self.clips)),
            "split_counts": {str(k): int(v) for k, v in self.clips["split"].value_counts().sort_index().items()},
            "counts": counts,
            "has_audio": int(self.clips["has_audio"].sum()),
            "no_audio": int((~self.clips["has_audio"]).sum()),
            "boxes": 0 if self.boxes is None else int(len(self.boxes)),
            "num_failures": int(len(self.failures)),
            "failure_counts": {str(k): int(v) for k, v in self.failures["error"].value_counts().sort_index().items()},
            "failures": self.failures.to_dict(orient="records"),
        }


def load_dataset(dir: str | Path) -> Dataset:  # noqa: A002 - the documented signature
    """Load a dataset folder written by :func:`write_dataset`.

    Raises FileNotFoundError when dataset.json or manifest.parquet is missing (an unfinished
    or never-run build), ValueError when manifest.parquet does not match the card's fingerprint.
    """
    root = Path(dir)
    card_path = root / "dataset.json"
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} not found: {root} is not a built dataset (run `wherewhen dataset build`)")
    card = DatasetCard(**json.loads(card_path.read_text(encoding="utf-8")))
    manifest = root / "manifest.parquet"
    if file_sha256(manifest) != card.fingerprint:
        raise ValueError(f"{manifest} does not match the fingerprint in {card_path}; rebuild the dataset")
    clips = pq.read_table(manifest).to_pandas()
    clips["audio_sample_rate"] = clips["audio_sample_rate"].astype("Int32")  # null without audio
    failures = pq.read_table(root / "failures.parquet").to_pandas()
    boxes_path = root / "boxes.parquet"
    boxes = pq.read_table(boxes_path).to_pandas() if boxes_path.is_file() else None
    return Dataset(root=root, card=card, clips=clips, boxes=boxes, failures=failures)
