"""Caching for the flows' idempotent steps: inputs + task source, refreshed when outputs are gone.

Prefect's ``INPUTS + TASK_SOURCE`` keys a result on the task's arguments and its code. Our
arguments name folders on disk, so two things are added:

* ``FileContent``: the sha256 of the files a step *reads* (a dataset's ``dataset.json``, which
  carries the manifest fingerprint; a store's ``store.json``), so the key changes exactly when
  the inputs' content does; content-addressed inputs (a store-id) need no such help.
* ``cached_unless_missing``: a cached record cannot vouch that the files it describes still
  exist, so the flow runs a step with ``refresh_cache=True`` whenever one of its outputs is
  missing (the step recomputes and replaces the record).

A cache hit shows as ``Cached`` in the UI. The steps are idempotent in the library as well (a
complete shard is skipped, a finished store is a no-op), which is what makes a task that Prefect
re-runs after a Dask worker died (PrefectHQ/prefect issue 15442) harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext

from pipelines.runtime import file_sha256


@dataclass
class FileContent(CachePolicy):
    """Key on the content of files derived from the task's inputs.

    ``files`` maps the task's inputs (a dict of argument name → value) to the paths whose bytes
    the result depends on.
    """

    files: Callable[[dict[str, Any]], list[Path]] = field(default=lambda inputs: [])

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> Optional[str]:
        paths = sorted(Path(p).resolve() for p in self.files(inputs or {}))
        h = hashlib.sha256()
        for p in paths:
            h.update(str(p).encode())
            h.update((file_sha256(p) if p.is_file() else "missing").encode())
        return h.hexdigest()


def inputs_source_and_files(files: Callable[[dict[str, Any]], list[Path]]) -> CachePolicy:
    """``INPUTS + TASK_SOURCE + FileContent(files)``: the cache policy of an idempotent step."""
    return INPUTS + TASK_SOURCE + FileContent(files=files)


def key_and_source(key: Callable[[dict[str, Any]], str]) -> CachePolicy:
    """A key computed from the inputs by ``key`` (e.g. store-id + shard), plus the task source."""
    return CachePolicy.from_cache_key_fn(lambda ctx, inputs: key(inputs)) + TASK_SOURCE


def cached_unless_missing(task: Task, outputs: Iterable[Path]) -> Task:
    """``task``, forced to recompute (and re-record) when any of ``outputs`` does not exist."""
    missing = [str(p) for p in outputs if not Path(p).exists()]
    return task.with_options(refresh_cache=True) if missing else task
