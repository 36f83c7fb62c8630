"""Hostile archives and a snapshot of everything under a folder, for the fault suite (issue 15)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

Member = tuple[str, str, object]  # (name, kind, data or link target); kind: file dir sym hard chr blk fifo


def write_tar(path: Path, members: list[Member]) -> Path:
    """A tar whose members are exactly ``members``, in order (no checks: hostile archives on purpose)."""
    with tarfile.open(path, "w") as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                body = data if isinstance(data, bytes) else str(data).encode()
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(data)
            tf.addfile(info)
    return path


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip whose entries are exactly ``members`` (symlinks and devices through the Unix mode bits)."""
    modes = {"file": stat.S_IFREG | 0o644, "sym": stat.S_IFLNK | 0o777, "chr": stat.S_IFCHR | 0o644,
             "fifo": stat.S_IFIFO | 0o644, "dir": stat.S_IFDIR | 0o755}
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, data in members:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            info.external_attr = modes[kind] << 16
            info.create_system = 3  # Unix, so the mode bits count
            zf.writestr(info, b"" if kind == "dir" else (data if isinstance(data, bytes) else str(data).encode()))
    return path


def cve_2025_4517(path: Path, dest: Path, component_len: int | None = None) -> Path:
    """The long-path symlink chain of CVE-2025-4517 (CPython's own test), ending in ``escape/newfile``.

    With the default component length the expanded path overflows PATH_MAX, which fools
    ``os.path.realpath`` and so tarfile's ``data`` filter on Python < 3.11.13.
    """
    steps = "abcdefghijklmnop"
    if component_len is None:
        max_path = os.pathconf(dest.parent, "PC_PATH_MAX")
        component_len = (max_path - (len(str(dest)) + 1)) // (len(steps) + 1)
    comp = "d" * component_len
    members: list[Member] = []
    prefix = ""
    for s in steps:
        members += [(os.path.join(prefix, comp), "dir", None), (os.path.join(prefix, s), "sym", comp)]
        prefix = os.path.join(prefix, comp)
    link = os.path.join(*steps, "l" * 254)
    members += [(link, "sym", os.path.join(*[".."] * len(steps))), ("escape", "sym", os.path.join(link, "..")),
                ("escape/newfile", "file", b"new")]
    return write_tar(path, members)


def snapshot(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ``root`` (not following links): relative path -> (type, content or link target)."""
    out: dict[str, tuple[str, object]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", p.read_bytes())
    return out
