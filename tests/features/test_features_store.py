"""Shard files, the reader API and AVE's layout, on hand-made arrays (no video needed)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from features.ave_interop import export_ave
from features.labels import normalise_boxes, segment_labels
from features.store import (
    FeatureBatch, FeatureStore, ShardData, StoreCard, StoreError, clip_sha256, read_shard_meta,
    shard_path, write_card, write_parquet_atomic, write_shard,
)
from features.store.ave_layout import annotations_frame

AVE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ave"
T, H, W, C, CA, K = 4, 2, 3, 5, 6, 3


def _batch(n: int, seed: int, offset: int = 0) -> FeatureBatch:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, T), bool)
    mask[0, -1] = False
    vis = rng.normal(size=(n, T, H, W, C)).astype(np.float16)
    aud = rng.normal(size=(n, T, CA)).astype(np.float16)
    vis[~mask] = 0
    aud[~mask] = 0
    labels = rng.integers(0, K, n)
    seg = np.stack([segment_labels(T, 1.0, int(l), K, 1.0, 3.0, m) for l, m in zip(labels, mask)]).astype(np.int64)
    return FeatureBatch([f"c{offset + i:03d}" for i in range(n)], vis, aud, mask, labels.astype(np.int64), seg)


def _make_store(root: Path, fmt: str, sizes=(3, 2)) -> FeatureStore:
    rows, off = [], 0
    for shard, n in enumerate(sizes):
        b = _batch(n, seed=shard, offset=off)
        off += n
        write_shard(shard_path(root, shard, fmt), ShardData(b, {"result": {"shard": shard}}), fmt)
        for i in range(n):
            rows.append({"clip_id": b.clip_id[i], "shard": shard, "row": i, "label_idx": int(b.label_idx[i]),
                         "split": ["train", "val", "test"][(off - n + i) % 3],
                         "sha256": clip_sha256(b.visual[i], b.audio[i], b.segment_mask[i]),
                         "event_start_s": 1.0, "event_end_s": 3.0, "has_audio": True})
    write_parquet_atomic(root / "index.parquet", pd.DataFrame(rows))
    write_card(root, StoreCard(store_id="test", format=fmt, classes=["a", "b", "c"], num_segments=T,
                               segment={"num_segments": T, "segment_s": 1.0}, visual_shape=(H, W, C), audio_dim=CA,
                               num_shards=len(sizes), clips=len(rows)))
    return FeatureStore.open(root)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {fmt: _make_store(root / fmt, fmt) for fmt in ("hdf5", "parquet")}


def _assert_same(a: FeatureBatch, b: FeatureBatch) -> None:
    assert a.clip_id == b.clip_id
    for name in ("visual", "audio", "segment_mask", "label_idx", "segment_label"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_hdf5_layout_and_dtypes(stores):
    path = shard_path(stores["hdf5"].path, 0, "hdf5")
    with h5py.File(path) as f:
        assert f["visual"].dtype == np.float16 and f["visual"].shape == (3, T, H, W, C)
        assert f["visual"].chunks == (1, T, H, W, C)
        assert f["audio"].dtype == np.float16 and f["segment_mask"].dtype == np.uint8
        assert f["segment_label"].dtype == np.int16
        assert f["clip_id"].asstr()[0] == "c000"
    assert read_shard_meta(path) == {"result": {"shard": 0}}
    assert not list(stores["hdf5"].path.glob(".shard-*"))   # no temp files left


def test_parquet_columns_are_fixed_shape_tensors(stores):
    import pyarrow.parquet as pq

    table = pq.read_table(shard_path(stores["parquet"].path, 1, "parquet"))
    assert str(table.schema.field("visual").type).startswith("extension<arrow.fixed_shape_tensor")
    assert table.schema.field("visual").type.shape == [T, H, W, C]
    assert str(table.schema.field("visual").type.value_type) == "halffloat"


def test_both_formats_read_back_identical_tensors_in_any_order(stores):
    positions = [4, 0, 2, 0, 3]
    h, p = stores["hdf5"].read(positions), stores["parquet"].read(positions)
    _assert_same(h, p)
    want = _batch(3, 0)
    np.testing.assert_array_equal(h.visual[1], want.visual[0])
    assert h.clip_id == ["c004", "c000", "c002", "c000", "c003"]
    assert h.segment_mask[1].tolist() == [True, True, True, False]
    for i, pos in enumerate(positions):
        assert clip_sha256(h.visual[i], h.audio[i], h.segment_mask[i]) == stores["hdf5"].index["sha256"][pos]
    _assert_same(stores["hdf5"].read_split("val"), stores["parquet"].read_split("val"))
    assert len(stores["hdf5"].read([])) == 0


def test_open_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    card = StoreCard(store_id="x", format="hdf5", complete=False, classes=["a"], num_segments=1, visual_shape=(1, 1, 1), audio_dim=1)
    write_card(tmp_path, card)
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore.open(tmp_path)


def test_ave_export_round_trip(stores, tmp_path):
    store = stores["hdf5"]
    out = export_ave(store, tmp_path / "ave")
    with h5py.File(out / "labels.h5") as f:
        labels = f["avadataset"][()]
    assert labels.shape == (5, T, K + 1) and np.allclose(labels.sum(-1), 1.0)
    with h5py.File(out / "visual_feature.h5") as f:
        assert f["avadataset"].shape == (5, T, H, W, C)
    with h5py.File(out / "val_order.h5") as f:
        assert f["order"].dtype == np.int64 and f["order"][()].tolist() == store.positions("val").tolist()
    ave = FeatureStore.open(out)
    assert ave.card.format == "ave" and ave.classes == store.classes
    all_pos = np.arange(len(store))
    a, b = store.read(all_pos), ave.read(all_pos)
    # AVE has no padding mask; every other tensor comes back bit-identical
    for name in ("visual", "audio", "label_idx", "segment_label"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.clip_id == b.clip_id
    assert ave.index["split"].tolist() == store.index["split"].tolist()
    _assert_same(ave.read_split("test"), ave.read(ave.positions("test")))


def test_the_real_ave_label_conventions_are_understood():
    """AVE's released label files follow from Annotations.txt with our segment rule and class order."""
    ann = annotations_frame(AVE_DIR / "Annotations.txt")
    assert len(ann) == 4143 and ann["label_idx"].max() == 27
    with h5py.File(AVE_DIR / "labels_closs.h5") as f:
        closs = f["avadataset"][()].astype(bool)
    with h5py.File(AVE_DIR / "mil_labels.h5") as f:
        mil = f["avadataset"][()]
    ours = np.stack([segment_labels(10, 1.0, int(r.label_idx), 28, r.start_s, r.end_s) < 28 for r in ann.itertuples()])
    np.testing.assert_array_equal(ours, closs)
    assert mil.shape == (4143, 29)
    np.testing.assert_array_equal(mil.argmax(1), ann["label_idx"].to_numpy())
    orders = {}
    for split in ("train", "val", "test"):
        with h5py.File(AVE_DIR / f"{split}_order.h5") as f:
            orders[split] = f["order"][()]
    assert [len(v) for v in orders.values()] == [3339, 402, 402]
    assert len(np.unique(np.concatenate(list(orders.values())))) == 4143


def test_segment_labels_half_overlap_rule_and_padding():
    assert segment_labels(5, 1.0, 2, 4, 1.4, 3.6).tolist() == [4, 2, 2, 2, 4]
    assert segment_labels(5, 1.0, 2, 4, 1.6, 3.4).tolist() == [4, 4, 2, 4, 4]
    assert segment_labels(4, 1.0, 1, 3, 0.0, 4.0, np.array([1, 1, 0, 0], bool)).tolist() == [1, 1, 3, 3]


def test_boxes_are_normalised_to_the_frame():
    px = pd.DataFrame({"clip_id": ["a"], "segment": [2], "x0": [16.0], "y0": [0.0], "x1": [48.0], "y1": [200.0],
                       "width": [64], "height": [100]})
    out = normalise_boxes(px)
    assert out.columns.tolist() == ["clip_id", "segment", "x0", "y0", "x1", "y1"]
    assert out.iloc[0][["x0", "y0", "x1", "y1"]].tolist() == [0.25, 0.0, 0.75, 1.0]


def test_completeness_is_one_check(stores, tmp_path):
    """The card says complete, the store-id matches when asked, and the index exists."""
    from features.store import INDEX_FILE, check_complete, is_complete

    path = stores["hdf5"].path
    assert check_complete(path).store_id == "test" and is_complete(path, "test")
    assert not is_complete(path, "another") and not is_complete(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "store.json").write_text((path / "store.json").read_text())
    with pytest.raises(StoreError, match=INDEX_FILE):
        check_complete(copy)


def test_index_and_failure_tables_have_one_schema_even_when_empty():
    from features.store import FAILURE_COLUMNS, INDEX_COLUMNS, failures_frame, index_frame
    from pipelines.manifest import FAILURE_SCHEMA

    empty = index_frame([])
    assert empty.columns.tolist() == INDEX_COLUMNS and len(empty) == 0
    assert str(empty["shard"].dtype) == "int64" and str(empty["has_audio"].dtype) == "bool"
    assert failures_frame([]).columns.tolist() == FAILURE_COLUMNS == FAILURE_SCHEMA.names


def test_an_ave_folder_with_annotations_gets_the_dataset_builds_clip_ids(stores, tmp_path):
    """Without clip_ids.txt the ids come from Annotations.txt by the dataset build's rule, <row:04d>_<youtube_id>."""
    out = export_ave(stores["hdf5"], tmp_path / "ave")
    (out / "clip_ids.txt").unlink()
    lines = ["Category&VideoID&Quality&StartTime&EndTime"] + [
        f"{c}&yt{i}&good&1&3" for i, c in enumerate(["a", "b", "a", "c", "b"])]
    (out / "Annotations.txt").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    (out / "classes.txt").unlink()
    ave = FeatureStore.open(out)
    assert ave.index["clip_id"].tolist() == [f"{i:04d}_yt{i}" for i in range(5)]
    assert ave.classes == ["a", "b", "c"]
    ann = annotations_frame(out / "Annotations.txt")
    assert ann["clip_id"].tolist() == ave.index["clip_id"].tolist() and ann["label_idx"].tolist() == [0, 1, 0, 2, 1]
