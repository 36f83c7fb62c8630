"""A store folder's files and card: file names, the store card, the index and failure tables, and
whether a store is complete. The one definition of each; writers and readers use these.

A store is complete when ``store.json`` says ``complete: true`` and ``index.parquet`` exists:
:func:`write_store_files` writes the tables first and the card last, so a store with a complete
card has everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.compute_kind import COMPUTE_FILE
from pipelines.atomic import atomic_path, atomic_write_text
from pipelines.manifest import FAILURE_SCHEMA
from pipelines.segments import SegmentSpec

__all__ = [
    "CARD_FILE", "INDEX_FILE", "FAILURES_FILE", "BOXES_FILE", "COMPUTE_FILE", "TEMP_SHARD_GLOB", "CLAIM_GLOB",
    "claim_path",
    "INDEX_DTYPES", "INDEX_COLUMNS", "FAILURE_COLUMNS", "StoreError", "StoreCard",
    "index_frame", "failures_frame", "read_card", "check_complete", "is_complete", "write_card",
    "write_parquet_atomic", "write_store_files",
]

log = logging.getLogger(__name__)

CARD_FILE = "store.json"
INDEX_FILE = "index.parquet"
FAILURES_FILE = "failures.parquet"
BOXES_FILE = "boxes.parquet"
#: temp names of shard writers (pipelines.atomic: ``.<name>.<random><suffix>``)
TEMP_SHARD_GLOB = ".shard-*"
#: shard claim lock files (features.shard_claim), removed once the store is complete
CLAIM_GLOB = ".claim-*.lock"


def claim_path(store_dir: Path, shard: int) -> Path:
    """The lock file a shard task holds while it extracts ``shard`` (features.shard_claim)."""
    return Path(store_dir) / f".claim-{shard:05d}.lock"

#: index.parquet: one row per stored clip, in this column order and with these dtypes.
INDEX_DTYPES: dict[str, str] = {
    "clip_id": "str", "shard": "int64", "row": "int64", "label_idx": "int64", "split": "str",
    "sha256": "str", "event_start_s": "float64", "event_end_s": "float64", "has_audio": "bool",
}
INDEX_COLUMNS = list(INDEX_DTYPES)
#: failures.parquet: the dataset's failure columns (pipelines.manifest), for clips a store could not extract.
FAILURE_COLUMNS = list(FAILURE_SCHEMA.names)


class StoreError(RuntimeError):
    """A store folder that cannot be read (missing files, unknown layout, incomplete store)."""


class StoreCard(BaseModel):
    """``store.json``: what a store holds and how it was made.

    ``visual``/``audio`` are the extractors' cards (name, layer, input size, normalisation,
    weights sha256, grid); ``visual_config``/``audio_config`` the extractor configurations the
    store was extracted with (``VisualConfig``/``AudioConfig`` as JSON), from which
    ``features.clip.ClipFeaturizer`` rebuilds the extractors; ``segment`` is the
    :class:`pipelines.segments.SegmentSpec` as a dict; ``timings`` holds seconds per stage.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    store_id: str
    format: str
    complete: bool = True
    dataset_name: str = ""
    dataset_dir: str | None = None
    dataset_fingerprint: str = ""
    classes: list[str]
    num_segments: int
    segment: dict[str, Any] = Field(default_factory=dict)
    visual: dict[str, Any] = Field(default_factory=dict)
    audio: dict[str, Any] = Field(default_factory=dict)
    visual_config: dict[str, Any] | None = None
    audio_config: dict[str, Any] | None = None
    visual_shape: tuple[int, int, int]
    audio_dim: int
    dtype: str = "float16"
    shard_size: int = 0
    num_shards: int = 0
    clips: int = 0
    failures: int = 0
    code_version: str = ""
    device: str = ""
    # what decides the values' last bits (features.compute_kind): device, CPU capability or GPU, torch
    compute: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def frames_per_segment(self) -> int:
        return int(self.segment.get("frames_per_segment", 1))

    @property
    def segment_spec(self) -> SegmentSpec:
        """The segmentation the store was extracted with (``segment`` as a :class:`SegmentSpec`).

        Cards that record no segment (AVE folders, cards written by hand) give the default spec with
        this card's ``num_segments``.
        """
        return SegmentSpec.model_validate({"num_segments": self.num_segments, **self.segment})


def index_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The index table from one mapping per clip, with :data:`INDEX_COLUMNS` and :data:`INDEX_DTYPES`."""
    return pd.DataFrame(list(rows), columns=INDEX_COLUMNS).astype(INDEX_DTYPES)


def failures_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The failures table (:data:`FAILURE_COLUMNS`) from one mapping per failed clip."""
    return pd.DataFrame(list(rows), columns=FAILURE_COLUMNS)


def read_card(store_dir: Path) -> StoreCard:
    """The card in ``store_dir``. Raises :class:`StoreError` when it is missing or unreadable."""
    path = Path(store_dir) / CARD_FILE
    try:
        return StoreCard.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{store_dir}: not a feature store (no {CARD_FILE})") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable store card ({exc})") from exc


def check_complete(store_dir: Path, store_id: str | None = None) -> StoreCard:
    """The card of the complete store in ``store_dir`` (of ``store_id`` when given).

    Raises :class:`StoreError` saying what is missing: no or an unreadable card, a card not marked
    complete, another store-id, or no index.
    """
    store_dir = Path(store_dir)
    card = read_card(store_dir)
    if not card.complete:
        raise StoreError(f"{store_dir}: the store is incomplete ({CARD_FILE} complete=false); re-run extract-features")
    if store_id is not None and card.store_id != store_id:
        raise StoreError(f"{store_dir}: holds store {card.store_id}, not {store_id}")
    if not (store_dir / INDEX_FILE).is_file():
        raise StoreError(f"{store_dir}: {INDEX_FILE} is missing")
    return card


def is_complete(store_dir: Path, store_id: str | None = None) -> bool:
    """Whether :func:`check_complete` accepts ``store_dir``."""
    try:
        check_complete(store_dir, store_id)
    except StoreError:
        return False
    return True


def write_card(store_dir: Path, card: StoreCard) -> Path:
    """Write ``store.json`` atomically."""
    return atomic_write_text(Path(store_dir) / CARD_FILE, card.model_dump_json(indent=2))


def write_parquet_atomic(path: Path, df: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet atomically (no pandas index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_store_files(store_dir: Path, card: StoreCard, index: pd.DataFrame, failures: pd.DataFrame,
                      boxes: pd.DataFrame | None) -> Path:
    """Finish a store whose shards are all written: index, failures, boxes (when given), then the card.

    Leftover temp files of shard writers killed mid-write are removed first (every shard is
    complete now), and so are the shard claims' lock files (a task still waiting on one finds its
    shard written). The card goes last, so a store with a card is complete. Returns ``store_dir``.
    """
    store_dir = Path(store_dir)
    for stale in store_dir.glob(TEMP_SHARD_GLOB):
        log.info("removing the leftover temp file %s", stale)
        stale.unlink(missing_ok=True)
    for claim in store_dir.glob(CLAIM_GLOB):
        claim.unlink(missing_ok=True)
    write_parquet_atomic(store_dir / INDEX_FILE, index)
    write_parquet_atomic(store_dir / FAILURES_FILE, failures)
    if boxes is not None:
        write_parquet_atomic(store_dir / BOXES_FILE, boxes)
    write_card(store_dir, card)
    return store_dir
