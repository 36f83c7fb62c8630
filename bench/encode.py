"""Benchmark and check of the portable encoder setting; writes a section of docs/BENCHMARKS.md.

Measures, in one run on the same rendered clips (the synthetic generator's defaults: 160 px,
10 fps, 10 s, 16 kHz mono):

- the encode cost of :data:`pipelines.encode.ENCODER_SETTING` (x264 C path, FFmpeg SIMD off,
  numpy colour conversion) against the setting used before it (x264 and FFmpeg picking their
  SIMD kernels by CPU, swscale's colour conversion), as a ratio, and against the time it takes
  to render the frames;
- whether each setting is deterministic on this machine: every clip encoded ``--repeats``
  times, the number of clips whose bytes were not all equal;
- across CPU kinds, when ``qemu-x86_64`` is installed (Debian's ``qemu-user``): the golden test
  (tests/pipelines/test_golden.py) run under emulated CPUs without AVX-512, which is how a
  machine of another kind is checked here.

    .venv/bin/python bench/encode.py                 # 16 clips, 3 repeats, emulated CPUs if qemu is there
    .venv/bin/python bench/encode.py --clips 4 --no-docs
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from docs_section import publish_section
from pipelines.encode import ENCODER_SETTING, Mp4Writer
from pipelines.sources.synthetic import SyntheticSource, clip_labels, plan_clip, render_media

REPO = Path(__file__).resolve().parents[1]
EMULATED_CPUS = ("Haswell-noTSX", "SandyBridge")  # AVX2 + FMA without AVX-512; AVX without AVX2/FMA


def encode_previous_setting(path: Path, frames: list[np.ndarray], audio: np.ndarray, size: int, fps: int, rate: int) -> None:
    """The encoder as it was before the portable setting: native SIMD everywhere, swscale colour."""
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
        out.metadata.clear()
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"preset": "veryfast", "crf": "23", "threads": "1", "x264-params": "threads=1:sliced-threads=0"}
        a = out.add_stream("aac", rate=rate)
        a.layout = "mono"
        a.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        af = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, 0, Fraction(1, rate)
        out.mux(a.encode(af))
        out.mux(a.encode(None))


def encode_portable(path: Path, frames: list[np.ndarray], audio: np.ndarray, size: int, fps: int, rate: int) -> None:
    """The project's encoder (:class:`pipelines.encode.Mp4Writer`)."""
    with Mp4Writer(path, size, size, fps, audio_rate=rate) as w:
        for f in frames:
            w.write_frame(f)
        w.write_audio(audio)


def measure(encode, clips: list[tuple[list[np.ndarray], np.ndarray]], cfg: SyntheticSource, repeats: int) -> tuple[float, int]:
    """(seconds per clip-encode, clips whose repeats gave different bytes)."""
    unstable, seconds = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        for frames, audio in clips:
            digests = set()
            for _ in range(repeats):
                t0 = time.perf_counter()
                encode(path, frames, audio, cfg.size, cfg.fps, cfg.audio_rate)
                seconds += time.perf_counter() - t0
                digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
            unstable += len(digests) > 1
    return seconds / (len(clips) * repeats), unstable


def golden_under(cpu: str) -> str:
    """Run the golden test under ``qemu-x86_64 -cpu <cpu>``: 'passed', 'FAILED …' or why it could not run."""
    proc = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/pipelines/test_golden.py"], cwd=REPO, capture_output=True, text=True, timeout=900)
    last = [ln for ln in proc.stdout.splitlines() if " passed" in ln or " failed" in ln]
    return ("passed" if proc.returncode == 0 else "FAILED") + (f" ({last[-1].strip()})" if last else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--no-docs", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = SyntheticSource(clips=args.clips, seed=0)
    labels = clip_labels(cfg)
    t0 = time.perf_counter()
    clips = []
    for i in range(cfg.clips):
        frames, audio = render_media(cfg, plan_clip(cfg, i, int(labels[i])))
        clips.append((list(frames), audio))
    render_s = (time.perf_counter() - t0) / cfg.clips
    portable_s, portable_unstable = measure(encode_portable, clips, cfg, args.repeats)
    previous_s, previous_unstable = measure(encode_previous_setting, clips, cfg, args.repeats)
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0] if Path("/proc/cpuinfo").is_file() else ""
    rows = [
        "## Encoder setting (bench/encode.py)",
        "",
        f"Command: `.venv/bin/python bench/encode.py --clips {args.clips} --repeats {args.repeats}`. "
        f"Machine: {platform.processor() or platform.machine()}, AVX-512 {'yes' if 'avx512f' in flags else 'no'}; "
        f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}. Clips: the synthetic defaults "
        f"({cfg.size} px, {cfg.fps} fps, {cfg.duration_s} s, {cfg.audio_rate} Hz mono), rendered once, encoded "
        f"{args.repeats} times each with each setting, in one run.",
        "",
        "| setting | encode ms / clip | vs previous | clips with unequal bytes over repeats |",
        "|---|---:|---:|---:|",
        f"| portable (`{ENCODER_SETTING}`) | {portable_s * 1e3:.0f} | {portable_s / previous_s:.2f}x | {portable_unstable} of {cfg.clips} |",
        f"| previous (x264 + FFmpeg SIMD by CPU, swscale colour) | {previous_s * 1e3:.0f} | 1.00x | {previous_unstable} of {cfg.clips} |",
        "",
        f"Rendering the frames and audio of one clip takes {render_s * 1e3:.0f} ms, so the portable encode adds "
        f"{(portable_s - previous_s) * 1e3:.0f} ms per clip to a build ({(portable_s - previous_s) / (render_s + previous_s):+.0%} of render + encode).",
    ]
    if shutil.which("qemu-x86_64"):
        rows += ["", "Golden test (`tests/pipelines/test_golden.py`, committed sha256) under emulated CPUs "
                 "(`qemu-x86_64 -cpu NAME`, Debian's qemu-user), next to this machine's run:", ""]
        native = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pipelines/test_golden.py"],
                                cwd=REPO, capture_output=True, text=True, timeout=900)
        rows.append(f"- this machine: {'passed' if native.returncode == 0 else 'FAILED'}")
        rows += [f"- {cpu}: {golden_under(cpu)}" for cpu in EMULATED_CPUS]
    else:
        rows += ["", "(qemu-x86_64 not installed: the emulated-CPU golden runs were skipped; `apt-get install qemu-user`.)"]
    publish_section(args.docs, "bench/encode.py", "\n".join(rows), write=not args.no_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
