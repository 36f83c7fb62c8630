"""Export a store in AVE's released feature layout (Tian et al. 2018), for AVE's own code.

The layout is described in :mod:`features.store.ave_layout`, which also reads it (``FeatureStore.open``
on an AVE folder). An export writes AVE's files plus ``clip_ids.txt`` and ``classes.txt``, so that a
round trip keeps ids and names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from features.store import FeatureStore
from features.store.ave_layout import (
    AUDIO_FILE, AVE_KEY, CLASSES_FILE, CLIP_IDS_FILE, CLOSS_FILE, LABELS_FILE, MIL_FILE, SPLITS, VISUAL_FILE,
)
from pipelines.atomic import atomic_path, atomic_write_text

__all__ = ["export_ave"]

log = logging.getLogger(__name__)


def _write_h5(path: Path, data: np.ndarray, key: str = AVE_KEY) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=data)


def export_ave(store: FeatureStore, out_dir: str | Path, chunk: int = 256) -> Path:
    """Write ``store`` in AVE's layout into ``out_dir`` (rows in the store's index order).

    The visual/audio shapes are whatever the store holds (AVE's own are (10, 7, 7, 512) / (10, 128));
    features are written as float32 like AVE's files. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, t = len(store), store.card.num_segments
    (h, w, c), ca, k = store.card.visual_shape, store.card.audio_dim, len(store.classes)
    with atomic_path(out / VISUAL_FILE) as vtmp, atomic_path(out / AUDIO_FILE) as atmp:
        with h5py.File(vtmp, "w") as vf, h5py.File(atmp, "w") as af:
            vd = vf.create_dataset(AVE_KEY, shape=(n, t, h, w, c), dtype=np.float32, chunks=(1, t, h, w, c) if n else None)
            ad = af.create_dataset(AVE_KEY, shape=(n, t, ca), dtype=np.float32)
            labels = np.zeros((n, t, k + 1), np.float32)
            for start in range(0, n, chunk):
                b = store.read(np.arange(start, min(n, start + chunk)))
                vd[start:start + len(b)] = b.visual.astype(np.float32)
                ad[start:start + len(b)] = b.audio.astype(np.float32)
                labels[np.arange(start, start + len(b))[:, None], np.arange(t)[None, :], b.segment_label] = 1.0
    _write_h5(out / LABELS_FILE, labels)
    _write_h5(out / CLOSS_FILE, (labels[..., :k].sum(-1) > 0).astype(np.float32))
    mil = np.zeros((n, k + 1), np.float32)   # AVE's mil_labels.h5 is (N, 29): 28 classes + background
    mil[np.arange(n), store.index["label_idx"].to_numpy()] = 1.0
    _write_h5(out / MIL_FILE, mil)
    for split in SPLITS:
        _write_h5(out / f"{split}_order.h5", store.positions(split).astype(np.int64), key="order")
    atomic_write_text(out / CLIP_IDS_FILE, "".join(f"{c}\n" for c in store.index["clip_id"]))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in store.classes))
    log.info("exported %d clips in AVE layout to %s", n, out)
    return out
