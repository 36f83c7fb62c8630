"""What every command of the command line shares: click settings, the tracking choice, and
turning parsed options into an absolute-path config for a stage."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import click
from pydantic import BaseModel

from flows.cli_options import to_config
from flows.stage import absolute_paths, run_stage

__all__ = ["CONTEXT", "TRACK_KEY", "config_of", "stage", "note"]

M = TypeVar("M", bound=BaseModel)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": False}
#: ``ctx.meta`` key of ``--track/--no-track`` (None: track when a Prefect API is configured).
TRACK_KEY = "wherewhen.track"


def config_of(model: type[M], values: Mapping[str, Any], **fixed: Any) -> M:
    """The model from the options (None keeps its default), every path made absolute against the
    current folder (recorded absolute, the same for a served flow). Raises ValidationError."""
    return absolute_paths(to_config(model, values, **fixed))


def stage(name: str, config: BaseModel) -> Any:
    """Run the stage ``name`` as the user chose (``--track``/``--no-track``; default: a Prefect API is configured)."""
    return run_stage(name, config, tracked=click.get_current_context().meta.get(TRACK_KEY))


def note(text: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays the result)."""
    click.echo(text, err=True)
