"""``wherewhen features export-ave``: the files AVE-ECCV18's own loader reads, and the round trip back.

The loader here re-implements the semantics of AVE-ECCV18's ``dataloader.py`` (``AVEDataset``): the
split's ``order`` array, the whole ``avadataset`` arrays, float32 batch buffers of the hard-coded
shapes (B, 10, 7, 7, 512) / (B, 10, 128) / (B, 10, 29) filled row by row with ``order[idx * B + i]``
by numpy assignment — so a label file of another width fails exactly as it does there.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from features.labels import segment_labels
from features.store import FeatureBatch, FeatureStore, ShardData, StoreCard, clip_sha256, shard_path, write_card
from features.store import write_parquet_atomic, write_shard
from features.store.ave_layout import AveLayoutError
from flows.cli import main

N, T, H, W, C, CA = 8, 10, 7, 7, 512, 128
CLASSES = ["bell", "speech", "bark", "plane", "car", "violin", "flute", "truck"]   # 8 classes, as in issue 17
SPLIT = ["train", "train", "train", "train", "val", "val", "test", "test"]


class AVELoaderSemantics:
    """AVEDataset's behaviour: what its get_batch returns for a split, or the error it raises."""

    def __init__(self, root: Path, split: str, batch_size: int) -> None:
        with h5py.File(root / f"{split}_order.h5", "r") as f:
            self.order = f["order"][:]
        with h5py.File(root / "audio_feature.h5", "r") as f:
            self.audio = f["avadataset"][:]
        with h5py.File(root / "labels.h5", "r") as f:
            self.labels = f["avadataset"][:]
        with h5py.File(root / "visual_feature.h5", "r") as f:
            self.video = f["avadataset"][:]
        self.batch_size = batch_size
        self.video_batch = np.float32(np.zeros([batch_size, 10, 7, 7, 512]))
        self.audio_batch = np.float32(np.zeros([batch_size, 10, 128]))
        self.label_batch = np.float32(np.zeros([batch_size, 10, 29]))

    def __len__(self) -> int:
        return len(self.order)

    def get_batch(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for i in range(self.batch_size):
            row = self.order[idx * self.batch_size + i]
            self.video_batch[i, :, :, :, :] = self.video[row, :, :, :, :]
            self.audio_batch[i, :, :] = self.audio[row, :, :]
            self.label_batch[i, :, :] = self.labels[row, :, :]
        return (torch.from_numpy(self.audio_batch).float(), torch.from_numpy(self.video_batch).float(),
                torch.from_numpy(self.label_batch).float())


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """A native hdf5 store with AVE's shapes: 8 clips, 8 classes, events of different lengths."""
    root = tmp_path_factory.mktemp("ave-shaped-store")
    rng = np.random.default_rng(17)
    label = np.array([0, 3, 7, 1, 5, 2, 6, 4], np.int64)
    events = [(0, 10), (2.4, 6.6), (5, 9), (0, 3), (7, 10), (1, 8), (4, 5), (0, 10)]
    seg = np.stack([segment_labels(T, 1.0, int(l), len(CLASSES), s, e) for l, (s, e) in zip(label, events)]).astype(np.int64)
    vis = np.abs(rng.normal(size=(N, T, H, W, C))).astype(np.float16)
    aud = rng.normal(size=(N, T, CA)).astype(np.float16)
    batch = FeatureBatch([f"{i:04d}_yt{i}" for i in range(N)], vis, aud, np.ones((N, T), bool), label, seg)
    write_shard(shard_path(root, 0, "hdf5"), ShardData(batch, {}), "hdf5")
    rows = [{"clip_id": batch.clip_id[i], "shard": 0, "row": i, "label_idx": int(label[i]), "split": SPLIT[i],
             "sha256": clip_sha256(vis[i], aud[i], batch.segment_mask[i]), "event_start_s": events[i][0],
             "event_end_s": events[i][1], "has_audio": True} for i in range(N)]
    write_parquet_atomic(root / "index.parquet", pd.DataFrame(rows))
    write_card(root, StoreCard(store_id="avetest", format="hdf5", classes=CLASSES, num_segments=T,
                               segment={"num_segments": T, "segment_s": 1.0}, visual_shape=(H, W, C), audio_dim=CA,
                               num_shards=1, clips=N))
    return FeatureStore.open(root)


def _export(store: FeatureStore, out: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["features", "export-ave", str(store.path), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def padded(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ave29"
    text = _export(store, out, "--pad-classes", "29")
    assert f"exported {N} clips" in text and "background column 28" in text
    return out


def test_export_has_aves_keys_dtypes_and_shapes(padded: Path) -> None:
    want = {
        "visual_feature.h5": ("avadataset", (N, 10, 7, 7, 512), np.float64),
        "audio_feature.h5": ("avadataset", (N, 10, 128), np.float64),
        "labels.h5": ("avadataset", (N, 10, 29), np.float32),
        "labels_closs.h5": ("avadataset", (N, 10), np.float32),
        "mil_labels.h5": ("avadataset", (N, 29), np.float32),
        "train_order.h5": ("order", (4,), np.int64),
        "val_order.h5": ("order", (2,), np.int64),
        "test_order.h5": ("order", (2,), np.int64),
    }
    for name, (key, shape, dtype) in want.items():
        with h5py.File(padded / name, "r") as f:
            assert list(f) == [key], name
            d = f[key]
            assert (d.shape, d.dtype, d.chunks, d.compression) == (shape, dtype, None, None), name
    with h5py.File(padded / "labels.h5", "r") as f:
        labels = f["avadataset"][()]
    assert set(np.unique(labels)) == {0.0, 1.0} and (labels.sum(-1) == 1).all()
    assert not labels[..., len(CLASSES):28].any()           # padding columns stay empty
    assert labels[..., 28].any()                              # background is the last column
    with h5py.File(padded / "test_order.h5", "r") as f:
        assert f["order"][()].tolist() == [6, 7]
    record = json.loads((padded / "wherewhen_ave.json").read_text())
    assert (record["classes"], record["label_columns"], record["store_dtype"]) == (8, 29, "float16")


def test_aves_loader_semantics_read_the_padded_export_and_ave_att_runs_on_it(store, padded: Path) -> None:
    from stan_head.models import HeadConfig, build_head

    loader = AVELoaderSemantics(padded, "train", batch_size=4)
    assert len(loader) == 4
    audio, video, labels = loader.get_batch(0)
    assert video.shape == (4, 10, 7, 7, 512) and audio.shape == (4, 10, 128) and labels.shape == (4, 10, 29)
    assert video.dtype == audio.dtype == labels.dtype == torch.float32
    want = store.read(loader.order[:4])
    np.testing.assert_array_equal(video.numpy(), want.visual.astype(np.float32))
    np.testing.assert_array_equal(audio.numpy(), want.audio.astype(np.float32))
    column = np.where(want.segment_label == len(CLASSES), 28, want.segment_label)
    np.testing.assert_array_equal(labels.numpy().argmax(-1), column)

    # one forward of the A+V-att head with AVE's 28 classes: 29 scores per segment, like AVE's att_Net
    torch.manual_seed(0)
    head = build_head(HeadConfig(model="ave_att", num_classes=28, visual_dim=512, audio_dim=128, segment_head=True))
    head.eval()
    with torch.no_grad():
        out = head(video, audio, torch.ones(4, 10, dtype=torch.bool))
    assert out.logits.shape == (4, 28) and out.segment_logits.shape == (4, 10, 29) and out.alpha.shape == (4, 10, 7, 7)
    torch.testing.assert_close(out.alpha.sum((-2, -1)), torch.ones(4, 10))
    loss = torch.nn.MultiLabelSoftMarginLoss()(torch.softmax(out.segment_logits, -1), labels)  # AVE's training loss
    assert torch.isfinite(loss) and torch.isfinite(out.logits).all()


def test_aves_loader_semantics_refuse_an_unpadded_export_like_ave_does(store, tmp_path: Path) -> None:
    out = tmp_path / "ave9"
    _export(store, out)
    with h5py.File(out / "labels.h5", "r") as f:
        assert f["avadataset"].shape == (N, 10, 9)
    with pytest.raises(ValueError, match=r"could not broadcast input array from shape \(10,9\) into shape \(10,29\)"):
        AVELoaderSemantics(out, "train", batch_size=4).get_batch(0)


@pytest.mark.parametrize("args", [("--pad-classes", "29"), (), ("--pad-classes", "12", "--feature-dtype", "float32")])
def test_round_trip_is_exact(store, tmp_path: Path, args: tuple[str, ...]) -> None:
    """ids, features (float16 values, exact), segment and video labels, classes and splits come back."""
    out = tmp_path / "ave"
    _export(store, out, *args)
    back = FeatureStore.open(out)
    assert back.card.format == "ave" and back.classes == CLASSES and len(back) == N
    assert back.index["clip_id"].tolist() == store.index["clip_id"].tolist()
    assert back.index["split"].tolist() == SPLIT
    assert back.index["label_idx"].tolist() == store.index["label_idx"].tolist()
    a, b = store.read(np.arange(N)), back.read(np.arange(N))
    for name in ("visual", "audio", "label_idx", "segment_label"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_the_mismatched_width_folder_is_refused_with_one_line(padded: Path, tmp_path: Path) -> None:
    """Issue 17's folder: labels padded to 29 columns, 8 class names, nothing saying it was padded."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(padded, bad)
    (bad / "wherewhen_ave.json").unlink()
    with pytest.raises(AveLayoutError) as exc:
        FeatureStore.open(bad)
    message = str(exc.value)
    assert "\n" not in message and str(bad / "labels.h5") in message
    assert "29 label columns" in message and "names 8 classes" in message
    result = CliRunner().invoke(main, ["features", "export-ave", str(bad), "--out", str(tmp_path / "again")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"error: {message}"]


def test_too_few_pad_columns_is_a_clear_error(store, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["features", "export-ave", str(store.path), "--out", str(tmp_path / "x"),
                                       "--pad-classes", "8"])
    assert result.exit_code == 1 and "pad_classes=8 is fewer than the store's 8 classes + background" in result.output
    assert not (tmp_path / "x").exists()
