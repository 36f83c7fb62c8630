"""Shard claims: one extraction at a time per shard, across threads, processes and Dask workers.

Two extractions started together on one store (two CLI runs, or a Dask cluster that runs a
duplicate task) must not both extract a shard. Before a shard task extracts shard ``i`` it takes
an exclusive ``flock`` on ``<store>/.claim-<i>.lock`` (:func:`shard_claim`); a second task for
the same shard waits for the first and then finds the shard file written (and returns its
recorded result). ``flock`` belongs to the open file, so threads of one process exclude each
other too, and the kernel drops the lock when its holder dies (a SIGKILLed run leaves no stale
claim: the next run takes it at once). The lock files are removed with the other leftovers once
the store is complete (``features.store.write_store_files``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from features.store.card import claim_path

__all__ = ["shard_claim"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def shard_claim(store_dir: Path, shard: int) -> Iterator[bool]:
    """Hold the exclusive claim on ``shard`` of the store in ``store_dir`` inside the block.

    Yields True when the claim was free and False when another task held it and this one waited
    for it to end (the caller then checks whether that task finished the shard).
    """
    path = claim_path(store_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            log.info("shard %d of %s is being extracted by another task; waiting for it", shard, store_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
            free = False
        yield free
    finally:
        os.close(fd)   # releases the lock
