"""The evaluation report's figures: ``pointing.png``, ``curves.png`` and ``overlays.png``.

* :func:`pointing_figure` — pointing game (where) and temporal pointing (when) per explainer;
  a metric that could not be scored (no boxes, no event segments) is drawn as "n/a", not as 0.
* :func:`curves_figure` — the mean deletion (top) and insertion (bottom) curves of every
  perturbation test the head can be scored by (one column per test), AUC in the legend; a test
  that is uninformative for the head shows why instead of curves.
* :func:`overlays_figure` — each explainer's spatial map over the decoded centre frame of every
  segment of the first clips, at the clip's own aspect ratio, with a colour bar, the annotated
  boxes (when there are any) and the event segments outlined. Segments past a clip's end are left
  out (no padding panels).

Each ``build_*`` function returns the :class:`~matplotlib.figure.Figure` (what the tests inspect);
the function without ``build_`` saves it. Text sizes and the heat map come from
:mod:`stan_head.figures`. The report's types are only annotations here (``report.py`` calls this
module), so there is no import cycle.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from features.geometry import GridGeometry, upsample_to_frame
from stan_head.figures import (
    FONT_PT,
    SMALL_PT,
    TITLE_PT,
    add_colourbar,
    blend_heat,
    display_size,
    new_figure,
    resize_rgb,
    save_png,
)

if TYPE_CHECKING:
    from stan_head.evaluation.report import EvaluationReport, OverlayInputs

__all__ = ["BASELINE_NAMES", "build_curves_figure", "build_overlays_figure", "build_pointing_figure",
           "curves_figure", "explainer_colours", "overlays_figure", "pointing_figure"]

#: Explainers drawn dashed: the baselines every report carries.
BASELINE_NAMES = ("random", "centre")
#: Overlay opacity at the top of the colour scale (it falls to 0 at the bottom).
OVERLAY_OPACITY = 0.8
#: Panel height in inches of the overlay grid.
_PANEL_IN = 1.25
_BOX_COLOUR = "cyan"
_EVENT_COLOUR = "limegreen"


def explainer_colours(names: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per explainer, the same in every figure of a report (baselines in greys)."""
    palette = colormaps["tab10"].colors
    out: dict[str, tuple[float, ...]] = {}
    i = 0
    for name in names:
        if name == "random":
            out[name] = (0.45, 0.45, 0.45)
        elif name == "centre":
            out[name] = (0.7, 0.7, 0.7)
        else:
            out[name] = tuple(palette[i % len(palette)])
            i += 1
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def explainer_label(report: "EvaluationReport", name: str) -> str:
    """The explainer's name, with its clip count when it saw fewer clips than the report (STEP's cap)."""
    clips = report.scores[name].clips
    return name if clips >= report.clips else f"{name} ({clips} clips)"


# pointing ------------------------------------------------------------------------------------
def build_pointing_figure(report: "EvaluationReport") -> Figure:
    """Bars of the pointing game and of temporal pointing per explainer; "n/a" where a metric is None.

    Where a slow explainer (STEP) saw fewer clips than the others, a third bar gives every explainer's
    pointing on the clips all of them saw (``pointing_common``): the bars to compare explainers by.
    """
    names = report.explainers
    metrics = [("pointing game (where: map vs. boxes)", "pointing", "tab:blue")]
    if report.reliability_clips < report.clips:
        metrics.append((f"pointing game on the {report.reliability_clips} clips every explainer saw (compare these)",
                        "pointing_common", "tab:cyan"))
    metrics.append(("temporal pointing (when: score vs. event segments)", "temporal_pointing", "tab:orange"))
    x = np.arange(len(names))
    fig = new_figure(max(5.5, 1.1 * len(names) + 2.5), 4.2)
    ax = fig.subplots()
    width = 0.76 / len(metrics)
    missing: set[str] = set()
    for k, (label, attr, colour) in enumerate(metrics):
        pos = x + (k - (len(metrics) - 1) / 2) * width
        vals = [getattr(report.scores[n], attr) for n in names]
        heights = [0.0 if v is None else v for v in vals]
        bars = ax.bar(pos, heights, width, label=label, color=colour)
        for bar, v in zip(bars, vals):
            cx = bar.get_x() + bar.get_width() / 2
            if v is None:
                missing.add(label.split(" (")[0])
                ax.annotate("n/a", (cx, 0.02), ha="center", va="bottom", fontsize=SMALL_PT, color="0.35", rotation=90)
            else:
                ax.annotate(f"{v:.2f}", (cx, v), ha="center", va="bottom", fontsize=SMALL_PT)
    ax.set_xticks(x, [explainer_label(report, n) for n in names], rotation=20, ha="right", fontsize=FONT_PT)
    ax.tick_params(axis="y", labelsize=SMALL_PT)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction of hits", fontsize=FONT_PT)
    ax.set_title(f"Pointing on the {report.split} split ({report.clips} clips)", fontsize=TITLE_PT)
    fig.legend(loc="outside lower center", ncol=1, fontsize=SMALL_PT, frameon=False)
    if missing:
        ax.text(0.99, 0.98, "n/a: not scorable on this split (" + ", ".join(sorted(missing)) + ": no annotations)",
                transform=ax.transAxes, ha="right", va="top", fontsize=SMALL_PT, color="0.35")
    return fig


def pointing_figure(report: "EvaluationReport", path: Path) -> Path:
    """``pointing.png``: see :func:`build_pointing_figure`."""
    return save_png(build_pointing_figure(report), path)


# curves --------------------------------------------------------------------------------------
def report_tests(report: "EvaluationReport") -> list[str]:
    """The perturbation tests the report can draw: every available one, in the report's order."""
    return [x for x, c in report.perturbation.items() if c.available]


def _uninformative_panel(ax, check, kind: str) -> None:
    ax.set_facecolor("0.96")
    ax.text(0.5, 0.5, textwrap.fill(f"uninformative for this head: deleting everything moves p(target) "
                                    f"{check.p_kept:.2f} → {check.p_deleted:.2f} (drop {check.effect:.2f} < "
                                    f"{check.threshold:.2f}), so no {kind} ranking is drawn", 34),
            transform=ax.transAxes, ha="center", va="center", fontsize=FONT_PT, color="0.25")


def _column_top(report: "EvaluationReport", test: str, chance: float) -> float:
    """Upper y-limit of a test's column: the highest mean p(target) drawn (and chance), with room, in steps of 0.1."""
    values = [chance] + [v for name in report.explainers for kind in ("deletion", "insertion")
                         for v in (report.scores[name].curves.get(test) or {}).get(kind, [])]
    return float(min(1.02, max(0.3, np.ceil(max(values) * 1.15 * 10) / 10)))


def build_curves_figure(report: "EvaluationReport") -> Figure:
    """Mean deletion (top row) and insertion (bottom row) curves, one column per perturbation test.

    An informative test shows every explainer's curve with its AUC in the legend and chance (1/K)
    dotted; an uninformative one (deleting everything does not move p(target)) shows why instead of
    curves; a test the head cannot be scored by (no visual-evidence logits) is left out and named in
    the title. Each column's y-axis runs from 0 to just above its highest curve (both rows share it).
    """
    tests = report_tests(report)
    colours = explainer_colours(report.explainers)
    fig = new_figure(max(4.8, 4.6 * len(tests)), 11.0)
    missing = [x for x, c in report.perturbation.items() if not c.available]
    title = f"Deletion / insertion per modality, {report.split} split ({report.clips} clips; mean over clips)"
    if missing:
        title += "\nn/a for this head: " + ", ".join(missing) + " (no visual-evidence logits)"
    fig.suptitle(title, fontsize=TITLE_PT)
    if not tests:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no deletion/insertion test in this report", ha="center", va="center", fontsize=FONT_PT)
        return fig
    axes = fig.subplots(2, len(tests), squeeze=False)
    chance = 1.0 / max(1, len(report.classes))
    for col, test in enumerate(tests):
        check = report.perturbation[test]
        top = _column_top(report, test, chance)
        for row, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            better = "lower is better" if kind == "deletion" else "higher is better"
            ax.set_title("\n".join(textwrap.wrap(f"{kind}: {check.title}", 40)) + f"\n(AUC: {better})", fontsize=FONT_PT)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, top)
            ax.tick_params(labelsize=SMALL_PT)
            ax.set_xlabel(f"fraction {'deleted' if kind == 'deletion' else 'inserted'}, most relevant first", fontsize=SMALL_PT)
            ax.set_ylabel("p(target class)", fontsize=FONT_PT)
            if not check.informative:
                _uninformative_panel(ax, check, kind)
                continue
            ax.grid(alpha=0.3)
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1.0, label=f"chance (1/{len(report.classes)})")
            drawn: dict[str, list[float]] = {}
            for name in report.explainers:
                c = report.scores[name].curves.get(test)
                if c is None:
                    continue
                auc = report.scores[name].auc.get(f"{kind}_{test}")
                label = f"{explainer_label(report, name)} ({_fmt(auc)})"
                # attention and attention_v share α: the second curve would hide the first, so say so
                same = next((other for other, ys in drawn.items() if np.allclose(ys, c[kind])), None)
                style = ":" if same else ("--" if name in BASELINE_NAMES else "-")
                ax.plot(c["fractions"], c[kind], style, color=colours[name], linewidth=1.6,
                        label=f"{label} = {same}" if same else label)
                drawn[name] = c[kind]
            # below the axes: on top of them a legend hides the curves it ranks
            ax.legend(fontsize=SMALL_PT, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                      title="explainer (AUC)", title_fontsize=SMALL_PT)
    return fig


def curves_figure(report: "EvaluationReport", path: Path) -> Path:
    """``curves.png``: see :func:`build_curves_figure`."""
    return save_png(build_curves_figure(report), path)


# overlays ------------------------------------------------------------------------------------
def _shown_explainers(inputs: "OverlayInputs") -> list[str]:
    return [n for n in ("attention", "gradcam", "step", "step_pixel") if n in inputs.explanations] or list(inputs.explanations)[:1]


def _clip_size(inputs: "OverlayInputs", ci: int, square: int) -> tuple[int, int]:
    """(h, w) to draw clip ``ci`` at: its source aspect, the shorter side ``square`` px."""
    sizes = getattr(inputs, "frame_sizes", None)
    if not sizes or ci >= len(sizes) or sizes[ci] is None:
        return square, square
    h, w = sizes[ci]
    scale = square / min(h, w)
    return display_size(int(round(h * scale)), int(round(w * scale)))


def _row_normalised(maps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, h, w) -> [0, 1] over the valid segments of one row (one scale across the row, so segments compare)."""
    if not valid.any():
        return np.zeros_like(maps)
    lo, hi = float(maps[valid].min()), float(maps[valid].max())
    return (maps - lo) / (hi - lo if hi > lo else 1.0)


def _when_share(temporal: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A row's temporal scores as shares of their total over the valid segments (shifted to be ≥ 0)."""
    t = np.asarray(temporal, np.float64).copy()
    if not valid.any():
        return np.zeros_like(t)
    t = t - min(0.0, float(t[valid].min()))
    total = float(t[valid].sum())
    return np.where(valid, t / total if total > 0 else 1.0 / valid.sum(), 0.0)


def build_overlays_figure(inputs: "OverlayInputs", count: int) -> Figure:
    """Spatial maps of the main explainers over each segment of the first ``count`` clips (see the module doc)."""
    explanations, frames, boxes = inputs.explanations, inputs.frames, inputs.boxes
    shown = _shown_explainers(inputs)
    count = min(count, len(inputs.clip_id))
    mask = np.asarray(inputs.segment_mask, bool)
    cols = int(max(1, max((np.flatnonzero(mask[ci]).max() + 1 if mask[ci].any() else 1) for ci in range(count)))) if count else 1
    segment_s = float(getattr(inputs, "segment_s", 1.0) or 1.0)
    events = getattr(inputs, "event_segments", None)
    geometry = inputs.geometry or GridGeometry.naive(*inputs.visual.shape[2:4])
    square = frames[0].shape[1] if frames is not None and len(frames) else 112
    sizes = [_clip_size(inputs, ci, square) for ci in range(count)]
    aspect = max((w / h for h, w in sizes), default=1.0)
    rows = max(1, count * len(shown))
    fig = new_figure(1.6 + cols * _PANEL_IN * aspect + 1.0, 1.2 + rows * (_PANEL_IN + 0.12))
    axes = fig.subplots(rows, cols, squeeze=False)
    any_box = any_event = False
    for ci in range(count):
        h, w = sizes[ci]
        valid = mask[ci, :cols]
        if frames is not None:
            bg = [resize_rgb(f, (h, w)) for f in frames[ci][:cols]]
        else:
            energy = np.linalg.norm(inputs.visual[ci, :cols].astype(np.float32), axis=-1)
            e = upsample_to_frame(energy, (h, w), geometry)
            e = (255 * (e - e.min()) / max(float(e.max() - e.min()), 1e-12)).astype(np.uint8)
            bg = [np.repeat(x[..., None], 3, axis=-1) for x in e]
        for ei, name in enumerate(shown):
            exp = explanations[name]
            r = ci * len(shown) + ei
            if ci >= len(exp.spatial):
                for ax in axes[r]:
                    ax.set_axis_off()
                continue
            maps = _row_normalised(upsample_to_frame(exp.spatial[ci][:cols], (h, w), geometry), valid)
            share = _when_share(exp.temporal[ci][:cols], valid)
            floor = float(maps[valid].mean()) if valid.any() else 0.0
            for s in range(cols):
                ax = axes[r, s]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{s * segment_s:g}–{(s + 1) * segment_s:g} s", fontsize=SMALL_PT)
                if not valid[s]:
                    ax.set_axis_off()
                    if s == int(valid.sum()):
                        ax.text(0.5, 0.5, "clip ended", transform=ax.transAxes, ha="center", va="center",
                                fontsize=SMALL_PT, color="0.4")
                    continue
                ax.imshow(blend_heat(bg[s], maps[s], OVERLAY_OPACITY, floor=floor), extent=(0, w, h, 0),
                          interpolation="antialiased")
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
                for (x0, y0, x1, y1) in boxes.xyxy[(boxes.rows == ci) & (boxes.segments == s)]:
                    ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                           edgecolor=_BOX_COLOUR, linewidth=1.4,
                                           path_effects=[patheffects.withStroke(linewidth=2.6, foreground="black")]))
                    any_box = True
                if events is not None and ci < len(events) and bool(events[ci][s]):
                    any_event = True
                    for spine in ax.spines.values():
                        spine.set_edgecolor(_EVENT_COLOUR)
                        spine.set_linewidth(2.5)
                ax.text(0.03, 0.04, f"{share[s]:.2f}", transform=ax.transAxes, fontsize=SMALL_PT, ha="left",
                        va="bottom", color="black", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
            label = "\n".join(textwrap.wrap(inputs.clip_id[ci], 14)[:3])
            axes[r, 0].set_ylabel(f"{label}\n{name}", fontsize=SMALL_PT, rotation=0, ha="right", va="center", labelpad=6)
            if not valid[0]:  # the label needs a visible axis: keep it even when segment 0 is padding
                axes[r, 0].set_axis_on()
    add_colourbar(fig, axes, 0.0, 1.0, "relevance, each row scaled to its min–max\n(transparent below the row's mean)",
                  fraction=0.02)
    background = "the decoded centre frame of each segment" if frames is not None else \
        "the feature energy ‖v‖ (videos not reachable)"
    notes = ["badge: the explainer's 'when' score as a share of the clip's total"]
    if any_box:
        notes.append(f"{_BOX_COLOUR} boxes: annotated sounding object")
    if any_event:
        notes.append("green frame: annotated event segment")
    fig.suptitle(f"Where each explainer looks, over {background}\n" + "; ".join(notes), fontsize=FONT_PT)
    return fig


def overlays_figure(inputs: "OverlayInputs", count: int, path: Path) -> Path:
    """``overlays.png``: see :func:`build_overlays_figure`."""
    return save_png(build_overlays_figure(inputs, count), path)
