"""The CNN-engine figures the extraction code's choices rest on; writes a section of docs/BENCHMARKS.md.

In one run on the same frames (EfficientNet-Lite0 at ``--frame-size``, random uint8 frames, 1 torch thread):

* batch-size sweep, frozen TorchScript graph (the ``graph`` engine) vs the eager channels-last module
  (``features.plan.CPU_BATCH_SIZE``, ``features.extractors.base``);
* glibc's heap (a fresh process each, the extractor built without ``build_visual``'s own call): glibc's
  defaults, Dask's nanny setting ``MALLOC_TRIM_THRESHOLD_=65536``, and the thresholds raised by
  ``features.malloc.raise_malloc_thresholds`` (what ``build_visual`` does);
* two shard tasks as 2 threads of one process (the LocalCluster, ``features.runner``) vs 2 processes,
  each task 1 torch thread on half the frames, model build excluded, by batch size (``--task-batches``):
  in a thread, glibc serves blocks larger than its 64 MiB per-thread heaps with fresh ``mmap`` pages
  whatever the thresholds, which is what ``features.plan.default_batch_size`` avoids.

Usage::

    python bench/extract_sweep.py --frame-size 448  # 96 frames at the library's default frame size
    python bench/extract_sweep.py --frames 16 --frame-size 64 --no-docs   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs_section import publish_section  # noqa: E402

from features.extractors import VisualConfig, build_visual  # noqa: E402
from features.plan import default_batch_size  # noqa: E402

_ONE = """
import json, sys, time, torch
sys.path.insert(0, {repo!r})
from features.extractors import VisualConfig, spec_of
from features.malloc import raise_malloc_thresholds
if {raise_thresholds}:
    raise_malloc_thresholds()
torch.set_num_threads(1)
cfg = VisualConfig()   # built through the registry, not build_visual, which would raise the thresholds itself
ext = spec_of(cfg).build_function()(cfg, "cpu", {size})
ext.engine = cfg.engine
x = torch.randint(0, 256, ({n}, {size}, {size}, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
for _ in range(2):
    ext(x[:{batch}])
t = time.perf_counter()
for i in range(0, {n}, {batch}):
    ext(x[i:i + {batch}])
print(json.dumps(time.perf_counter() - t))
"""


def per_frame_ms(ext, x: torch.Tensor, batch: int) -> float:
    """ms per frame of ``ext`` over ``x`` in batches (two warm-up batches: TorchScript optimises on the 2nd)."""
    for _ in range(2):
        ext(x[:batch])
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        ext(x[i:i + batch])
    return 1000 * (time.perf_counter() - t) / len(x)


def in_process(env_extra: dict[str, str], raise_thresholds: bool, n: int, size: int, batch: int) -> float:
    """ms per frame (graph, ``batch``, 1 thread) in a fresh process with ``env_extra``."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | env_extra
    code = _ONE.format(repo=str(REPO), raise_thresholds=raise_thresholds, n=n, size=size, batch=batch)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return 1000 * json.loads(out.strip().splitlines()[-1]) / n


def two_tasks_in_threads(x: torch.Tensor, size: int, batch: int) -> tuple[float, float]:
    """(wall ms per frame, system CPU ms per frame): 2 threads of this process, each its own extractor and
    half the frames at ``batch``, 1 torch thread each (the threads start after their warm-up batches)."""
    exts = [build_visual(VisualConfig(), input_size=size) for _ in range(2)]
    halves = [x[0::2].contiguous(), x[1::2].contiguous()]
    barrier = threading.Barrier(3)

    def run(e, h) -> None:
        torch.set_num_threads(1)
        for _ in range(2):   # in this thread: its own heap is the one the timed batches use
            e(h[:batch])
        barrier.wait()
        for i in range(0, len(h), batch):
            e(h[i:i + batch])

    threads = [threading.Thread(target=run, args=(e, h)) for e, h in zip(exts, halves)]
    for th in threads:
        th.start()
    barrier.wait()
    t, sys0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for th in threads:
        th.join()
    wall, system = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
    return 1000 * wall / len(x), 1000 * system / len(x)


def two_tasks_in_processes(n: int, size: int, batch: int) -> float:
    """Wall ms per frame: 2 processes started together, each timing its half (model build excluded), with the
    raised malloc thresholds as the library's processes have them."""
    procs = [subprocess.Popen([sys.executable, "-c", _ONE.format(repo=str(REPO), raise_thresholds=True, n=n // 2, size=size,
                                                                 batch=batch)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return 1000 * max(spans) / n   # they overlap (start-up excluded from each span): the slower one is the wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--frame-size", type=int, default=224)
    ap.add_argument("--batches", default="1,2,4,16")
    ap.add_argument("--task-batches", default="1,2,4", help="batch sizes of the two-tasks comparison")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    n, size = args.frames, args.frame_size
    torch.set_num_threads(1)
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rows = []
    for engine in ("graph", "eager"):
        ext = build_visual(VisualConfig(engine=engine), input_size=size)
        rows.append((engine, [per_frame_ms(ext, x, int(b)) for b in args.batches.split(",")]))
    batch = default_batch_size("cpu", size)
    trim = {"glibc's defaults": in_process({}, False, n, size, batch),
            "MALLOC_TRIM_THRESHOLD_=65536 (Dask's nanny)": in_process({"MALLOC_TRIM_THRESHOLD_": "65536"}, False, n, size, batch),
            "raise_malloc_thresholds() (what build_visual does)": in_process({}, True, n, size, batch),
            "MALLOC_TRIM_THRESHOLD_=65536, then raise_malloc_thresholds()": in_process({"MALLOC_TRIM_THRESHOLD_": "65536"}, True, n, size, batch)}
    task_batches = [int(b) for b in args.task_batches.split(",")]
    in_threads = [two_tasks_in_threads(x, size, b) for b in task_batches]
    in_processes = [two_tasks_in_processes(n, size, b) for b in task_batches]

    cmd = "python bench/extract_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    batches = args.batches.split(",")
    sweep = "\n".join(f"| {e} | " + " | ".join(f"{v:.1f}" for v in vals) + " |" for e, vals in rows)
    base = trim["glibc's defaults"]
    trim_rows = "\n".join(f"| {k} | {v:.1f} | {v / base:.2f} |" for k, v in trim.items())
    text = f"""## CNN engine, batch size, heap and threads (`bench/extract_sweep.py`)

Command: `{cmd.strip()}` — {platform.machine()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end),
torch {torch.__version__}; EfficientNet-Lite0 at {size} px on {n} random frames, 1 torch thread, one run.

ms per frame by batch size (two warm-up batches excluded):

| engine | {" | ".join(f"batch {b}" for b in batches)} |
| --- | {" | ".join("---:" for _ in batches)} |
{sweep}

glibc's heap (graph, batch {batch}, the library's at {size} px, a fresh process each). Blocks over glibc's mmap
threshold are mapped afresh for every batch: by default that threshold adapts but tops out at 32 MiB (from 320 px
some activations are larger), and Dask's nanny setting `MALLOC_TRIM_THRESHOLD_=65536` freezes it at 128 KiB;
`raise_malloc_thresholds()` sets 64 MiB:

| heap | ms per frame | vs glibc's defaults |
| --- | ---: | ---: |
{trim_rows}

Two shard tasks at once (1 torch thread each, half the frames each, graph, thresholds raised), by batch size.
In a thread, glibc serves blocks larger than its 64 MiB per-thread heaps with fresh `mmap` pages whatever the
thresholds, so batches whose largest activation outgrows them pay system CPU at every batch; the library's CPU batch
(`features.plan.default_batch_size`) is {batch} at {size} px. Processes also pay their own start-up, torch import
and model build, excluded here.

| two shard tasks | {" | ".join(f"batch {b}" for b in task_batches)} |
| --- | {" | ".join("---:" for _ in task_batches)} |
| 2 threads of one process (the LocalCluster): wall ms per frame | {" | ".join(f"{w:.1f}" for w, _ in in_threads)} |
| the same: system CPU ms per frame | {" | ".join(f"{c:.1f}" for _, c in in_threads)} |
| 2 processes: wall ms per frame | {" | ".join(f"{w:.1f}" for w in in_processes)} |
"""
    publish_section(args.docs, "bench/extract_sweep.py", text, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
