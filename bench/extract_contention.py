"""How much the decoder children and the CNN slow each other down when they share the cores; writes a
section of docs/BENCHMARKS.md (issue 18).

bench/extract.py's decode-inclusive bound adds two figures measured apart: the CNN's core-seconds with
nothing else running and the decoder children's with nothing else running. In the pipeline both run at
once on the same cores, so each may cost more than it does alone (caches, memory bandwidth, context
switches). This measures that, on bench/extract.py's realistic 360p clips (generated if missing), in one
run, alone and together alternated ``--rounds`` times (the machine drifts):

* **decoders alone**: one decoder child per core on the clips (bench/extract.py's ``decode_all``): CPU
  per clip;
* **CNN alone**: one process per core x 1 torch thread on the decoded frames in memory, at the store's
  batch size (bench/extract.py's CNN bound): CPU per frame;
* **together**: the same CNN processes, and beside them one decoder child per core decoding the clips
  in a loop, paced so that decoding takes the share of the cores it has in the pipeline (its
  core-seconds over CNN + decoder core-seconds, from the alone figures): CPU per frame of the CNN and
  per clip of the decoders while both run.

From those: the additive bound (what bench/extract.py uses) and the contended bound, the same work at
the together CPU costs, both over the cores; their ratio is the most a pipeline that runs decoding and
the CNN on the same cores can reach against the additive bound.

Usage::

    python bench/extract_contention.py                       # AVE protocol (16 frames per segment, 224 px)
    python bench/extract_contention.py --frames-per-segment 1 --frame-size 320   # the library default
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs_section import publish_section  # noqa: E402
from extract import _bound_worker, case_dataset, decode_all  # noqa: E402
from features.extract import ExtractConfig, plan_store  # noqa: E402
from features.extractors import VisualConfig  # noqa: E402
from pipelines.manifest import load_dataset  # noqa: E402
from pipelines.media import ClipDecoder  # noqa: E402
from pipelines.segments import SegmentSpec  # noqa: E402

log = logging.getLogger("extract_contention")


def _child_cpu(dec: ClipDecoder) -> float:
    t = psutil.Process(dec.pid).cpu_times()
    return t.user + t.system


def cnn_processes(frames_path: Path, frames: int, spec: SegmentSpec, batch: int, cores: int,
                  paced_decoders: tuple[list[Path], float] | None = None) -> dict[str, float]:
    """One CNN process per core x 1 thread on the frames in ``frames_path`` (bench/extract.py's bound worker);
    with ``paced_decoders`` = (clips, seconds between a decoder's clips), one decoder child per core decoding
    the clips in a loop beside them, from the CNN's start to its end. CPU-seconds of each side."""
    cfg = VisualConfig()   # the library's default CNN, as bench/extract.py measures it
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(cores + 1), ctx.Queue()
    procs = [ctx.Process(target=_bound_worker, args=(str(frames_path), i, cores, cfg, spec, batch, barrier, out))
             for i in range(cores)]
    for p in procs:
        p.start()
    go, stop, decoded = threading.Event(), threading.Event(), []

    def decode_loop(part: int) -> None:
        clips, period = paced_decoders  # type: ignore[misc]
        mine = clips[part::cores]
        with ClipDecoder() as dec:
            dec.decode(mine[0], spec)          # start-up outside the figures
            go.wait()
            cpu, n, t0 = _child_cpu(dec), 0, time.perf_counter()
            while not stop.is_set():
                dec.decode(mine[n % len(mine)], spec)
                n += 1
                wait = t0 + n * period - time.perf_counter()
                if wait > 0:
                    stop.wait(wait)
            decoded.append((n, _child_cpu(dec) - cpu))

    threads = [threading.Thread(target=decode_loop, args=(i,)) for i in range(cores)] if paced_decoders else []
    for t in threads:
        t.start()
    barrier.wait()   # the CNN processes have built and warmed up their models
    go.set()
    spans = [out.get() for _ in procs]
    stop.set()
    for p in procs:
        p.join()
    for t in threads:
        t.join()
    res = {"cnn_wall_s": max(e for _, e, _ in spans) - min(s for s, _, _ in spans),
           "cnn_cpu_per_frame_ms": 1000 * sum(c for _, _, c in spans) / frames}
    if decoded:
        res["decoder_cpu_per_clip_ms"] = 1000 * sum(c for _, c in decoded) / max(1, sum(n for n, _ in decoded))
        res["clips_decoded"] = sum(n for n, _ in decoded)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--frames-per-segment", type=int, default=16)
    ap.add_argument("--frame-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=2, help="alone / together alternations")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_extract")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-docs", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cores = os.cpu_count() or 1
    args.work.mkdir(parents=True, exist_ok=True)
    case_args = argparse.Namespace(clips=args.clips, clips_720=0, duration=args.duration, work=args.work, size=160)
    ds_dir, clips, clip_text = case_dataset("web360", case_args, cores)
    spec = SegmentSpec(num_segments=args.duration, frame_size=args.frame_size, frames_per_segment=args.frames_per_segment)
    batch = int(plan_store(ExtractConfig(dataset_dir=ds_dir, out_root=args.work / "stores", segment=spec)).batch_size)
    paths = load_dataset(ds_dir).paths()
    frames, _, _ = decode_all(paths, spec, cores)
    n = len(frames)
    frames_path = args.work / "contention_frames.npy"
    np.save(frames_path, frames)
    del frames
    rows = []
    try:
        for r in range(args.rounds):
            _, _, dec_cpu = decode_all(paths, spec, cores, keep=False)
            alone = cnn_processes(frames_path, n, spec, batch, cores)
            dec_ms = 1000 * dec_cpu / len(paths)
            cnn_core_s, dec_core_s = alone["cnn_cpu_per_frame_ms"] * n / 1000, dec_cpu
            # pace: the decoders' share of the cores in the pipeline, over the CNN's alone wall time stretched by it
            wall = alone["cnn_wall_s"] * (cnn_core_s + dec_core_s) / cnn_core_s
            period = wall / (len(paths) / cores)
            together = cnn_processes(frames_path, n, spec, batch, cores, (paths, period))
            rows.append({"round": r + 1, "dec_alone_ms": dec_ms, "cnn_alone_ms": alone["cnn_cpu_per_frame_ms"],
                         "dec_together_ms": together["decoder_cpu_per_clip_ms"],
                         "cnn_together_ms": together["cnn_cpu_per_frame_ms"], "clips_decoded": together["clips_decoded"]})
            log.info("round %d: %s", r + 1, rows[-1])
    finally:
        frames_path.unlink(missing_ok=True)

    lines = []
    for x in rows:
        additive = (x["cnn_alone_ms"] * n + x["dec_alone_ms"] * clips) / 1000 / cores
        contended = (x["cnn_together_ms"] * n + x["dec_together_ms"] * clips) / 1000 / cores
        x["ratio"] = additive / contended
        lines.append(f"| {x['round']} | {x['cnn_alone_ms']:.2f} | {x['cnn_together_ms']:.2f} "
                     f"({x['cnn_together_ms'] / x['cnn_alone_ms']:.2f}x) | {x['dec_alone_ms']:.0f} | "
                     f"{x['dec_together_ms']:.0f} ({x['dec_together_ms'] / x['dec_alone_ms']:.2f}x, "
                     f"{x['clips_decoded']} clips) | {additive:.1f} | {contended:.1f} | **{x['ratio']:.2f}** |")
    cmd = ("python bench/extract_contention.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    section = f"""## Decoding and the CNN on the same cores (`bench/extract_contention.py`)

Command: `{cmd}`

Machine: {platform.machine()}, {cores} cores (load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}.
{clips} clips ({clip_text}), {spec.frames_per_segment} frame(s) per segment at {spec.frame_size} px = {n} CNN frames,
batch {batch}. CPU time (user + system) of one CNN process per core x 1 thread on the frames in memory, and of one
decoder child per core, first each alone, then both at once with the decoders paced to their share of the cores in
the pipeline. The additive bound is bench/extract.py's decode-inclusive bound in CPU terms; the contended bound is
the same work at the costs measured together; their ratio is the most any run that decodes and runs the CNN on the
same cores can reach against the additive bound.

| round | CNN CPU ms per frame, alone | together | decoder CPU ms per clip, alone | together | additive bound (s) | contended bound (s) | additive / contended |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lines)}
"""
    publish_section(args.docs, "bench/extract_contention.py", section, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
