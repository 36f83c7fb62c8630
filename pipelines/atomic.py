"""Atomic file writes: the one way to write a file atomically in wherewhen.

A file is written under a temporary name in the destination folder, flushed and fsynced,
then moved over the destination with :func:`os.replace`. Readers therefore see either the
old file or the complete new one, never a half-written file, even if the writer crashes.

A writer killed mid-write (SIGKILL, power loss) leaves its temporary file behind. The name says
whose it is: ``.<name>.~<pid>-<node>.<random><suffix>`` (``node``: a short hash of the host name
and pid namespace, so a writer on another machine sharing the folder is never judged by this
machine's pids). Every :func:`atomic_path` first removes the temporary files in its folder whose
writer is gone (:func:`remove_stale_temps`): the next run of the same writer in the same folder
cleans up after a killed one, and a live writer's file (another process writing beside it) is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipelines.lifetime import process_start_time

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "remove_stale_temps", "is_temp_name",
           "temp_name"]

log = logging.getLogger(__name__)

#: ``.<dest name>.~<pid>-<node>.<mkstemp's 8 characters><suffix>``
_TEMP_RE = re.compile(r"^\.(?P<dest>.+)\.~(?P<pid>\d+)-(?P<node>[0-9a-f]{6})\.[a-z0-9_]{8}(?P<suffix>.*)$")

#: a process that started this long after a temp file was last written cannot be its writer
#: (the pid was reused); the margin covers the boot-time clock's drift against the wall clock
_PID_REUSE_MARGIN_S = 5.0


def _node() -> str:
    """6 hex digits naming this machine and pid namespace (whose pids a temp name's pid refers to)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha256(f"{socket.gethostname()}|{ns}".encode()).hexdigest()[:6]


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of :func:`atomic_path` (any writer, any machine)."""
    return _TEMP_RE.match(name) is not None


def _temp_prefix(dest: Path) -> str:
    """``.<dest name>.~<pid>-<node>.``: the part of a temp name that says whose it is (:data:`_TEMP_RE`)."""
    return f".{dest.name}.~{os.getpid()}-{_node()}."


def temp_name(dest: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``dest`` in :func:`atomic_path`'s pattern, for writers that cannot
    create the file first (a symlink): its leftovers are swept by :func:`remove_stale_temps` like any other."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"
    rnd = "".join(secrets.choice(alphabet) for _ in range(8))
    return dest.parent / f"{_temp_prefix(dest)}{rnd}{suffix}"


def _stale(path: Path, pid: int) -> bool:
    started = process_start_time(pid)
    if started is None:
        return True
    try:
        return started > path.lstat().st_mtime + _PID_REUSE_MARGIN_S  # lstat: a temp may be a dangling link
    except FileNotFoundError:
        return False


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``folder`` whose writer (on this machine)
    has ended without finishing; return the removed paths. Live writers' files are kept."""
    folder = Path(folder)
    node = _node()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        m = _TEMP_RE.match(entry.name)
        if m is None or m["node"] != node or int(m["pid"]) == os.getpid():
            continue
        path = Path(entry.path)
        if _stale(path, int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.info("removed %s, left by a writer that was killed (pid %s)", path, m["pid"])
                removed.append(path)
    return removed


def fsync_dir(folder: Path) -> None:
    """Fsync a directory so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The caller writes the complete file to the yielded path (with any library that takes a
    file name). If the ``with`` block raises, the temporary file is removed and ``path`` is left
    untouched. ``suffix`` defaults to the destination's suffix, so libraries that choose a
    format by extension (PyAV, pyarrow) still do the right thing. Temporary files that killed
    writers left in the folder are removed first (:func:`remove_stale_temps`).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent)
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temp_prefix(dest), suffix=dest.suffix if suffix is None else suffix,
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` line ends) and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))
