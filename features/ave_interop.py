"""Export a store in AVE's released feature layout (Tian et al. 2018), for AVE's own code.

The layout is described in :mod:`features.store.ave_layout`, which also reads and checks it
(``FeatureStore.open`` on an AVE folder). An export writes AVE's files as its release has them —
key ``avadataset`` in the feature and label files, key ``order`` in the split files, float64
features (the dtype of AVE's released features; ``feature_dtype="float32"`` halves the size and AVE's
loader casts to float32 anyway), float32 labels with background in the last column, int64 split
orders — plus ``clip_ids.txt``, ``classes.txt`` and ``wherewhen_ave.json``, so that a round trip keeps
ids, names and any label padding.

Precision: a store holds float16, so the exported features are float16 values widened to
``feature_dtype`` (exact, but no finer than float16). AVE's ``dataloader.py`` hard-codes 29 label
columns (28 classes + background): ``pad_classes=29`` writes that width for a store with fewer classes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from features.store import FeatureStore
from features.store.ave_layout import (
    AUDIO_FILE, AVE_KEY, CLASSES_FILE, CLIP_IDS_FILE, CLOSS_FILE, EXPORT_FILE, LABELS_FILE, MIL_FILE, ORDER_KEY,
    SPLITS, VISUAL_FILE, AveExportRecord, order_file,
)
from pipelines.atomic import atomic_path, atomic_write_text

__all__ = ["FeatureDtype", "export_ave"]

log = logging.getLogger(__name__)

#: dtypes an export may write its features in (AVE's release: float64)
FeatureDtype = Literal["float64", "float32"]


def _write_h5(path: Path, data: np.ndarray, key: str = AVE_KEY) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=data)


def _label_width(num_classes: int, pad_classes: int | None) -> int:
    """Label columns: classes + background, or ``pad_classes`` (ValueError when that is too few)."""
    if pad_classes is None:
        return num_classes + 1
    if pad_classes < num_classes + 1:
        raise ValueError(f"pad_classes={pad_classes} is fewer than the store's {num_classes} classes + background "
                         f"({num_classes + 1} label columns)")
    return pad_classes


def export_ave(
    store: FeatureStore,
    out_dir: str | Path,
    chunk: int = 256,
    pad_classes: int | None = None,
    feature_dtype: FeatureDtype = "float64",
) -> Path:
    """Write ``store`` in AVE's layout into ``out_dir`` (rows in the store's index order).

    Args:
        store: any store (native or AVE).
        out_dir: the folder (created; AVE's file names inside it are replaced atomically).
        chunk: clips read and written at a time.
        pad_classes: label columns of ``labels.h5`` / ``mil_labels.h5`` (None: classes + 1). Columns
            ``K..pad_classes-2`` stay zero and background is the last; 29 is what AVE's loader reads.
        feature_dtype: dtype of ``visual_feature.h5`` / ``audio_feature.h5`` (AVE's release: float64).

    The visual/audio shapes are whatever the store holds (AVE's own are (10, 7, 7, 512) / (10, 128));
    padded segments of a store are exported as they are stored (zeros, background). Returns ``out_dir``.
    Raises ValueError when ``pad_classes`` is fewer than the classes + background.
    """
    out = Path(out_dir)
    n, t = len(store), store.card.num_segments
    (h, w, c), ca, k = store.card.visual_shape, store.card.audio_dim, len(store.classes)
    width = _label_width(k, pad_classes)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((n, t, width), np.float32)
    with atomic_path(out / VISUAL_FILE) as vtmp, atomic_path(out / AUDIO_FILE) as atmp:
        with h5py.File(vtmp, "w") as vf, h5py.File(atmp, "w") as af:
            # contiguous, uncompressed, like AVE's files
            vd = vf.create_dataset(AVE_KEY, shape=(n, t, h, w, c), dtype=feature_dtype)
            ad = af.create_dataset(AVE_KEY, shape=(n, t, ca), dtype=feature_dtype)
            for start in range(0, n, chunk):
                b = store.read(np.arange(start, min(n, start + chunk)))
                rows = np.arange(start, start + len(b))
                vd[start:start + len(b)] = b.visual.astype(feature_dtype)
                ad[start:start + len(b)] = b.audio.astype(feature_dtype)
                column = np.where(b.segment_label >= k, width - 1, b.segment_label)  # background last
                labels[rows[:, None], np.arange(t)[None, :], column] = 1.0
    _write_h5(out / LABELS_FILE, labels)
    _write_h5(out / CLOSS_FILE, (labels[..., :k].sum(-1) > 0).astype(np.float32))
    mil = np.zeros((n, width), np.float32)   # AVE's mil_labels.h5 is (N, 29): the clip's class, one-hot
    mil[np.arange(n), store.index["label_idx"].to_numpy()] = 1.0
    _write_h5(out / MIL_FILE, mil)
    for split in SPLITS:
        _write_h5(out / order_file(split), store.positions(split).astype(np.int64), key=ORDER_KEY)
    atomic_write_text(out / CLIP_IDS_FILE, "".join(f"{c}\n" for c in store.index["clip_id"]))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in store.classes))
    record = AveExportRecord(classes=k, label_columns=width, feature_dtype=feature_dtype,
                             store_id=store.card.store_id, store_dtype=store.card.dtype)
    atomic_write_text(out / EXPORT_FILE, record.model_dump_json(indent=2) + "\n")
    log.info("exported %d clips in AVE layout to %s (%d label columns, %s features)", n, out, width, feature_dtype)
    return out
