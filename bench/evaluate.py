"""Benchmark: ``evaluate`` (feature-space metrics) on a 100-clip synthetic test split.

    .venv/bin/python bench/evaluate.py                                 # 100 test clips, 224 px (7×7×1280)
    .venv/bin/python bench/evaluate.py --test-clips 8 --frame-size 64 --epochs 2 --step-iterations 10   # smoke run

Builds (once, cached under ``--work``) a synthetic dataset whose test split holds
``--test-clips`` clips, extracts real features (EfficientNet-Lite0 + log-mel) and trains STAN
with the real trainer; then times ``evaluate_run`` twice in the same process: with the fast
explainers only (attention, attention_v, Grad-CAM + random/centre) and with feature-space STEP
added on ``--step-clips`` clips. Prints the report's headline figures (the acceptance figures)
and writes/replaces its section of ``docs/BENCHMARKS.md``. Goal: under 3 minutes on 2 cores
for the feature-space metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from docs_section import publish_section  # noqa: E402

from features.extract import ExtractConfig, extract_features  # noqa: E402
from pipelines.build import BuildConfig, build_dataset  # noqa: E402
from pipelines.segments import SegmentSpec  # noqa: E402
from pipelines.sources.synthetic import SyntheticSource  # noqa: E402
from stan_head.checkpoint import run_files  # noqa: E402
from stan_head.evaluation.evaluate import EvaluateConfig, evaluate_run  # noqa: E402
from stan_head.train import TrainConfig, train_head  # noqa: E402

log = logging.getLogger("bench.evaluate")


def prepare(work: Path, test_clips: int, frame_size: int, epochs: int, seed: int) -> tuple[Path, Path]:
    """Dataset → store → trained STAN run, each step skipped when already there."""
    clips = max(8, round(test_clips / 0.45))
    ds = work / f"ds-{clips}"
    if not (ds / "manifest.parquet").is_file():
        build_dataset(BuildConfig(source=SyntheticSource(clips=clips, classes=8, seed=seed), out=ds, workers=2,
                                  split_fractions=(0.45, 0.1, 0.45)))
    store = extract_features(ExtractConfig(dataset_dir=ds, out_root=work / "features", workers=0,
                                           segment=SegmentSpec(frame_size=frame_size)))
    run = work / f"run-{store.store_id}-e{epochs}"
    if not all(path.is_file() for path in run_files(run)):
        train_head(TrainConfig(store=store.store_dir, out=run, epochs=epochs, device="cpu", progress=False,
                               attention_entropy_weight=0.01, patience=0))
    return store.store_dir, run




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/wherewhen-bench-evaluate"))
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--frame-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--step-iterations", type=int, default=300)
    p.add_argument("--step-clips", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    store, run = prepare(args.work, args.test_clips, args.frame_size, args.epochs, args.seed)
    timings: dict[str, float] = {}
    reports = {}
    for label, explainers in (("fast explainers (the defaults)", ("attention", "attention_v", "gradcam")),
                              ("+ STEP (feature space)", ("attention", "attention_v", "gradcam", "step"))):
        out = args.work / "reports" / label.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus")
        t0 = time.perf_counter()
        summary = evaluate_run(EvaluateConfig(run=run, store=store, out=out, split="test", explainers=explainers,
                                              device="cpu", step_iterations=args.step_iterations,
                                              step_max_clips=args.step_clips))
        timings[label] = time.perf_counter() - t0
        reports[label] = json.loads(summary.report_json.read_text())
        log.info("%s: %.1f s, %d clips -> %s", label, timings[label], summary.clips, summary.report_md)

    rep = reports["+ STEP (feature space)"]
    lines = [
        "## evaluate (bench/evaluate.py)",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/evaluate.py', *(argv if argv is not None else sys.argv[1:])])}` — "
        f"{platform.processor() or platform.machine()}, torch threads {args.threads}, {rep['clips']} test clips, "
        f"store {rep['store_id']}, video-level accuracy {rep['accuracy']:.3f}.",
        "",
        "| evaluate_run | seconds |",
        "| --- | ---: |",
        *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
        "",
        f"Goal: feature-space metrics on 100 test clips in < 180 s on 2 cores. STEP: {args.step_iterations} steps "
        f"on {args.step_clips} clips.",
        "",
        "Perturbation tests (deleting everything must lower mean p(target) by ≥ 0.10 for a test to rank explainers):",
        "",
        "| test | p(target) kept | p(target) all deleted | drop | verdict |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for test, c in rep["perturbation"].items():
        verdict = "n/a" if not c["available"] else "informative" if c["informative"] else "uninformative"
        lines.append(f"| {test} | {fmt(c['p_kept'])} | {fmt(c['p_deleted'])} | {fmt(c['effect'])} | {verdict} |")
    tests = [t for t, c in rep["perturbation"].items() if c["informative"]]
    lines += [
        "",
        "| explainer | clips | pointing | temporal pointing | temporal ROC-AUC | "
        + " | ".join(f"deletion {t} | insertion {t}" for t in tests) + " |",
        "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * (2 * len(tests)),
    ]
    for name in rep["explainers"]:
        s = rep["scores"][name]
        aucs = " | ".join(f"{fmt(s['auc'].get(f'deletion_{t}'))} | {fmt(s['auc'].get(f'insertion_{t}'))}" for t in tests)
        lines.append(f"| {name} | {s['clips']} | {fmt(s['pointing'])} | {fmt(s['temporal_pointing'])} | "
                     f"{fmt(s['temporal_auc'])} | {aucs} |")
    lines += ["", "Reliability α: " + ", ".join(f"{k} {fmt(v)}" for k, v in rep["reliability"].items())]
    text = "\n".join(lines)
    publish_section(args.docs, "bench/evaluate.py", text, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
