"""Prefect artifacts from the stages' summaries: tables of counts, failures, throughput and
metrics, and Markdown pages that show the images a stage wrote (embedded as data URIs).

Artifact keys are stable per stage and output (lowercase letters, digits and dashes), so the UI
shows the history of one store or one run under one key.
"""

from __future__ import annotations

import base64
import hashlib
import io
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


#: Images larger than this are embedded scaled down (the Prefect UI keeps artifacts in its database).
EMBED_MAX_BYTES = 1_500_000
_EMBED_MAX_SIDE = 1600


def _image_data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of ``path`` (scaled down to at most 1600 px a side when over EMBED_MAX_BYTES)."""
    raw = path.read_bytes()
    if len(raw) > EMBED_MAX_BYTES:
        from PIL import Image  # pillow comes with matplotlib

        with Image.open(io.BytesIO(raw)) as img:
            img.thumbnail((_EMBED_MAX_SIDE, _EMBED_MAX_SIDE))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg+xml"}.get(path.suffix.lower(), "png")
    return f"data:image/{kind};base64," + base64.b64encode(raw).decode("ascii")


def images_markdown(title: str, images: Iterable[Path], limit: int = 12) -> str:
    """Markdown that shows each image inline, embedded as a data URI (the Prefect UI cannot open ``file://``
    links), with the file's absolute path as text."""
    parts = [f"# {title}\n"]
    for i, img in enumerate(images):
        if i >= limit:
            parts.append("\n… and more in the same folder.\n")
            break
        path = Path(img).resolve()
        parts.append(f"\n**{path.name}** — `{path}`\n\n![{path.name}]({_image_data_uri(path)})\n")
    return "".join(parts)
