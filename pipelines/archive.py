"""Safe extraction of zip and tar archives: every member is checked before any is written.

The members are read into an :class:`pipelines.archive_plan.ArchivePlan` (a virtual tree that
resolves names and links against earlier members and the real destination), so an archive with
one bad member — absolute or ``..`` names, links that leave the root directly or through other
links (``s -> .``, ``t -> s/..``, ``t/evil.txt``), CVE-2025-4517's long-path chain, devices and
FIFOs, names over the file system's limits — is refused with :class:`UnsafeArchiveError` and
nothing is written, inside or outside the destination. Only then is the archive extracted, by
this module (not by :meth:`tarfile.TarFile.extractall`), writing each file under a temporary
name and renaming it into place (:mod:`pipelines.atomic`), so no half-written file is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipelines.archive_plan import ArchiveMember, ArchivePlan, PlannedStep, UnsafeArchiveError
from pipelines.atomic import atomic_path, remove_stale_temps, temp_name

__all__ = ["extract_archive", "UnsafeArchiveError"]

log = logging.getLogger(__name__)

Opener = Callable[[ArchiveMember], IO[bytes]]


def _zip_members(archive: Path, zf: zipfile.ZipFile, path_max: int) -> list[ArchiveMember]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if info.is_dir() or kind == stat.S_IFDIR:
            out.append(ArchiveMember(info.filename, "dir", handle=info))
        elif kind == stat.S_IFLNK:
            if info.file_size >= path_max:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a link with a {info.file_size}-byte "
                                         "target; refusing to extract the archive (nothing was written)")
            target = zf.read(info).decode("utf-8", "surrogateescape")
            out.append(ArchiveMember(info.filename, "symlink", target, info))
        elif kind in (0, stat.S_IFREG):
            out.append(ArchiveMember(info.filename, "file", handle=info))
        else:
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device, FIFO or socket (mode {oct(mode)}); "
                                     "refusing to extract the archive (nothing was written)")
    return out


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[ArchiveMember]:
    out = []
    for m in tf.getmembers():
        if m.isdir():
            out.append(ArchiveMember(m.name, "dir", handle=m))
        elif m.isreg():
            out.append(ArchiveMember(m.name, "file", handle=m))
        elif m.issym():
            out.append(ArchiveMember(m.name, "symlink", m.linkname, m))
        elif m.islnk():
            out.append(ArchiveMember(m.name, "hardlink", m.linkname, m))
        else:
            what = "a character device" if m.ischr() else "a block device" if m.isblk() else "a FIFO" if m.isfifo() else "a special file"
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is {what}; refusing to extract the archive (nothing was written)")
    return out


def _plan(members: list[ArchiveMember], plan: ArchivePlan) -> list[PlannedStep]:
    for member in members:
        plan.add(member)
    return plan.finish()


def _symlink_into_place(target: str, where: Path) -> None:
    """Create the link under a temporary name and rename it onto ``where`` (replacing a stale entry)."""
    remove_stale_temps(where.parent)
    tmp = temp_name(where, ".lnk")  # a name, not a file: symlink() fails on an existing name
    os.symlink(target, tmp)
    try:
        os.replace(tmp, where)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _execute(root: Path, steps: list[PlannedStep], open_member: Opener) -> list[tuple[str, ...]]:
    """Carry out the checked steps under the resolved ``root``; return the parts of the entries written."""
    written: list[tuple[str, ...]] = []
    for step in steps:
        where = root.joinpath(*step.parts)
        kind = step.member.kind
        if kind == "dir":
            where.mkdir(parents=True, exist_ok=True)
            continue
        where.parent.mkdir(parents=True, exist_ok=True)
        if kind == "symlink":
            _symlink_into_place(step.member.target, where)
        else:
            with atomic_path(where, suffix=".tmp") as tmp:
                if kind == "hardlink":
                    assert step.source is not None
                    shutil.copyfile(root.joinpath(*step.source), tmp)
                else:
                    with open_member(step.member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        written.append(step.parts)
    return written


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip or tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) into ``dest``; return the entries written.

    Every member is validated first (see the module docstring); the returned paths are the
    resolved places of the files and links written, in archive order.

    Raises:
        UnsafeArchiveError: a member is not allowed (nothing is written then; the message names
            the archive, the member and the reason).
        ValueError: the file is neither a zip nor a tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    plan = ArchivePlan(archive, dest)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            steps = _plan(_zip_members(archive, zf, plan.path_max), plan)
            dest.mkdir(parents=True, exist_ok=True)
            parts = _execute(plan.root, steps, lambda m: zf.open(m.handle))  # type: ignore[arg-type]
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            steps = _plan(_tar_members(archive, tf), plan)
            dest.mkdir(parents=True, exist_ok=True)

            def open_tar(m: ArchiveMember) -> IO[bytes]:
                fh = tf.extractfile(m.handle)  # type: ignore[arg-type]
                if fh is None:  # pragma: no cover - regular members always have data
                    raise ValueError(f"{archive}: member {m.name!r} has no data")
                return fh

            parts = _execute(plan.root, steps, open_tar)
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive; check the download URL")
    files = [dest.joinpath(*p) for p in parts]
    log.info("extracted %d files from %s into %s", len(files), archive, dest)
    return files
