"""The dataset-source registry: one entry per kind, from which BuildConfig's source union comes."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from pipelines.build import SOURCES, BuildConfig, SourceConfig
from pipelines.sources.registry import source_entry


def test_each_registered_kind_is_its_models_kind_and_a_build_source(tmp_path) -> None:
    assert list(SOURCES) == ["synthetic", "folder", "ave", "youtube-csv"]
    union = typing.get_args(typing.get_args(SourceConfig)[0])
    assert union == tuple(entry.config for entry in SOURCES.values())
    required = {"folder": {"root": tmp_path}, "ave": {"annotations": tmp_path / "a.txt"}, "youtube-csv": {"csv": tmp_path / "c.csv"}}
    for kind, entry in SOURCES.items():
        assert entry.kind == kind and entry.summary and callable(entry.collect)
        assert set(entry.arguments) <= set(entry.config.model_fields)
        cfg = BuildConfig.model_validate({"source": {"kind": kind, **required.get(kind, {})}, "out": tmp_path})
        assert type(cfg.source) is entry.config and source_entry(cfg.source) is entry
    assert {k for k, e in SOURCES.items() if e.downloads} == {"ave", "youtube-csv"}
    assert {k for k, e in SOURCES.items() if e.encodes_media} == {"synthetic"}


def test_an_unknown_kind_is_refused_and_the_registry_is_read_only(tmp_path) -> None:
    with pytest.raises(ValidationError, match="youtube_csv"):
        BuildConfig.model_validate({"source": {"kind": "youtube_csv", "csv": "c.csv"}, "out": tmp_path})
    with pytest.raises(KeyError, match="registered: synthetic, folder, ave, youtube-csv"):
        source_entry(BuildConfig.model_fields["out"])  # not a source configuration
    with pytest.raises(TypeError):
        SOURCES["mine"] = SOURCES["folder"]  # type: ignore[index]
