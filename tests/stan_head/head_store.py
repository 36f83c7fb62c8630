"""A small real feature store (HDF5 shards, index, card — written with features.store's writers)
whose features carry a learnable signal: each class has a visual pattern placed at one random
region per clip (the 'sounding object') during the event segments, and an audio pattern there too.
``boxes.parquet`` holds that region's cell per event segment, so α can be scored against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from features.store import FeatureBatch, ShardData, StoreCard, clip_sha256, shard_path, write_card, write_parquet_atomic, write_shard


def make_feature_store(
    root: Path,
    *,
    store_id: str = "teststore01",
    clips: int = 60,
    num_classes: int = 3,
    t: int = 4,
    h: int = 3,
    w: int = 3,
    cv: int = 16,
    ca: int = 8,
    shard_size: int = 25,
    seed: int = 0,
    fmt: str = "hdf5",
    distractor: bool = False,
) -> Path:
    """Write a complete store under ``root/store_id`` and return its folder.

    ``distractor=True`` makes the scene need the sound: the sounding object's pattern is visible
    in every segment (the sound only in the event), and a silent distractor — the pattern of
    another class, as strong — sits in every segment at a cell not adjacent to it.
    """
    rng = np.random.default_rng(seed)
    store_dir = Path(root) / store_id
    store_dir.mkdir(parents=True, exist_ok=True)
    vis_pat = rng.normal(size=(num_classes, cv)) * 2.0
    aud_pat = rng.normal(size=(num_classes, ca)) * 2.0
    label = np.arange(clips) % num_classes
    visual = rng.normal(size=(clips, t, h, w, cv)).astype(np.float32)
    audio = rng.normal(size=(clips, t, ca)).astype(np.float32)
    mask = np.ones((clips, t), bool)
    mask[::5, t - 1] = False  # every fifth clip is one segment short
    seg_label = np.full((clips, t), num_classes, np.int64)
    boxes = []
    for i in range(clips):
        start = rng.integers(0, t - 1)
        y, x = rng.integers(0, h), rng.integers(0, w)
        if distractor:
            far = [(yy, xx) for yy in range(h) for xx in range(w) if max(abs(yy - y), abs(xx - x)) > 1]
            if not far:
                raise ValueError(f"a {h}x{w} grid has no cell apart from ({y}, {x}) for the distractor")
            dy, dx = far[rng.integers(0, len(far))]
            other = (label[i] + rng.integers(1, num_classes)) % num_classes
            for s in range(t):
                if mask[i, s]:
                    visual[i, s, y, x] += vis_pat[label[i]]
                    visual[i, s, dy, dx] += vis_pat[other]
        for s in range(start, t):
            if mask[i, s]:
                if not distractor:
                    visual[i, s, y, x] += vis_pat[label[i]]
                audio[i, s] += aud_pat[label[i]]
                seg_label[i, s] = label[i]
                boxes.append({"clip_id": f"clip{i:04d}", "segment": s, "x0": x / w, "y0": y / h,
                              "x1": (x + 1) / w, "y1": (y + 1) / h})
    visual[~mask] = 0
    audio[~mask] = 0
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(clips) % 5]
    rows = []
    for shard, lo in enumerate(range(0, clips, shard_size)):
        sl = slice(lo, min(clips, lo + shard_size))
        ids = [f"clip{i:04d}" for i in range(sl.start, sl.stop)]
        batch = FeatureBatch(ids, visual[sl].astype(np.float16), audio[sl].astype(np.float16), mask[sl],
                             label[sl].astype(np.int64), seg_label[sl])
        write_shard(shard_path(store_dir, shard, fmt), ShardData(batch, {"clip_id": ids}), fmt)
        for r, i in enumerate(range(sl.start, sl.stop)):
            rows.append({
                "clip_id": ids[r], "shard": shard, "row": r, "label_idx": int(label[i]), "split": split[i],
                "sha256": clip_sha256(visual[i].astype(np.float16), audio[i].astype(np.float16), mask[i]),
                "event_start_s": 0.0, "event_end_s": float(t), "has_audio": True,
            })
    write_parquet_atomic(store_dir / "index.parquet", pd.DataFrame(rows))
    write_parquet_atomic(store_dir / "boxes.parquet", pd.DataFrame(boxes))  # the pattern's cell, [0, 1] of the frame
    write_card(store_dir, StoreCard(
        store_id=store_id, format=fmt, classes=[f"class{k}" for k in range(num_classes)], num_segments=t,
        visual_shape=(h, w, cv), audio_dim=ca, clips=clips, num_shards=(clips + shard_size - 1) // shard_size,
        shard_size=shard_size, segment={"num_segments": t, "segment_s": 1.0, "frames_per_segment": 1},
    ))
    return store_dir


