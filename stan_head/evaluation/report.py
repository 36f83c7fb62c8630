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
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pydantic import BaseModel

from features.geometry import GridGeometry, upsample_to_frame
from pipelines.atomic import atomic_write_text
from stan_head.evaluation.explainers import Explanation
from stan_head.figures import save_png

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
POINTING_PNG = "pointing.png"
CURVES_PNG = "curves.png"
OVERLAYS_PNG = "overlays.png"

_UNIT_TITLES = {"regions": "regions (T×H×W cells)", "segments": "segments", "pixels": "regions, pixel space"}


class ExplainerScores(BaseModel):
    """Every figure of one explainer (None = could not be scored, e.g. no boxes)."""

    name: str
    clips: int
    pointing: float | None
    pointing_per_class: dict[str, float]
    pointing_pairs: int
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


def pointing_figure(report: EvaluationReport, path: Path) -> Path:
    """Bar chart: pointing game (where) and temporal pointing (when) per explainer."""
    names = report.explainers
    where = [report.scores[n].pointing or 0.0 for n in names]
    when = [report.scores[n].temporal_pointing or 0.0 for n in names]
    x = np.arange(len(names))
    fig = Figure(figsize=(1.3 * len(names) + 2, 3.6))
    ax = fig.subplots()
    b1 = ax.bar(x - 0.2, where, 0.4, label="pointing game (where, α / map)")
    b2 = ax.bar(x + 0.2, when, 0.4, label="temporal pointing (when, β / score)")
    for bars in (b1, b2):
        for bar in bars:
            ax.annotate(f"{bar.get_height():.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Pointing, {report.split} split ({report.clips} clips)")
    ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path, dpi=90)


def curves_figure(report: EvaluationReport, path: Path) -> Path:
    """Mean deletion (top) and insertion (bottom) curves per explainer, one column per unit."""
    units = [u for u in ("regions", "segments", "pixels") if any(u in s.curves for s in report.scores.values())]
    fig = Figure(figsize=(4.6 * len(units), 7))
    axes = fig.subplots(2, len(units), squeeze=False)
    for col, unit in enumerate(units):
        for row, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for name in report.explainers:
                c = report.scores[name].curves.get(unit)
                if c is None:
                    continue
                auc = report.scores[name].auc.get(f"{kind}_{unit}")
                style = "--" if name in ("random", "centre") else "-"
                ax.plot(c["fractions"], c[kind], style, label=f"{name} (AUC {_fmt(auc, 2)})")
            ax.set_title(f"{kind} of {_UNIT_TITLES[unit]}")
            ax.set_xlabel(f"fraction {'removed' if kind == 'deletion' else 'inserted'}")
            ax.set_ylabel("p(target)")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path, dpi=90)


def overlays_figure(inputs: OverlayInputs, count: int, path: Path) -> Path:
    """Spatial maps of the main explainers over each segment of the first ``count`` clips.

    Background: the decoded centre frame of each segment when ``inputs.frames`` is given, else the
    feature energy ‖v_thw‖ of the cached features. Boxes in white; the panel title gives the
    temporal score. ``inputs.geometry`` places the maps' cells at the extractor's real centres
    (the naive tiling when None).
    """
    explanations, frames, boxes = inputs.explanations, inputs.frames, inputs.boxes
    shown = [n for n in ("attention", "gradcam", "step", "step_pixel") if n in explanations] or list(explanations)[:1]
    count = min(count, len(inputs.clip_id))
    t = inputs.visual.shape[1]
    rows = count * len(shown)
    fig = Figure(figsize=(1.35 * t, 1.5 * rows))
    axes = fig.subplots(rows, t, squeeze=False)
    size = (112, 112)
    geometry = inputs.geometry or GridGeometry.naive(*inputs.visual.shape[2:4])
    for ci in range(count):
        if frames is not None:
            bg = [f for f in frames[ci]]
            size = bg[0].shape[:2]
        else:
            energy = np.linalg.norm(inputs.visual[ci].astype(np.float32), axis=-1)
            bg = list(upsample_to_frame(energy, size, geometry))
        for ei, name in enumerate(shown):
            exp = explanations[name]
            if ci >= len(exp.spatial):
                continue
            maps = upsample_to_frame(exp.spatial[ci], size, geometry)
            r = ci * len(shown) + ei
            for s in range(t):
                ax = axes[r, s]
                ax.imshow(bg[s], cmap=None if frames is not None else "gray")
                m = maps[s]
                rng = m.max() - m.min()
                ax.imshow((m - m.min()) / (rng if rng > 0 else 1.0), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                for (x0, y0, x1, y1) in boxes.xyxy[(boxes.rows == ci) & (boxes.segments == s)]:
                    ax.add_patch(Rectangle((x0 * size[1], y0 * size[0]), (x1 - x0) * size[1], (y1 - y0) * size[0],
                                           fill=False, edgecolor="white", linewidth=1.2))
                ax.set_title(f"t{s} {exp.temporal[ci, s]:.2f}", fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
                if not inputs.segment_mask[ci, s]:
                    ax.set_facecolor("black")
            axes[r, 0].set_ylabel(f"{inputs.clip_id[ci][:12]}\n{name}", fontsize=6)
    fig.suptitle("spatial maps over " + ("frames" if frames is not None else "feature energy") + " (boxes white)", fontsize=9)
    return save_png(fig, path, dpi=90)


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
        "| explainer | clips | pointing game ↑ | (clip, segment) pairs | temporal pointing ↑ | temporal ROC-AUC ↑ | clips scored for when |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in report.explainers:
        s = report.scores[name]
        lines.append(f"| {name} | {s.clips} | {_fmt(s.pointing)} | {s.pointing_pairs} | {_fmt(s.temporal_pointing)} | "
                     f"{_fmt(s.temporal_auc)} | {s.temporal_clips} |")
    units = [u for u in ("regions", "segments", "pixels") if any(f"deletion_{u}" in s.auc for s in report.scores.values())]
    head = " | ".join(f"deletion {u} ↓ | insertion {u} ↑" for u in units)
    lines += ["", "## Deletion / insertion (normalised AUC of p(target))", "", f"| explainer | {head} |",
              "| --- |" + " ---: |" * (2 * len(units))]
    for name in report.explainers:
        s = report.scores[name]
        cells = " | ".join(f"{_fmt(s.auc.get(f'deletion_{u}'))} | {_fmt(s.auc.get(f'insertion_{u}'))}" for u in units)
        lines.append(f"| {name} | {cells} |")
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
