"""AVE feature folders as AVE's release has them: opened with the real annotation and split files,
the same clips as the dataset source gives, trained through the CLI; malformed folders refused in one line.

The release folder here has AVE's files and keys with the real ``Annotations.txt``, ``mil_labels.h5``,
``labels_closs.h5`` and split orders (3339 / 402 / 402 rows of 4143) from ../shared/datasets/ave/, labels
(N, 10, 29) made from the annotations by AVE's rule, and small synthetic float64 features (the
released ones are 7.7 GB) that carry the class, so that training has something to learn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from features.labels import segment_labels
from features.store import FeatureStore
from features.store.ave_layout import AveLayoutError, annotations_frame
from flows.cli import main

AVE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ave"
REAL_FILES = ("Annotations.txt", "mil_labels.h5", "labels_closs.h5", "train_order.h5", "val_order.h5", "test_order.h5")
VH, VW, VC, CA = 2, 2, 16, 16


def _h5(path: Path, data: np.ndarray, key: str = "avadataset") -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=data)


def _one_hot(seg: np.ndarray, width: int) -> np.ndarray:
    """int (N, T) labels with background = width - 1 -> float32 (N, T, width)."""
    return np.eye(width, dtype=np.float32)[seg]


def _features(root: Path, label: np.ndarray, seg: np.ndarray, k: int, seed: int) -> None:
    """float64 features (as AVE's release) where the clip's class shows in the audio and, during the
    event, in one visual cell."""
    rng = np.random.default_rng(seed)
    n, t = seg.shape
    proto_a, proto_v = rng.normal(size=(k, CA)), rng.normal(size=(k, VC))
    event = seg < k
    audio = rng.normal(scale=0.5, size=(n, t, CA)) + proto_a[label][:, None, :] * np.where(event, 1.0, 0.3)[..., None]
    visual = np.abs(rng.normal(scale=0.5, size=(n, t, VH, VW, VC)))
    cell = rng.integers(0, VH * VW, n)
    visual.reshape(n, t, VH * VW, VC)[np.arange(n), :, cell] += event[..., None] * np.abs(proto_v[label])[:, None, :]
    _h5(root / "visual_feature.h5", visual.astype(np.float64))
    _h5(root / "audio_feature.h5", audio.astype(np.float64))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """AVE's release layout: the real annotation, label and split files, labels.h5 by AVE's rule."""
    root = tmp_path_factory.mktemp("ave-release") / "AVE"
    root.mkdir()
    for name in REAL_FILES:
        shutil.copy(AVE_DIR / name, root / name)
    ann = annotations_frame(root / "Annotations.txt")
    seg = np.stack([segment_labels(10, 1.0, int(r.label_idx), 28, r.start_s, r.end_s) for r in ann.itertuples()])
    _h5(root / "labels.h5", _one_hot(seg.astype(np.int64), 29))
    _features(root, ann["label_idx"].to_numpy(), seg, 28, seed=3)
    return root


def test_the_release_layout_opens_with_aves_ids_classes_labels_and_splits(release: Path) -> None:
    store = FeatureStore.open(release)
    assert len(store) == 4143 and store.card.format == "ave"
    assert len(store.classes) == 28 and store.classes[0] == "Church bell"
    assert store.card.visual_shape == (VH, VW, VC) and store.card.audio_dim == CA
    assert store.index["clip_id"].tolist()[:2] == ["0000_RUhOCu3LNXM", "0001_MH3m4AwEcRY"]
    counts = store.index["split"].value_counts().to_dict()
    assert counts == {"train": 3339, "val": 402, "test": 402}
    for split in ("train", "val", "test"):
        with h5py.File(release / f"{split}_order.h5") as f:
            assert sorted(f["order"][()].tolist()) == store.positions(split).tolist()
    with h5py.File(release / "mil_labels.h5") as f:
        np.testing.assert_array_equal(store.index["label_idx"].to_numpy(), f["avadataset"][()].argmax(1))
    with h5py.File(release / "labels.h5") as f:
        labels = f["avadataset"][()]
    batch = store.read([0, 4142, 17])
    np.testing.assert_array_equal(batch.segment_label, labels[[0, 4142, 17]].argmax(-1))   # background 28 = K
    with h5py.File(release / "visual_feature.h5") as f:
        np.testing.assert_array_equal(batch.visual, f["avadataset"][[0, 17, 4142]].astype(np.float16)[[0, 2, 1]])


def test_the_dataset_source_and_the_feature_interop_give_the_same_clips(release: Path, tmp_path: Path) -> None:
    """One parser, one id rule: AVE's real files through pipelines.sources.ave and through open_ave."""
    from pipelines.sources.ave import AVESource, collect_ave, parse_annotations

    videos = tmp_path / "videos"
    videos.mkdir()
    for youtube_id in {r.youtube_id for r in parse_annotations(AVE_DIR / "Annotations.txt")}:
        (videos / f"{youtube_id}.mp4").touch()   # collect_ave only locates the files
    collected = collect_ave(AVESource(annotations=AVE_DIR / "Annotations.txt", videos_dir=videos), tmp_path / "out")
    assert len(collected.candidates) == 4143 and not collected.failures
    source = {c.clip_id: (c.label, c.split, c.event_start_s, c.event_end_s) for c in collected.candidates}
    store = FeatureStore.open(release)
    assert store.classes == collected.classes
    interop = {r.clip_id: (store.classes[r.label_idx], r.split) for r in store.index.itertuples()}
    assert list(interop) == [c.clip_id for c in collected.candidates]       # same ids, same (annotation) order
    assert {k: v[:2] for k, v in source.items()} == interop
    ann = annotations_frame(release / "Annotations.txt")
    assert ann["clip_id"].tolist() == list(interop)
    assert [(s, e) for *_, s, e in source.values()] == list(zip(ann["start_s"], ann["end_s"]))


@pytest.mark.slow
def test_train_through_the_cli_on_the_release_layout(release: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(release), "--model", "ave_att", "--out", str(run), "--epochs", "2",
                                       "--min-steps", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (run / "run.json").is_file() and "ave_att on store ave-" in result.output
    assert "(402 clips)" in result.output
    test_acc = float(result.output.split("test acc ")[1].split()[0])
    assert test_acc > 0.5, result.output      # the features carry the class; chance is 1/28
    # and the run evaluates on the same folder: AVE has no boxes, so "where" is n/a and "when" is scored
    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", str(run), "--store", str(release), "--out", str(report),
                                       "--max-clips", "24", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scores = json.loads((report / "report.json").read_text())["scores"]["attention"]
    assert scores["clips"] == 24 and scores["pointing"] is None and scores["temporal_pointing"] is not None


# --------------------------------------------------------------------------- malformed folders

K, N = 3, 12
SEG = np.array([[i % K] * 4 + [K] * 6 for i in range(N)])          # one class per clip, then background


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    """A valid 12-clip folder in AVE's layout (3 classes + background, classes.txt, orders 8/2/2)."""
    root = tmp_path / "small"
    root.mkdir()
    label = np.arange(N) % K
    _h5(root / "labels.h5", _one_hot(SEG, K + 1))
    _h5(root / "labels_closs.h5", (SEG < K).astype(np.float32))
    _h5(root / "mil_labels.h5", np.eye(K + 1, dtype=np.float32)[label])
    for split, rows in (("train", range(8)), ("val", [8, 9]), ("test", [11, 10])):
        _h5(root / f"{split}_order.h5", np.array(list(rows), np.int64), key="order")
    (root / "classes.txt").write_text("bark\nbell\ncar\n")
    _features(root, label, SEG, K, seed=0)
    assert len(FeatureStore.open(root)) == N
    return root


def _rewrite(path: Path, fn) -> None:
    with h5py.File(path, "r") as f:
        key = list(f)[0]
        data = f[key][()]
    _h5(path, fn(data), key=key)


def _set(index, value):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a
    return fn


MUTATIONS = {
    "audio with other N": ("audio_feature.h5", lambda r: _rewrite(r / "audio_feature.h5", lambda a: a[:-1]), "expected (12, 10, Ca)"),
    "visual not 5-D": ("visual_feature.h5", lambda r: _rewrite(r / "visual_feature.h5", lambda a: a[:, :, 0]), "expected (N, T, H, W, C)"),
    "integer features": ("audio_feature.h5", lambda r: _rewrite(r / "audio_feature.h5", lambda a: a.astype(np.int32)), "is int32"),
    "labels with other T": ("labels.h5", lambda r: _rewrite(r / "labels.h5", lambda a: a[:, :9]), "expected (12, 10, W)"),
    "labels missing": ("labels.h5", lambda r: (r / "labels.h5").unlink(), "missing"),
    "another key": ("labels.h5", lambda r: _h5(r / "labels.h5", _one_hot(SEG, K + 1), key="labels"), "no dataset 'avadataset'"),
    "width vs classes.txt": ("labels.h5", lambda r: (r / "classes.txt").write_text("bark\nbell\n"), "4 label columns, but"),
    "two ones in a row": ("labels.h5", lambda r: _rewrite(r / "labels.h5", _set((2, 3, 0), 1.0)), "not one-hot"),
    "an empty row": ("labels.h5", lambda r: _rewrite(r / "labels.h5", _set((5, 7), 0.0)), "clip row 5 segment 7"),
    "background not last": ("labels_closs.h5", lambda r: _rewrite(r / "labels_closs.h5", lambda a: 1 - a), "says background"),
    "closs of other shape": ("labels_closs.h5", lambda r: _rewrite(r / "labels_closs.h5", lambda a: a[:, :5]), "shape (12, 5)"),
    "mil of other width": ("mil_labels.h5", lambda r: _rewrite(r / "mil_labels.h5", lambda a: a[:, :3]), "expected (12, 4)"),
    "mil says background": ("mil_labels.h5", lambda r: _rewrite(r / "mil_labels.h5", lambda a: np.eye(K + 1, dtype=np.float32)[[K] * N]), "not a class"),
    "mil contradicts segments": ("labels.h5", lambda r: _rewrite(r / "mil_labels.h5", lambda a: np.roll(a, 1, axis=0)), "mil_labels.h5 says"),
    "order past N": ("test_order.h5", lambda r: _h5(r / "test_order.h5", np.array([11, 12], np.int64), key="order"), "outside"),
    "row in two splits": ("val_order.h5", lambda r: _h5(r / "val_order.h5", np.array([8, 0], np.int64), key="order"), "already in the train split"),
    "float order": ("val_order.h5", lambda r: _h5(r / "val_order.h5", np.array([8.0, 9.0]), key="order"), "int64 row indices"),
    "a split file missing": ("test_order.h5", lambda r: (r / "test_order.h5").unlink(), "missing"),
    "clip_ids.txt short": ("clip_ids.txt", lambda r: (r / "clip_ids.txt").write_text("a\nb\n"), "expected 12 distinct"),
    "Annotations.txt of 4143 rows": ("Annotations.txt", lambda r: shutil.copy(AVE_DIR / "Annotations.txt", r), "4143 annotation rows"),
    "export record disagrees": ("wherewhen_ave.json", lambda r: (r / "wherewhen_ave.json").write_text(
        '{"classes": 2, "label_columns": 29, "feature_dtype": "float64", "store_id": "x"}'), "records 2 classes"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_malformed_folder_is_refused_in_one_line_naming_the_file(small: Path, name: str) -> None:
    filename, mutate, what = MUTATIONS[name]
    mutate(small)
    with pytest.raises(AveLayoutError) as exc:
        FeatureStore.open(small)
    message = str(exc.value)
    assert "\n" not in message and str(small / filename) in message and what in message, message
    assert isinstance(exc.value, ValueError)


def test_train_refuses_a_malformed_folder_in_one_line(small: Path, tmp_path: Path) -> None:
    (small / "classes.txt").write_text("bark\nbell\n")
    result = CliRunner().invoke(main, ["train", str(small), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(small / "labels.h5") in lines[0], result.output
    assert not (tmp_path / "run" / "run.json").exists()
