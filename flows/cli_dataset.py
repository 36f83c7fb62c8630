"""``wherewhen dataset``: ``build <source>`` (one command per registered source, options from its
config model and BuildConfig) and ``info``.

The list of sources (kind, model, positional arguments, help) comes from
:data:`pipelines.sources.registry.SOURCES` through :mod:`flows.cli_cache`, so ``--help`` does not
import the sources' modules (the synthetic generator, the downloaders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flows.cli_cache import cached
from flows.cli_common import CONTEXT, config_of, note, stage
from flows.cli_errors import OneLineGroup
from flows.cli_options import load_model, model_params

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


BUILD_CONFIG = "pipelines.build:BuildConfig"


def _source_table() -> list[dict[str, Any]]:
    """Each registered source: kind, its model (``module:Class``), positional arguments, help text."""
    from pipelines.sources.folder import FOLDER_HELP
    from pipelines.sources.registry import SOURCES

    return [
        {"kind": kind, "config": f"{entry.config.__module__}:{entry.config.__qualname__}",
         "arguments": list(entry.arguments), "help": FOLDER_HELP if kind == "folder" else entry.summary}
        for kind, entry in SOURCES.items()
    ]


def _source_command(source: dict[str, Any]) -> click.Command:
    """``wherewhen dataset build <kind>`` with options from the source's model and BuildConfig."""

    def command(**values: Any) -> None:
        model = load_model(source["config"])
        source_fields = set(model.model_fields)
        source_config = config_of(model, {k: v for k, v in values.items() if k in source_fields})
        config = config_of(load_model(BUILD_CONFIG), {k: v for k, v in values.items() if k not in source_fields},
                           source=source_config)
        summary = stage("build-dataset", config)
        click.echo(summary.summary_line())
        if not summary.ok:  # --strict and at least one failure row
            raise SystemExit(1)

    params = model_params(source["config"], skip=("kind",), positional=tuple(source["arguments"]))
    params += model_params(BUILD_CONFIG, skip=("source",))
    return click.Command(source["kind"], params=params, callback=command, help=source["help"], context_settings=CONTEXT)


def _add_source_commands() -> None:
    for source in cached("dataset sources", _source_table):
        dataset_build.add_command(_source_command(source))


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
        click.echo(f"  {row.get('relpath') or row.get('clip_id')} [{row.get('stage')}/{row.get('error')}]: {row.get('message')}")
    if len(info["classes"]) < 2:
        note(f"warning: {dataset_dir}: {len(info['classes'])} class(es); training needs at least two")
