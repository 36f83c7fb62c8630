"""Command-line options generated from the pydantic configuration models, and back.

:func:`model_params` makes one click parameter per leaf field of a model
(:func:`flows.flat_config.flat_fields`: ``visual.name`` -> ``--visual``, ``visual.weights`` ->
``--visual-weights``); every option defaults to None so that the model's own default applies, and
``--help`` shows that default and the field's description (:mod:`flows.model_docs`).
:func:`to_config` turns the parsed values back into the model, which validates them (errors become
one line: :mod:`flows.cli_errors`). The deployments' parameters come from the same flat fields
(:mod:`flows.flow_params`), so an option and a parameter share one name.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import click
from pydantic import BaseModel

from flows.flat_config import flat_fields, nest, unwrap_optional

__all__ = ["CommaList", "model_params", "to_config"]


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")`` (a tuple field of the model)."""

    name = "A,B,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, (tuple, list)):
            return tuple(value)
        return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _click_type(tp: Any) -> Any | None:
    """The click type for a field annotation, or None for one the command line cannot take."""
    tp = unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if origin in (tuple, list) or tp in (tuple, list):
        return CommaList()
    if tp is bool:
        return click.BOOL
    if tp in (int, float, str):
        return tp
    if inspect.isclass(tp) and issubclass(tp, Path):
        return click.Path(path_type=Path)
    return None


def _show(default: Any) -> str:
    """The default as ``--help`` shows it; empty for None (the description says what None means)."""
    if default is None or isinstance(default, BaseModel):
        return ""
    if isinstance(default, (tuple, list)):
        return ",".join(str(d) for d in default)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def model_params(
    model: type[BaseModel],
    *,
    skip: Sequence[str] = (),
    positional: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[click.Parameter]:
    """One click parameter per leaf field of ``model`` (see the module docstring).

    ``positional`` fields become arguments (in that order, first); ``aliases`` adds option names
    (``{"out_root": ["--out"]}``); ``defaults`` replaces the model's default for this command only
    (shown in ``--help`` and applied by the option: ``demo --out out/demo``); a bool field is a ``--x/--no-x`` flag; fields of a type the
    command line cannot hold are left out.
    """
    aliases, defaults = dict(aliases or {}), dict(defaults or {})
    arguments: list[click.Parameter] = []
    options: list[click.Parameter] = []
    for field in flat_fields(model, skip=skip):
        if field.name in positional:
            arguments.append(click.Argument([field.name], type=_click_type(field.annotation) or str))
            continue
        click_type = _click_type(field.annotation)
        if click_type is None:
            continue
        flag = field.name.replace("_", "-")
        required = field.required and field.name not in defaults
        default = defaults.get(field.name, field.default)
        help_text = field.description
        if not required and _show(default) != "":
            help_text += f"  [default: {_show(default)}]"
        if click_type is click.BOOL:
            names, click_type = [f"--{flag}/--no-{flag}"], None
        else:
            names = [f"--{flag}", *aliases.get(field.name, ())]
        options.append(click.Option([*names, field.name], type=click_type, default=defaults.get(field.name),
                                    required=required, help=help_text.strip()))
    arguments.sort(key=lambda a: list(positional).index(a.name))
    return arguments + options


def to_config(model: type[BaseModel], values: Mapping[str, Any], **fixed: Any) -> Any:
    """``model`` from parsed option values (by flat name; None = the model's default) plus ``fixed``
    (top-level fields given whole). Raises pydantic's ValidationError for values the model refuses."""
    data = nest(flat_fields(model), values)
    data.update(fixed)
    return model.model_validate(data)
