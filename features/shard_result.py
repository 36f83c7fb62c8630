"""What one shard task returns: a small, serialisable record (index rows and failures, never tensors).

Its own module, without torch: planning and a no-op re-run read the results of complete shards
(:meth:`ShardResult.from_file`) and must not import the extraction engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from features.store import read_shard_meta

__all__ = ["ShardResult"]


class ShardResult(BaseModel):
    """What one shard task returns (small: index rows and failures, never tensors)."""

    model_config = ConfigDict(extra="forbid")
    shard: int
    path: str
    skipped: bool = False
    rows: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, str]] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    visual_card: dict[str, Any] = Field(default_factory=dict)
    audio_card: dict[str, Any] = Field(default_factory=dict)
    device: str = ""
    compute: dict[str, str] = Field(default_factory=dict)  # features.compute_kind.compute_kind()

    @classmethod
    def from_file(cls, path: Path) -> "ShardResult":
        """The result a complete shard file records, marked skipped (nothing was extracted now)."""
        return cls(**{**read_shard_meta(path)["result"], "skipped": True})
