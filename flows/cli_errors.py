"""How the command line fails: one line on stderr, ``error: <path>: <what is wrong>; <what to do>``.

Errors the project raises on purpose (:func:`flows.errors.is_deliberate`) print their message on
one line and exit 1; invalid options and parameters exit 2. Anything else is a bug and keeps its
traceback, as every error does with ``wherewhen --debug``.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import click

from flows.errors import error_text, is_deliberate

__all__ = ["OneLineError", "OneLineGroup", "DEBUG_KEY"]

#: ``ctx.meta`` key of the ``--debug`` flag.
DEBUG_KEY = "wherewhen.debug"
_COMMAND_KEY = "wherewhen.command"


class OneLineError(click.ClickException):
    """A message shown as ``error: <message>`` (one line) with ``exit_code`` (1, or 2 for usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class OneLineGroup(click.Group):
    """A click group whose errors print as one line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from pydantic import ValidationError

            if ctx.meta.get(DEBUG_KEY) or not is_deliberate(exc):
                raise
            command = ctx.meta.get(_COMMAND_KEY, ctx.command_path)
            raise OneLineError(error_text(exc, f"see `{command} --help`"), 2 if isinstance(exc, ValidationError) else 1) from exc

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name:
            ctx.meta[_COMMAND_KEY] = f"{ctx.command_path} {name}"  # meta is shared by the whole context chain
        return name, cmd, rest

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:
        """click's main, with usage errors on one line too (``error: …; see `… --help```, exit 2)."""
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx else (prog_name or self.name)
            click.echo(f"error: {' '.join(exc.format_message().split()).rstrip('.')}; see `{path} --help`", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
