"""The check of an archive before extraction: every member is placed in a virtual tree first.

:class:`ArchivePlan` takes the members of an archive in order and works out, without touching
the disk, where extracting each would write. Paths are resolved component by component, through
the links of members already seen and through links already present in the real destination,
with ``..`` applied to the resolved (physical) path, exactly as the kernel would. Nothing relies
on :func:`os.path.realpath` or on :mod:`tarfile`'s filters (Python 3.11.7's filter is fooled by the
long-path chain of CVE-2025-4517; a purely virtual resolution is not, whatever the path length).

A member is refused (:class:`UnsafeArchiveError`, naming the archive, the member and why) when
  * its name is absolute, holds ``..``, a NUL byte, or nothing;
  * it (or a link it goes through) would end up outside the destination;
  * it is a device, FIFO or other special file;
  * a name component or the resolved path is longer than the file system allows;
  * it would replace a link or change the type of an entry made by an earlier member;
  * it is a hard link to anything but a regular file extracted before it.
After the last member every symbolic link is resolved again against the final tree, since a
later member can change what an earlier link points to (``t -> s/..`` before ``s -> .``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ArchiveMember", "ArchivePlan", "PlannedStep", "UnsafeArchiveError", "MAX_LINK_HOPS"]

#: Links followed while resolving one path before it counts as a loop (Linux's MAXSYMLINKS).
MAX_LINK_HOPS = 40

MemberKind = Literal["dir", "file", "symlink", "hardlink"]


class UnsafeArchiveError(ValueError):
    """An archive member would be written (or point) outside the destination folder, or is not allowed."""


@dataclass(frozen=True)
class ArchiveMember:
    """One archive entry as the readers see it.

    Attributes:
        name: the name stored in the archive.
        kind: dir, file, symlink or hardlink (anything else is refused by the reader).
        target: a symlink's target (relative to the link's folder) or a hard link's (relative to the root).
        handle: the reader's own object (ZipInfo / TarInfo) used to read the bytes later.
    """

    name: str
    kind: MemberKind
    target: str = ""
    handle: object = None


@dataclass(frozen=True)
class PlannedStep:
    """What extraction does for one member: ``parts`` is the resolved place, relative to the root."""

    member: ArchiveMember
    parts: tuple[str, ...]
    source: tuple[str, ...] | None = None  # hard links: the resolved file whose bytes are copied


class _Escape(Exception):
    """Internal: a resolution left the root (message says how)."""


def _limits(root: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system that holds ``root`` (255 / 4096 where unknown)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX")), int(os.pathconf(probe, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255, 4096


class ArchivePlan:
    """Validate members of one archive in order; :meth:`finish` returns the steps to extract them."""

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive = archive
        self.root = Path(os.path.realpath(dest))
        self.name_max, self.path_max = _limits(self.root)
        self._tree: dict[tuple[str, ...], tuple[str, str]] = {(): ("dir", "")}  # parts -> (kind, link target)
        self._steps: list[PlannedStep] = []

    # -- helpers ---------------------------------------------------------------------------

    def _refuse(self, member: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive}: member {member!r} {why}; refusing to extract the archive (nothing was written)")

    def _clean_name(self, name: str) -> tuple[str, ...]:
        clean = name.replace("\\", "/")
        if "\x00" in clean:
            raise self._refuse(name, "contains a NUL byte")
        if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
            raise self._refuse(name, "has an absolute path")
        parts = tuple(p for p in clean.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self._refuse(name, "contains '..'")
        self._check_lengths(name, parts)
        return parts

    def _check_lengths(self, member: str, parts: tuple[str, ...]) -> None:
        for p in parts:
            if len(os.fsencode(p)) > self.name_max:
                raise self._refuse(member, f"has a name component of {len(os.fsencode(p))} bytes, over this file system's "
                                           f"limit of {self.name_max}")
        full = len(os.fsencode(str(self.root.joinpath(*parts))))
        if full >= self.path_max:
            raise self._refuse(member, f"would be written at a path of {full} bytes, over this system's limit of {self.path_max}")

    def _entry(self, parts: tuple[str, ...]) -> tuple[str, str] | None:
        """(kind, link target) of a path (already resolved up to its last component): virtual tree first, then disk."""
        if parts in self._tree:
            return self._tree[parts]
        real = self.root.joinpath(*parts)
        try:
            if real.is_symlink():
                return "symlink", os.readlink(real)
            if real.is_dir():
                return "dir", ""
            if real.exists():
                return "file", ""
        except OSError:
            return None
        return None

    def _resolve(self, parts: list[str], follow_last: bool) -> tuple[str, ...]:
        """Resolve root-relative components through links; raise :class:`_Escape` when the root is left."""
        resolved: list[str] = []
        queue = list(parts)
        hops = 0
        via = ""  # the last link followed, for the message
        while queue:
            comp = queue.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not resolved:
                    raise _Escape("goes above the extraction folder" + (f" (through the link {via!r})" if via else ""))
                resolved.pop()
                continue
            here = (*resolved, comp)
            entry = self._entry(here)
            last = not queue
            if entry is not None and entry[0] == "symlink" and (follow_last or not last):
                hops += 1
                via = "/".join(here)
                if hops > MAX_LINK_HOPS:
                    raise _Escape(f"goes through more than {MAX_LINK_HOPS} links (a loop)")
                target = entry[1].replace("\\", "/")
                if target.startswith("/"):
                    try:
                        rel = Path(os.path.normpath(target)).relative_to(self.root)
                    except ValueError:
                        raise _Escape(f"goes through the link {'/'.join(here)!r} to {target!r}, outside") from None
                    resolved, queue = [], [*rel.parts, *queue]
                else:
                    queue = [*target.split("/"), *queue]
                continue
            if entry is not None and entry[0] == "file" and not last:
                raise _Escape(f"uses the file {'/'.join(here)!r} as a folder")
            resolved.append(comp)
        return tuple(resolved)

    def _place(self, member: ArchiveMember, parts: tuple[str, ...]) -> tuple[str, ...]:
        """Resolved location of a new file or link named ``parts`` (its folder resolved, not its last name)."""
        if not parts:
            raise self._refuse(member.name, "has an empty name")
        try:
            folder = self._resolve(list(parts[:-1]), follow_last=True)
        except _Escape as exc:
            raise self._refuse(member.name, str(exc)) from None
        where = (*folder, parts[-1])
        self._check_lengths(member.name, where)
        existing = self._entry(where)
        if existing is not None:
            mine = self._tree.get(where)
            if existing[0] == "dir":
                raise self._refuse(member.name, f"would replace the folder {'/'.join(where)!r}")
            if mine is not None and (mine[0] == "symlink" or member.kind in ("symlink",)):
                raise self._refuse(member.name, f"would replace the {mine[0]} {'/'.join(where)!r} made by an earlier member")
        return where

    # -- public ----------------------------------------------------------------------------

    def add(self, member: ArchiveMember) -> None:
        """Check one member (in archive order) against everything before it; raise :class:`UnsafeArchiveError`."""
        parts = self._clean_name(member.name)
        if member.kind == "dir":
            try:
                where = self._resolve(list(parts), follow_last=True)
            except _Escape as exc:
                raise self._refuse(member.name, str(exc)) from None
            self._check_lengths(member.name, where)
            existing = self._entry(where)
            if existing is not None and existing[0] != "dir":
                raise self._refuse(member.name, f"is a folder where {'/'.join(where)!r} is a {existing[0]}")
            self._tree[where] = ("dir", "")
            self._steps.append(PlannedStep(member, where))
            return
        where = self._place(member, parts)
        if member.kind == "file":
            self._tree[where] = ("file", "")
            self._steps.append(PlannedStep(member, where))
        elif member.kind == "symlink":
            self._check_link(member, where)
            self._tree[where] = ("symlink", member.target)
            self._steps.append(PlannedStep(member, where))
        elif member.kind == "hardlink":
            source = self._hardlink_source(member)
            self._tree[where] = ("file", "")
            self._steps.append(PlannedStep(member, where, source))
        else:  # pragma: no cover - the readers only build the four kinds
            raise self._refuse(member.name, f"has the unsupported type {member.kind!r}")

    def _check_link(self, member: ArchiveMember, where: tuple[str, ...]) -> None:
        target = member.target.replace("\\", "/")
        if not target or "\x00" in target:
            raise self._refuse(member.name, "is a link with an empty or NUL-holding target")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            raise self._refuse(member.name, f"is a link to the absolute path {member.target!r}")
        if len(os.fsencode(target)) >= self.path_max:
            raise self._refuse(member.name, f"is a link whose target is over this system's limit of {self.path_max} bytes")
        try:
            self._resolve([*where[:-1], *target.split("/")], follow_last=True)
        except _Escape as exc:
            raise self._refuse(member.name, f"is a link to {member.target!r}, which {exc}") from None

    def _hardlink_source(self, member: ArchiveMember) -> tuple[str, ...]:
        target = member.target.replace("\\", "/")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            raise self._refuse(member.name, f"is a hard link to the absolute path {member.target!r}")
        try:
            source = self._resolve(target.split("/"), follow_last=True)
        except _Escape as exc:
            raise self._refuse(member.name, f"is a hard link to {member.target!r}, which {exc}") from None
        if self._tree.get(source, ("", ""))[0] != "file":
            raise self._refuse(member.name, f"is a hard link to {member.target!r}, which is not a file extracted before it")
        return source

    def finish(self) -> list[PlannedStep]:
        """Re-check every link against the final tree and return the steps in archive order."""
        for step in self._steps:
            if step.member.kind == "symlink":
                self._check_link(step.member, step.parts)
        return list(self._steps)
