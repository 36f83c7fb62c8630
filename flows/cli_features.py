"""``wherewhen features``: inspect feature stores (other modules attach more: :data:`flows.cli.EXTENSIONS`)."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli_common import CONTEXT
from flows.cli_errors import OneLineGroup

__all__ = ["features"]


@click.group(cls=OneLineGroup, context_settings=CONTEXT)
def features() -> None:
    """Inspect feature stores."""


@features.command(name="info", context_settings=CONTEXT)
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
def features_info(store: Path) -> None:
    """Print a store's id, extractors, shapes, clip counts per split and failures.

    STORE is a store folder, or features/<dataset> when it holds one store.
    """
    import pandas as pd

    from features.store import FAILURES_FILE, FeatureStore
    from flows.inputs import store_folder

    store = store_folder(store)
    fs = FeatureStore.open(store)
    card = fs.card
    click.echo(f"store: {store}")
    for name in ("store_id", "classes", "num_segments", "visual_shape", "audio_dim", "dataset_dir"):
        click.echo(f"{name}: {getattr(card, name)}")
    click.echo(f"extractors: visual {card.visual.get('name')}, audio {card.audio.get('name')}")
    click.echo(f"clips: {len(fs.index)}")
    if "split" in fs.index:
        for split, n in fs.index["split"].value_counts().sort_index().items():
            click.echo(f"  {split}: {n}")
    failures_path = Path(store) / FAILURES_FILE
    if failures_path.exists():
        failures = pd.read_parquet(failures_path)
        click.echo(f"failures: {len(failures)}")
        for row in failures.to_dict("records"):
            click.echo(f"  {row.get('clip_id')} [{row.get('stage')}/{row.get('error')}]: {row.get('message')}")
