"""Benchmark: the explanation comparison table — heads × explainers on the hard preset and two held-out presets.

    .venv/bin/python bench/explanations.py --work /tmp/bench-expl          # builds what is missing, ~1 h on 2 cores
    .venv/bin/python bench/explanations.py --work W --dataset hard=/data/hard --features-root /data/features

For each preset (``hard`` 300 clips seed 0, ``heldout_wide`` 200 clips seed 1, ``heldout_clutter``
200 clips seed 2; split 0.5/0.2/0.3) it finds or makes, with the command line a user would type:

1. the dataset: ``--dataset PRESET=DIR`` or ``WORK/data/PRESET``, built with
   ``wherewhen dataset build synthetic --preset P --clips N --seed S --split-fractions 0.5,0.2,0.3``
   when it has no manifest;
2. the default feature store of that dataset (``wherewhen extract-features`` defaults): looked up in
   ``--features-root`` folders first, else extracted into ``WORK/features``;
3. one run per head with the CLI defaults, ``wherewhen train STORE --model H --out WORK/runs/P-H``
   (a finished run with the same configuration is resumed, i.e. only its test pass reruns);
4. its report, ``wherewhen evaluate RUN --store STORE --out WORK/reports/P-H``; STAN on ``hard``
   adds ``--explainers attention,attention_v,gradcam,step --step-max-clips N`` so STEP is in the table.
   A report newer than its run's weights is kept unless ``--reevaluate``.

Every report.json is read generically — each explainer's scalar figures (nested ones flattened
with dots), whatever metrics the evaluation writes — so the table follows the evaluation as it
changes. The section between this script's markers in docs/BENCHMARKS.md is replaced
(``--no-docs``: print only). The held-out presets are for measuring, never for choosing anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
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

from features.extract import ExtractConfig, plan_store  # noqa: E402

log = logging.getLogger("bench.explanations")

#: preset -> (clips, seed) of the benchmark's datasets (split 0.5/0.2/0.3).
PRESETS: dict[str, tuple[int, int]] = {"hard": (300, 0), "heldout_wide": (200, 1), "heldout_clutter": (200, 2)}
SPLIT_FRACTIONS = "0.5,0.2,0.3"
HEADS = ("stan", "late_fusion", "ave_att")
STEP_EXPLAINERS = "attention,attention_v,gradcam,step"
#: subtrees of an explainer's scores that are not one figure per explainer
_SKIP = {"name", "per_clip", "curves"}


@dataclass
class Cell:
    """One (preset, head) of the table: its commands, seconds and report."""

    preset: str
    head: str
    commands: list[list[str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] | None = None


def cli() -> list[str]:
    """The ``wherewhen`` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "wherewhen"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "flows.cli"]


def shown(cmd: list[str]) -> str:
    """A command as a user would type it (``wherewhen`` instead of the full path)."""
    return shlex.join(["wherewhen", *cmd[len(cli()):]])


def run(cmd: list[str]) -> float:
    """Run one CLI command (output passes through), raise on failure, return its wall seconds."""
    log.info("$ %s", shown(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def dataset_dir(preset: str, work: Path, given: dict[str, Path]) -> tuple[Path, list[str] | None]:
    """The preset's dataset folder and the build command (None when it was already there)."""
    ds = given.get(preset, work / "data" / preset)
    if (ds / "manifest.parquet").is_file():
        return ds, None
    clips, seed = PRESETS[preset]
    cmd = [*cli(), "dataset", "build", "synthetic", "--preset", preset, "--clips", str(clips), "--seed", str(seed),
           "--split-fractions", SPLIT_FRACTIONS, "--out", str(ds)]
    run(cmd)
    return ds, cmd


def store_dir(ds: Path, work: Path, roots: list[Path]) -> tuple[Path, list[str] | None]:
    """The dataset's default-extraction store: found complete under one of ``roots``, else extracted."""
    for root in roots:
        plan = plan_store(ExtractConfig(dataset_dir=ds, out_root=root))
        if plan.complete:
            return plan.store_dir, None
    cmd = [*cli(), "extract-features", str(ds), "--out", str(work / "features")]
    run(cmd)
    plan = plan_store(ExtractConfig(dataset_dir=ds, out_root=work / "features"))
    if not plan.complete:
        raise RuntimeError(f"extract-features left {plan.store_dir} incomplete")
    return plan.store_dir, cmd


def train_and_evaluate(cell: Cell, store: Path, work: Path, step_clips: int, reevaluate: bool) -> None:
    """``wherewhen train`` then ``wherewhen evaluate`` for one head on one preset (CLI defaults)."""
    run_dir = work / "runs" / f"{cell.preset}-{cell.head}"
    rep_dir = work / "reports" / f"{cell.preset}-{cell.head}"
    train = [*cli(), "train", str(store), "--model", cell.head, "--out", str(run_dir)]
    cell.seconds["train"] = run(train)
    evaluate = [*cli(), "evaluate", str(run_dir), "--store", str(store), "--out", str(rep_dir)]
    if cell.head == "stan" and cell.preset == "hard":
        evaluate += ["--explainers", STEP_EXPLAINERS, "--step-max-clips", str(step_clips)]
    cell.commands += [train, evaluate]
    report = rep_dir / "report.json"
    weights = run_dir / "model.safetensors"
    if reevaluate or not report.is_file() or report.stat().st_mtime < weights.stat().st_mtime:
        cell.seconds["evaluate"] = run(evaluate)
    cell.report = json.loads(report.read_text(encoding="utf-8"))


def flatten(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """An explainer's scalar figures, nested dicts flattened with dots; lists, per-class and per-clip parts left out."""
    out: dict[str, Any] = {}
    for key, value in scores.items():
        if key in _SKIP or "per_class" in key:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
    return out


def fmt(value: Any) -> str:
    """A table entry: 3 decimals, yes/no, n/a."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def acceptance(report: dict[str, Any]) -> str:
    """Issue 13's STAN acceptance on one report: accuracy ≥ 0.95, α pointing ≥ 0.85 and ≥ 2× centre, β^a ≥ 0.90;
    on the visual path α's deletion AUC ≤ 0.7× random's and insertion AUC ≥ 1.3× random's, on each test of
    the visual evidence the report has (per segment, ``visual_segment_evidence``, and pooled over the clip,
    ``visual_evidence``); where STEP ran, STEP's pointing ≥ Grad-CAM's and ≥ 2× random's, all three on STEP's
    clips (the first ``--step-clips``: ``pointing_common``)."""
    scores = report.get("scores", {})
    att, centre, rnd = scores.get("attention", {}), scores.get("centre", {}), scores.get("random", {})
    acc, point, ctr, tp = report.get("accuracy"), att.get("pointing"), centre.get("pointing"), att.get("temporal_pointing")
    a_auc, r_auc = att.get("auc", {}), rnd.get("auc", {})

    def ratio(curve: str, test: str) -> float | None:
        a, r = a_auc.get(f"{curve}_{test}"), r_auc.get(f"{curve}_{test}")
        return None if a is None or not r else a / r

    checks = [
        ("accuracy ≥ 0.95", acc is not None and acc >= 0.95),
        ("α pointing ≥ 0.85", point is not None and point >= 0.85),
        ("α pointing ≥ 2× centre", point is not None and ctr is not None and point >= 2 * ctr),
        ("β^a temporal pointing ≥ 0.90", tp is not None and tp >= 0.90),
    ]
    for test, where in (("visual_segment_evidence", "per segment"), ("visual_evidence", "clip-level")):
        deletion, insertion = ratio("deletion", test), ratio("insertion", test)
        if deletion is not None:
            checks.append((f"α deletion AUC ≤ 0.7× random's, {where} ({deletion:.2f}×)", deletion <= 0.7))
        if insertion is not None:
            checks.append((f"α insertion AUC ≥ 1.3× random's, {where} ({insertion:.2f}×)", insertion >= 1.3))
    # STEP against Grad-CAM and random on the same clips (STEP's: the first --step-clips).
    step, gradcam = scores.get("step", {}).get("pointing_common"), scores.get("gradcam", {}).get("pointing_common")
    chance = rnd.get("pointing_common")
    if step is not None and gradcam is not None and chance is not None:
        checks.append((f"STEP pointing ≥ Grad-CAM's and ≥ 2× random on STEP's {report.get('reliability_clips')} clips "
                       f"({step:.3f} vs {gradcam:.3f}, {chance:.3f})", step >= gradcam and step >= 2 * chance))
    return "; ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks)


def preset_section(preset: str, cells: list[Cell], build: list[str] | None, extract: list[str] | None,
                   store: Path) -> list[str]:
    """The markdown of one preset: the heads × explainers table, reliability α, acceptance, commands."""
    lines = [f"### `{preset}`", ""]
    rows, columns = [], ["accuracy"]
    for i, cell in enumerate(cells, 1):
        rep = cell.report or {}
        for explainer, scores in rep.get("scores", {}).items():
            flat = flatten(scores)
            columns += [c for c in flat if c not in columns]
            rows.append((cell.head, explainer, {"accuracy": rep.get("accuracy"), **flat}, i))
    split = next((c.report.get("split") for c in cells if c.report), "test")
    clips = next((c.report.get("clips") for c in cells if c.report), "?")
    lines += [f"Split `{split}`, {clips} clips; store `{store}`. Command numbers refer to the list below the tables.", ""]
    lines.append("| head | explainer | " + " | ".join(columns) + " | cmd |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in columns) + " | ---: |")
    for head, explainer, values, i in rows:
        lines.append(f"| {head} | {explainer} | " + " | ".join(fmt(values.get(c)) for c in columns) + f" | ({i}) |")
    metrics: list[str] = []
    for cell in cells:
        metrics += [m for m in (cell.report or {}).get("reliability", {}) if m not in metrics]
    if metrics:
        lines += ["", "Metric reliability α (STEP's: 1 = every clip ranks the explainers alike):", ""]
        lines.append("| head | " + " | ".join(metrics) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in metrics) + " |")
        for cell in cells:
            rel = (cell.report or {}).get("reliability", {})
            lines.append(f"| {cell.head} | " + " | ".join(fmt(rel.get(m)) for m in metrics) + " |")
    stan = next((c for c in cells if c.head == "stan" and c.report), None)
    if stan is not None:
        lines += ["", f"Issue 13 acceptance (STAN, CLI defaults): {acceptance(stan.report)}."]
    lines += [""]
    if build:
        lines.append(f"- dataset: `{shown(build)}`")
    if extract:
        lines.append(f"- features: `{shown(extract)}`")
    for i, cell in enumerate(cells, 1):
        secs = ", ".join(f"{k} {v:.0f} s" for k, v in cell.seconds.items())
        lines.append(f"- ({i}) `{shown(cell.commands[0])}` then `{shown(cell.commands[1])}` ({secs})")
    return lines + [""]


def preset_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments every preset bench takes: --work, --dataset PRESET=DIR (repeatable), --features-root."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for datasets, stores, runs and reports")
    parser.add_argument("--dataset", action="append", default=[], metavar="PRESET=DIR",
                        help="use this dataset folder for PRESET (built there if it has no manifest)")
    parser.add_argument("--features-root", action="append", type=Path, default=[],
                        help="folder(s) where extract-features put stores before (searched first)")
    parser.add_argument("--no-docs", action="store_true", help="print the section, leave docs/BENCHMARKS.md alone")
    return parser


def parse_preset_args(parser: argparse.ArgumentParser, argv: list[str] | None,
                      presets: Any) -> tuple[argparse.Namespace, dict[str, Path], Path, list[Path]]:
    """Parse ``argv``; return the arguments, the given datasets per preset, the work folder and the
    folders searched for stores (``--features-root`` first, then ``WORK/features``). Logs at INFO."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work.resolve()
    return args, preset_datasets(parser, args.dataset, presets), work, [*args.features_root, work / "features"]


def preset_datasets(parser: argparse.ArgumentParser, items: list[str], presets: Any) -> dict[str, Path]:
    """``--dataset PRESET=DIR`` arguments as {preset: folder}; a usage error for an unknown preset."""
    given = {}
    for item in items:
        preset, _, path = item.partition("=")
        if preset not in presets or not path:
            parser.error(f"--dataset wants PRESET=DIR with PRESET in {sorted(presets)}, got {item!r}")
        given[preset] = Path(path)
    return given


def main(argv: list[str] | None = None) -> int:
    parser = preset_parser(__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated heads")
    parser.add_argument("--step-clips", type=int, default=8, help="--step-max-clips for STAN on hard")
    parser.add_argument("--reevaluate", action="store_true", help="rerun evaluate even where a report is newer than its run")
    args, given, work, roots = parse_preset_args(parser, argv, PRESETS)
    presets = [p for p in args.presets.split(",") if p]
    heads = [h for h in args.heads.split(",") if h]
    if unknown := sorted({*presets} - {*PRESETS}) + sorted({*heads} - {*HEADS}):
        parser.error(f"unknown preset(s) or head(s) {unknown}; presets {list(PRESETS)}, heads {list(HEADS)}")
    t0 = time.perf_counter()
    body = [
        "## Explanations: heads × explainers, hard preset and two held-out presets (`bench/explanations.py`)",
        "",
        f"Command: `python bench/explanations.py --work WORK` — machine: {platform.machine()}, "
        f"{platform.python_version()}. Every figure comes from the CLI defaults (`wherewhen train`, "
        "`wherewhen evaluate`), one run per head and preset; the held-out presets were never used to choose what the code does now "
        "(one candidate, α detached in the visual evidence, was reverted in stop 25 after this bench showed it worse: "
        "DESIGN.md records it). "
        "Columns are whatever each report.json holds per explainer (nested figures flattened with dots).",
        "",
    ]
    for preset in presets:
        ds, build = dataset_dir(preset, work, given)
        store, extract = store_dir(ds, work, roots)
        cells = [Cell(preset, head) for head in heads]
        for cell in cells:
            train_and_evaluate(cell, store, work, args.step_clips, args.reevaluate)
        body += preset_section(preset, cells, build, extract, store)
    body.append(f"Total wall time of this run: {time.perf_counter() - t0:.0f} s.")
    publish_section(ROOT / "docs" / "BENCHMARKS.md", "bench/explanations.py", "\n".join(body), write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
