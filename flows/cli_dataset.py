"""``wherewhen dataset``: ``build <source>`` (one command per registered source, options from its
config model and BuildConfig) and ``info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flows.cli_common import CONTEXT, config_of, note, stage
from flows.cli_errors import OneLineGroup
from flows.cli_options import model_params

__all__ = ["dataset"]


@click.group(cls=OneLineGroup, context_settings=CONTEXT)
def dataset() -> None:
    """Build datasets (a manifest of usable clips + the failures) and inspect them."""


@dataset.group(name="build", cls=OneLineGroup, context_settings=CONTEXT)
def dataset_build() -> None:
    """Build a dataset from a SOURCE into --out DIR.

    Bad files never stop a build: they land in failures.parquet with a reason. The exit code is
    0 even with failures, unless --strict is given.
    """


def _source_command(kind: str) -> click.Command:
    """``wherewhen dataset build <kind>`` with options from its registry entry's model and BuildConfig."""
    from pipelines.build import BuildConfig
    from pipelines.sources.registry import SOURCES

    entry = SOURCES[kind]

    def command(**values: Any) -> None:
        source_fields = set(entry.config.model_fields)
        source = config_of(entry.config, {k: v for k, v in values.items() if k in source_fields})
        config = config_of(BuildConfig, {k: v for k, v in values.items() if k not in source_fields}, source=source)
        summary = stage("build-dataset", config)
        click.echo(summary.summary_line())
        if not summary.ok:  # --strict and at least one failure row
            raise SystemExit(1)

    params = model_params(entry.config, skip=("kind",), positional=entry.arguments)
    params += model_params(BuildConfig, skip=("source",))
    text = entry.summary
    if kind == "folder":
        from pipelines.sources.folder import FOLDER_HELP

        text = FOLDER_HELP
    return click.Command(kind, params=params, callback=command, help=text,
                         context_settings=CONTEXT)


def _add_source_commands() -> None:
    from pipelines.sources.registry import SOURCES

    for kind in SOURCES:
        dataset_build.add_command(_source_command(kind))


_add_source_commands()


@dataset.command(name="info", context_settings=CONTEXT)
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def dataset_info(dataset_dir: Path) -> None:
    """Print a dataset's classes, clip counts per split and class, and its failures."""
    from pipelines.manifest import load_dataset

    ds = load_dataset(dataset_dir)
    info = ds.info()
    click.echo(f"dataset: {ds.card.name}  ({ds.root})")
    click.echo(f"fingerprint: {ds.card.fingerprint}")
    click.echo(f"classes ({len(info['classes'])}): {', '.join(info['classes'])}")
    click.echo(f"clips: {len(ds.clips)}  (with audio {info['has_audio']}, without {info['no_audio']}; "
               f"box rows {info['boxes']})")
    for split, n in info["split_counts"].items():
        click.echo(f"  {split}: {n}")
    if info["classes"]:
        click.echo("per class (train/val/test):")
        for label in info["classes"]:
            click.echo(f"  {label}: " + " / ".join(str(info["counts"].get(s, {}).get(label, 0))
                                               for s in ("train", "val", "test")))
    click.echo(f"failures: {info['num_failures']}")
    for row in info["failures"]:
        click.echo(f"  {row.get('relpath')} [{row.get('stage')}/{row.get('error')}]: {row.get('message')}")
    if len(info["classes"]) < 2:
        note(f"warning: {dataset_dir}: {len(info['classes'])} class(es); training needs at least two")
