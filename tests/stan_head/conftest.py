"""Session stores for the stan_head tests (written with features.store's writers; see head_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from head_store import make_feature_store


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """60 clips, 3 classes, T=4, 3×3×16 visual, 8-d audio, three HDF5 shards."""
    return make_feature_store(tmp_path_factory.mktemp("stan_store"))


@pytest.fixture(scope="session")
def other_store(tmp_path_factory) -> Path:
    """Same shapes as ``tiny_store`` but another store-id."""
    return make_feature_store(tmp_path_factory.mktemp("stan_store_b"), store_id="otherstore02", seed=1)


@pytest.fixture(scope="session")
def wide_store(tmp_path_factory) -> Path:
    """The same store-id as ``tiny_store`` but other feature shapes (Cv = 20)."""
    return make_feature_store(tmp_path_factory.mktemp("stan_store_c"), cv=20)
