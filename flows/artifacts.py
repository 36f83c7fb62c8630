"""Prefect artifacts from the stages' summaries: tables of counts, failures, throughput and
metrics, and Markdown pages that link (and show) the images a stage wrote.

Artifact keys are stable per stage and output (lowercase letters, digits and dashes), so the UI
shows the history of one store or one run under one key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from prefect.artifacts import create_markdown_artifact, create_table_artifact

_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def artifact_key(stage: str, target: str | Path) -> str:
    """A stable artifact key: ``<stage>-<last folder name>-<8 hex of the full path>``."""
    target = str(Path(target).resolve())
    tail = _KEY_BAD.sub("-", Path(target).name.lower()).strip("-")[:40] or "root"
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"{_KEY_BAD.sub('-', stage.lower()).strip('-')}-{tail}-{digest}"


def _cell(value: Any) -> Any:
    """JSON-friendly table cell: floats rounded, paths and other objects as strings."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact from a list of rows (dicts with the same keys); empty → one note row."""
    table = [{k: _cell(v) for k, v in row.items()} for row in rows] or [{"note": "none"}]
    create_table_artifact(key=key, table=table, description=description)


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A Markdown artifact."""
    create_markdown_artifact(key=key, markdown=markdown, description=description)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-style Markdown table from rows (dicts with the same keys)."""
    if not rows:
        return "_none_\n"
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(_cell(row.get(c))) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def images_markdown(title: str, images: Iterable[Path], limit: int = 12) -> str:
    """Markdown that shows each image inline and links its file (``file://`` absolute paths)."""
    parts = [f"# {title}\n"]
    for i, img in enumerate(images):
        if i >= limit:
            parts.append("\n… and more in the same folder.\n")
            break
        uri = Path(img).resolve().as_uri()
        parts.append(f"\n**{Path(img).name}** — [{uri}]({uri})\n\n![{Path(img).name}]({uri})\n")
    return "".join(parts)
