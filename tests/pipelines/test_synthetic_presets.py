"""The synthetic presets: reproducible builds, boxes where the sounding object is visible, audio
that names only the sound pair under shared sounds, distractors never of that pair, and held-out
presets that differ from hard in every rendering parameter."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import (
    CLASS_CATALOG,
    HELD_OUT_PRESETS,
    PRESETS,
    SyntheticSource,
    clip_boxes,
    clip_labels,
    plan_clip,
    render_media,
)
from pipelines.sources.synthetic_catalog import sound_group
from pipelines.sources.synthetic_plan import MAX_OCCLUDED, object_xy

# small builds: 3-s clips, events shortened where a preset's are longer than that
_SHORT = {"clips": 8, "seed": 4, "duration_s": 3}
_EVENTS = {"easy": {"size": 64}, "hard": {"max_event_s": 3}, "heldout_wide": {"min_event_s": 2, "max_event_s": 3},
           "heldout_clutter": {"min_event_s": 2, "max_event_s": 3}}


def _small(preset: str, **extra: object) -> SyntheticSource:
    return SyntheticSource(preset=preset, **{**_SHORT, **_EVENTS[preset], **extra})


def _digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticSource, Path, Path]:
    """(source, folder built with 1 worker, folder built with 2 workers) of one preset."""
    src = _small(request.param)
    root = tmp_path_factory.mktemp(f"preset-{request.param}")
    build_dataset(BuildConfig(source=src, out=root / "one", workers=1))
    build_dataset(BuildConfig(source=src, out=root / "two", workers=2))
    return src, root / "one", root / "two"


def test_same_seed_gives_byte_identical_builds_with_1_and_2_workers(built) -> None:
    _, one, two = built
    a, b = _digest_tree(one), _digest_tree(two)
    assert a == b
    assert {"annotations.csv", "boxes.csv", "manifest.parquet", "videos/syn00007.mp4"} <= set(a)


def _decoded_frame(path: Path, t: float) -> np.ndarray:
    """The decoded RGB frame nearest to time ``t`` at the video's own size."""
    with av.open(str(path)) as container:
        frames = [(abs(float(f.time) - t), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return min(frames, key=lambda x: x[0])[1]


def test_boxes_lie_in_the_frame_in_visible_event_segments_and_the_object_fills_them(built) -> None:
    src, root, _ = built
    p = src.resolved
    ann = pd.read_csv(root / "annotations.csv").set_index("video_id")
    boxes = pd.read_csv(root / "boxes.csv")
    labels = clip_labels(src)
    assert len(boxes) > 0
    assert ((boxes.x0 >= 0) & (boxes.y0 >= 0) & (boxes.x1 <= p.width) & (boxes.y1 <= p.height)).all()
    for vid, rows in boxes.groupby("video_id"):
        index = int(vid[3:])
        plan = plan_clip(src, index, int(labels[index]))
        row = ann.loc[vid]
        assert CLASS_CATALOG[plan.label].name == row.label
        assert rows.segment.between(row.start_s, row.end_s - 1).all()
        assert not set(rows.segment) & set(plan.hidden_segments)
        colour = np.array(CLASS_CATALOG[plan.label].colour, dtype=float)
        for box in rows.itertuples():
            frame = _decoded_frame(root / "videos" / f"{vid}.mp4", box.segment + 0.5).astype(float)
            assert frame.shape == (p.height, p.width, 3)
            patch = frame[box.y0:box.y1, box.x0:box.x1].reshape(-1, 3)
            dist = np.minimum(np.linalg.norm(patch - colour, axis=1), np.linalg.norm(patch - 0.35 * colour, axis=1))
            assert (dist < 60).mean() > 0.3, (vid, box.segment)  # the sounding object (both texture tones) fills its box


def test_event_segments_without_a_box_have_the_object_off_screen_or_occluded() -> None:
    """Rendered pixels: off-screen → none of the object's colours in the frame; occluded → the bar covers its box."""
    src = SyntheticSource(preset="heldout_clutter", clips=12, seed=2, occlusion_fraction=1.0, offscreen_fraction=0.5)
    p = src.resolved
    labels = clip_labels(src)
    hidden_seen = occluded_seen = 0
    for i in range(src.clips):
        plan = plan_clip(src, i, int(labels[i]))
        frames = list(render_media(src, plan)[0])
        kept = {row[0] for row in clip_boxes(src, plan)}
        kind = CLASS_CATALOG[plan.label]
        for seg in range(plan.start_s, plan.end_s):
            frame = frames[int((seg + 0.5) * p.fps)]
            if seg in plan.hidden_segments:
                assert seg not in kept
                # its full tone (one channel >= 190) cannot come from the muted background
                assert (frame == np.asarray(kind.colour)).all(-1).sum() < 0.05 * plan.event.size ** 2
                hidden_seen += 1
            elif seg not in kept:
                x, y = (int(round(float(v))) for v in object_xy(plan.event, seg + 0.5, p.width, p.height))
                n = plan.event.size
                covered = (frame[y:y + n, x:x + n] == np.asarray(plan.occluder.colour)).all(-1).any(0)
                assert covered.mean() > MAX_OCCLUDED - 0.15, (i, seg)
                occluded_seen += 1
    assert hidden_seen and occluded_seen


def _event_profile(src: SyntheticSource, index: int, label: int) -> np.ndarray:
    """Mean-removed log energy of the event audio in 16 log-spaced bands (100 Hz to 7 kHz)."""
    plan = plan_clip(src, index, label)
    rate = src.resolved.audio_rate
    audio = render_media(src, plan)[1][plan.start_s * rate: plan.end_s * rate].astype(np.float64)
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    edges = np.geomspace(100, 7000, 17)
    bands = np.log(np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])]) + 1e-6)
    return bands - bands.mean()


def _class_means(src: SyntheticSource) -> dict[int, np.ndarray]:
    labels = clip_labels(src)
    profiles: dict[int, list[np.ndarray]] = {}
    for i in range(src.clips):
        profiles.setdefault(int(labels[i]), []).append(_event_profile(src, i, int(labels[i])))
    return {k: np.mean(v, axis=0) for k, v in profiles.items()}


def _within_and_between(means: dict[int, np.ndarray]) -> tuple[float, float]:
    """(largest distance between the two classes of one pair, smallest between classes of different pairs)."""
    within = max(float(np.linalg.norm(means[2 * g] - means[2 * g + 1])) for g in range(len(means) // 2))
    between = min(float(np.linalg.norm(means[a] - means[b])) for a in means for b in means
                  if sound_group(a, True) != sound_group(b, True))
    return within, between


def test_hard_audio_names_the_pair_but_not_the_class() -> None:
    hard = SyntheticSource(preset="hard", clips=32, seed=5, duration_s=4)
    within, between = _within_and_between(_class_means(hard))
    assert within < 0.25 * between, (within, between)  # the two members of a pair sound alike
    # ... while with the easy generator's own sounds the same two classes are as far apart as any
    easy = SyntheticSource(preset="hard", clips=32, seed=5, duration_s=4, shared_sounds=False)
    within_easy, between_easy = _within_and_between(_class_means(easy))
    assert within_easy > 0.25 * between_easy, (within_easy, between_easy)


@pytest.mark.parametrize("preset", ["hard", *HELD_OUT_PRESETS])
def test_distractors_are_never_the_sounding_objects_pair_mate(preset: str) -> None:
    src = SyntheticSource(preset=preset, clips=200, seed=9)
    p = src.resolved
    labels = clip_labels(src)
    other_pairs = src.classes // 2 - 1
    for i in range(src.clips):
        plan = plan_clip(src, i, int(labels[i]))
        pairs = [sound_group(d.cls, True) for d in plan.distractors]
        assert sound_group(plan.label, True) not in pairs
        assert p.distractors[0] <= len(pairs) <= p.distractors[1]
        assert len(set(pairs)) == min(len(pairs), other_pairs)  # one per other pair before any second member
        lo, hi = (round(v * min(p.width, p.height)) for v in p.distractor_scale)
        assert all(lo <= d.size <= hi for d in plan.distractors)
    assert p.distractor_scale == p.scale  # as large as the sounding object: size does not give it away


def test_held_out_presets_differ_from_hard_in_every_rendering_parameter_but_keep_its_classes() -> None:
    hard = SyntheticSource(preset="hard").resolved
    rendering = ("width", "height", "aspect", "fps", "audio_rate", "background", "scale", "distractors",
                 "event_s", "snr_db", "occlusion_fraction", "offscreen_fraction")
    assert len(HELD_OUT_PRESETS) >= 2
    for name in HELD_OUT_PRESETS:
        src = SyntheticSource(preset=name)
        held = src.resolved
        same = [f for f in rendering if getattr(held, f) == getattr(hard, f)]
        assert not same, (name, same)
        assert held.shared_sounds and src.classes == SyntheticSource(preset="hard").classes
        assert src.duration_s == SyntheticSource(preset="hard").duration_s


def test_easy_is_the_default_and_dumps_as_before_presets() -> None:
    assert SyntheticSource() == SyntheticSource(preset="easy")
    assert set(SyntheticSource().model_dump()) == {"kind", "clips", "classes", "seed", "duration_s", "size", "fps",
                                                   "audio_rate", "min_event_s", "offscreen_fraction", "crf"}
    easy = SyntheticSource().resolved
    assert (easy.width, easy.height, easy.event_s, easy.distractors, easy.shared_sounds) == (160, 160, (3, 8), (1, 2), False)


def test_explicit_fields_override_the_preset_and_dumps_round_trip() -> None:
    src = SyntheticSource(preset="hard", fps=8, min_distractors=1)
    assert (src.fps, src.min_distractors, src.max_distractors) == (8, 1, 3)
    square = SyntheticSource(preset="hard", size=96)
    assert (square.resolved.width, square.resolved.height) == (96, 96)
    for one in (src, square, SyntheticSource(min_distractors=0), SyntheticSource(preset="heldout_wide")):
        assert SyntheticSource(**one.model_dump()) == one
        assert SyntheticSource.model_validate_json(one.model_dump_json()) == one


@pytest.mark.parametrize("bad", [
    {"width": 191}, {"preset": "hard", "classes": 5}, {"preset": "hard", "max_event_s": 11},
    {"min_scale": 0.3, "max_scale": 0.2}, {"min_snr_db": 9.0, "max_snr_db": 3.0}, {"min_distractor_scale": None},
    {"preset": "medium"},
])
def test_invalid_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticSource(**bad)
