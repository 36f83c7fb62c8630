"""Fixtures of the fault suite (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """``tmp_path/box`` with a victim file beside the destination ``box/out`` (which does not exist yet)."""
    box = tmp_path / "box"
    box.mkdir()
    (box / "victim.txt").write_text("original\n")
    return box
