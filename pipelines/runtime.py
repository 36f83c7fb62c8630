"""Small facts about the running code that every package needs: file digests and the code version.

The one place for them (torch-free; the torch-side settings are in :mod:`features.runtime`).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

__all__ = ["file_sha256", "code_version", "UNKNOWN_VERSION"]

#: What :func:`code_version` says when wherewhen is not installed (run from a bare checkout).
UNKNOWN_VERSION = "0+unknown"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces (raises OSError when unreadable)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The installed wherewhen version, or :data:`UNKNOWN_VERSION`."""
    try:
        return metadata.version("wherewhen")
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
