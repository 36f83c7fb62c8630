"""Benchmark: which audio extractor should be the default — STAN's accuracy and α pointing with each, and its cost.

    .venv/bin/python bench/audio_extractors.py --work /tmp/bench-audio                 # builds what is missing
    .venv/bin/python bench/audio_extractors.py --work W --dataset hard=/data/hard --features-root /data/features

For each preset (``easy`` 200 clips seed 0, ``hard`` 300 clips seed 0; split 0.5/0.2/0.3) and each audio
extractor (``logmel``, ``soundnet``, ``aisfx``) it finds or makes, with the command line a user would type:

1. the dataset: ``--dataset PRESET=DIR`` or ``WORK/data/PRESET``, built with
   ``wherewhen dataset build synthetic --preset P --clips N --seed S --split-fractions 0.5,0.2,0.3``
   when it has no manifest;
2. the store ``wherewhen extract-features DS --audio A`` (every other option the default): looked up in
   ``--features-root`` folders first, else extracted into ``WORK/features``;
3. STAN with the CLI defaults, ``wherewhen train STORE --model stan --out WORK/runs/P-A`` and
   ``wherewhen evaluate RUN --store STORE --out WORK/reports/P-A`` (default explainers); for the
   seed spread, ``--seed s`` runs (``--seeds``, default 0,1,2) evaluated with ``--explainers attention``
   (α pointing is the ``attention`` explainer's pointing game, identical under both explainer lists).
   A run whose report is newer than its weights is taken as it is; otherwise train (a finished run is
   resumed: only its test pass reruns) and evaluate run.

Cost (``--cost-clips`` clips of ``--cost-preset``, decoded once with the stores' segmentation): in one
process with ``--threads`` torch threads (1, extract-features' default per shard task), the CPU seconds
(``time.process_time``) of the visual CNN (the default ``efficientnet_lite0``, frozen graph, frames in
batches of the CPU default batch size, as the shard engine runs it) and of each audio extractor (one call
per clip on its segments, as the shard engine calls it), each the fastest of ``--repeats`` passes, after a
warm-up pass; the ratio audio / visual is the figure. The stores' own timings (``shards_audio_s`` /
``shards_visual_s`` in store.json, wall seconds inside the shard tasks, under whatever load the machine had)
are shown beside it as a check.

The section between this script's markers in docs/BENCHMARKS.md is replaced (``--no-docs``: print only).
Held-out presets are never used here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from docs_section import publish_section  # noqa: E402
from explanations import cli, parse_preset_args, preset_parser, run, shown  # noqa: E402

from features.extract import ExtractConfig, plan_store  # noqa: E402
from features.extractors import AudioConfig  # noqa: E402

log = logging.getLogger("bench.audio_extractors")

#: preset -> (clips, seed) of the benchmark's datasets (split 0.5/0.2/0.3); never a held-out preset.
PRESETS: dict[str, tuple[int, int]] = {"easy": (200, 0), "hard": (300, 0)}
SPLIT_FRACTIONS = "0.5,0.2,0.3"
AUDIO = ("logmel", "soundnet", "aisfx")


@dataclass
class Cell:
    """One (preset, audio extractor): its store, commands and reports (seed -> report.json)."""

    preset: str
    audio: str
    store: Path | None = None
    commands: list[str] = field(default_factory=list)
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)


def dataset_dir(preset: str, work: Path, given: dict[str, Path]) -> tuple[Path, str | None]:
    """The preset's dataset folder and the build command (None when it was already there)."""
    ds = given.get(preset, work / "data" / preset)
    clips, seed = PRESETS[preset]
    cmd = [*cli(), "dataset", "build", "synthetic", "--preset", preset, "--clips", str(clips), "--seed", str(seed),
           "--split-fractions", SPLIT_FRACTIONS, "--out", str(ds)]
    if (ds / "manifest.parquet").is_file():
        return ds, None
    run(cmd)
    return ds, shown(cmd)


def store_dir(ds: Path, audio: str, work: Path, roots: list[Path]) -> tuple[Path, str]:
    """The store of ``extract-features DS --audio AUDIO``: found complete under ``roots``, else extracted."""
    cmd = [*cli(), "extract-features", str(ds), "--audio", audio, "--out", str(work / "features")]
    for root in roots:
        plan = plan_store(ExtractConfig(dataset_dir=ds, out_root=root, audio=AudioConfig(name=audio)))
        if plan.complete:
            return plan.store_dir, shown(cmd)
    run(cmd)
    plan = plan_store(ExtractConfig(dataset_dir=ds, out_root=work / "features", audio=AudioConfig(name=audio)))
    if not plan.complete:
        raise RuntimeError(f"extract-features left {plan.store_dir} incomplete")
    return plan.store_dir, shown(cmd)


def train_and_evaluate(cell: Cell, work: Path, seed: int) -> None:
    """``wherewhen train`` (CLI defaults, ``--seed`` unless 0) then ``wherewhen evaluate`` for one seed."""
    tag = f"{cell.preset}-{cell.audio}" + (f"-seed{seed}" if seed else "")
    run_dir, rep_dir = work / "runs" / tag, work / "reports" / tag
    train = [*cli(), "train", str(cell.store), "--model", "stan", "--out", str(run_dir)]
    evaluate = [*cli(), "evaluate", str(run_dir), "--store", str(cell.store), "--out", str(rep_dir)]
    if seed:
        train += ["--seed", str(seed)]
        evaluate += ["--explainers", "attention"]
    report, weights = rep_dir / "report.json", run_dir / "model.safetensors"
    if not (report.is_file() and weights.is_file() and report.stat().st_mtime > weights.stat().st_mtime):
        run(train)   # resumes a finished run (only its test pass reruns)
        run(evaluate)
    if seed == 0:
        cell.commands += [shown(train), shown(evaluate)]
    cell.reports[seed] = json.loads(report.read_text(encoding="utf-8"))


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """Accuracy, α pointing (attention explainer), β^a temporal pointing, and the centre baseline's pointing."""
    scores = report.get("scores", {})
    att, centre = scores.get("attention", {}), scores.get("centre", {})
    return {"accuracy": report.get("accuracy"), "pointing": att.get("pointing"),
            "temporal": att.get("temporal_pointing"), "centre": centre.get("pointing"),
            "clips": report.get("clips")}


def decoded_clips(ds: Path, n: int) -> list[Any]:
    """The first ``n`` clips of ``ds``'s manifest, decoded with the default segmentation (as the stores were)."""
    import pandas as pd

    from pipelines.media import ClipDecoder
    from pipelines.segments import SegmentSpec

    manifest = pd.read_parquet(ds / "manifest.parquet").head(n)
    with ClipDecoder() as decoder:
        return [decoder.decode(ds / rel, SegmentSpec()) for rel in manifest["relpath"]]


def _fastest(fn: Any, repeats: int) -> tuple[float, float]:
    """(CPU s, wall s) of the fastest of ``repeats`` calls of ``fn`` (by CPU time), after one warm-up call."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - c0, time.perf_counter() - w0))
    return best


def measure_costs(ds: Path, n: int, threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per-clip CPU and wall seconds of the visual CNN and of each audio extractor on the same ``n`` clips."""
    import numpy as np
    import torch

    from features.extractors import VisualConfig, build_audio, build_visual
    from features.plan import default_batch_size
    from pipelines.segments import SegmentSpec

    torch.set_num_threads(threads)
    clips = decoded_clips(ds, n)
    frames = np.concatenate([c.frames[np.asarray(c.segment_mask, bool)].reshape(-1, *c.frames.shape[-3:])
                             for c in clips])
    audio = [torch.from_numpy(np.ascontiguousarray(c.audio[np.asarray(c.segment_mask, bool)])) for c in clips]
    frame_size = SegmentSpec().frame_size   # the frames decoded_clips gives
    batch = default_batch_size("cpu", frame_size)
    out: dict[str, dict[str, float]] = {}

    t = time.perf_counter()
    visual = build_visual(VisualConfig(), input_size=frame_size)
    load = time.perf_counter() - t
    frames_t = torch.from_numpy(frames)

    def run_visual() -> None:
        for i in range(0, len(frames_t), batch):
            visual(frames_t[i:i + batch])

    cpu, wall = _fastest(run_visual, repeats)
    out[f"visual:{visual.name}"] = {"cpu": cpu / n, "wall": wall / n, "load_s": load}
    for name in AUDIO:
        t = time.perf_counter()
        extractor = build_audio(AudioConfig(name=name))
        load = time.perf_counter() - t

        def run_audio(extractor: Any = extractor) -> None:
            for a in audio:
                extractor(a)

        cpu, wall = _fastest(run_audio, repeats)
        out[name] = {"cpu": cpu / n, "wall": wall / n, "load_s": load}
    return out


def store_timing(store: Path | None) -> str:
    """``shards_audio_s / shards_visual_s`` and the call's ``total_s`` from a store's card (extract-features' own timings)."""
    if store is None or not (store / "store.json").is_file():
        return "n/a"
    timings = json.loads((store / "store.json").read_text(encoding="utf-8")).get("timings") or {}
    a, v, total = timings.get("shards_audio_s"), timings.get("shards_visual_s"), timings.get("total_s")
    ratio = a / v if a is not None and v else None
    return f"{fmt(ratio)} ({fmt(total, 0)} s)"


def fmt(v: float | None, digits: int = 3) -> str:
    """A table entry: ``digits`` decimals, n/a for missing."""
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def spread(values: list[float]) -> str:
    """``mean ± sd`` of seeds' figures (sd only with two or more)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


#: the figures the default is chosen on (accuracy and α pointing, the issue's two)
CHOICE_FIGURES = ("accuracy", "pointing")


def _per_clip_pointing(cell: Cell) -> list[float] | None:
    """The seed-mean of α pointing per test clip (the reports' per-clip lists, index order), None if absent."""
    lists = [r.get("scores", {}).get("attention", {}).get("per_clip", {}).get("pointing") for r in cell.reports.values()]
    if not lists or any(not isinstance(v, list) or len(v) != len(lists[0]) for v in lists):
        return None
    return [statistics.mean(x for x in clip if x is not None) if any(x is not None for x in clip) else float("nan")
            for clip in zip(*lists)]


def _paired_bootstrap(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95% interval of mean(a - b) by a paired bootstrap over clips (NaN clips dropped)."""
    import numpy as np

    d = np.array([x - y for x, y in zip(a, b) if x == x and y == y])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(hi - lo) / 2


def compare(cell: Cell, base: Cell, figure: str) -> tuple[float | None, float | None, str]:
    """(difference of seed means vs ``base``, noise, verdict) for one figure.

    Noise = the larger of 2 × the seeds' pooled sd (the training noise of one run) and the test set's
    sampling noise: for α pointing the half-width of a paired bootstrap 95% interval over the test clips
    (same clips, per-clip seed means), for accuracy 2 × the binomial standard error over the test clips
    (the reports hold no per-clip correctness). The verdict is ``better`` / ``worse`` when the difference
    exceeds the noise, else ``tied`` (``n/a`` without two seeds each).
    """
    mine = [v for v in (figures(r)[figure] for r in cell.reports.values()) if v is not None]
    theirs = [v for v in (figures(r)[figure] for r in base.reports.values()) if v is not None]
    if len(mine) < 2 or len(theirs) < 2:
        return None, None, "n/a"
    diff = statistics.mean(mine) - statistics.mean(theirs)
    seeds = 2 * ((statistics.variance(mine) + statistics.variance(theirs)) / 2) ** 0.5
    clips = figures(base.reports[min(base.reports)])["clips"] or 1
    if figure == "pointing":
        a, b = _per_clip_pointing(cell), _per_clip_pointing(base)
        sampling = _paired_bootstrap(a, b) if a is not None and b is not None and len(a) == len(b) else 1.0
    else:
        p = statistics.mean(mine + theirs)
        sampling = 2 * (max(p * (1 - p), 1 / clips) / clips) ** 0.5
    noise = max(seeds, sampling)
    return diff, noise, "better" if diff > noise else "worse" if diff < -noise else "tied"


def choose(cells: list[Cell], costs: dict[str, dict[str, float]]) -> tuple[str, list[str]]:
    """The default the figures favour, and the markdown lines of the reading.

    Rule: a learned extractor replaces ``logmel`` only if it is better beyond noise (:func:`compare`) on
    accuracy or α pointing on some preset, worse beyond noise on none, and costs less CPU per clip than the visual CNN
    (so that extraction's model time at most doubles for every user); among several, the one with the
    higher mean α pointing on ``hard``.
    """
    visual = next((v["cpu"] for k, v in costs.items() if k.startswith("visual:")), None)
    lines = ["| audio vs logmel | " + " | ".join(f"{p}: Δ {f} (noise)" for p in PRESETS for f in CHOICE_FIGURES)
             + " | × visual CNN (CPU) |",
             "| --- | " + " | ".join("---:" for _ in PRESETS for _ in CHOICE_FIGURES) + " | ---: |"]
    candidates: list[tuple[float, str]] = []
    for name in AUDIO[1:]:
        verdicts, row = [], []
        for preset in PRESETS:
            mine = next((c for c in cells if c.preset == preset and c.audio == name), None)
            base = next((c for c in cells if c.preset == preset and c.audio == "logmel"), None)
            for figure in CHOICE_FIGURES:
                if mine is None or base is None or not mine.reports or not base.reports:
                    row.append("n/a")
                    continue
                diff, noise, verdict = compare(mine, base, figure)
                verdicts.append(verdict)
                row.append("n/a" if diff is None else f"{diff:+.3f} ({noise:.3f}) {verdict}")
        ratio = costs[name]["cpu"] / visual if visual and name in costs else None
        lines.append(f"| {name} | " + " | ".join(row) + f" | {fmt(ratio)} |")
        if "better" in verdicts and "worse" not in verdicts and "n/a" not in verdicts and ratio is not None and ratio < 1:
            hard = next(c for c in cells if c.preset == "hard" and c.audio == name)
            candidates.append((statistics.mean(figures(r)["pointing"] or 0 for r in hard.reports.values()), name))
    return (max(candidates)[1] if candidates else "logmel"), lines


def section(cells: list[Cell], costs: dict[str, dict[str, float]], builds: dict[str, str | None],
            cost_ds: str, args: argparse.Namespace, seconds: float) -> str:
    """The markdown section: per-preset figures, the cost table, the commands."""
    seeds = sorted({s for c in cells for s in c.reports})
    lines = [
        "## Audio extractor: logmel vs SoundNet vs aiSFX under STAN (`bench/audio_extractors.py`)",
        "",
        f"Command: `python bench/audio_extractors.py --work WORK --cost-clips {args.cost_clips} "
        f"--seeds {','.join(map(str, seeds))}` — machine: {platform.machine()}, {os.cpu_count()} cores shared "
        f"with other jobs (load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}. "
        "Every store, run and report comes from the CLI a user types (`wherewhen extract-features DS --audio A`, "
        "`wherewhen train STORE --model stan`, `wherewhen evaluate`), all other options the defaults. "
        "Seed 0 is the CLI default (its report is the default evaluation); the other seeds are `--seed s` runs, "
        "evaluated with `--explainers attention`, to show the spread. α pointing is the `attention` explainer's "
        "pointing game, β^a the temporal pointing; the centre baseline's pointing is given for scale.",
        "",
    ]
    for preset in PRESETS:
        rows = [c for c in cells if c.preset == preset and c.reports]
        if not rows:
            continue
        first = figures(rows[0].reports[min(rows[0].reports)])
        lines += [f"### `{preset}` (test split, {first['clips']} clips)", "",
                  f"| audio | accuracy (seed 0) | α pointing (seed 0) | β^a temporal (seed 0) | centre pointing | "
                  f"accuracy, seeds {','.join(map(str, seeds))} | α pointing, seeds {','.join(map(str, seeds))} | store |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for c in rows:
            f0 = figures(c.reports.get(0, {}))
            per_seed = [figures(r) for _, r in sorted(c.reports.items())]
            lines.append(f"| {c.audio} | {fmt(f0['accuracy'])} | {fmt(f0['pointing'])} | {fmt(f0['temporal'])} | "
                         f"{fmt(f0['centre'])} | {spread([f['accuracy'] for f in per_seed])} | "
                         f"{spread([f['pointing'] for f in per_seed])} | `{c.store.name if c.store else '?'}` |")
        lines.append("")
    visual = next((k for k in costs if k.startswith("visual:")), None)
    if visual:
        v = costs[visual]
        lines += [f"### Cost per clip ({args.cost_clips} clips of `{cost_ds}`, 10 segments each, "
                  f"{args.threads} torch thread, fastest of {args.repeats} passes)", "",
                  "| extractor | CPU s per clip | wall s per clip | × visual CNN (CPU) | model load s | "
                  "× visual in extract-features' own timings (whole call's wall s), easy / hard store |",
                  "| --- | ---: | ---: | ---: | ---: | --- |",
                  f"| {visual.split(':')[1]} (visual) | {v['cpu']:.4f} | {v['wall']:.4f} | 1 | {v['load_s']:.1f} | |"]
        for name in AUDIO:
            if name not in costs:
                continue
            a = costs[name]
            from_stores = " / ".join(store_timing(c.store) for p in PRESETS for c in cells
                                     if c.audio == name and c.preset == p)
            lines.append(f"| {name} | {a['cpu']:.4f} | {a['wall']:.4f} | **{a['cpu'] / v['cpu']:.3f}** | "
                         f"{a['load_s']:.1f} | {from_stores} |")
        lines.append("")
    choice, reading = choose(cells, costs)
    lines += ["### Reading: each learned extractor against logmel (differences of seed means)", "", *reading, "",
              "Rule (`choose` in the script): a learned extractor replaces `logmel` only if it is better beyond noise "
              "on accuracy or α pointing on some preset, worse beyond noise on none, and costs less CPU per clip than "
              "the visual CNN (extraction's model time at most doubles for every user); noise = the larger of 2 × "
              "the seeds' pooled sd (training noise) and the test set's sampling noise (α pointing: the half-width of a "
              "paired bootstrap 95% interval over the test clips; accuracy: 2 × its binomial SE). "
              f"**The figures favour `{choice}`**; the default in `features.extractors.AudioConfig` is "
              f"`{AudioConfig().name}`.", ""]
    lines.append("Commands (seed 0; the other seeds add `--seed s` to train and `--explainers attention` to evaluate):")
    lines.append("")
    for preset, build in builds.items():
        if build:
            lines.append(f"- {preset} dataset: `{build}`")
    for c in cells:
        for cmd in c.commands:
            lines.append(f"- `{cmd}`")
    lines += ["", f"Total wall time of this run: {seconds:.0f} s (stores, runs and reports already made are reused)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = preset_parser(__doc__)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (0 = the CLI default run)")
    parser.add_argument("--cost-preset", default="hard", choices=sorted(PRESETS))
    parser.add_argument("--cost-clips", type=int, default=20, help="clips timed for the cost table (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per extractor (the fastest counts)")
    args, given, work, roots = parse_preset_args(parser, argv, PRESETS)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t0 = time.perf_counter()
    cells, builds, datasets = [], {}, {}
    for preset in PRESETS:
        ds, builds[preset] = dataset_dir(preset, work, given)
        datasets[preset] = ds
        for audio in AUDIO:
            cell = Cell(preset, audio)
            cell.store, extract = store_dir(ds, audio, work, roots)
            cell.commands.append(extract)
            cells.append(cell)
    for seed in seeds:   # every extractor's seed 0 first, so a short run already has the default comparison
        for cell in cells:
            train_and_evaluate(cell, work, seed)
    costs = measure_costs(datasets[args.cost_preset], args.cost_clips, args.threads, args.repeats) \
        if args.cost_clips else {}
    text = section(cells, costs, builds, args.cost_preset, args, time.perf_counter() - t0)
    publish_section(ROOT / "docs" / "BENCHMARKS.md", "bench/audio_extractors.py", text, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
