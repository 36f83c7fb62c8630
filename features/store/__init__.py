"""The feature store (DESIGN.md contract 3): its files, card, shards and the one reader.

Layout of ``<out_root>/<dataset>/<store-id>/``::

    shard-00000.h5 | shard-00000.parquet   one file per shard of clips (:mod:`features.store.shards`),
                                           written under a temp name and renamed when complete
    index.parquet                          clip_id, shard, row, label_idx, split, sha256,
                                           event_start_s, event_end_s, has_audio (INDEX_COLUMNS)
    store.json                             the store card (:class:`StoreCard`), written last
    compute.json                           the compute kind the shards were made on (features.compute_kind)
    boxes.parquet                          the dataset's boxes, normalised to [0, 1] of the frame
    failures.parquet                       clip_id, relpath, stage, error, message (FAILURE_COLUMNS)

Modules: :mod:`~features.store.card` (file names, card, index and failure tables, completeness,
writing a finished store), :mod:`~features.store.shards` (shard files and :class:`FeatureBatch`),
:mod:`~features.store.native` and :mod:`~features.store.ave_layout` (the two layouts behind one
reader interface), :mod:`~features.store.reader` (:func:`open_store`, :class:`FeatureStore`).
"""

from features.store.card import (
    BOXES_FILE, CARD_FILE, COMPUTE_FILE, FAILURE_COLUMNS, FAILURES_FILE, INDEX_COLUMNS, INDEX_DTYPES, INDEX_FILE,
    StoreCard, StoreError, check_complete, failures_frame, index_frame, is_complete, read_card, write_card,
    write_parquet_atomic, write_store_files,
)
from features.store.native import BatchReader, StoreContents
from features.store.reader import FeatureStore, open_store
from features.store.shards import (
    SHARD_FORMATS, FeatureBatch, ShardData, clip_sha256, concat_batches, read_shard_meta, read_shard_rows, shard_path,
    write_shard,
)

__all__ = [
    "BOXES_FILE", "CARD_FILE", "COMPUTE_FILE", "FAILURE_COLUMNS", "FAILURES_FILE", "INDEX_COLUMNS", "INDEX_DTYPES",
    "INDEX_FILE", "SHARD_FORMATS", "BatchReader", "FeatureBatch", "FeatureStore", "ShardData", "StoreCard",
    "StoreContents", "StoreError", "check_complete", "clip_sha256", "concat_batches", "failures_frame",
    "index_frame", "is_complete", "open_store", "read_card", "read_shard_meta", "read_shard_rows", "shard_path",
    "write_card", "write_parquet_atomic", "write_shard", "write_store_files",
]
