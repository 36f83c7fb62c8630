"""Raise glibc's mmap and trim thresholds in a process that extracts, so that the CNN's activations and the
clips' frame buffers reuse heap pages instead of fresh ``mmap`` pages the kernel zeroes on every touch."""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["EXTRACT_MMAP_BYTES", "EXTRACT_TRIM_BYTES", "HEAD_MMAP_BYTES", "HEAD_TRIM_BYTES", "raise_malloc_thresholds"]

#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the values extraction sets (build_visual).
EXTRACT_MMAP_BYTES, EXTRACT_TRIM_BYTES = 64 << 20, 256 << 20
#: the values the head's training and evaluation set (train_head, evaluate_run): a batch's cell tensors, 82 MB at
#: batch 16 of 10x10x1280 maps, come from the heap, not from fresh pages the kernel zeroes at every step.
HEAD_MMAP_BYTES, HEAD_TRIM_BYTES = 1 << 30, 1 << 30


def raise_malloc_thresholds(mmap_bytes: int = EXTRACT_MMAP_BYTES, trim_bytes: int = EXTRACT_TRIM_BYTES) -> bool:
    """Set glibc's mmap threshold to ``mmap_bytes`` (64 MiB) and its trim threshold to ``trim_bytes``
    (256 MiB) in this process; True when set (False where the C library is not glibc).

    Blocks under the mmap threshold come from the heap, and freed heap memory under the trim threshold
    is kept for the next allocation, so the pages are touched once, not zeroed again by the kernel for
    every batch and every clip. Two cases need it:

    * Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.
      pre-spawn-environ``), which also freezes the mmap threshold at 128 KiB: every activation tensor
      is then a fresh ``mmap``, and the CNN runs about 2x slower (docs/BENCHMARKS.md,
      bench/extract_sweep.py).
    * Without it, glibc's own dynamic mmap threshold tops out at 32 MiB. EfficientNet-Lite0 at 320 px,
      batch 4, has activations above that (4 x 96 x 160 x 160 float32 is 39 MB), so every batch maps
      them afresh: two processes x 300 frames took 11.1-11.5 s (7.3-7.8 s of it system CPU, ~4 M minor
      page faults), and 6.8 s (no system CPU) with the thresholds raised. In the shard threads, each
      clip's large buffers (24 MB of frames, 40 MB of frame features at 16 frames per segment) went the
      same way: 6-8 s of system CPU on the AVE protocol's 60 clips, 2-3 s raised.

    * Head training: STAN's cell tensors at batch 16 (16 x 10 x 100 x 1280 float32 at 320 px) are 82 MB,
      above 64 MiB; :func:`stan_head.train.train_head` sets 1 GiB and 1 GiB. On the hard preset's default
      store (152 training clips, 2 threads) a training step took 318 ms instead of 443 ms, and 63 ms instead
      of 132 ms with the region dropout off (docs/BENCHMARKS.md, under "Head training").
      :func:`stan_head.evaluation.evaluate.evaluate_run` sets the same (Grad-CAM's batches of 32 clips are
      164 MB): the default explainers on dev-move's 88 test clips took 41 s instead of 95 s, same report.

    :func:`features.extractors.build_visual` calls it, so every process that runs the CNN has it.
    Process-wide and idempotent (the last call wins); the cost is up to ``trim_bytes`` of freed heap kept
    per arena. Values are unaffected (only where memory comes from changes).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes)
    except (OSError, AttributeError):   # not glibc
        return False
    return bool(ok)
