"""The synthetic generator: determinism, annotations, and that the content matches them."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pipelines.build import BuildConfig, build_dataset
from pipelines.manifest import load_dataset
from pipelines.media import ClipDecoder
from pipelines.segments import SegmentSpec
from pipelines.sources.synthetic import CLASS_CATALOG, SyntheticSource


def _digest_tree(root) -> dict[str, str]:
    """sha256 of every dataset file (not the build's private .cache, which holds absolute paths)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts}


def test_same_seed_gives_byte_identical_folders(tmp_path) -> None:
    """A process pool (8 clips, 2 workers) and one process give the same bytes everywhere."""
    src = SyntheticSource(clips=8, classes=3, seed=7, duration_s=3, size=64, fps=8)
    a = build_dataset(BuildConfig(source=src, out=tmp_path / "a", workers=2))
    b = build_dataset(BuildConfig(source=src, out=tmp_path / "b", workers=1))
    da, db = _digest_tree(tmp_path / "a"), _digest_tree(tmp_path / "b")
    assert da == db  # videos, CSVs, manifest.parquet, boxes.parquet, dataset.json
    assert {"manifest.parquet", "annotations.csv", "boxes.csv", "videos/syn00000.mp4"} <= set(da)
    assert a.fingerprint == b.fingerprint
    c = build_dataset(BuildConfig(source=src.model_copy(update={"seed": 8}), out=tmp_path / "c"))
    assert c.fingerprint != a.fingerprint


def test_rerun_reuses_clips_and_gives_the_same_manifest(tmp_path) -> None:
    src = SyntheticSource(clips=3, classes=3, seed=1, duration_s=3, size=64, fps=8)
    first = build_dataset(BuildConfig(source=src, out=tmp_path))
    (tmp_path / "videos" / "syn00001.mp4").unlink()  # as if the first run crashed there
    again = build_dataset(BuildConfig(source=src, out=tmp_path))
    assert again.fingerprint == first.fingerprint


def test_fixture_dataset_contract(synthetic_dataset) -> None:
    ds = load_dataset(synthetic_dataset)
    assert len(ds.clips) == 16 and ds.failures.empty
    assert ds.classes == [k.name for k in CLASS_CATALOG[:4]]
    assert ds.card.media_root == "." and ds.card.source == "synthetic"
    assert ds.clips["has_audio"].all()
    assert (ds.clips["duration_s"].round(3) == 10.0).all()
    assert (ds.clips["width"] == 160).all() and (ds.clips["fps"] == 10).all()
    assert ds.clips["label"].value_counts().tolist() == [4, 4, 4, 4]
    assert set(ds.clips["split"]) == {"train", "val", "test"}
    assert not any(p.startswith("/") for p in ds.clips["relpath"])
    ann = pd.read_csv(synthetic_dataset / "annotations.csv")
    assert list(ann.columns) == ["video_id", "label", "start_s", "end_s"]
    assert ((ann.end_s - ann.start_s) >= 3).all()
    # boxes only inside the event and inside the frame
    b = ds.boxes.merge(ds.clips[["clip_id", "event_start_s", "event_end_s"]], on="clip_id")
    assert ((b.segment >= b.event_start_s) & (b.segment < b.event_end_s)).all()
    assert ((b.x0 >= 0) & (b.y0 >= 0) & (b.x1 <= 160) & (b.y1 <= 160)).all()
    side = b.x1 - b.x0
    assert ((side >= 0.27 * 160) & (side <= 0.36 * 160)).all()


def test_content_matches_annotations(synthetic_dataset) -> None:
    """The event object is at its box, the sound is loud only in the event, and class spectra differ."""
    ds = load_dataset(synthetic_dataset)
    spec = SegmentSpec(frame_size=160)
    peaks: dict[str, list[np.ndarray]] = {}
    offscreen_seen = False
    with ClipDecoder(timeout_s=60) as dec:
        for row in ds.clips.itertuples():
            clip = dec.decode(ds.clip_path(row.clip_id), spec)
            assert clip.segment_mask.all() and clip.has_audio
            energy = np.sqrt((clip.audio**2).mean(axis=1))
            inside = np.zeros(10, bool)
            inside[int(row.event_start_s):int(row.event_end_s)] = True
            assert energy[inside].min() > 3 * energy[~inside].max() if (~inside).any() else True
            colour = np.array(CLASS_CATALOG[row.label_idx].colour, dtype=float)
            boxes = ds.boxes[ds.boxes.clip_id == row.clip_id].set_index("segment")
            offscreen_seen |= len(boxes) < inside.sum()
            for seg, box in boxes.iterrows():
                frame = clip.frames[seg, 0].astype(float)
                x0, y0, x1, y1 = (int(box[k]) for k in ("x0", "y0", "x1", "y1"))
                patch = frame[y0:y1, x0:x1].reshape(-1, 3)
                dist = np.minimum(np.linalg.norm(patch - colour, axis=1), np.linalg.norm(patch - 0.35 * colour, axis=1))
                assert (dist < 60).mean() > 0.3, (row.clip_id, seg)  # the sounding object (both texture tones) fills its box
            # log energy in 16 log-spaced bands inside the event: the class's spectral signature
            power = np.abs(np.fft.rfft(clip.audio[inside].reshape(-1))) ** 2
            freqs = np.fft.rfftfreq(int(inside.sum()) * 16000, 1 / 16000)
            edges = np.geomspace(100, 8000, 17)
            bands = [power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])]
            profile = np.log(np.asarray(bands) + 1e-6)
            peaks.setdefault(row.label, []).append(profile - profile.mean())
    assert offscreen_seen or len(ds.clips) < 10
    means = {k: np.mean(v, axis=0) for k, v in peaks.items()}
    assert len(means) == 4
    for label, profiles in peaks.items():  # every clip is nearest to its own class's mean spectrum
        for prof in profiles:
            assert min(means, key=lambda k: np.linalg.norm(prof - means[k])) == label
