"""Cache policies for the flows' idempotent, pure steps.

Prefect's ``INPUTS + TASK_SOURCE`` keys a result on the task's arguments and its code. Our
arguments name folders on disk, so a key on the names alone would hand back a stale result after
the folder's content changed. ``FileContent`` adds the sha256 of the files a step reads (for
example a dataset's ``dataset.json``, which carries the manifest's fingerprint), so the key
changes exactly when the inputs do.

Only steps whose result is a pure function of their inputs are cached (planning, reading cards).
Steps that write outputs (shards, runs, reports) are not cached by Prefect: a cached record
cannot vouch that the files it describes still exist. They are idempotent in the library
instead (a complete shard is skipped, a finished store is a no-op), which is also what makes a
task that Prefect re-runs after a Dask worker died (PrefectHQ/prefect issue 15442) harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes, or ``"missing"`` when it does not exist."""
    if not path.is_file():
        return "missing"
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FileContent(CachePolicy):
    """Key on the content of files derived from the task's inputs.

    ``files`` maps the task's inputs to the paths whose bytes the result depends on.
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
            h.update(file_sha256(p).encode())
        return h.hexdigest()


def inputs_source_and_files(files: Callable[[dict[str, Any]], list[Path]]) -> CachePolicy:
    """``INPUTS + TASK_SOURCE + FileContent(files)``: the cache policy of a pure step."""
    return INPUTS + TASK_SOURCE + FileContent(files=files)
