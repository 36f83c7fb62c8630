"""The function a Dask task runs for one shard, in a module that imports nothing heavy.

A Dask scheduler unpickles the task graphs it is sent, and unpickling a function imports its module:
``features.shard_engine`` would make the scheduler import torch and the extractors (about 2 s of CPU
on its first graph, and a scheduler without torch could not take the graph at all). The scheduler
imports this module instead; the worker imports the engine when the task runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_shard"]


def run_shard(plan: Any, shard: int) -> Any:
    """:func:`features.shard_engine.extract_shard` of ``plan`` (a ``StorePlan``) and ``shard``: its ``ShardResult``."""
    from features.shard_engine import extract_shard

    return extract_shard(plan, shard)
