"""AVE's released feature layout (Tian et al. 2018), read as a store, with every file checked first.

An AVE feature folder holds, each under the HDF5 key ``avadataset`` (AVE's own release in brackets):

* ``visual_feature.h5`` float (N, 10, 7, 7, 512) — VGG-19 pool5 per 1-s segment [float64];
* ``audio_feature.h5`` float (N, 10, 128) — VGGish per segment [float64];
* ``labels.h5`` float (N, 10, W) — one-hot per segment: column k < K is class k, the LAST column
  (W - 1) is background [W = 29: 28 classes + background; AVE's ``dataloader.py`` hard-codes 29];
* ``labels_closs.h5`` float32 (N, 10) event=1 / background=0 and ``mil_labels.h5`` float32 (N, W)
  video-level one-hot (optional);
* ``train_order.h5`` / ``val_order.h5`` / ``test_order.h5``: int64 row indices under key ``order``
  [3339 / 402 / 402 rows]; read by :func:`pipelines.sources.ave.read_splits`.

Rows follow AVE's ``Annotations.txt`` order, parsed by :func:`pipelines.sources.ave.parse_annotations`
(the one parser; clip ids ``<row:04d>_<youtube_id>`` as the dataset build gives them); classes are
numbered in order of first appearance there, which is what ``mil_labels.h5`` encodes. Our exports
(``features.ave_interop.export_ave``) also write ``clip_ids.txt``, ``classes.txt`` and, when the
labels were padded to more columns than classes + 1 (``--pad-classes 29``), :data:`EXPORT_FILE`
saying so; without that record the label width must be the class count + 1.

:func:`open_ave` checks the folder before anything is read for training (shapes across the files,
label width against ``classes.txt`` / ``Annotations.txt``, one-hot rows with background last,
unused padding columns, the video labels, the split orders against N, ``clip_ids.txt``) and raises
:class:`AveLayoutError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.store.card import StoreCard, StoreError, failures_frame, index_frame
from features.store.native import StoreContents
from features.store.shards import FeatureBatch
from pipelines.sources.ave import ave_classes, parse_annotations, read_splits

__all__ = [
    "AVE_KEY", "ORDER_KEY", "SPLITS", "VISUAL_FILE", "AUDIO_FILE", "LABELS_FILE", "MIL_FILE", "CLOSS_FILE",
    "CLIP_IDS_FILE", "CLASSES_FILE", "ANNOTATIONS_FILE", "EXPORT_FILE", "AVE_LABEL_COLUMNS", "AveLayoutError",
    "AveExportRecord", "annotations_frame", "is_ave_folder", "open_ave", "order_file",
]

log = logging.getLogger(__name__)

AVE_KEY, ORDER_KEY = "avadataset", "order"
SPLITS = ("train", "val", "test")
VISUAL_FILE, AUDIO_FILE, LABELS_FILE = "visual_feature.h5", "audio_feature.h5", "labels.h5"
MIL_FILE, CLOSS_FILE = "mil_labels.h5", "labels_closs.h5"
CLIP_IDS_FILE, CLASSES_FILE, ANNOTATIONS_FILE = "clip_ids.txt", "classes.txt", "Annotations.txt"
EXPORT_FILE = "wherewhen_ave.json"
#: label columns of AVE's release and of its dataloader.py: 28 classes + background (last)
AVE_LABEL_COLUMNS = 29


class AveLayoutError(StoreError, ValueError):
    """An AVE feature folder whose files disagree or are malformed; the message names the file."""


class AveExportRecord(BaseModel):
    """``wherewhen_ave.json``: what an export wrote that AVE's files cannot say themselves.

    Attributes:
        classes: K, the classes (label columns 0..K-1).
        label_columns: W, the width of ``labels.h5`` / ``mil_labels.h5``; columns K..W-2 are padding
            (always zero), column W-1 is background.
        feature_dtype: the dtype of the two feature files.
        store_id / store_dtype: the store exported; its values were ``store_dtype``, so the features
            carry that precision whatever ``feature_dtype`` is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = "wherewhen-ave-export"
    version: int = 1
    classes: int = Field(ge=1)
    label_columns: int = Field(ge=2)
    feature_dtype: str
    store_id: str
    store_dtype: str = "float16"


def order_file(split: str) -> str:
    """The split order file of ``split`` (train | val | test): ``<split>_order.h5``."""
    return f"{split}_order.h5"


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


# --------------------------------------------------------------------------- reading one file

def _dataset_shape(path: Path, key: str = AVE_KEY, float_only: bool = True) -> tuple[int, ...]:
    """The shape of ``path[key]``; AveLayoutError when the file, the key or a float dtype is missing."""
    if not path.is_file():
        raise AveLayoutError(f"{path}: missing (AVE's layout needs {VISUAL_FILE}, {AUDIO_FILE} and {LABELS_FILE})")
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise AveLayoutError(f"{path}: no dataset {key!r} (found {list(f)})")
            d = f[key]
            if float_only and d.dtype.kind != "f":
                raise AveLayoutError(f"{path}: {key!r} is {d.dtype}, AVE's features and labels are float")
            return tuple(int(x) for x in d.shape)
    except OSError as exc:
        raise AveLayoutError(f"{path}: not a readable HDF5 file ({exc})") from None


def _read_h5(path: Path, key: str = AVE_KEY) -> np.ndarray:
    _dataset_shape(path, key)
    with h5py.File(path, "r") as f:
        return f[key][()]


def _read_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file (``clip_ids.txt``, ``classes.txt``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AveLayoutError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- the checks

def _check_features(root: Path) -> tuple[int, int, tuple[int, int, int], int]:
    """N, T, (H, W, C) and Ca from the two feature files, which must agree on N and T."""
    vshape = _dataset_shape(root / VISUAL_FILE)
    if len(vshape) != 5:
        raise AveLayoutError(f"{root / VISUAL_FILE}: shape {vshape}, expected (N, T, H, W, C) like AVE's (N, 10, 7, 7, 512)")
    n, t, h, w, c = vshape
    ashape = _dataset_shape(root / AUDIO_FILE)
    if len(ashape) != 3 or ashape[:2] != (n, t):
        raise AveLayoutError(f"{root / AUDIO_FILE}: shape {ashape}, expected ({n}, {t}, Ca) to match {VISUAL_FILE} {vshape}")
    return n, t, (h, w, c), ashape[2]


def _read_record(root: Path) -> AveExportRecord | None:
    path = root / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        return AveExportRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise AveLayoutError(f"{path}: not an export record ({str(exc).splitlines()[0]})") from None


def _class_names(root: Path, ann: pd.DataFrame | None, width: int, record: AveExportRecord | None) -> list[str]:
    """The class names, whose count must fit the label width (K + 1, or the export record's padding)."""
    if (root / CLASSES_FILE).is_file():
        where, names = root / CLASSES_FILE, _read_lines(root / CLASSES_FILE)
        if len(set(names)) != len(names):
            raise AveLayoutError(f"{where}: a class name is listed twice")
    elif ann is not None:
        where, names = root / ANNOTATIONS_FILE, list(dict.fromkeys(ann["category"]))  # label_idx order
    else:
        return [f"class_{j}" for j in range(width - 1)]
    k = len(names)
    if record is not None:
        if (record.classes, record.label_columns) != (k, width):
            raise AveLayoutError(
                f"{root / EXPORT_FILE}: records {record.classes} classes in {record.label_columns} label columns, "
                f"but {where.name} names {k} and {LABELS_FILE} has {width} columns")
    elif width != k + 1:
        raise AveLayoutError(
            f"{root / LABELS_FILE}: {width} label columns, but {where} names {k} classes: AVE's layout has one column "
            f"per class plus background last ({k + 1}); a padded export says so in {EXPORT_FILE}")
    return names


def _segment_labels(path: Path, labels: np.ndarray, k: int) -> np.ndarray:
    """labels (N, T, W) one-hot, background last, padding columns unused → int64 (N, T) with K = background."""
    width = labels.shape[-1]
    hot = labels == 1
    bad = ~(hot | (labels == 0)).all(-1) | (hot.sum(-1) != 1)
    if bad.any():
        i, s = np.argwhere(bad)[0]
        raise AveLayoutError(
            f"{path}: {int(bad.sum())} (clip, segment) rows are not one-hot, the first clip row {i} segment {s} "
            f"({labels[i, s].tolist()}); every segment has exactly one 1 (background in the last column)")
    column = hot.argmax(-1)
    padding = (column >= k) & (column < width - 1)
    if padding.any():
        i, s = np.argwhere(padding)[0]
        raise AveLayoutError(
            f"{path}: clip row {i} segment {s} uses column {column[i, s]}, but there are {k} classes "
            f"(columns 0..{k - 1}) and background is the last column ({width - 1})")
    return np.where(column == width - 1, k, column).astype(np.int64)


def _video_labels(root: Path, seg_label: np.ndarray, k: int, width: int) -> np.ndarray:
    """int64 (N,) video labels: ``mil_labels.h5`` (checked against the segments) or the most frequent event class."""
    n, t = seg_label.shape
    if (root / CLOSS_FILE).is_file():
        closs = _read_h5(root / CLOSS_FILE)
        if closs.shape != (n, t):
            raise AveLayoutError(f"{root / CLOSS_FILE}: shape {closs.shape}, expected ({n}, {t}) like {LABELS_FILE}")
        differs = (closs > 0) != (seg_label < k)
        if differs.any():
            i, s = np.argwhere(differs)[0]
            raise AveLayoutError(
                f"{root / CLOSS_FILE}: clip row {i} segment {s} says {'event' if closs[i, s] > 0 else 'background'}, "
                f"{LABELS_FILE} the other ({int(differs.sum())} segments differ; background is its last column)")
    if not (root / MIL_FILE).is_file():
        counts = np.stack([(seg_label == j).sum(1) for j in range(k)], 1)
        return counts.argmax(1).astype(np.int64)
    mil = _read_h5(root / MIL_FILE)
    if mil.shape != (n, width):
        raise AveLayoutError(f"{root / MIL_FILE}: shape {mil.shape}, expected ({n}, {width}) like {LABELS_FILE}")
    label = mil.argmax(-1).astype(np.int64)
    if (label >= k).any():
        i = int(np.flatnonzero(label >= k)[0])
        raise AveLayoutError(f"{root / MIL_FILE}: clip row {i} has video label column {label[i]}, not a class (0..{k - 1})")
    other = (seg_label < k) & (seg_label != label[:, None])
    if other.any():
        i, s = np.argwhere(other)[0]
        raise AveLayoutError(
            f"{root / LABELS_FILE}: clip row {i} segment {s} is class {seg_label[i, s]}, but {MIL_FILE} says the "
            f"clip is class {label[i]}")
    return label


def _clip_ids(root: Path, ann: pd.DataFrame | None, n: int) -> list[str]:
    if (root / CLIP_IDS_FILE).is_file():
        ids = _read_lines(root / CLIP_IDS_FILE)
        if len(ids) != n or len(set(ids)) != n:
            raise AveLayoutError(f"{root / CLIP_IDS_FILE}: {len(ids)} lines ({len(set(ids))} distinct), "
                                 f"expected {n} distinct clip ids, one per row of {VISUAL_FILE}")
        return ids
    if ann is not None:
        return list(ann["clip_id"])
    return [f"ave-{i:05d}" for i in range(n)]


def _split_column(root: Path, n: int) -> np.ndarray:
    """Each row's split from the three order files; every row ``train`` when there are none."""
    present = [s for s in SPLITS if (root / order_file(s)).is_file()]
    split = np.array(["train"] * n, dtype=object)
    if not present:
        log.warning("%s: no split order files: all %d clips are train", root, n)
        return split
    for s in SPLITS:
        path = root / order_file(s)
        if not path.is_file():
            raise AveLayoutError(f"{path}: missing; AVE's splits are {', '.join(order_file(x) for x in SPLITS)}")
        shape = _dataset_shape(path, ORDER_KEY, float_only=False)
        with h5py.File(path, "r") as f:
            kind = f[ORDER_KEY].dtype.kind
        if kind not in "iu" or len(shape) != 1:
            raise AveLayoutError(f"{path}: {ORDER_KEY!r} is {shape} of kind {kind!r}, expected 1-D int64 row indices")
    try:
        rows = read_splits(root, n)
    except ValueError as exc:
        raise AveLayoutError(f"{exc} (the rows of {VISUAL_FILE})") from None
    for row, s in rows.items():
        split[row] = s
    missing = n - len(rows)
    if missing:
        log.warning("%s: %d of %d rows are in no split order file: they are train", root, missing, n)
    return split


# --------------------------------------------------------------------------- the layout

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
    The split comes from the three ``*_order.h5`` files (none: every clip ``train``). The video
    label is ``mil_labels.h5``'s, else the most frequent non-background segment label. Features are
    read as float16 (the store's dtype).

    Raises:
        AveLayoutError: (a StoreError and a ValueError) one line naming the file and what is wrong —
            shapes that disagree across files, a label width that does not fit the classes, rows that
            are not one-hot with background last, video labels that contradict the segments, split
            orders outside N or overlapping, a ``clip_ids.txt`` or ``Annotations.txt`` of another length.
    """
    root = Path(path)
    n, t, (h, w, c), ca = _check_features(root)
    lshape = _dataset_shape(root / LABELS_FILE)
    if len(lshape) != 3 or lshape[:2] != (n, t) or lshape[2] < 2:
        raise AveLayoutError(f"{root / LABELS_FILE}: shape {lshape}, expected ({n}, {t}, W) with W = classes + "
                             f"background (AVE: {AVE_LABEL_COLUMNS}) to match {VISUAL_FILE}")
    width = lshape[2]
    ann = None
    if (root / ANNOTATIONS_FILE).is_file():
        try:
            ann = annotations_frame(root / ANNOTATIONS_FILE)
        except ValueError as exc:  # the parser's message names the file and the line
            raise AveLayoutError(str(exc)) from None
        if len(ann) != n:
            raise AveLayoutError(f"{root / ANNOTATIONS_FILE}: {len(ann)} annotation rows, but {VISUAL_FILE} has {n} clips")
    classes = _class_names(root, ann, width, _read_record(root))
    k = len(classes)
    seg_label = _segment_labels(root / LABELS_FILE, _read_h5(root / LABELS_FILE), k)
    label_idx = _video_labels(root, seg_label, k, width)
    ids = _clip_ids(root, ann, n)
    split = _split_column(root, n)
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
