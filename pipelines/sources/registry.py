"""The dataset sources, registered once: kind name → configuration model + collect function.

:data:`SOURCES` is the one list of source kinds. :class:`pipelines.build.BuildConfig`'s
``source`` field is :data:`SourceConfig`, the union of the registered models discriminated by
their ``kind``; the CLI makes one ``wherewhen dataset build <kind>`` command per entry (options
from ``entry.config``, positional arguments ``entry.arguments``, help ``entry.summary``) and the
build flow retries the entries that download (``entry.downloads``). A new source is one module
in :mod:`pipelines.sources` (a pydantic model with a ``kind: Literal[...]`` field and a collect
function returning :class:`~pipelines.sources.base.Collected`) plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

from pipelines.sources.ave import AVESource, collect_ave
from pipelines.sources.base import Collected
from pipelines.sources.folder import FolderSource, collect_folder
from pipelines.sources.synthetic import SyntheticSource, generate_synthetic
from pipelines.sources.youtube_csv import YoutubeCsvSource, collect_youtube_csv

__all__ = ["DatasetSource", "SOURCES", "SourceConfig", "source_entry"]

CollectFn = Callable[[Any, Path, int], Collected]  # (source config, dataset folder, workers) -> Collected


@dataclass(frozen=True)
class DatasetSource:
    """One kind of dataset source.

    Attributes:
        config: its pydantic configuration model; its ``kind`` field's default is the kind name.
        collect: ``collect(config, out_dir, workers) -> Collected``: the source's candidates and
            the failures found before probing (may generate, download or cut media into
            ``out_dir``; ``workers`` bounds its parallelism).
        summary: one line for people (the CLI command's help).
        arguments: fields of ``config`` a command line takes as positional arguments, in order.
        downloads: whether ``collect`` fetches over the network (worth retrying: downloads resume).
        encodes_media: whether ``collect`` generates every video of the dataset from its
            configuration alone with :class:`pipelines.encode.Mp4Writer`'s deterministic setting
            (same config, same bytes), so the build records :func:`pipelines.encode.encoder_identity`
            in dataset.json and the fingerprint (youtube-csv re-encodes downloads, whose bytes vary: False).
    """

    config: type[BaseModel]
    collect: CollectFn
    summary: str
    arguments: tuple[str, ...] = ()
    downloads: bool = False
    encodes_media: bool = False

    @property
    def kind(self) -> str:
        """The kind name: the default of the model's ``kind`` field (what ``BuildConfig.source`` is told apart by)."""
        return str(self.config.model_fields["kind"].default)


def _collect_synthetic(cfg: SyntheticSource, out_dir: Path, workers: int) -> Collected:
    """Generate the synthetic clips into ``out_dir`` (contract 1), then collect that folder."""
    generated = generate_synthetic(cfg, out_dir, workers=workers)
    col = collect_folder(FolderSource(root=out_dir, name="synthetic"), out_dir, source="synthetic")
    col.classes = generated.classes
    return col


SOURCES: Mapping[str, DatasetSource] = MappingProxyType({
    entry.kind: entry
    for entry in (
        DatasetSource(
            SyntheticSource, _collect_synthetic,
            "Generate the seeded synthetic audio-visual event dataset (contract 1 layout) and its manifest.",
            encodes_media=True,
        ),
        DatasetSource(
            FolderSource, lambda cfg, out_dir, workers: collect_folder(cfg, out_dir),
            "Your own videos: ROOT holds the videos folder, annotations.csv and optionally boxes.csv "
            "(contract 1); the videos stay where they are.",
            arguments=("root",),
        ),
        DatasetSource(
            AVESource, lambda cfg, out_dir, workers: collect_ave(cfg, out_dir),
            "AVE: Annotations.txt and its split files; the videos from an archive URL (downloaded once, "
            "sha256-checked when given) or from a folder that already holds them.",
            downloads=True,
        ),
        DatasetSource(
            YoutubeCsvSource, collect_youtube_csv,
            "VGGSound / Kinetics-Sounds style CSV (youtube_id, start seconds, label, split): each video "
            "fetched with yt-dlp and cut to a fixed window.",
            arguments=("csv",), downloads=True,
        ),
    )
})

# BuildConfig.source: one of the registered models, told apart by ``kind``
SourceConfig = Annotated[Union[tuple(entry.config for entry in SOURCES.values())], Field(discriminator="kind")]  # type: ignore[valid-type]


def source_entry(config: BaseModel) -> DatasetSource:
    """The registry entry of a source configuration (by its ``kind``); KeyError for an unregistered kind."""
    kind = getattr(config, "kind", None)
    try:
        return SOURCES[str(kind)]
    except KeyError:
        raise KeyError(f"no dataset source of kind {kind!r}; registered: {', '.join(SOURCES)}") from None
