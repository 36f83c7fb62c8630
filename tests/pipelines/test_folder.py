"""Contract 1 folders → contract 2 manifests, with broken files becoming failure rows."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.build import BuildConfig, assign_splits, build_dataset
from pipelines.manifest import MANIFEST_SCHEMA, load_dataset
from pipelines.sources.folder import FolderSource


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, media_files, clip_maker):
    """3 good clips, 1 truncated, 1 zero-byte, 1 text file named .mp4, 1 clip without audio."""
    root = tmp_path_factory.mktemp("user_folder")
    videos = root / "videos"
    videos.mkdir()
    clip_maker(videos / "good1.mp4", seconds=3.0)
    clip_maker(videos / "good2.mp4", seconds=2.0, tone_hz=880)
    shutil.copy(media_files.bigbuckbunny, videos / "bunny.mp4")
    shutil.copy(media_files.bikes, videos / "silent.mp4")
    shutil.copy(media_files.truncated, videos / "cut.mp4")
    shutil.copy(media_files.empty, videos / "empty.mp4")
    shutil.copy(media_files.text, videos / "notes.mp4")
    (root / "annotations.csv").write_text(
        "video_id,label,split,start_s,end_s\n"
        "good1,tone,train,0.5,2.5\n"
        "good2,tone,,,\n"
        "bunny,cartoon,test,,\n"
        "silent,bikes,val,1,9\n"
        "cut,cartoon,,,\n"
        "empty,tone,,,\n"
        "notes,tone,,,\n",
        encoding="utf-8",
    )
    (root / "boxes.csv").write_text("video_id,segment,x0,y0,x1,y1\ngood1,0,1,2,30,40\nbunny,2,100,100,600,500\n")
    return root


@pytest.fixture(scope="module")
def built(user_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder_out")
    summary = build_dataset(BuildConfig(source=FolderSource(root=user_folder), out=out, workers=2, probe_timeout_s=60))
    return summary, out


def test_acceptance_four_rows_three_failures(built, user_folder) -> None:
    summary, out = built
    assert summary.clips == 4 and summary.failures == 3
    assert summary.exit_code == 0 and summary.strict is False
    line = summary.summary_line()
    assert "\n" not in line and "4 clips" in line and "3 failures" in line
    ds = load_dataset(out)
    assert sorted(ds.clips["clip_id"]) == ["bunny", "good1", "good2", "silent"]
    assert ds.clips.set_index("clip_id")["has_audio"].to_dict() == {
        "bunny": True, "good1": True, "good2": True, "silent": False}
    fails = ds.failures.set_index("clip_id")
    assert fails["error"].to_dict() == {"cut": "truncated", "empty": "empty_file", "notes": "not_video"}
    for cid, row in fails.iterrows():
        assert f"videos/{cid}.mp4" in row["message"] and row["stage"] == "probe"
        assert any(w in row["message"] for w in ("re-download", "re-copy", "replace"))
    # the videos stayed where they were; the manifest refers to them
    assert ds.media_root.resolve() == user_folder.resolve()
    assert ds.clip_path("good1") == (user_folder / "videos" / "good1.mp4").resolve()


def test_manifest_columns_and_values(built) -> None:
    _, out = built
    table = pq.read_table(out / "manifest.parquet")
    assert table.schema.names == MANIFEST_SCHEMA.names
    ds = load_dataset(out)
    rows = ds.clips.set_index("clip_id")
    assert ds.classes == ["bikes", "cartoon", "tone"]  # sorted labels, incl. failed rows' labels
    assert rows.loc["good1", "event_start_s"] == 0.5 and rows.loc["good1", "event_end_s"] == 2.5
    assert rows.loc["good2", "event_end_s"] == pytest.approx(2.0, abs=0.1)  # default: the whole clip
    assert rows.loc["bunny", "duration_s"] == pytest.approx(5.28, abs=0.05)  # shorter than 10 s: kept, recorded
    assert rows.loc["bunny", "width"] == 1280 and rows.loc["bunny", "audio_sample_rate"] == 48000
    assert pd.isna(rows.loc["silent", "audio_sample_rate"])
    assert (rows["label_idx"] == rows["label"].map({c: i for i, c in enumerate(ds.classes)})).all()
    assert rows.loc["good1", "split"] == "train" and rows.loc["bunny", "split"] == "test"
    assert set(rows["split"]) <= {"train", "val", "test"}
    assert rows["relpath"].tolist() == [f"videos/{c}.mp4" for c in rows.index]
    assert all(len(h) == 64 for h in rows["sha256"]) and (rows["bytes"] > 0).all()
    assert ds.boxes is not None and len(ds.boxes) == 2
    assert ds.boxes.set_index("clip_id").loc["bunny", "width"] == 1280
    info = ds.info()
    assert info["num_failures"] == 3 and info["no_audio"] == 1 and info["classes"] == ds.classes
    assert info["failure_counts"] == {"empty_file": 1, "not_video": 1, "truncated": 1}


def test_strict_build_reports_failure(user_folder, tmp_path) -> None:
    summary = build_dataset(BuildConfig(source=FolderSource(root=user_folder), out=tmp_path, strict=True))
    assert summary.failures == 3 and summary.exit_code != 0 and not summary.ok
    assert "strict" in summary.summary_line()


def test_missing_unannotated_and_unknown_box_ids(tmp_path, clip_maker) -> None:
    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    clip_maker(root / "videos" / "a.mp4", seconds=1.0)
    clip_maker(root / "videos" / "stray.mp4", seconds=1.0)
    (root / "annotations.csv").write_text("video_id,label\na,x\nghost,x\na,x\nb,\n")
    (root / "boxes.csv").write_text("video_id,segment,x0,y0,x1,y1\nzzz,0,0,0,5,5\na,0,5,5,1,1\n")
    summary = build_dataset(BuildConfig(source=FolderSource(root=root), out=tmp_path / "out"))
    ds = load_dataset(tmp_path / "out")
    assert ds.clips["clip_id"].tolist() == ["a"]
    got = {(r.clip_id, r.stage, r.error) for r in ds.failures.itertuples()}
    assert got == {
        ("ghost", "locate", "missing_file"),
        ("a", "annotate", "duplicate_id"),
        ("b", "annotate", "bad_annotation"),
        ("stray", "annotate", "unannotated"),
        ("zzz", "boxes", "unknown_id"),
        ("a", "boxes", "bad_box"),
    }
    assert summary.failures == 6
    # media root outside the dataset folder is recorded as an absolute path
    assert ds.card.media_root == str(root.resolve())


def test_missing_annotations_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="annotations.csv"):
        build_dataset(BuildConfig(source=FolderSource(root=tmp_path), out=tmp_path / "out"))


def test_assign_splits_is_stratified_seeded_and_order_free() -> None:
    ids = [f"c{i:03d}" for i in range(60)]
    labels = [f"k{i % 3}" for i in range(60)]
    a = assign_splits(ids, labels, seed=1)
    b = assign_splits(ids[::-1], labels[::-1], seed=1)
    assert a == b
    for k in ("k0", "k1", "k2"):
        splits = [a[i] for i, lab in zip(ids, labels) if lab == k]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (16, 2, 2)
    assert assign_splits(ids, labels, seed=2) != a
    small = assign_splits(["x", "y", "z"], ["k"] * 3, seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]


def test_rebuild_reuses_probe_results_and_reprobes_changed_files(user_folder, tmp_path, clip_maker) -> None:
    """A resumed build does not re-open unchanged files with decord; a changed file is probed again."""
    import json
    import shutil as sh

    root = tmp_path / "copy"
    sh.copytree(user_folder, root)
    first = build_dataset(BuildConfig(source=FolderSource(root=root), out=tmp_path / "out"))
    cache = tmp_path / "out" / ".cache" / "probe.jsonl"
    assert len(cache.read_text().splitlines()) == 4  # the good clips; failures are always re-checked
    clip_maker(root / "videos" / "good2.mp4", seconds=4.0)  # replaced by a longer clip
    second = build_dataset(BuildConfig(source=FolderSource(root=root), out=tmp_path / "out"))
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert len(lines) == 5 and "good2.mp4" in lines[-1]["key"]
    rows = load_dataset(tmp_path / "out").clips.set_index("clip_id")
    assert rows.loc["good2", "duration_s"] == pytest.approx(4.0, abs=0.1)
    assert second.fingerprint != first.fingerprint and second.clips == first.clips
