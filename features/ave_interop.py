"""AVE's released feature layout (Tian et al. 2018): export to it and read from it.

An AVE feature folder holds, each under the HDF5 key ``avadataset``:

* ``visual_feature.h5`` float (N, 10, 7, 7, 512) — VGG-19 pool5 per 1-s segment;
* ``audio_feature.h5`` float (N, 10, 128) — VGGish per segment;
* ``labels.h5`` float (N, 10, K+1) — one-hot per segment, background last (AVE: K = 28);
* ``labels_closs.h5`` (N, 10) event=1 / background=0, ``mil_labels.h5`` (N, K+1) video-level one-hot;
* ``train_order.h5`` / ``val_order.h5`` / ``test_order.h5``: int64 row indices under key ``order``.

Rows follow AVE's ``Annotations.txt`` order (``Category&YouTubeID&Quality&Start&End``); classes are
numbered in order of first appearance there, which is what ``mil_labels.h5`` encodes. An export
additionally writes ``clip_ids.txt`` and ``classes.txt`` so that a round trip keeps ids and names.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from features.store import FeatureBatch, FeatureStore, StoreCard, StoreError
from pipelines.atomic import atomic_path, atomic_write_text

__all__ = ["export_ave", "open_ave", "parse_annotations", "AVE_KEY", "SPLITS"]

log = logging.getLogger(__name__)

AVE_KEY = "avadataset"
SPLITS = ("train", "val", "test")


def _write_h5(path: Path, data: np.ndarray, key: str = AVE_KEY) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=data)


def parse_annotations(path: Path) -> pd.DataFrame:
    """AVE ``Annotations.txt`` -> DataFrame(category, video_id, quality, start_s, end_s, label_idx).

    ``label_idx`` numbers categories in order of first appearance (AVE's mil_labels convention).
    Raises ValueError naming the file and line for a malformed line.
    """
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("Category&"):
            continue
        parts = line.strip().split("&")
        if len(parts) != 5:
            raise ValueError(f"{path}:{n}: expected Category&YouTubeID&Quality&Start&End, got {line!r}")
        rows.append((parts[0], parts[1], parts[2], float(parts[3]), float(parts[4])))
    df = pd.DataFrame(rows, columns=["category", "video_id", "quality", "start_s", "end_s"])
    order = list(dict.fromkeys(df["category"]))
    df["label_idx"] = df["category"].map({c: i for i, c in enumerate(order)}).astype("int64")
    return df


def export_ave(store: FeatureStore, out_dir: str | Path, chunk: int = 256) -> Path:
    """Write ``store`` in AVE's layout into ``out_dir`` (rows in the store's index order).

    The visual/audio shapes are whatever the store holds (AVE's own are (10, 7, 7, 512) / (10, 128));
    features are written as float32 like AVE's files. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, t = len(store), store.card.num_segments
    (h, w, c), ca, k = store.card.visual_shape, store.card.audio_dim, len(store.classes)
    with atomic_path(out / "visual_feature.h5") as vtmp, atomic_path(out / "audio_feature.h5") as atmp:
        with h5py.File(vtmp, "w") as vf, h5py.File(atmp, "w") as af:
            vd = vf.create_dataset(AVE_KEY, shape=(n, t, h, w, c), dtype=np.float32, chunks=(1, t, h, w, c) if n else None)
            ad = af.create_dataset(AVE_KEY, shape=(n, t, ca), dtype=np.float32)
            labels = np.zeros((n, t, k + 1), np.float32)
            for start in range(0, n, chunk):
                b = store.read(np.arange(start, min(n, start + chunk)))
                vd[start:start + len(b)] = b.visual.astype(np.float32)
                ad[start:start + len(b)] = b.audio.astype(np.float32)
                labels[np.arange(start, start + len(b))[:, None], np.arange(t)[None, :], b.segment_label] = 1.0
    _write_h5(out / "labels.h5", labels)
    _write_h5(out / "labels_closs.h5", (labels[..., :k].sum(-1) > 0).astype(np.float32))
    mil = np.zeros((n, k + 1), np.float32)   # AVE's mil_labels.h5 is (N, 29): 28 classes + background
    mil[np.arange(n), store.index["label_idx"].to_numpy()] = 1.0
    _write_h5(out / "mil_labels.h5", mil)
    for split in SPLITS:
        _write_h5(out / f"{split}_order.h5", store.positions(split).astype(np.int64), key="order")
    atomic_write_text(out / "clip_ids.txt", "".join(f"{c}\n" for c in store.index["clip_id"]))
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in store.classes))
    log.info("exported %d clips in AVE layout to %s", n, out)
    return out


def _read_h5(path: Path, key: str = AVE_KEY) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: missing (AVE layout needs visual_feature.h5, audio_feature.h5, labels.h5)")
    with h5py.File(path, "r") as f:
        if key not in f:
            raise StoreError(f"{path}: no dataset {key!r} (found {list(f)})")
        return f[key][()]


def open_ave(path: str | Path) -> FeatureStore:
    """Open an AVE feature folder as a :class:`FeatureStore` (same tensors, same reader API).

    Clip ids come from ``clip_ids.txt`` (our exports), else ``Annotations.txt`` (AVE's own rows),
    else ``ave-00000``...; class names from ``classes.txt`` / ``Annotations.txt`` / ``class_k``.
    The split comes from the ``*_order.h5`` files (rows in none of them: ``train``). The video
    label is the most frequent non-background segment label (``mil_labels.h5`` when present).
    """
    root = Path(path)
    with h5py.File(root / "visual_feature.h5", "r") as f:
        if AVE_KEY not in f:
            raise StoreError(f"{root / 'visual_feature.h5'}: no dataset {AVE_KEY!r}")
        n, t, h, w, c = f[AVE_KEY].shape
    with h5py.File(root / "audio_feature.h5", "r") as f:
        ca = f[AVE_KEY].shape[-1]
    labels = _read_h5(root / "labels.h5")
    if labels.shape[:2] != (n, t):
        raise StoreError(f"{root / 'labels.h5'}: shape {labels.shape} does not match visual features ({n}, {t}, ...)")
    k = labels.shape[-1] - 1
    seg_label = labels.argmax(-1).astype(np.int64)
    seg_label[labels.max(-1) <= 0] = k
    if (root / "mil_labels.h5").is_file():
        label_idx = _read_h5(root / "mil_labels.h5").argmax(-1).astype(np.int64)
    else:
        counts = np.stack([(seg_label == j).sum(1) for j in range(k)], 1)
        label_idx = counts.argmax(1).astype(np.int64)
    ann = parse_annotations(root / "Annotations.txt") if (root / "Annotations.txt").is_file() else None
    if (root / "clip_ids.txt").is_file():
        ids = (root / "clip_ids.txt").read_text().split("\n")[:n]
    elif ann is not None and len(ann) == n:
        ids = list(ann["video_id"])
    else:
        ids = [f"ave-{i:05d}" for i in range(n)]
    if (root / "classes.txt").is_file():
        classes = [c for c in (root / "classes.txt").read_text().split("\n") if c][:k]
    elif ann is not None:
        classes = list(dict.fromkeys(ann["category"]))[:k]
    else:
        classes = [f"class_{j}" for j in range(k)]
    split = np.array(["train"] * n, dtype=object)
    for s in SPLITS:
        if (root / f"{s}_order.h5").is_file():
            split[_read_h5(root / f"{s}_order.h5", key="order").astype(np.int64)] = s
    index = pd.DataFrame({
        "clip_id": ids, "shard": 0, "row": np.arange(n), "label_idx": label_idx, "split": split.astype(str),
        "sha256": "", "event_start_s": np.nan, "event_end_s": np.nan, "has_audio": True,
    })
    digest = hashlib.sha256(str(((root / "visual_feature.h5").stat().st_size, n, t, h, w, c, ca, k)).encode())
    card = StoreCard(
        store_id="ave-" + digest.hexdigest()[:12], format="ave", dataset_name=root.name, dataset_dir=None,
        classes=classes, num_segments=t, segment={"num_segments": t, "segment_s": 1.0, "frames_per_segment": 1},
        visual={"name": "ave_visual", "feature_shape": [h, w, c]}, audio={"name": "ave_audio", "dim": ca},
        visual_shape=(h, w, c), audio_dim=ca, dtype="float16", num_shards=1, clips=n,
    )

    def reader(positions: np.ndarray) -> FeatureBatch:
        uniq, inverse = np.unique(positions, return_inverse=True)
        with h5py.File(root / "visual_feature.h5", "r") as vf, h5py.File(root / "audio_feature.h5", "r") as af:
            vis = vf[AVE_KEY][uniq].astype(np.float16)[inverse]
            aud = af[AVE_KEY][uniq].astype(np.float16)[inverse]
        return FeatureBatch(
            clip_id=[ids[i] for i in positions], visual=vis, audio=aud, segment_mask=np.ones((len(positions), t), bool),
            label_idx=label_idx[positions], segment_label=seg_label[positions],
        )

    return FeatureStore(root, card, index, None, pd.DataFrame(columns=["clip_id", "relpath", "stage", "error", "message"]), reader=reader)
