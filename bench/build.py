"""Benchmark of the synthetic dataset build; writes a section of docs/BENCHMARKS.md.

Measures, in one run on this machine: the wall time of ``build_dataset`` for the synthetic
source (generation + encoding + decord probing + manifest) with 1 and with N workers, the CPU
seconds it used (this process and its children), and whether the two builds gave a
byte-identical manifest.parquet. Issue 2's acceptance: 60 clips in under 2 minutes on 2 cores.

    .venv/bin/python bench/build.py --clips 60            # full size (a quiet machine)
    .venv/bin/python bench/build.py --clips 4 --no-docs   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

from docs_section import publish_section
from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_build(src: SyntheticSource, out: Path, workers: int) -> tuple[float, float, str]:
    """(wall s, cpu s, manifest sha256) of one fresh build into ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = _cpu_s(), time.perf_counter()
    summary = build_dataset(BuildConfig(source=src, out=out, workers=workers))
    return time.perf_counter() - t0, _cpu_s() - c0, summary.fingerprint




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_build")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-docs", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    src = SyntheticSource(clips=args.clips, seed=0)
    w1, c1, f1 = timed_build(src, args.work / "w1", 1)
    wn, cn, fn = timed_build(src, args.work / f"w{args.workers}", args.workers)
    section = "\n".join([
        "## Dataset build (bench/build.py)",
        "",
        f"Command: `{' '.join(['python', 'bench/build.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        f"Synthetic source, {args.clips} clips × 10 s, 160×160 at 10 fps, h264 + AAC 16 kHz; generation, encoding,",
        f"decord probing and the manifest. {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| workers | wall s | CPU s | clips / wall s |",
        "| --- | --- | --- | --- |",
        f"| 1 | {w1:.1f} | {c1:.1f} | {args.clips / w1:.2f} |",
        f"| {args.workers} | {wn:.1f} | {cn:.1f} | {args.clips / wn:.2f} |",
        "",
        f"Speed-up with {args.workers} workers: {w1 / wn:.2f}×. Manifest byte-identical across the two builds: "
        f"{'yes' if f1 == fn else 'NO'} (fingerprint {f1[:12]}).",
    ])
    publish_section(args.docs, "bench/build.py", section, write=not args.no_docs)
    return 0 if f1 == fn else 1


if __name__ == "__main__":
    raise SystemExit(main())
