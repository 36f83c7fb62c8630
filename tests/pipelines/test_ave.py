"""AVE: the real annotation and split files, and the archive download + extract path."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from pipelines.build import BuildConfig, build_dataset
from pipelines.download import ChecksumError
from pipelines.manifest import load_dataset
from pipelines.sources.ave import AVESource, ave_classes, parse_annotations, read_splits

AVE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ave"


@pytest.fixture(scope="module")
def ave_rows():
    if not (AVE_DIR / "Annotations.txt").is_file():
        pytest.fail(f"AVE annotation files not found at {AVE_DIR}; CI must clone with ../shared beside the repo")
    return parse_annotations(AVE_DIR / "Annotations.txt")


def test_real_files_parse_to_4143_clips_28_classes(ave_rows) -> None:
    assert len(ave_rows) == 4143
    classes = ave_classes(ave_rows)
    assert len(classes) == 28 and classes[0] == "Church bell"
    splits = read_splits(AVE_DIR, len(ave_rows))
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 3339, "val": 402, "test": 402}
    assert len({r.clip_id for r in ave_rows}) == 4143  # unique although some YouTube ids repeat
    assert len({r.youtube_id for r in ave_rows}) == 4097  # 45 ids label more than one row
    assert [r.clip_id for r in ave_rows[:2]] == ["0000_RUhOCu3LNXM", "0001_MH3m4AwEcRY"]
    assert sorted(r.clip_id for r in ave_rows) == [r.clip_id for r in ave_rows]  # sorted ids = annotation order
    assert all(0 <= r.start_s <= r.end_s <= 10 for r in ave_rows)
    assert [r.youtube_id for r in ave_rows if r.start_s == r.end_s] == ["VWi2ENBuTbw"]  # the file's one empty event


def test_class_order_matches_aves_label_files(ave_rows) -> None:
    """First-appearance order is the label index order of AVE's released mil_labels.h5."""
    import h5py
    import numpy as np

    with h5py.File(AVE_DIR / "mil_labels.h5", "r") as fh:
        mil = fh["avadataset"][()]
    classes = ave_classes(ave_rows)
    idx = np.array([classes.index(r.category) for r in ave_rows])
    assert (mil[np.arange(len(idx)), idx] == 1).all()


def test_header_bom_and_crlf_are_handled(tmp_path) -> None:
    f = tmp_path / "Annotations.txt"
    f.write_bytes("\ufeffCategory&VideoID&Quality&StartTime&EndTime\r\nBark&abc&good&1&4\r\nCat&def&bad&0&10\r\n".encode())
    rows = parse_annotations(f)
    assert [(r.category, r.youtube_id, r.start_s, r.end_s) for r in rows] == [("Bark", "abc", 1, 4), ("Cat", "def", 0, 10)]
    f.write_text("Bark&abc&good&1\n")
    with pytest.raises(ValueError, match="line 1"):
        parse_annotations(f)


def test_blank_lines_and_any_case_header_do_not_count_as_rows(tmp_path) -> None:
    f = tmp_path / "Annotations.txt"
    f.write_text("\nCATEGORY&VideoID&Quality&StartTime&EndTime\n\n Bark & abc & good & 1 & 4 \n\nBark&abc&good&5&7\n\n")
    rows = parse_annotations(f)
    assert [(r.row, r.category, r.youtube_id, r.quality, r.start_s, r.end_s) for r in rows] == [
        (0, "Bark", "abc", "good", 1.0, 4.0), (1, "Bark", "abc", "good", 5.0, 7.0)]
    assert [r.clip_id for r in rows] == ["0000_abc", "0001_abc"]  # one YouTube id, two clips


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("Bark&abc&good&1&4\nBark&abc&good&1&4&x\n", 2, "expected 5 fields"),
        ("Bark&abc&good&1&4\n\nBark&def&good&one&4\n", 3, "must be numbers"),
        ("Bark&&good&1&4\n", 1, "YouTubeID field is empty"),
        ("&abc&good&1&4\n", 1, "Category field is empty"),
        ("Bark&abc&good&6&4\n", 1, "0 <= Start <= End"),
        ("Bark&abc&good&-1&4\n", 1, "0 <= Start <= End"),
        ("Bark&abc&good&nan&4\n", 1, "0 <= Start <= End"),
        ("Category&VideoID&Quality&StartTime&EndTime\nBark&abc&good&1&4\nCategory&VideoID&Quality&StartTime&EndTime\n", 3,
         "must be numbers"),  # a header is only the first line
    ],
)
def test_a_malformed_line_names_the_file_the_line_and_the_fault(tmp_path, body: str, line: int, what: str) -> None:
    f = tmp_path / "Annotations.txt"
    f.write_text(body)
    with pytest.raises(ValueError, match=f"line {line}: .*{what}") as exc:
        parse_annotations(f)
    assert str(f) in str(exc.value)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path) -> None:
    f = tmp_path / "Annotations.txt"
    for bom in (b"", b"\xef\xbb\xbf"):
        f.write_bytes(bom + b"Bark&abc&good&1&4\r\n\nBark&d\xffef&good&1&4\r\n")
        with pytest.raises(ValueError, match="line 3: not UTF-8"):
            parse_annotations(f)


@pytest.mark.slow
def test_archive_download_extract_build(ave_rows, http_server, clip_maker, tmp_path) -> None:
    splits = read_splits(AVE_DIR, len(ave_rows))
    picks = [next(r for r in ave_rows if splits[r.row] == s) for s in ("train", "val", "test")]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, r in enumerate(picks):
            clip = clip_maker(tmp_path / "src" / f"{r.youtube_id}.mp4", seconds=2.0, tone_hz=300 + 200 * i)
            zf.write(clip, f"AVE/{r.youtube_id}.mp4")
    body = buf.getvalue()
    http_server.files["/AVE_Dataset.zip"] = body
    sha = hashlib.sha256(body).hexdigest()
    http_server.faults["/AVE_Dataset.zip"] = ["drop"]
    src = AVESource(annotations=AVE_DIR / "Annotations.txt", archive_url=http_server.url("/AVE_Dataset.zip"), archive_sha256=sha)
    out = tmp_path / "ave"
    summary = build_dataset(BuildConfig(source=src, out=out, workers=2))
    ids = {r.youtube_id for r in picks}
    expected = [r for r in ave_rows if r.youtube_id in ids]  # an id may label several rows
    assert summary.clips == len(expected) and summary.failures == 4143 - len(expected)
    ds = load_dataset(out)
    assert ds.card.media_root == "media" and len(ds.classes) == 28
    rows = ds.clips.set_index("clip_id")
    for r in expected:
        got = rows.loc[r.clip_id]
        assert got["relpath"] == f"AVE/{r.youtube_id}.mp4"
        assert (got["label"], got["split"], got["event_start_s"], got["event_end_s"]) == (r.category, splits[r.row], r.start_s, r.end_s)
        assert got["label_idx"] == ds.classes.index(r.category)
    assert set(ds.failures["error"]) == {"missing_file"}
    assert "not in" in ds.failures["message"].iloc[0]
    # a rebuild reuses the verified archive (no new request) and gives the same manifest
    n = len(http_server.requests)
    again = build_dataset(BuildConfig(source=src, out=out, workers=2))
    assert again.fingerprint == summary.fingerprint and len(http_server.requests) == n


def test_archive_checksum_mismatch_stops_the_build(ave_rows, http_server, tmp_path) -> None:
    http_server.files["/a.zip"] = b"PK not really"
    src = AVESource(annotations=AVE_DIR / "Annotations.txt", archive_url=http_server.url("/a.zip"), archive_sha256="0" * 64)
    with pytest.raises(ChecksumError):
        build_dataset(BuildConfig(source=src, out=tmp_path))
    assert not (tmp_path / "downloads" / "a.zip").exists() and not (tmp_path / "manifest.parquet").exists()
