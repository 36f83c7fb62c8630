"""Where extraction's CPU time goes outside the CNN: the decoder child per clip, its start-up, the fixed
costs of a call and Dask's own; writes a section of docs/BENCHMARKS.md (issue 18.2-18.4).

Everything is CPU time (user + system, of this process and of the decoder children), measured in one
run, the alternatives interleaved clip by clip: on a machine shared with other jobs, CPU time moves
much less than wall time. The clips are bench/extract.py's realistic 360p ones (generated if missing).

* the decoder child per clip, split in-process into decord's steps (open, the frames the store takes,
  the audio track) for 1 and 16 frames per segment, against libavcodec alone (PyAV, 1 thread, every
  frame / up to the last frame used, no conversion) and against the audio read as decord's ``ar[:]``
  (what the child did before) and as its decoded array (what it does now; equal values);
* decord with 1 vs 2 decoding threads in the child (the shard engine runs one child per shard thread);
* the decoder child's start-up (interpreter, numpy, decord, the package);
* an audio track 6x longer than the 10 segments use (the child decodes the whole track: decord's
  ``AudioReader`` has no window);
* the fixed costs of a call in a fresh process: imports, ``import distributed``, the LocalCluster,
  the model build, the warm-up (frozen graph), and whether timm / torchvision / torch._dynamo are
  imported on the inference path;
* an idle LocalCluster (2 threads, 2 tasks sleeping 5 s): Dask's defaults vs ``LOCAL_CLUSTER_CONFIG``.

Usage::

    python bench/extract_costs.py                  # 12 clips; --no-docs prints the section only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs_section import publish_section  # noqa: E402
from extract_clips import AUDIO_RATE, write_web_dataset  # noqa: E402
from pipelines.segments import SegmentSpec, frame_times  # noqa: E402


def _cpu(f) -> tuple[object, float]:
    t = time.process_time()
    return f(), time.process_time() - t


def decoder_steps(paths: list[Path], frames_per_segment: int) -> dict[str, float]:
    """Mean CPU ms per clip of decord's steps in this process, and of libavcodec alone (PyAV)."""
    import av
    import decord

    from pipelines.media.child import _open_audio, _video_times

    spec = SegmentSpec(frames_per_segment=frames_per_segment)
    acc: dict[str, float] = {}

    def add(key: str, seconds: float) -> None:
        acc[key] = acc.get(key, 0.0) + 1000 * seconds / len(paths)

    def libav(path: Path, last: int) -> int:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type, s.codec_context.thread_count = "NONE", 1
            for n, _ in enumerate(c.decode(s)):
                if n >= last:
                    return n + 1
        return n + 1

    for p in paths:
        vr, t = _cpu(lambda: decord.VideoReader(str(p), ctx=decord.cpu(0), width=224, height=224, num_threads=1))
        add("open", t)
        starts, _, _ = _video_times(vr)
        wanted = np.unique(np.clip(np.searchsorted(starts, frame_times(spec), side="right") - 1, 0, len(vr) - 1))
        keys = np.asarray(vr.get_key_indices())
        _, t = _cpu(lambda: vr.get_batch(wanted.tolist()).asnumpy())
        add("frames", t)
        # frames libavcodec must decode: from the keyframe at or before each wanted frame, up to it
        need = set()
        for w in wanted:
            k = keys[keys <= w].max()
            need.update(range(int(k), int(w) + 1))
        acc["decoded"] = acc.get("decoded", 0.0) + len(need) / len(paths)
        acc["used"] = acc.get("used", 0.0) + len(wanted) / len(paths)
        acc["total"] = acc.get("total", 0.0) + len(vr) / len(paths)
        del vr
        _, t = _cpu(lambda: decord.AudioReader(str(p), ctx=decord.cpu(0), sample_rate=16000, mono=True)[:].asnumpy())
        add("audio_before", t)
        _, t = _cpu(lambda: _open_audio(str(p), 16000))
        add("audio_now", t)
        _, t = _cpu(lambda: libav(p, 10**9))
        add("libav_all", t)
        _, t = _cpu(lambda: libav(p, int(wanted[-1])))
        add("libav_to_last", t)
    return acc


def decoder_threads(paths: list[Path]) -> dict[int, float]:
    """Child CPU ms per clip with 1 and 2 decord threads (two children, clips interleaved)."""
    import psutil

    from pipelines.media import ClipDecoder

    spec = SegmentSpec()
    decs = {n: ClipDecoder(num_threads=n) for n in (1, 2)}
    cpu = {n: 0.0 for n in decs}
    try:
        for d in decs.values():
            d.decode(paths[0], spec)
        for p in paths:
            for n, d in decs.items():
                proc = psutil.Process(d.pid)
                a = proc.cpu_times()
                d.decode(p, spec)
                b = proc.cpu_times()
                cpu[n] += 1000 * ((b.user + b.system) - (a.user + a.system)) / len(paths)
    finally:
        for d in decs.values():
            d.close()
    return cpu


def child_start(paths: list[Path], repeats: int = 3) -> float:
    """CPU seconds of a decoder child's start-up: its first decode minus a later one (the best of ``repeats``)."""
    import psutil

    from pipelines.media import ClipDecoder

    spec, best = SegmentSpec(), float("inf")
    for _ in range(repeats):
        with ClipDecoder() as d:
            d.decode(paths[0], spec)
            first = psutil.Process(d.pid).cpu_times()
            d.decode(paths[0], spec)
            second = psutil.Process(d.pid).cpu_times()
        best = min(best, 2 * (first.user + first.system) - (second.user + second.system))
    return best


def long_audio(work: Path) -> tuple[float, float]:
    """(CPU ms of the child's audio read of a 60-s track, of a 10-s one): the 10 segments use 10 s."""
    from pipelines.atomic import atomic_path
    from pipelines.encode import Mp4Writer
    from pipelines.media.child import _open_audio

    out = []
    for seconds in (60, 10):
        path = work / f"audio-{seconds}s.mp4"
        if not path.is_file():
            rng = np.random.default_rng(seconds)
            with atomic_path(path) as tmp, Mp4Writer(tmp, 64, 36, 30, audio_rate=AUDIO_RATE, audio_layout="stereo") as w:
                for _ in range(30 * seconds):
                    w.write_frame(np.full((36, 64, 3), 128, np.uint8))
                w.write_audio((0.1 * rng.standard_normal((2, AUDIO_RATE * seconds))).astype(np.float32))
        out.append(min(_cpu(lambda: _open_audio(str(path), 16000))[1] for _ in range(3)) * 1000)
    return out[0], out[1]


_FIXED = r"""
import json, sys, time
t0 = time.process_time()
marks = {}
def mark(k):
    marks[k] = time.process_time() - t0
import torch; mark("import torch")
import features.extract; mark("import features.extract")
import distributed; mark("import distributed")
from features.extract import ExtractConfig
from features.runner import dask_client
with dask_client(ExtractConfig(dataset_dir=".", out_root=".", workers=2)):
    mark("LocalCluster start")
torch.set_num_threads(1)
from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
v = build_visual(VisualConfig(), input_size=224); a = build_audio(AudioConfig()); mark("model build")
v.warm_up(4); mark("warm-up (frozen graph, batch 4)")
v(torch.zeros(4, 224, 224, 3, dtype=torch.uint8)); mark("a batch of 4 after it")
print(json.dumps({"marks": marks, "modules": {m: m in sys.modules for m in ("timm", "torchvision", "torch._dynamo")}}))
"""


def fixed_costs() -> dict:
    """The fixed costs of a call, as CPU seconds from the start of a fresh interpreter (the best of 2)."""
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _FIXED], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["marks"]["a batch of 4 after it"])
    return best


def dask_idle() -> dict[str, float]:
    """CPU seconds per second of an idle 2-thread LocalCluster (2 tasks sleeping 5 s): defaults vs ours."""
    import dask
    from distributed import Client, LocalCluster

    from features.runner import LOCAL_CLUSTER_CONFIG, local_cluster_kwargs

    out = {}
    for name, config in (("Dask's defaults", {}), ("LOCAL_CLUSTER_CONFIG", LOCAL_CLUSTER_CONFIG)):
        with dask.config.set(config):
            cluster = LocalCluster(**local_cluster_kwargs(2))
        with cluster, Client(cluster) as client:
            t = time.process_time()
            client.gather([client.submit(time.sleep, 5, pure=False) for _ in range(2)])
            out[name] = (time.process_time() - t) / 5
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_extract")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-docs", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load_start = os.getloadavg()[0]
    raw = write_web_dataset(args.work / "web-640x360-30fps-10s", args.clips, 640, 360, 30, 10, workers=os.cpu_count() or 1)
    paths = sorted((raw / "videos").glob("web*.mp4"))[: args.clips]
    steps = {f: decoder_steps(paths, f) for f in (1, 16)}
    threads = decoder_threads(paths)
    start_s = child_start(paths)
    long_ms, short_ms = long_audio(args.work)
    fixed = fixed_costs()
    idle = dask_idle()

    def step_rows(f: int) -> str:
        s = steps[f]
        child = s["open"] + s["frames"] + s["audio_now"]
        return "\n".join([
            f"| {f} frame(s) per segment: frames used / frames libavcodec must decode (keyframe to each used frame) / "
            f"frames in the clip | {s['used']:.0f} / {s['decoded']:.0f} / {s['total']:.0f} |",
            f"| {f}: decord open (index, codec, scaler) | {s['open']:.1f} |",
            f"| {f}: decord `get_batch` of the frames used (seeks to a keyframe when the next frame is in a later "
            f"GOP, skips the rest without converting them; scaling to 224 px and RGB for the frames used) | "
            f"{s['frames']:.1f} |",
            f"| {f}: audio track, decord `AudioReader` + `ar[:]` (before) | {s['audio_before']:.1f} |",
            f"| {f}: audio track, decord `AudioReader`, its decoded array (now; the same values) | {s['audio_now']:.1f} |",
            f"| {f}: **the child's steps now** (open + frames + audio) | **{child:.1f}** (before: "
            f"{child - s['audio_now'] + s['audio_before']:.1f}) |",
            f"| {f}: libavcodec alone (PyAV, 1 thread, no conversion): every frame / up to the last frame used | "
            f"{s['libav_all']:.1f} / {s['libav_to_last']:.1f} |",
        ])

    m = fixed["marks"]
    prev = 0.0
    fixed_rows = []
    for k, v in m.items():
        fixed_rows.append(f"| {k} | {v - prev:.2f} |")
        prev = v
    mods = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in fixed["modules"].items())
    cmd = "python bench/extract_costs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = f"""## Extraction costs outside the CNN (`bench/extract_costs.py`)

Command: `{cmd.strip()}` — x86_64, {os.cpu_count()} cores, load average {load_start:.1f} at the start and
{os.getloadavg()[0]:.1f} at the end (the machine was shared with other jobs: CPU times, not wall times, alternatives
interleaved clip by clip). Clips: {len(paths)} of bench/extract.py's realistic 360p clips (640x360 @ 30 fps, x264
default GOP: keyframes every 250 frames plus scene cuts; AAC 44.1 kHz stereo; 10 s).

Decoder child, CPU ms per clip (in-process, decord's steps as the child runs them, 224 px):

| step | ms per clip |
| --- | ---: |
{step_rows(1)}
{step_rows(16)}

decord threads in the child (one child per shard thread; clips interleaved): 1 thread {threads[1]:.0f} ms CPU per
clip, 2 threads {threads[2]:.0f} ms. A child's start-up (interpreter, numpy, decord, the package): {start_s:.2f} s CPU,
once per shard thread and call.

The audio window: the child reads the whole track (decord's `AudioReader` has no window): a 60-s AAC 44.1 kHz stereo
track {long_ms:.0f} ms CPU, a 10-s one {short_ms:.0f} ms; the 10 segments use the first 10 s.

Fixed costs of a call, CPU seconds in a fresh interpreter (each step after the one above it; the best of two):

| step | CPU s |
| --- | ---: |
{chr(10).join(fixed_rows)}

After the inference path: {mods} imported.

Dask's own CPU on an idle 2-thread LocalCluster (2 tasks sleeping 5 s), CPU seconds per second:
Dask's defaults {idle["Dask's defaults"]:.3f}, `features.runner.LOCAL_CLUSTER_CONFIG` {idle["LOCAL_CLUSTER_CONFIG"]:.3f}.
"""
    publish_section(args.docs, "bench/extract_costs.py", section, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
