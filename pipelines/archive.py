"""Safe extraction of zip and tar archives.

An archive is checked completely before anything is written: a member with an absolute
name, a ``..`` component, or a symlink / hardlink whose target leaves the destination makes
the whole archive refused with :class:`UnsafeArchiveError`. Devices and FIFOs are refused too.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

__all__ = ["extract_archive", "UnsafeArchiveError"]

log = logging.getLogger(__name__)


class UnsafeArchiveError(ValueError):
    """An archive member would be written (or point) outside the destination folder."""


def _safe_name(archive: Path, name: str) -> str:
    """Normalised relative POSIX name of a member, or raise."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract the archive")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refusing to extract the archive")
    return "/".join(parts)


def _check_link(archive: Path, member: str, target: str, relative_to_member: bool) -> None:
    """Refuse a link whose target resolves outside the root."""
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: link {member!r} points to the absolute path {target!r}; refusing to extract the archive")
    base = posixpath.dirname(member) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeArchiveError(f"{archive}: link {member!r} -> {target!r} leaves the extraction folder; refusing to extract the archive")


def _extract_zip(archive: Path, dest: Path) -> list[Path]:
    out: list[Path] = []
    with zipfile.ZipFile(archive) as zf:
        plan = []
        for info in zf.infolist():
            name = _safe_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(archive, name, zf.read(info).decode("utf-8", "replace"), relative_to_member=True)
            plan.append((info, name, mode))
        for info, name, mode in plan:
            if not name:
                continue
            target = dest / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(zf.read(info).decode("utf-8"), target)
            else:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            out.append(target)
    return out


def _extract_tar(archive: Path, dest: Path) -> list[Path]:
    out: list[Path] = []
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            name = _safe_name(archive, m.name)
            if m.issym():
                _check_link(archive, name, m.linkname, relative_to_member=True)
            elif m.islnk():
                _check_link(archive, name, m.linkname, relative_to_member=False)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device or FIFO; refusing to extract the archive")
        tf.extractall(dest, members=members, filter="data")
        out = [dest / _safe_name(archive, m.name) for m in members if not m.isdir()]
    return out


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip or tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) into ``dest``; return the files written.

    Raises:
        UnsafeArchiveError: a member would land outside ``dest`` (nothing is extracted then).
        ValueError: the file is neither a zip nor a tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        files = _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        files = _extract_tar(archive, dest)
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive; check the download URL")
    log.info("extracted %d files from %s into %s", len(files), archive, dest)
    return files
