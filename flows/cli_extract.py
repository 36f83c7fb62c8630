"""``wherewhen extract-features``: options from :class:`features.plan.ExtractConfig` (imported when it runs)."""

from __future__ import annotations

from typing import Any

import click

from flows.cli_common import CONTEXT, config_of, stage
from flows.cli_options import load_model, model_params

__all__ = ["extract_features_cmd"]

EXTRACT_CONFIG = "features.plan:ExtractConfig"


def _extract(**values: Any) -> None:
    """Extract frozen visual + audio features of DATASET_DIR into a store under --out (one task per shard).

    The store goes to OUT/<dataset name>/<store-id>/. Same inputs give the same store-id: a finished
    store is a no-op, an interrupted one resumes.
    """
    summary = stage("extract-features", config_of(load_model(EXTRACT_CONFIG), values))
    noop = " (no-op: already complete)" if summary.skipped else ""
    click.echo(f"store: {summary.store_dir}  id={summary.store_id}  clips={summary.clips}  "
               f"failures={summary.failures}{noop}")


extract_features_cmd = click.Command(
    "extract-features", callback=_extract, help=_extract.__doc__, context_settings=CONTEXT,
    params=model_params(EXTRACT_CONFIG, positional=("dataset_dir",), aliases={"out_root": ["--out"]}),
)
