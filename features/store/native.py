"""The one reader interface every store layout provides, and the native layout (card + index + shards).

A layout opener returns :class:`StoreContents`: the card, the index, boxes, failures and a
:class:`BatchReader` that reads clips by index position. :class:`features.store.FeatureStore`
is built from it whatever the layout (``features.store.ave_layout`` is the other one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from features.store.card import BOXES_FILE, FAILURES_FILE, INDEX_FILE, StoreCard, check_complete, failures_frame
from features.store.shards import FeatureBatch, concat_batches, read_shard_rows, shard_path

__all__ = ["BatchReader", "StoreContents", "ShardReader", "open_native"]


class BatchReader(Protocol):
    """Reads the clips at index positions (a non-empty int64 array, any order, repeats allowed)."""

    def __call__(self, positions: np.ndarray) -> FeatureBatch: ...


@dataclass
class StoreContents:
    """What a layout opener found: everything :class:`features.store.FeatureStore` holds."""

    path: Path
    card: StoreCard
    index: pd.DataFrame
    boxes: pd.DataFrame | None
    failures: pd.DataFrame
    reader: BatchReader


class ShardReader:
    """The native :class:`BatchReader`: rows of the shard files the index points at."""

    def __init__(self, store_dir: Path, fmt: str, index: pd.DataFrame) -> None:
        self.store_dir = Path(store_dir)
        self.format = fmt
        self.shard = index["shard"].to_numpy()
        self.row = index["row"].to_numpy()

    def __call__(self, positions: np.ndarray) -> FeatureBatch:
        shards = self.shard[positions]
        parts: list[FeatureBatch] = []
        order: list[np.ndarray] = []
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            parts.append(read_shard_rows(shard_path(self.store_dir, int(shard), self.format), self.row[positions[where]]))
            order.append(where)
        back = np.empty(len(positions), dtype=np.int64)
        back[np.concatenate(order)] = np.arange(len(positions))
        return concat_batches(parts).take(back)


def open_native(path: Path) -> StoreContents:
    """A complete native store (``store.json`` + ``index.parquet`` + shards). Raises StoreError otherwise."""
    path = Path(path)
    card = check_complete(path)
    index = pd.read_parquet(path / INDEX_FILE)
    boxes = pd.read_parquet(path / BOXES_FILE) if (path / BOXES_FILE).is_file() else None
    failures = pd.read_parquet(path / FAILURES_FILE) if (path / FAILURES_FILE).is_file() else failures_frame([])
    return StoreContents(path, card, index, boxes, failures, ShardReader(path, card.format, index))
