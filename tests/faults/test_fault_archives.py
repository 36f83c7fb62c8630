"""Hostile archives (issue 15): every case is refused and writes nothing, inside or outside the destination.

Each archive lies in ``tmp_path``; the destination is ``tmp_path/box/out`` beside a victim file.
The whole of ``tmp_path`` is compared before and after, so a write anywhere is caught.
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

from pipelines.archive import UnsafeArchiveError, extract_archive

from fault_archives_helpers import cve_2025_4517, snapshot, write_tar, write_zip

LONG = "n" * 300  # over NAME_MAX (255) on every Linux file system


def _cases(box: Path) -> dict[str, list]:
    """Cases shared by zip and tar: name -> members (box is the folder holding the destination)."""
    return {
        "dotdot": [("ok.txt", "file", b"1"), ("../evil.txt", "file", b"x")],
        "dotdot-deep": [("a/b/../../../evil.txt", "file", b"x")],
        "backslash-dotdot": [("..\\evil.txt", "file", b"x")],
        "absolute": [("ok.txt", "file", b"1"), (str(box / "evil-abs.txt"), "file", b"x")],
        "symlink-out": [("ok.txt", "file", b"1"), ("AVE/link", "sym", "../../victim.txt")],
        "symlink-absolute": [("link", "sym", str(box / "victim.txt"))],
        "symlink-then-write": [("up", "sym", ".."), ("up/evil.txt", "file", b"x")],
        "link-chain": [("s", "sym", "."), ("t", "sym", "s/.."), ("t/evil.txt", "file", b"x")],
        "link-chain-reversed": [("t", "sym", "s/.."), ("s", "sym", "."), ("t/evil.txt", "file", b"x")],
        "link-loop": [("ok.txt", "file", b"1"), ("a", "sym", "b"), ("b", "sym", "a")],
        "name-too-long": [("ok.txt", "file", b"1"), (f"AVE/{LONG}.mp4", "file", b"x")],
        "fifo": [("ok.txt", "file", b"1"), ("pipe", "fifo", None)],
        "char-device": [("ok.txt", "file", b"1"), ("null", "chr", None)],
    }


TAR_ONLY = {
    "hardlink-out": lambda box: [("ok.txt", "file", b"1"), ("h", "hard", "../victim.txt")],
    "hardlink-absolute": lambda box: [("h", "hard", str(box / "victim.txt"))],
    "hardlink-through-chain": lambda box: [("s", "sym", "."), ("t", "sym", "s/.."), ("h", "hard", "t/victim.txt")],
    "block-device": lambda box: [("ok.txt", "file", b"1"), ("sda", "blk", None)],
    "cve-2025-4517": None,  # built from the destination's length
    "cve-2025-4517-short": None,
}


def _assert_refused_and_untouched(archive: Path, dest: Path, tmp_path: Path) -> UnsafeArchiveError:
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, dest)
    assert str(archive) in str(exc.value) and "nothing was written" in str(exc.value)
    assert snapshot(tmp_path) == before, "an archive that was refused changed files"
    assert not dest.exists()
    return exc.value


ZIP_CASES = sorted(set(_cases(Path("/x"))) - {"block-device"})


@pytest.mark.parametrize("case", ZIP_CASES)
def test_hostile_zip_is_refused_and_writes_nothing(case: str, sandbox: Path, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / f"{case}.zip", _cases(sandbox)[case])
    _assert_refused_and_untouched(archive, sandbox / "out", tmp_path)


@pytest.mark.parametrize("case", sorted(_cases(Path("/x"))) + sorted(TAR_ONLY))
def test_hostile_tar_is_refused_and_writes_nothing(case: str, sandbox: Path, tmp_path: Path) -> None:
    dest = sandbox / "out"
    archive = tmp_path / f"{case}.tar"
    if case == "cve-2025-4517":
        cve_2025_4517(archive, dest)
    elif case == "cve-2025-4517-short":  # short enough for realpath: the resolution itself must catch the escape
        cve_2025_4517(archive, dest, component_len=20)
    else:
        members = TAR_ONLY[case](sandbox) if case in TAR_ONLY else _cases(sandbox)[case]
        write_tar(archive, members)
    err = _assert_refused_and_untouched(archive, dest, tmp_path)
    if case == "cve-2025-4517-short":
        assert "escape" in str(err) and "above the extraction folder" in str(err)


def test_the_cve_case_really_escapes_tarfiles_filter_on_this_python(sandbox: Path, tmp_path: Path) -> None:
    """Without the virtual check the CVE chain writes beside the destination (so the case above is a real one)."""
    if sys.version_info >= (3, 11, 13):
        pytest.skip(f"Python {sys.version.split()[0]} has the upstream fix for CVE-2025-4517")
    dest = sandbox / "out"
    archive = cve_2025_4517(tmp_path / "cve.tar", dest)
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")
    assert (sandbox / "newfile").read_bytes() == b"new"


def test_link_in_the_real_destination_is_resolved_too(sandbox: Path, tmp_path: Path) -> None:
    """A link already in the destination (e.g. from an earlier copy) that leaves it is not written through."""
    dest = sandbox / "out"
    dest.mkdir()
    os.symlink("..", dest / "AVE")
    archive = write_tar(tmp_path / "a.tar", [("AVE/x.mp4", "file", b"video")])
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="'AVE'"):
        extract_archive(archive, dest)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_benign_links_extract_and_a_rerun_over_a_partial_extraction_succeeds(fmt: str, sandbox: Path, tmp_path: Path) -> None:
    members = [("AVE/", "dir", None), ("AVE/x.mp4", "file", b"video"), ("AVE/same.mp4", "sym", "x.mp4"),
               ("latest", "sym", "AVE"), ("latest/y.mp4", "file", b"why")]
    if fmt == "tar":
        members.append(("AVE/copy.mp4", "hard", "AVE/x.mp4"))
    writer = write_zip if fmt == "zip" else write_tar
    archive = writer(tmp_path / f"good.{fmt}", members)
    dest = sandbox / "out"
    extract_archive(archive, dest)
    first = snapshot(dest)
    assert (dest / "AVE/same.mp4").read_bytes() == b"video" and (dest / "AVE/y.mp4").read_bytes() == b"why"
    assert os.readlink(dest / "latest") == "AVE"
    if fmt == "tar":
        assert (dest / "AVE/copy.mp4").read_bytes() == b"video" and not (dest / "AVE/copy.mp4").is_symlink()
    (dest / "AVE/x.mp4").write_bytes(b"vid")  # a half-written file from a killed run
    extract_archive(archive, dest)
    assert snapshot(dest) == first
    assert snapshot(sandbox.parent / "box") .keys() >= {"victim.txt"} and (sandbox / "victim.txt").read_text() == "original\n"
