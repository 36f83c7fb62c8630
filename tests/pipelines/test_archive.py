"""Archive extraction refuses traversal and links that leave the root."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from pipelines.archive import UnsafeArchiveError, extract_archive


def _tar(path, members) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)


def test_zip_and_tar_extract_nested_files(tmp_path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("AVE/x.mp4", b"x")
        zf.writestr("AVE/sub/y.mp4", b"yy")
    files = extract_archive(z, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == ["AVE/sub/y.mp4", "AVE/x.mp4"]
    t = tmp_path / "a.tar.gz"
    _tar(t, [("AVE/x.mp4", "file", b"x"), ("AVE/link.mp4", "sym", "x.mp4"), ("AVE/hard.mp4", "hard", "AVE/x.mp4")])
    extract_archive(t, tmp_path / "out2")
    assert (tmp_path / "out2/AVE/link.mp4").read_bytes() == b"x"
    assert (tmp_path / "out2/AVE/hard.mp4").read_bytes() == b"x"


@pytest.mark.parametrize(
    "members",
    [
        [("ok.txt", "file", b"1"), ("../evil.txt", "file", b"2")],
        [("ok.txt", "file", b"1"), ("/tmp/evil-abs.txt", "file", b"2")],
        [("ok.txt", "file", b"1"), ("AVE/link", "sym", "../../outside")],
        [("ok.txt", "file", b"1"), ("AVE/link", "sym", "/etc/passwd")],
        [("ok.txt", "file", b"1"), ("AVE/hard", "hard", "../outside")],
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out"],
)
def test_tar_refuses_unsafe_members_and_writes_nothing(tmp_path, members) -> None:
    t = tmp_path / "bad.tar.gz"
    _tar(t, members)
    out = tmp_path / "root" / "out"
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(t, out)
    assert str(t) in str(exc.value)
    assert not out.exists()  # refused before anything was written, not even the folder
    assert not (tmp_path / "root" / "evil.txt").exists()


def test_zip_refuses_traversal_and_outside_symlink(tmp_path) -> None:
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(z, tmp_path / "out")
    z2 = tmp_path / "bad2.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(z2, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path) -> None:
    f = tmp_path / "x.zip"
    f.write_text("hello")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        extract_archive(f, tmp_path / "out")
