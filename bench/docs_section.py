"""Each benchmark owns one section of docs/BENCHMARKS.md, between its own markers."""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.atomic import atomic_write_text

log = logging.getLogger("bench")


def write_section(path: Path, script: str, text: str) -> None:
    """Replace the section of ``script`` (e.g. ``bench/train.py``) in ``path``, or append it."""
    begin, end = f"<!-- {script}: begin -->", f"<!-- {script}: end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):].lstrip("\n")
    else:
        new = old.rstrip() + "\n\n" + block
    atomic_write_text(path, new)


def publish_section(path: Path, script: str, text: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless ``write`` is False (``--no-docs``), write it into ``path``."""
    if write:
        write_section(path, script, text)
        log.info("wrote %s", path)
    print(text)  # noqa: T201 - a script's output
