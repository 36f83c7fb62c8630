"""Where and with how many threads torch runs: the one place for device and thread settings.

torch is imported inside the functions: planning a store (and a no-op re-run of a complete one)
imports this module and must not pay torch's import (~3 s on 2 cores).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "torch_threads"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; anything else is passed to ``torch.device``."""
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch set to ``threads`` intra-op threads; restore the caller's count after.

    Used around in-process extraction (shard tasks in threads of this process) and training, so that
    the process goes on with the thread count it had.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
