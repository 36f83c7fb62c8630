"""Whether a step of the library takes large buffers from the heap or from fresh pages: a child process counts
the minor page faults of five touched-and-freed buffers before and after the step (glibc's mmap thresholds,
features.malloc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import resource, sys
import numpy as np

(getattr(np, "_core", None) or np.core).multiarray._set_madvise_hugepage(False)   # 4 KiB pages: faults count pages

def faults():   # minor page faults of 5 allocations of a {size}-byte buffer, each touched, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones({size}, np.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

first = faults()
{step}
print(first, faults())
"""


def faults_around(step: str, args: list[str], size: int, env_extra: dict[str, str] | None = None) -> tuple[int, int]:
    """Minor page faults of 5 buffers of ``size`` bytes before and after the code ``step`` (which sees
    ``sys.argv[1:] == args``), in a fresh interpreter run from the repository."""
    code = _PROBE.format(size=size, step=step)
    out = subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, **(env_extra or {})},
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=300)
    before, after = map(int, out.stdout.split())
    return before, after


def assert_fresh_then_reused(before: int, after: int, size: int) -> None:
    """Before the step every buffer was faulted in afresh; after it, at most the first one."""
    pages = 5 * size // 4096
    assert before >= 0.9 * pages, (before, after)
    assert after < 0.5 * pages, (before, after)
