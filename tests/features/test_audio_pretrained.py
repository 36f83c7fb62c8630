"""The pretrained audio extractors (SoundNet-8, aiSFX) against references independent of the port.

These tests need the files that ``wherewhen weights fetch`` puts in the weights folder (the README's
set-up runs it); when they are missing, the tests fail with the error naming that command.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from features.audio_weights import (
    AISFX_SHA256,
    FETCH_COMMAND,
    FETCHED,
    SOUNDNET_SHA256,
    fetch,
    fetched_asset,
    install_from_archive,
    load_fetched,
    read_member,
    soundnet_original_arrays,
    weights_dir,
)
from features.extractors import AudioConfig, build_audio, spec_of, weights_identity
from features.extractors.aisfx import Aisfx
from features.extractors.soundnet import SoundNet
from features.weights import WeightsError
from pipelines.runtime import file_sha256


def _archive(name: str) -> Path:
    """The registry archive the fetch step kept; fails (never skips) naming the fetch command."""
    fetched_asset(name)   # raises WeightsError naming the fetch command when the weights are missing
    path = weights_dir() / "archives" / FETCHED[name].archive
    assert path.is_file(), f"{path} missing: run `{FETCH_COMMAND}`"
    return path


def _audio(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A deterministic sound: two tones, a chirp and noise, in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.shape)
    return np.clip(x, -1, 1).astype(np.float32)


# --- SoundNet: a plain-numpy forward from the original description, on the original arrays ----------------

def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x (in, T); w in the original layout (k, 1, in, out) -> (out, T')."""
    win = sliding_window_view(np.pad(x, ((0, 0), (pad, pad))), w.shape[0], axis=1)[:, ::stride]  # (in, T', k)
    return np.tensordot(win, w[:, 0].astype(np.float64), axes=([0, 2], [1, 0])).T + b[:, None]


def _np_soundnet(audio: np.ndarray, arrays: dict) -> dict[str, np.ndarray]:
    """SoundNet-8 as Aytar et al. describe it: conv (k, s, p) + BN + ReLU (+ max-pool), two conv8 heads."""
    geometry = {"conv1": (64, 2, 32, 8), "conv2": (32, 2, 16, 8), "conv3": (16, 2, 8, 1), "conv4": (8, 2, 4, 1),
                "conv5": (4, 2, 2, 4), "conv6": (4, 2, 2, 1), "conv7": (4, 2, 2, 1)}
    x = audio.astype(np.float64)[None] * 256.0
    out = {}
    for name, (k, s, p, pool) in geometry.items():
        a = arrays[name]
        assert a["weights"].shape[0] == k
        y = _np_conv(x, a["weights"], a["biases"], s, p)
        y = (y - a["mean"][:, None]) / np.sqrt(a["var"][:, None] + 1e-5) * a["gamma"][:, None] + a["beta"][:, None]
        x = out[name] = np.maximum(y, 0.0)
        if pool > 1:
            n = x.shape[1] // pool
            x = x[:, : n * pool].reshape(x.shape[0], n, pool).max(-1)
    out["objects"] = _np_conv(x, arrays["conv8"]["weights"], arrays["conv8"]["biases"], 2, 0)
    out["scenes"] = _np_conv(x, arrays["conv8_2"]["weights"], arrays["conv8_2"]["biases"], 2, 0)
    return out


def test_soundnet_forward_equals_a_numpy_reference_of_the_original_network():
    arrays = soundnet_original_arrays(_archive("soundnet"))
    audio = _audio(12.0, 22050)   # long enough for the conv8 heads (>= 8 conv7 frames)
    ref = _np_soundnet(audio, arrays)
    ext = SoundNet(sample_rate=22050)
    with torch.inference_mode():
        got = ext.net(ext.network_input(torch.from_numpy(audio)[None]))
    assert set(got) == set(ref)
    for name, want in ref.items():
        have = got[name][0].double().numpy()
        assert have.shape == want.shape, name
        scale = np.abs(want).max()
        assert scale > 0, name
        assert np.abs(have - want).max() / scale < 1e-4, name
    assert got["objects"].shape[1] == 1000 and got["scenes"].shape[1] == 401
    assert len(ext.categories["objects"]) == 1000 and len(ext.categories["scenes"]) == 401


# --- aiSFX: the package's own model code from the fetched wheel ---------------------------------------------

def _package_cnn2d(tmp_path: Path):
    record = FETCHED["aisfx"]
    source = tmp_path / "cnn2d.py"
    source.write_bytes(read_member(_archive("aisfx"), "aisfx/models/cnn2d.py", record.members["aisfx/models/cnn2d.py"]))
    spec = importlib.util.spec_from_file_location("aisfx_cnn2d_reference", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # cnn2d.py imports torch only
    return module


def test_aisfx_forward_equals_the_packages_model_code(tmp_path):
    cnn2d = _package_cnn2d(tmp_path)
    ref = cnn2d.EmbeddingNet("max", 3, 1, 64)   # the package's load_bestModel
    state, meta, digest = load_fetched("aisfx")
    ref.load_state_dict(state, strict=True)
    ref.eval()
    assert digest == AISFX_SHA256 and len(meta["datasets"]) == 9
    ext = Aisfx(sample_rate=44100)
    audio = torch.from_numpy(np.stack([_audio(1.0, 44100, seed) for seed in range(3)]))
    spec = ext.spectrogram(audio)
    assert spec.shape == (3, 1 + 44100 // 1024, 96)
    with torch.inference_mode():
        want = ref(spec)
    got = ext(audio)
    assert got.shape == (3, 512)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(want.abs().max()) > 0


def test_aisfx_mel_filters_have_unit_sum_and_cover_the_band():
    from features.extractors.aisfx import mel_filters

    fb = mel_filters()
    assert fb.shape == (1025, 96)
    sums = fb.sum(0)
    nonempty = sums > 0
    assert torch.allclose(sums[nonempty], torch.ones(int(nonempty.sum()), dtype=torch.float64))
    assert nonempty[10:].all()   # only the narrowest low bands can miss every FFT bin
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all()   # bands ascend in frequency


# --- alignment: a burst in one second changes that second's feature only --------------------------------------

@pytest.mark.parametrize("name", ["soundnet", "aisfx"])
def test_a_burst_in_one_second_changes_that_segment_only(name):
    rate = 16000   # the store's default rate; the extractor resamples inside
    ext = build_audio(AudioConfig(name=name), sample_rate=rate)
    base = np.stack([_audio(1.0, rate, seed) * 0.1 for seed in range(4)])
    burst = base.copy()
    n = int(0.02 * rate)   # 20 ms tone burst at the very end of second 1 (next to second 2)
    burst[1, -n:] += 0.8 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate).astype(np.float32)
    a, b = ext(torch.from_numpy(base)), ext(torch.from_numpy(burst))
    change = (b - a).abs().amax(1) / a.abs().amax(1)
    assert change[1] > 1e-2
    assert torch.equal(a[[0, 2, 3]], b[[0, 2, 3]])   # no spill: each second is its own input


# --- the fetch step and missing files -------------------------------------------------------------------------

def test_fetch_converts_the_kept_archives_to_the_pinned_files(tmp_path):
    (tmp_path / "archives").mkdir()
    for name in FETCHED:
        (tmp_path / "archives" / FETCHED[name].archive).symlink_to(_archive(name))
    paths = fetch(tmp_path)   # the archives are there: no download
    assert file_sha256(paths["soundnet"]) == SOUNDNET_SHA256
    assert file_sha256(paths["aisfx"]) == AISFX_SHA256
    assert "Attribution 4.0 International" in (tmp_path / FETCHED["aisfx"].licence_file).read_text()
    assert "License: MIT" in (tmp_path / FETCHED["soundnet"].licence_file).read_text()
    assert spec_of(AudioConfig(name="soundnet")).weights.sha256 == SOUNDNET_SHA256
    assert spec_of(AudioConfig(name="aisfx")).weights.sha256 == AISFX_SHA256


def test_fetch_refuses_a_tampered_archive_member(tmp_path):
    original = _archive("aisfx")
    tampered = tmp_path / original.name
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "aisfx/models/checkpoint.pth":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(info, data)
    out = tmp_path / "weights"
    with pytest.raises(WeightsError, match=r"aisfx/models/checkpoint\.pth has sha256 .* expected 499ea759"):
        install_from_archive("aisfx", tampered, out)
    assert not out.exists() or not any(out.iterdir())


def test_a_tampered_converted_file_is_refused_at_load(tmp_path, monkeypatch):
    record = FETCHED["aisfx"]
    copy = tmp_path / record.file
    shutil.copy(fetched_asset("aisfx").path, copy)
    with open(copy, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    monkeypatch.setenv("WHEREWHEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        Aisfx()


@pytest.mark.parametrize("name", ["soundnet", "aisfx"])
def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch, name):
    monkeypatch.setenv("WHEREWHEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=f"not found.*`{FETCH_COMMAND}`"):
        weights_identity(AudioConfig(name=name))
    with pytest.raises(WeightsError, match=f"`{FETCH_COMMAND}`"):
        build_audio(AudioConfig(name=name))


def test_cards_record_name_layer_sha256_and_licence():
    for name, sha, licence in (("soundnet", SOUNDNET_SHA256, "MIT"), ("aisfx", AISFX_SHA256, "CC BY 4.0")):
        cfg = AudioConfig(name=name)
        assert weights_identity(cfg) == sha
        ext = build_audio(cfg, sample_rate=16000)
        card = ext.card()
        assert card["name"] == name and card["weights_sha256"] == sha and card["dim"] == ext.dim
        assert licence in card["licence"] and card["layer"]
        assert ext(torch.zeros(2, 16000)).shape == (2, ext.dim)
    random = build_audio(AudioConfig(name="soundnet", weights="random"))
    assert random.card()["weights_sha256"] is None and weights_identity(AudioConfig(name="soundnet", weights="random")) == "random"


def test_a_weights_file_of_another_network_is_refused():
    other = fetched_asset("aisfx").path   # a valid safetensors file, but aiSFX's tensors
    with pytest.raises(WeightsError, match="does not fit the network"):
        SoundNet(weights=str(other))


def test_stores_built_with_the_pretrained_extractors_record_their_weights(tmp_path):
    import json

    from features.extract import ExtractConfig, extract_features
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.synthetic import SyntheticSource

    ds = tmp_path / "ds"
    build_dataset(BuildConfig(source=SyntheticSource(clips=4, classes=2, duration_s=4, size=64, fps=4), out=ds, workers=1))
    for name, sha, dim in (("soundnet", SOUNDNET_SHA256, 256), ("aisfx", AISFX_SHA256, 512)):
        summary = extract_features(ExtractConfig(dataset_dir=ds, out_root=tmp_path / "stores", audio=name, workers=0,
                                                 segment={"num_segments": 2, "frame_size": 64}), progress=False)
        card = json.loads((summary.store_dir / "store.json").read_text())
        assert card["audio"]["name"] == name and card["audio"]["weights_sha256"] == sha
        assert card["audio_dim"] == dim and card["audio"]["licence"] and card["audio"]["layer"]
