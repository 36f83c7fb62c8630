"""The one way to read a store: :func:`open_store` finds the layout, :class:`FeatureStore` reads it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from features.store.ave_layout import VISUAL_FILE, is_ave_folder, open_ave
from features.store.card import CARD_FILE, StoreError
from features.store.native import StoreContents, open_native
from features.store.shards import FeatureBatch, concat_batches

__all__ = ["FeatureStore", "open_store"]


def open_store(path: str | Path) -> StoreContents:
    """The contents of the store at ``path``: a native store (``store.json``) or an AVE feature folder.

    Raises :class:`StoreError` naming the folder when it is neither, or when the store is incomplete.
    """
    path = Path(path)
    if (path / CARD_FILE).is_file():
        return open_native(path)
    if is_ave_folder(path):
        return open_ave(path)
    raise StoreError(f"{path}: not a feature store (no {CARD_FILE}) and not an AVE feature folder (no {VISUAL_FILE})")


class FeatureStore:
    """Read access to a feature store, whatever its layout (hdf5 or parquet shards, AVE's release).

    Attributes:
        path: the store folder.
        card: the :class:`features.store.StoreCard` (``store.json``; synthesised for an AVE folder).
        index: one row per clip: clip_id, shard, row, label_idx, split, sha256, event_start_s,
            event_end_s, has_audio; positions into it are what :meth:`read` takes.
        boxes: clip_id, segment, x0, y0, x1, y1 in [0, 1] of the frame, or None.
        failures: clip_id, relpath, stage, error, message.
    """

    def __init__(self, contents: StoreContents) -> None:
        self.path = Path(contents.path)
        self.card = contents.card
        self.index = contents.index.reset_index(drop=True)
        self.boxes = contents.boxes
        self.failures = contents.failures
        self._reader = contents.reader

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        """Open the store at ``path`` (see :func:`open_store`)."""
        return cls(open_store(path))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def read(self, positions: Sequence[int]) -> FeatureBatch:
        """Features of the clips at ``positions`` (rows of :attr:`index`), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return concat_batches([], like=self.card)
        return self._reader(positions)

    def positions(self, split: str | None = None) -> np.ndarray:
        """Index positions of ``split`` (all clips when None), in index order."""
        if split is None:
            return np.arange(len(self.index))
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def read_split(self, split: str) -> FeatureBatch:
        """All clips of ``split`` (train | val | test) in index order."""
        return self.read(self.positions(split))

    def iter_batches(self, positions: Sequence[int], chunk: int = 256) -> Iterator[FeatureBatch]:
        """Yield :class:`FeatureBatch` chunks of at most ``chunk`` clips over ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        for i in range(0, len(positions), chunk):
            yield self.read(positions[i:i + chunk])
