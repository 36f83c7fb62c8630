"""Inputs that would give silently wrong rows (issue 15): each becomes a failure row with a reason, or a warning.

One real folder dataset (real h264 + AAC clips) with good clips beside every bad case; the
build must keep every good clip and turn every bad one into the named failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pipelines.atomic import atomic_path
from pipelines.build import BuildConfig, build_dataset
from pipelines.encode import Mp4Writer
from pipelines.manifest import load_dataset
from pipelines.sources.folder import FolderSource


def _clip(path: Path, seconds: float, fps: int = 10, size: int = 32) -> None:
    frames = max(1, int(round(seconds * fps)))
    with atomic_path(path) as tmp, Mp4Writer(tmp, size, size, fps, audio_rate=16000) as w:
        for i in range(frames):
            w.write_frame(np.full((size, size, 3), (20 * i) % 256, dtype=np.uint8))
        t = np.arange(int(frames / fps * 16000)) / 16000
        w.write_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))


# video_id -> (seconds, annotation "start_s,end_s", expected failure code or None = kept)
CASES = {
    "good": (4.0, ",", None),
    "good_event": (4.0, "1,3", None),
    "good_open_end": (4.0, "1,", None),
    "good_past_end": (4.0, "2,6", None),  # unusual: kept, with a warning
    "one_frame": (0.1, ",", "too_short"),
    "fifth_second": (0.2, ",", "too_short"),
    "event_after_clip": (4.0, "50,60", "event_outside_clip"),
    "open_start_after_clip": (4.0, "50,", "event_outside_clip"),
    "inverted": (4.0, "3,1", "bad_annotation"),
    "empty_interval": (4.0, "2,2", "bad_annotation"),
    "open_end_negative": (4.0, ",-1", "bad_annotation"),
    "open_start_negative": (4.0, "-2,", "bad_annotation"),
}


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odd_inputs")
    (root / "videos").mkdir()
    lines = ["video_id,label,split,start_s,end_s"]
    for i, (vid, (seconds, interval, _)) in enumerate(CASES.items()):
        _clip(root / "videos" / f"{vid}.mp4", seconds)
        lines.append(f"{vid},{'ab'[i % 2]},train,{interval}")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_each_odd_input_becomes_its_failure_and_no_good_clip_is_lost(odd_folder: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        summary = build_dataset(BuildConfig(source=FolderSource(root=odd_folder), out=tmp_path / "ds", workers=2))
    ds = load_dataset(tmp_path / "ds")
    kept = ds.clips.set_index("clip_id")
    assert sorted(kept.index) == sorted(v for v, (_, _, want) in CASES.items() if want is None)
    got = dict(zip(ds.failures["clip_id"], ds.failures["error"]))
    assert got == {v: want for v, (_, _, want) in CASES.items() if want is not None}
    assert summary.failures == len(got)
    messages = dict(zip(ds.failures["clip_id"], ds.failures["message"]))
    assert "shorter than one 1-s segment" in messages["fifth_second"] and "fifth_second.mp4" in messages["fifth_second"]
    assert "starts at 50 s" in messages["open_start_after_clip"] and "lasts only 4" in messages["open_start_after_clip"]
    assert "line" in messages["inverted"]  # annotations.csv line N
    # every stored interval is a real one inside the clip
    assert (kept["event_start_s"] < kept["event_end_s"]).all() and (kept["event_start_s"] < kept["duration_s"]).all()
    assert kept.loc["good_open_end", "event_end_s"] == pytest.approx(kept.loc["good_open_end", "duration_s"])
    assert any("good_past_end" in r.getMessage() and "after the clip ends" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")


def test_latin1_annotations_name_the_file_and_line(odd_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "latin1"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "good.mp4").symlink_to(odd_folder / "videos" / "good.mp4")
    (root / "annotations.csv").write_bytes("video_id,label\ngood,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError) as exc:
        build_dataset(BuildConfig(source=FolderSource(root=root), out=tmp_path / "ds"))
    msg = str(exc.value)
    assert str(root / "annotations.csv") in msg and "line 2" in msg and "UTF-8" in msg
    assert not (tmp_path / "ds" / "dataset.json").exists()
