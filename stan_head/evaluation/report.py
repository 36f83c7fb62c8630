"""The evaluation report: ``report.json`` (everything), ``report.md`` (what a person reads) and figures.

Figures (PNG): ``pointing.png`` (where/when pointing per explainer), ``curves.png`` (mean
deletion/insertion curves per explainer) and ``overlays.png`` (spatial maps over the decoded
frames, or over a feature-energy map when the videos are not reachable, with the boxes).
All files are written atomically; figures are drawn on their own ``Figure`` (no pyplot state).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from features.geometry import GridGeometry
from pipelines.atomic import atomic_write_text
from stan_head.evaluation.explainers import Explanation
from stan_head.evaluation.perturbation import MIN_DELETION_EFFECT, PerturbationCheck
from stan_head.evaluation.report_figures import curves_figure, overlays_figure, pointing_figure

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
POINTING_PNG = "pointing.png"
CURVES_PNG = "curves.png"
OVERLAYS_PNG = "overlays.png"

class ExplainerScores(BaseModel):
    """Every figure of one explainer (None = could not be scored, e.g. no boxes).

    ``pointing`` is over the explainer's own clips (a slow one, STEP, sees only the first
    ``step_max_clips``); ``pointing_common`` is over the clips every explainer saw
    (``EvaluationReport.reliability_clips``), the figure to compare explainers by.
    """

    name: str
    clips: int
    pointing: float | None
    pointing_per_class: dict[str, float]
    pointing_pairs: int
    pointing_common: float | None = None
    temporal_pointing: float | None
    temporal_auc: float | None
    temporal_clips: int
    auc: dict[str, float | None]
    curves: dict[str, dict[str, list[float]]]
    per_clip: dict[str, list[float | None]]


class EvaluationReport(BaseModel):
    """Contents of ``report.json``."""

    run: str
    store: str
    store_id: str
    split: str
    clips: int
    classes: list[str]
    accuracy: float | None
    explainers: list[str]
    reliability: dict[str, float | None]
    reliability_clips: int
    scores: dict[str, ExplainerScores]
    perturbation: dict[str, PerturbationCheck]
    neutral_reference: dict[str, Any]
    config: dict[str, Any]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


@dataclass
class Boxes:
    """Ground-truth boxes of the evaluated clips: row into the clip list, segment, xyxy normalised to [0, 1]."""

    rows: np.ndarray  # int (P,)
    segments: np.ndarray  # int (P,)
    xyxy: np.ndarray  # float (P, 4)

    def first(self, m: int) -> "Boxes":
        """The boxes of the first ``m`` clips."""
        keep = self.rows < m
        return Boxes(self.rows[keep], self.segments[keep], self.xyxy[keep])


@dataclass
class OverlayInputs:
    """What the overlay figure draws: the clips' cached features, their explanations and boxes, and
    the decoded centre frame per segment (uint8 (T, S, S, 3) per clip) when the videos were reachable."""

    clip_id: list[str]
    visual: np.ndarray  # (n, T, H, W, Cv), the feature-energy background without frames
    segment_mask: np.ndarray  # bool (n, T)
    explanations: dict[str, Explanation]
    boxes: Boxes
    frames: list[np.ndarray] | None
    geometry: GridGeometry | None = None
    frame_sizes: list[tuple[int, int]] | None = None  # source (height, width) per clip: figures keep its aspect
    event_segments: np.ndarray | None = None  # bool (n, T): annotated event segments, outlined in the figure
    segment_s: float = 1.0


def _markdown(report: EvaluationReport, figures: list[Path]) -> str:
    lines = [
        f"# Explanation evaluation — {report.split} split",
        "",
        f"- run: `{report.run}`",
        f"- store: `{report.store}` (store-id `{report.store_id}`)",
        f"- clips: {report.clips}; classes: {len(report.classes)}; video-level top-1 accuracy: {_fmt(report.accuracy)}",
        "- target of every explanation: the clip's ground-truth class; `random` and `centre` are baselines on the same clips.",
        "",
        "## Where and when",
        "",
        f"| explainer | clips | pointing game ↑ | (clip, segment) pairs | pointing on the {report.reliability_clips} clips every "
        "explainer saw ↑ | temporal pointing ↑ | temporal ROC-AUC ↑ | clips scored for when |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in report.explainers:
        s = report.scores[name]
        lines.append(f"| {name} | {s.clips} | {_fmt(s.pointing)} | {s.pointing_pairs} | {_fmt(s.pointing_common)} | "
                     f"{_fmt(s.temporal_pointing)} | {_fmt(s.temporal_auc)} | {s.temporal_clips} |")
    lines += _perturbation_markdown(report)
    lines += ["", f"## Metric reliability α (over {report.reliability_clips} clips, {len(report.explainers)} explainers)", "",
              "1 = every clip ranks the explainers the same way; 0 = unrelated rankings. Clips are weighted by how badly "
              "`random` ranks on them.", "", "| metric | α |", "| --- | ---: |"]
    for metric, a in report.reliability.items():
        lines.append(f"| {metric} | {_fmt(a)} |")
    lines += ["", "## Pointing game per class", "", "| class | " + " | ".join(report.explainers) + " |",
              "| --- |" + " ---: |" * len(report.explainers)]
    for cls in report.classes:
        vals = [report.scores[n].pointing_per_class.get(cls) for n in report.explainers]
        if any(v is not None for v in vals):
            lines.append(f"| {cls} | " + " | ".join(_fmt(v) for v in vals) + " |")
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def _perturbation_markdown(report: EvaluationReport) -> list[str]:
    """The perturbation section: each test's check, then AUCs of the informative tests only."""
    ref = report.neutral_reference
    lines = ["", "## Deletion / insertion per modality (normalised AUC of p(target))", "",
             f"Units are ranked by each explanation, most relevant first; a deleted unit becomes the mean feature of the "
             f"`{ref.get('split')}` split ({ref.get('clips')} clips): the neutral reference. Visual tests rank the cells of "
             "every segment by that segment's map (where); the audio test ranks segments by the temporal scores (when). "
             f"A test ranks explainers only when deleting everything lowers mean p(target) by at least "
             f"{MIN_DELETION_EFFECT:.2f}.", "",
             "| test | p(target), all kept | p(target), all deleted | drop | verdict |", "| --- | ---: | ---: | ---: | --- |"]
    for x, c in report.perturbation.items():
        if not c.available:
            lines.append(f"| {x} ({c.title}) | – | – | – | n/a: {c.note} |")
            continue
        verdict = "informative" if c.informative else "**uninformative for this head**: no AUCs"
        lines.append(f"| {x} ({c.title}) | {_fmt(c.p_kept)} | {_fmt(c.p_deleted)} | {_fmt(c.effect)} | {verdict} |")
    tests = [x for x, c in report.perturbation.items() if c.informative]
    if not tests:
        return lines + ["", "No test is informative for this head: no deletion/insertion ranking is reported."]
    head = " | ".join(f"deletion {x} ↓ | insertion {x} ↑" for x in tests)
    lines += ["", f"| explainer | clips | {head} |", "| --- | ---: |" + " ---: |" * (2 * len(tests))]
    for name in report.explainers:
        s = report.scores[name]
        cells = " | ".join(f"{_fmt(s.auc.get(f'deletion_{x}'))} | {_fmt(s.auc.get(f'insertion_{x}'))}" for x in tests)
        lines.append(f"| {name} | {s.clips} | {cells} |")
    return lines


def write_report(out: Path, report: EvaluationReport, overlays: OverlayInputs) -> dict[str, Any]:
    """Write ``report.json``, the figures and ``report.md`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = [pointing_figure(report, out / POINTING_PNG), curves_figure(report, out / CURVES_PNG)]
    count = int(report.config.get("overlays", 4))
    if count:
        figures.append(overlays_figure(overlays, count, out / OVERLAYS_PNG))
    json_path = atomic_write_text(out / REPORT_JSON, json.dumps(report.model_dump(mode="json"), indent=1) + "\n")
    md_path = atomic_write_text(out / REPORT_MD, _markdown(report, figures))
    logger.info("wrote %s, %s and %d figures", json_path, md_path, len(figures))
    return {"json": json_path, "md": md_path, "figures": figures}
