"""What makes stored feature values differ between machines, and a store's claim on one kind.

Feature values are identical for any number of workers on one *compute kind*, but not across
kinds: on the CPU, oneDNN and ATen pick their kernels by instruction set (the capability torch
reports: ``DEFAULT``, ``AVX2``, ``AVX512``…), so the same frame gives float32 values that differ in
the last bits and some float16 values that differ by one step; on CUDA, the GPU model and the
cuDNN build decide; and any torch version may change kernels.

A store is made on one kind. The first shard task records it in ``<store>/compute.json``
(created exclusively, so two workers racing agree on one); every later shard task — a resume,
an extension, or a worker of a Dask cluster whose machines differ — compares its own kind with
it and refuses, naming both, instead of mixing values from two kinds in one store.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a kind is computed: reading a store's card must not pay for it
    import torch

__all__ = ["COMPUTE_FILE", "ComputeKindMismatch", "compute_kind", "cpu_isa", "describe", "claim_compute_kind"]

COMPUTE_FILE = "compute.json"


class ComputeKindMismatch(RuntimeError):
    """A shard task would write values computed on another kind than the store's."""


def compute_kind(device: torch.device) -> dict[str, str]:
    """The things that decide feature values on ``device`` in this process (JSON-serialisable)."""
    import torch

    kind = {"device": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        kind.update(gpu=torch.cuda.get_device_name(device), sm=f"{major}.{minor}",
                    cudnn=str(torch.backends.cudnn.version()))
    else:
        kind["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        kind["cpu_isa"] = cpu_isa()
    return kind


#: The instruction-set extensions that select oneDNN's convolution kernels (highest first).
_ISA_FLAGS = ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f", "avx_vnni", "avx2", "avx", "sse4_1")


def cpu_isa() -> str:
    """The CPU's kernel-selecting extensions (from /proc/cpuinfo) and oneDNN's cap, if one is set.

    oneDNN picks its convolution kernels by these, not by torch's capability (EfficientNet-Lite0 on
    this AVX-512 machine: ``ONEDNN_MAX_CPU_ISA=AVX2`` changed 0.16 % of the float16 features while
    ``ATEN_CPU_CAPABILITY`` changed none), so both enter the compute kind.
    """
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    have = [f for f in _ISA_FLAGS if f in flags] or ["unknown"]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return "+".join(have) + (f" (oneDNN max {cap})" if cap else "")


def describe(kind: dict[str, str]) -> str:
    """One phrase for people, e.g. ``cpu AVX512, torch 2.14.1``."""
    if kind.get("device") == "cuda":
        return f"cuda {kind.get('gpu')} (sm {kind.get('sm')}, cuDNN {kind.get('cudnn')}), torch {kind.get('torch')}"
    return f"{kind.get('device')} {kind.get('cpu_capability')} [{kind.get('cpu_isa')}], torch {kind.get('torch')}"


def claim_compute_kind(store_dir: Path, kind: dict[str, str]) -> None:
    """Record ``kind`` as the store's (first caller wins) or check that it is the recorded one.

    Raises:
        ComputeKindMismatch: the store was started on another kind; the message names both.
    """
    path = Path(store_dir) / COMPUTE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(kind, sort_keys=True, indent=2) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        recorded = _read(path)
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        return
    if recorded != kind:
        raise ComputeKindMismatch(
            f"{store_dir}: this store was started on {describe(recorded)}, but this worker computes on "
            f"{describe(kind)}; feature values differ between the two, so they are not mixed in one store. "
            f"Finish it on a machine of the first kind, or extract into another --out for this one")


def _read(path: Path) -> dict[str, str]:
    """The recorded kind; a file torn by a crash between create and write counts as unreadable."""
    for _ in range(50):  # another process may be between its exclusive create and its write
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data:
                return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ComputeKindMismatch(f"{path}: unreadable record of the store's compute kind; delete it together "
                              f"with the shard files beside it to extract that store again")
