"""The decode path's shortcuts change no value (issue 18.2): what the decoder child returns, and what a
store keeps, equal decord's own public reads (frames by ``VideoReader.get_batch``, audio by
``AudioReader[:]``) on a web-like clip (30 fps, several GOPs, AAC 44.1 kHz stereo) and a real sample."""

from __future__ import annotations

import csv
from pathlib import Path

import decord
import numpy as np
import pytest
import torch

from pipelines.encode import Mp4Writer
from pipelines.media import ClipDecoder
from pipelines.media.child import _open_audio
from pipelines.segments import SegmentSpec, audio_bounds, frame_times, segment_mask

RATE = 44100


@pytest.fixture(scope="module")
def web_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 30 fps, 96x64, scene cuts every 70 frames (so x264 puts keyframes inside), AAC 44.1 kHz stereo."""
    path = tmp_path_factory.mktemp("web") / "videos" / "web.mp4"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    with Mp4Writer(path, 96, 64, 30, audio_rate=RATE, audio_layout="stereo") as writer:
        scene = rng.integers(0, 256, (64, 96, 3))
        for i in range(300):
            if i % 70 == 0:
                scene = rng.integers(0, 256, (64, 96, 3))
            writer.write_frame(np.roll(scene, 2 * i, axis=1).astype(np.uint8))
        t = np.arange(RATE * 10) / RATE
        writer.write_audio(np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32))
    return path


def _public_decode(path: Path, spec: SegmentSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (T, F, S, S, 3), audio (T, samples), mask) read with decord's public API only."""
    s = spec.frame_size
    vr = decord.VideoReader(str(path), width=s, height=s, num_threads=1)
    ts = np.asarray(vr.get_frame_timestamp(np.arange(len(vr))), dtype=np.float64)
    mask = segment_mask(spec, float(ts[-1, 1]))
    idx = np.clip(np.searchsorted(ts[:, 0], frame_times(spec), side="right") - 1, 0, len(vr) - 1)
    frames = np.zeros((spec.num_segments, spec.frames_per_segment, s, s, 3), np.uint8)
    frames[mask] = np.stack([vr[int(i)].asnumpy() for i in idx[mask].reshape(-1)]).reshape(frames[mask].shape)
    samples = decord.AudioReader(str(path), sample_rate=spec.audio_rate, mono=True)[:].asnumpy().reshape(-1)
    audio = np.zeros((spec.num_segments, spec.samples_per_segment), np.float32)
    for t, (a, b) in enumerate(audio_bounds(spec)):
        if mask[t]:
            chunk = samples[a:b]
            audio[t, : len(chunk)] = chunk
    return frames, np.clip(audio, -1.0, 1.0), mask


def test_the_childs_audio_is_decords_public_read(web_clip: Path, media_files) -> None:
    for path in (web_clip, media_files.bigbuckbunny):
        public = decord.AudioReader(str(path), sample_rate=16000, mono=True)[:].asnumpy().reshape(-1)
        ours = _open_audio(str(path), 16000)
        assert ours is not None and ours.dtype == np.float32 and ours.flags.c_contiguous
        assert np.array_equal(ours, public)
        assert np.abs(ours).max() > 0.05   # real sound, not silence
    assert _open_audio(str(media_files.bikes), 16000) is None   # no audio track


@pytest.mark.parametrize("frames_per_segment", [1, 16])
def test_decoded_clips_equal_decords_public_reads(web_clip: Path, media_files, frames_per_segment: int) -> None:
    assert len(decord.VideoReader(str(web_clip)).get_key_indices()) > 2   # seeks across GOPs happen
    with ClipDecoder() as dec:
        for path in (web_clip, media_files.bigbuckbunny):
            spec = SegmentSpec(frame_size=32, frames_per_segment=frames_per_segment)
            clip = dec.decode(path, spec)
            frames, audio, mask = _public_decode(path, spec)
            assert np.array_equal(clip.segment_mask, mask)
            assert np.array_equal(clip.frames, frames)
            assert np.array_equal(clip.audio, audio)


def test_a_stores_values_are_the_extractors_on_decords_public_reads(web_clip: Path, tmp_path: Path) -> None:
    """End to end: the store's per-clip sha256 equals the one computed from the public reads through the
    same extractors (one clip, one CNN batch of its 10 frames, so the batching is the same)."""
    from features.extract import ExtractConfig, extract_features
    from features.extractors import build_audio, build_visual
    from features.store import FeatureStore, clip_sha256
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.folder import FolderSource

    root = web_clip.parent.parent
    with open(root / "annotations.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["video_id", "label"], ["web", "tone"]])
    build_dataset(BuildConfig(source=FolderSource(root=root, name="web"), out=tmp_path / "ds", workers=1))
    spec = SegmentSpec(frame_size=64)
    cfg = ExtractConfig(dataset_dir=tmp_path / "ds", out_root=tmp_path / "stores", workers=0, segment=spec,
                        batch_size=10)
    store = FeatureStore.open(extract_features(cfg, progress=False).store_dir)
    stored = dict(zip(store.index["clip_id"], store.index["sha256"]))

    frames, audio, mask = _public_decode(web_clip, spec)
    torch.set_num_threads(cfg.torch_threads)
    visual = build_visual(cfg.visual, input_size=spec.frame_size)(torch.from_numpy(frames[mask].reshape(-1, 64, 64, 3)))
    vis = np.zeros((10, *visual.shape[1:]), np.float16)
    vis[mask] = visual.numpy()
    aud = np.zeros((10, 128), np.float16)
    aud[mask] = build_audio(cfg.audio, sample_rate=spec.audio_rate)(torch.from_numpy(audio[mask])).numpy()
    assert stored == {"web": clip_sha256(vis, aud, mask)}
