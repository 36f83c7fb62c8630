"""Facts the command line derives from the project's code, kept on disk so that ``--help`` stays fast.

The options of a command come from a configuration model (:mod:`flows.cli_options`), and those
models live in modules that import torch, pandas or Prefect (``stan_head.train``,
``features.plan``): seconds per command. What the command line needs from them — each field's
name, type, default and description, the list of dataset sources — is a function of the
project's source files, so :func:`cached` computes it once and keeps it in
``$WHEREWHEN_CACHE_DIR/cli-<key>.json`` (default ``~/.cache/wherewhen``), where the key hashes the
path, size and modification time of every ``.py`` file of the four packages (``flows``,
``stan_head``, ``features``, ``pipelines``; under a millisecond). Any edit or reinstall changes the
key, so an entry is never stale; the first command after one pays the import once. Without a
writable cache folder the facts are computed every time (slow, still correct).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["CACHE_DIR_ENV", "cache_dir", "source_key", "cached"]

log = logging.getLogger(__name__)

#: Environment variable naming the folder of the cache file.
CACHE_DIR_ENV = "WHEREWHEN_CACHE_DIR"
_PACKAGES = ("flows", "stan_head", "features", "pipelines")
_PREFIX = "cli-"


def cache_dir() -> Path:
    """``$WHEREWHEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/wherewhen``, else ``~/.cache/wherewhen``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wherewhen"


def source_key() -> str:
    """16 hex chars over (path, size, mtime) of every .py file of the project's packages."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in _PACKAGES:
        for folder, dirs, files in os.walk(root / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(folder: Path, path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically and remove the files of older keys; a folder we cannot write is skipped."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, path)
        for old in folder.glob(f"{_PREFIX}*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("command-line cache not written to %s: %s", folder, exc)


def cached(name: str, compute: Callable[[], Any]) -> Any:
    """The JSON value ``compute()`` returns, from the cache for this source key when it holds ``name``."""
    folder = cache_dir()
    path = folder / f"{_PREFIX}{source_key()}.json"
    data = _read(path)
    if name in data:
        return data[name]
    value = json.loads(json.dumps(compute()))   # what a later read returns: lists, not tuples
    data[name] = value
    _write(folder, path, data)
    return value
