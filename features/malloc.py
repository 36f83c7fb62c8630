"""Undo Dask's ``MALLOC_TRIM_THRESHOLD_`` in a worker's glibc heap, so the CNN does not mmap every tensor."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["restore_malloc_thresholds"]

#: glibc mallopt parameters (malloc.h) and the values restored.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 64 << 20, 256 << 20


def restore_malloc_thresholds() -> bool:
    """Undo the effect of ``MALLOC_TRIM_THRESHOLD_`` in this process's glibc heap; True when it did.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.
    pre-spawn-environ``). Setting it also freezes glibc's mmap threshold at 128 KiB, so every
    activation tensor of the CNN is a fresh ``mmap`` whose pages the kernel zeroes on first touch,
    which makes the CNN slower (docs/BENCHMARKS.md, bench/extract_sweep.py). Raising both thresholds with
    ``mallopt`` restores the speed. Only done when the variable is set, and only on glibc.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):   # not glibc
        return False
    return bool(ok)
