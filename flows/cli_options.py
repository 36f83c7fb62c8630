"""Command-line options generated from the pydantic configuration models, and back.

:func:`model_params` makes one click parameter per leaf field of a model
(:func:`flows.flat_config.flat_fields`: ``visual.name`` -> ``--visual``, ``visual.weights`` ->
``--visual-weights``); every option defaults to None so that the model's own default applies, and
``--help`` shows that default and the field's description (:mod:`flows.model_docs`).
:func:`to_config` turns the parsed values back into the model, which validates them (errors become
one line: :mod:`flows.cli_errors`). The deployments' parameters come from the same flat fields
(:mod:`flows.flow_params`), so an option and a parameter share one name.

Commands name their model as ``"module:Class"`` (:func:`load_model` imports it when the command
runs): the option specs (:func:`option_specs`) come from :mod:`flows.cli_cache`, so building a
command for ``--help`` imports no torch.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import click
from pydantic import BaseModel

from flows.cli_cache import cached
from flows.flat_config import flat_fields, nest, unwrap_optional

__all__ = ["CommaList", "load_model", "option_specs", "model_params", "to_config"]


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")`` (a tuple field of the model)."""

    name = "A,B,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, (tuple, list)):
            return tuple(value)
        return tuple(v.strip() for v in str(value).split(",") if v.strip())


def load_model(ref: str) -> type[BaseModel]:
    """The model class ``"module:Class"`` names (imports its module)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _kind(tp: Any) -> dict[str, Any] | None:
    """How the command line takes a field of type ``tp``; None for a type it cannot hold."""
    tp = unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return {"kind": "choice", "choices": [str(a) for a in typing.get_args(tp)]}
    if origin in (tuple, list) or tp in (tuple, list):
        return {"kind": "list"}
    for kind, types in (("bool", (bool,)), ("int", (int,)), ("float", (float,)), ("str", (str,))):
        if tp in types:
            return {"kind": kind}
    if inspect.isclass(tp) and issubclass(tp, Path):
        return {"kind": "path"}
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


def _specs(ref: str) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "top": f.path[0], "type": _kind(f.annotation), "required": f.required,
         "default": _show(f.default), "description": f.description}
        for f in flat_fields(load_model(ref))
    ]


def option_specs(ref: str) -> list[dict[str, Any]]:
    """The flat fields of the model ``ref`` as the command line needs them (cached: :mod:`flows.cli_cache`):
    name, top-level field, type (``{"kind": "choice", "choices": [...]}``, ``list``, ``bool``, ``int``,
    ``float``, ``str``, ``path`` or None), required, the default as shown, the description."""
    return cached(f"options {ref}", lambda: _specs(ref))


_CLICK_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": click.BOOL}


def _click_type(spec: dict[str, Any] | None) -> Any | None:
    if spec is None:
        return None
    if spec["kind"] == "choice":
        return click.Choice(spec["choices"])
    if spec["kind"] == "list":
        return CommaList()
    if spec["kind"] == "path":
        return click.Path(path_type=Path)
    return _CLICK_TYPES[spec["kind"]]


def model_params(
    model: str,
    *,
    skip: Sequence[str] = (),
    positional: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[click.Parameter]:
    """One click parameter per leaf field of the model ``model`` names (``"module:Class"``; see the module docstring).

    ``positional`` fields become arguments (in that order, first); ``aliases`` adds option names
    (``{"out_root": ["--out"]}``); ``defaults`` replaces the model's default for this command only
    (shown in ``--help`` and applied by the option: ``demo --out out/demo``); a bool field is a ``--x/--no-x`` flag; fields of a type the
    command line cannot hold are left out.
    """
    aliases, defaults = dict(aliases or {}), dict(defaults or {})
    arguments: list[click.Parameter] = []
    options: list[click.Parameter] = []
    for spec in option_specs(model):
        name = spec["name"]
        if spec["top"] in skip:
            continue
        click_type = _click_type(spec["type"])
        if name in positional:
            arguments.append(click.Argument([name], type=click_type or str))
            continue
        if click_type is None:
            continue
        flag = name.replace("_", "-")
        required = spec["required"] and name not in defaults
        shown = _show(defaults[name]) if name in defaults else spec["default"]
        help_text = spec["description"]
        if not required and shown != "":
            help_text += f"  [default: {shown}]"
        if click_type is click.BOOL:
            names, click_type = [f"--{flag}/--no-{flag}"], None
        else:
            names = [f"--{flag}", *aliases.get(name, ())]
        options.append(click.Option([*names, name], type=click_type, default=defaults.get(name),
                                    required=required, help=help_text.strip()))
    arguments.sort(key=lambda a: list(positional).index(a.name))
    return arguments + options


def to_config(model: type[BaseModel], values: Mapping[str, Any], **fixed: Any) -> Any:
    """``model`` from parsed option values (by flat name; None = the model's default) plus ``fixed``
    (top-level fields given whole). Raises pydantic's ValidationError for values the model refuses."""
    data = nest(flat_fields(model), values)
    data.update(fixed)
    return model.model_validate(data)
