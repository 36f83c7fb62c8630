"""Command-line options generated from the pydantic configuration models, and back.

:func:`model_params` makes one click parameter per field of a model (nested models flattened:
``visual.name`` -> ``--visual``, ``visual.weights`` -> ``--visual-weights``); every option
defaults to None so that the model's own default applies, and ``--help`` shows that default and
the field's description (:mod:`flows.model_docs`). :func:`to_config` turns the parsed values back
into the model, which validates them (errors become one line: :mod:`flows.cli_errors`).
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import click
from pydantic import BaseModel

from flows.model_docs import field_descriptions

__all__ = ["CommaList", "model_params", "to_config", "NESTED"]

#: Separator of a nested field in an option's destination name: ``visual__weights``.
NESTED = "__"


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")`` (a tuple field of the model)."""

    name = "A,B,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, (tuple, list)):
            return tuple(value)
        return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _click_type(tp: Any) -> Any | None:
    """The click type for a field annotation, or None for one the command line cannot take."""
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if origin in (tuple, list) or tp in (tuple, list):
        return CommaList()
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
    return str(default)


def _is_model(tp: Any) -> bool:
    tp = _unwrap_optional(tp)
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def model_params(
    model: type[BaseModel],
    *,
    skip: Sequence[str] = (),
    positional: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    prefix: str = "",
) -> list[click.Parameter]:
    """One click parameter per field of ``model`` (nested models flattened; see the module docstring).

    ``positional`` fields become arguments (in that order, first); ``aliases`` adds option names
    (``{"out_root": ["--out"]}``); ``defaults`` replaces the model's default for this command (shown
    in ``--help`` and applied by the option); fields of a type the command line cannot hold are left out.
    """
    aliases, defaults = dict(aliases or {}), dict(defaults or {})
    texts = field_descriptions(model)
    arguments: list[click.Parameter] = []
    options: list[click.Parameter] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        dest = prefix + name
        flag = dest.replace(NESTED, "-").replace("_", "-")
        if _is_model(field.annotation):
            sub = _unwrap_optional(field.annotation)
            for param in model_params(sub, prefix=dest + NESTED, skip=("kind",)):
                if param.name == f"{dest}{NESTED}name":  # --visual NAME, not --visual-name
                    param.opts = [f"--{flag}"]
                options.append(param)
            continue
        if name in positional:
            arguments.append(click.Argument([dest], type=_click_type(field.annotation) or str))
            continue
        click_type = _click_type(field.annotation)
        if click_type is None:
            continue
        required = field.is_required() and name not in defaults
        default = defaults[name] if name in defaults else (None if field.is_required() else field.get_default(call_default_factory=True))
        help_text = texts.get(name, "")
        if not required and _show(default) != "":
            help_text += f"  [default: {_show(default)}]"
        names = [f"--{flag}", *aliases.get(name, ())]
        if _unwrap_optional(field.annotation) is bool:
            names = [f"--{flag}/--no-{flag}"]
        options.append(click.Option([*names, dest], type=None if names[0].find("/") > 0 else click_type,
                                    default=defaults.get(name), required=required, help=help_text.strip()))
    arguments.sort(key=lambda a: list(positional).index(a.name))
    return arguments + options


def to_config(model: type[BaseModel], values: Mapping[str, Any], **fixed: Any) -> Any:
    """``model`` from parsed option values (None = the model's default; nested by ``NESTED``) plus ``fixed``.

    Raises pydantic's ValidationError for values the model refuses.
    """
    data: dict[str, Any] = {}
    for dest, value in values.items():
        if value is None:
            continue
        *parents, leaf = dest.split(NESTED)
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    data.update(fixed)
    return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})
