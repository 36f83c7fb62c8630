"""evaluate_run end to end on real features of the synthetic dataset and a briefly trained STAN."""

import json

import numpy as np
import pytest

from stan_head.evaluation.evaluate import EvaluateConfig, EvaluationSummary, evaluate_run


@pytest.mark.slow
def test_evaluate_run_writes_a_complete_report(evaluation_run, tmp_path):
    store_dir, run_dir = evaluation_run
    out = tmp_path / "report"
    cfg = EvaluateConfig(run=run_dir, store=store_dir, out=out, split="train", max_clips=6, device="cpu",
                         explainers=("attention", "attention_v", "gradcam", "step"), step_iterations=15, step_max_clips=3, overlays=2, deletion_steps=4)
    summary = evaluate_run(cfg)
    assert isinstance(summary, EvaluationSummary)
    assert summary.clips == 6
    for path in [summary.report_json, summary.report_md, *summary.figures]:
        assert path.is_file() and path.stat().st_size > 0
    assert {p.name for p in summary.figures} == {"pointing.png", "curves.png", "overlays.png"}

    report = json.loads(summary.report_json.read_text())
    names = report["explainers"]
    assert names == ["attention", "attention_v", "gradcam", "step", "random", "centre"]
    assert report["scores"]["step"]["clips"] == 3 and report["scores"]["attention"]["clips"] == 6
    assert report["reliability_clips"] == 3
    # explainers are compared on the clips every one of them saw: STEP's own are those
    assert report["scores"]["step"]["pointing_common"] == report["scores"]["step"]["pointing"]
    assert all(0.0 <= s["pointing_common"] <= 1.0 for s in report["scores"].values())
    checks = report["perturbation"]
    # STAN has visual-evidence logits, per segment and pooled
    assert list(checks) == ["visual_segment_evidence", "visual_evidence", "visual_neutral_audio", "audio_segments"]
    assert report["neutral_reference"]["split"] == "train" and report["neutral_reference"]["clips"] > 0
    for test, c in checks.items():
        assert c["available"] and c["effect"] == pytest.approx(c["p_kept"] - c["p_deleted"])
        assert c["informative"] == (c["effect"] >= c["threshold"])
    for name in names:
        s = report["scores"][name]
        # the synthetic dataset has boxes for event segments, and event + background segments
        assert s["pointing_pairs"] > 0 and 0.0 <= s["pointing"] <= 1.0
        for test, c in checks.items():
            curve = s["curves"][test]
            assert curve["fractions"][0] == 0.0 and curve["fractions"][-1] == 1.0
            assert len(curve["fractions"]) == (5 if test.startswith("visual") else 11)  # T = 10 segments
            # deleting nothing and inserting everything both give the unperturbed clip's probability
            assert curve["deletion"][0] == pytest.approx(curve["insertion"][-1], abs=1e-5)
            for kind in ("deletion", "insertion"):
                if c["informative"]:
                    assert 0.0 <= s["auc"][f"{kind}_{test}"] <= 1.0
                else:  # an uninformative test ranks nothing
                    assert f"{kind}_{test}" not in s["auc"] and f"{kind}_{test}" not in s["per_clip"]
    # every explainer sees the same all-kept / all-deleted inputs
    ends = {(round(s["curves"]["visual_neutral_audio"]["deletion"][0], 6), round(s["curves"]["visual_neutral_audio"]["deletion"][-1], 6))
            for s in report["scores"].values() if s["clips"] == 6}
    assert len(ends) == 1
    assert {"pointing", "temporal_pointing"} <= set(report["reliability"])
    assert not any(k.endswith(t) for k in report["reliability"] for t, c in checks.items() if not c["informative"])
    alphas = [a for a in report["reliability"].values() if a is not None]
    assert alphas and all(-1.0 <= a <= 1.0 for a in alphas)

    md = summary.report_md.read_text()
    for name in names:
        assert f"| {name} |" in md
    assert "![overlays](overlays.png)" in md
    assert np.isfinite(summary.accuracy)


@pytest.mark.slow
def test_evaluate_run_on_a_head_without_visual_evidence(evaluation_run, tmp_path):
    """Late fusion has no visual-evidence logits: that test is n/a (said, not scored), STEP preserves the
    final logits with the audio at the neutral reference, and every other test is checked as usual.
    It has no attention either: its uniform α is no explanation, so the attention explainers are left out."""
    from stan_head.train import TrainConfig, train_head

    store_dir, _ = evaluation_run
    run = train_head(TrainConfig(store=store_dir, out=tmp_path / "lf", model="late_fusion", epochs=2, min_steps=0, batch_size=8,
                                 device="cpu", progress=False, train_split="train", val_split="train", test_split="test"))
    cfg = EvaluateConfig(run=run.run_dir, store=store_dir, out=tmp_path / "report", split="train", max_clips=3,
                         device="cpu", explainers=("attention", "gradcam", "step"), step_iterations=5, step_max_clips=1,
                         overlays=0, deletion_steps=2)
    report = json.loads(evaluate_run(cfg).report_json.read_text())
    assert report["explainers"] == ["gradcam", "step", "random", "centre"]
    checks = report["perturbation"]
    assert checks["visual_evidence"]["available"] is False and "visual_logits" in checks["visual_evidence"]["note"]
    assert checks["visual_segment_evidence"]["available"] is False
    assert "segment_visual_logits" in checks["visual_segment_evidence"]["note"]
    assert not {"visual_evidence", "visual_segment_evidence"} & set(report["scores"]["gradcam"]["curves"])
    assert checks["visual_neutral_audio"]["available"] and checks["audio_segments"]["available"]
    assert report["scores"]["step"]["clips"] == 1
    md = (tmp_path / "report" / "report.md").read_text()
    assert "n/a: the head has no visual-evidence pathway" in md


def test_unknown_explainer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown explainer"):
        EvaluateConfig(run=tmp_path, store=tmp_path, out=tmp_path, explainers=("attention", "nope"))


@pytest.mark.slow
def test_evaluate_run_pixel_space_path(evaluation_run, tmp_path):
    """Frames decoded from the store's dataset → the store's frozen CNN → the head."""
    store_dir, run_dir = evaluation_run
    cfg = EvaluateConfig(run=run_dir, store=store_dir, out=tmp_path / "px", split="train", max_clips=2, device="cpu",
                         explainers=("attention",), pixel_space=True, deletion_steps=2, overlays=1)
    summary = evaluate_run(cfg)
    report = json.loads(summary.report_json.read_text())
    assert {"pixels_evidence", "pixels_neutral_audio"} <= set(report["perturbation"])
    for name in ("attention", "random", "centre"):
        for test in ("pixels_evidence", "pixels_neutral_audio"):
            curve = report["scores"][name]["curves"][test]
            assert len(curve["fractions"]) == 3 and all(0.0 <= p <= 1.0 for p in curve["deletion"])
            if report["perturbation"][test]["informative"]:
                assert 0.0 <= report["scores"][name]["auc"][f"deletion_{test}"] <= 1.0
    assert "| pixels_evidence (" in summary.report_md.read_text()


@pytest.mark.slow
def test_frames_come_through_one_decoder_and_one_manifest_read(evaluation_run, tmp_path, monkeypatch):
    """Pixel space + overlays: the dataset manifest is read once, one decoder child serves every clip."""
    import stan_head.evaluation.frames as frames_mod

    store_dir, run_dir = evaluation_run
    decoders, manifests = [], []
    real_decoder, real_load = frames_mod.ClipDecoder, frames_mod.load_dataset

    def counting_decoder(*args, **kwargs):
        decoders.append(real_decoder(*args, **kwargs))
        return decoders[-1]

    def counting_load(*args, **kwargs):
        manifests.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(frames_mod, "ClipDecoder", counting_decoder)
    monkeypatch.setattr(frames_mod, "load_dataset", counting_load)
    cfg = EvaluateConfig(run=run_dir, store=store_dir, out=tmp_path / "px", split="train", max_clips=3, device="cpu",
                         explainers=("attention",), pixel_space=True, deletion_steps=2, overlays=3)
    evaluate_run(cfg)
    assert len(decoders) == 1 and len(manifests) == 1
    assert decoders[0].pid is None  # closed at the end of the run


@pytest.mark.slow
def test_overlay_frames_need_no_cnn(evaluation_run, tmp_path, monkeypatch):
    """Without pixel-space metrics the frames for the overlays are decoded only: no extractor is built."""
    import stan_head.evaluation.evaluate as evaluate_mod
    import stan_head.evaluation.frames as frames_mod

    def no_featurizer(*args, **kwargs):
        raise AssertionError("the overlays built the store's extractors")

    decoded = []
    real_centre = frames_mod.FrameSource.centre_frames
    monkeypatch.setattr(evaluate_mod.ClipFeaturizer, "from_card", no_featurizer)
    monkeypatch.setattr(frames_mod.FrameSource, "centre_frames",
                        lambda self, cid: decoded.append(cid) or real_centre(self, cid))
    store_dir, run_dir = evaluation_run
    cfg = EvaluateConfig(run=run_dir, store=store_dir, out=tmp_path / "ov", split="train", max_clips=2, device="cpu",
                         explainers=("attention",), deletion_steps=2, overlays=2)
    summary = evaluate_run(cfg)
    assert len(decoded) == 2 and any(p.name == "overlays.png" for p in summary.figures)


def test_report_and_explain_leave_matplotlib_alone():
    """Importing the evaluation and explain modules switches no backend and loads no pyplot."""
    import os
    import subprocess
    import sys

    code = ("import sys, matplotlib; import stan_head.evaluation.evaluate, stan_head.explain; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
