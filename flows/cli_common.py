"""What every command of the command line shares: click settings, the tracking choice, turning
parsed options into an absolute-path config for a stage, and the guardian that ends the children
Prefect starts when this process ends (SIGKILL included)."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import click
from pydantic import BaseModel

from flows.cli_options import to_config
from flows.stage import absolute_paths, configured_api_url, run_stage

__all__ = ["CONTEXT", "TRACK_KEY", "config_of", "tracking", "guard_children", "stage", "note"]

M = TypeVar("M", bound=BaseModel)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": False}
#: ``ctx.meta`` key of ``--track/--no-track`` (None: track when a Prefect API is configured).
TRACK_KEY = "wherewhen.track"
_GUARD_KEY = "wherewhen.guardian"


def config_of(model: type[M], values: Mapping[str, Any], **fixed: Any) -> M:
    """The model from the options (None keeps its default), every path made absolute against the
    current folder (recorded absolute, the same for a served flow). Raises ValidationError."""
    return absolute_paths(to_config(model, values, **fixed))


def tracking() -> bool:
    """Whether this command runs its stages as Prefect flows: ``--track``/``--no-track``, else whether a
    Prefect API is configured."""
    track = click.get_current_context().meta.get(TRACK_KEY)
    return configured_api_url() is not None if track is None else bool(track)


def guard_children() -> None:
    """Make the children this process cannot change end with it, SIGKILL included: Prefect's temporary
    API server (``--track`` without PREFECT_API_URL), the flow-run processes ``serve`` starts
    (:func:`pipelines.lifetime.guard_descendants`). Once per command; our own children (the decoder,
    the encoder pool) end with their parent by themselves."""
    meta = click.get_current_context().meta
    if meta.get(_GUARD_KEY) is None:
        from pipelines.lifetime import guard_descendants

        meta[_GUARD_KEY] = guard_descendants()


def stage(name: str, config: BaseModel) -> Any:
    """Run the stage ``name`` as the user chose (:func:`tracking`); a tracked stage is guarded (:func:`guard_children`)."""
    tracked = tracking()
    if tracked:
        guard_children()
    return run_stage(name, config, tracked=tracked)


def note(text: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays the result)."""
    click.echo(text, err=True)
