"""AVE's released feature layout (Tian et al. 2018), read as a store.

An AVE feature folder holds, each under the HDF5 key ``avadataset``:

* ``visual_feature.h5`` float (N, 10, 7, 7, 512) — VGG-19 pool5 per 1-s segment;
* ``audio_feature.h5`` float (N, 10, 128) — VGGish per segment;
* ``labels.h5`` float (N, 10, K+1) — one-hot per segment, background last (AVE: K = 28);
* ``labels_closs.h5`` (N, 10) event=1 / background=0, ``mil_labels.h5`` (N, K+1) video-level one-hot;
* ``train_order.h5`` / ``val_order.h5`` / ``test_order.h5``: int64 row indices under key ``order``.

Rows follow AVE's ``Annotations.txt`` order, parsed by :func:`pipelines.sources.ave.parse_annotations`
(the one parser; clip ids ``<row:04d>_<youtube_id>`` as the dataset build gives them); classes are
numbered in order of first appearance there, which is what ``mil_labels.h5`` encodes. Our exports
(``features.ave_interop.export_ave``) also write ``clip_ids.txt`` and ``classes.txt``, so that a
round trip keeps ids and names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from features.store.card import StoreCard, StoreError, failures_frame, index_frame
from features.store.native import StoreContents
from features.store.shards import FeatureBatch
from pipelines.sources.ave import ave_classes, parse_annotations

__all__ = [
    "AVE_KEY", "SPLITS", "VISUAL_FILE", "AUDIO_FILE", "LABELS_FILE", "MIL_FILE", "CLOSS_FILE", "CLIP_IDS_FILE",
    "CLASSES_FILE", "ANNOTATIONS_FILE", "annotations_frame", "is_ave_folder", "open_ave",
]

AVE_KEY = "avadataset"
SPLITS = ("train", "val", "test")
VISUAL_FILE, AUDIO_FILE, LABELS_FILE = "visual_feature.h5", "audio_feature.h5", "labels.h5"
MIL_FILE, CLOSS_FILE = "mil_labels.h5", "labels_closs.h5"
CLIP_IDS_FILE, CLASSES_FILE, ANNOTATIONS_FILE = "clip_ids.txt", "classes.txt", "Annotations.txt"


def annotations_frame(path: Path) -> pd.DataFrame:
    """``Annotations.txt`` as a table: clip_id, category, youtube_id, quality, start_s, end_s, label_idx.

    ``label_idx`` numbers categories in order of first appearance (AVE's mil_labels convention).
    Raises ValueError naming the line for a malformed one.
    """
    rows = parse_annotations(path)
    order = {c: i for i, c in enumerate(ave_classes(rows))}
    return pd.DataFrame({
        "clip_id": [r.clip_id for r in rows], "category": [r.category for r in rows],
        "youtube_id": [r.youtube_id for r in rows], "quality": [r.quality for r in rows],
        "start_s": [r.start_s for r in rows], "end_s": [r.end_s for r in rows],
        "label_idx": np.array([order[r.category] for r in rows], dtype=np.int64),
    })


def is_ave_folder(path: Path) -> bool:
    """Whether ``path`` looks like an AVE feature folder (it has ``visual_feature.h5``)."""
    return (Path(path) / VISUAL_FILE).is_file()


def _read_h5(path: Path, key: str = AVE_KEY) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: missing (AVE layout needs {VISUAL_FILE}, {AUDIO_FILE}, {LABELS_FILE})")
    with h5py.File(path, "r") as f:
        if key not in f:
            raise StoreError(f"{path}: no dataset {key!r} (found {list(f)})")
        return f[key][()]


class _AveReader:
    """The AVE layout's :class:`features.store.native.BatchReader`: rows of the two feature files."""

    def __init__(self, root: Path, ids: list[str], label_idx: np.ndarray, seg_label: np.ndarray) -> None:
        self.root, self.ids, self.label_idx, self.seg_label = root, ids, label_idx, seg_label

    def __call__(self, positions: np.ndarray) -> FeatureBatch:
        uniq, inverse = np.unique(positions, return_inverse=True)
        with h5py.File(self.root / VISUAL_FILE, "r") as vf, h5py.File(self.root / AUDIO_FILE, "r") as af:
            vis = vf[AVE_KEY][uniq].astype(np.float16)[inverse]
            aud = af[AVE_KEY][uniq].astype(np.float16)[inverse]
        return FeatureBatch(
            clip_id=[self.ids[i] for i in positions], visual=vis, audio=aud,
            segment_mask=np.ones(self.seg_label[positions].shape, bool),
            label_idx=self.label_idx[positions], segment_label=self.seg_label[positions],
        )


def open_ave(path: str | Path) -> StoreContents:
    """Open an AVE feature folder as store contents (same tensors, same reader interface).

    Clip ids come from ``clip_ids.txt`` (our exports), else ``Annotations.txt`` (AVE's own rows),
    else ``ave-00000``...; class names from ``classes.txt`` / ``Annotations.txt`` / ``class_k``.
    The split comes from the ``*_order.h5`` files (rows in none of them: ``train``). The video
    label is the most frequent non-background segment label (``mil_labels.h5`` when present).
    """
    root = Path(path)
    with h5py.File(root / VISUAL_FILE, "r") as f:
        if AVE_KEY not in f:
            raise StoreError(f"{root / VISUAL_FILE}: no dataset {AVE_KEY!r}")
        n, t, h, w, c = f[AVE_KEY].shape
    with h5py.File(root / AUDIO_FILE, "r") as f:
        ca = f[AVE_KEY].shape[-1]
    labels = _read_h5(root / LABELS_FILE)
    if labels.shape[:2] != (n, t):
        raise StoreError(f"{root / LABELS_FILE}: shape {labels.shape} does not match visual features ({n}, {t}, ...)")
    k = labels.shape[-1] - 1
    seg_label = labels.argmax(-1).astype(np.int64)
    seg_label[labels.max(-1) <= 0] = k
    if (root / MIL_FILE).is_file():
        label_idx = _read_h5(root / MIL_FILE).argmax(-1).astype(np.int64)
    else:
        counts = np.stack([(seg_label == j).sum(1) for j in range(k)], 1)
        label_idx = counts.argmax(1).astype(np.int64)
    ann = annotations_frame(root / ANNOTATIONS_FILE) if (root / ANNOTATIONS_FILE).is_file() else None
    if (root / CLIP_IDS_FILE).is_file():
        ids = (root / CLIP_IDS_FILE).read_text().split("\n")[:n]
    elif ann is not None and len(ann) == n:
        ids = list(ann["clip_id"])
    else:
        ids = [f"ave-{i:05d}" for i in range(n)]
    if (root / CLASSES_FILE).is_file():
        classes = [c for c in (root / CLASSES_FILE).read_text().split("\n") if c][:k]
    elif ann is not None:
        classes = list(dict.fromkeys(ann["category"]))[:k]
    else:
        classes = [f"class_{j}" for j in range(k)]
    split = np.array(["train"] * n, dtype=object)
    for s in SPLITS:
        if (root / f"{s}_order.h5").is_file():
            split[_read_h5(root / f"{s}_order.h5", key="order").astype(np.int64)] = s
    index = index_frame(
        {"clip_id": ids[i], "shard": 0, "row": i, "label_idx": int(label_idx[i]), "split": str(split[i]),
         "sha256": "", "event_start_s": np.nan, "event_end_s": np.nan, "has_audio": True}
        for i in range(n)
    )
    digest = hashlib.sha256(str(((root / VISUAL_FILE).stat().st_size, n, t, h, w, c, ca, k)).encode())
    card = StoreCard(
        store_id="ave-" + digest.hexdigest()[:12], format="ave", dataset_name=root.name, dataset_dir=None,
        classes=classes, num_segments=t, segment={"num_segments": t, "segment_s": 1.0, "frames_per_segment": 1},
        visual={"name": "ave_visual", "feature_shape": [h, w, c]}, audio={"name": "ave_audio", "dim": ca},
        visual_shape=(h, w, c), audio_dim=ca, dtype="float16", num_shards=1, clips=n,
    )
    return StoreContents(root, card, index, None, failures_frame([]), _AveReader(root, ids, label_idx, seg_label))
