"""A configuration model as a flat list of named fields, and back: the one mapping that the command
line's options (:mod:`flows.cli_options`) and the flows' deployment parameters
(:mod:`flows.flow_params`) are both made from, so a CLI option ``--visual-weights`` and a
deployment parameter ``visual_weights`` are the same field of the same model.

Nested models are flattened (``visual.name`` -> ``visual``, ``visual.weights`` ->
``visual_weights``, ``segment.frame_size`` -> ``segment_frame_size``); a field whose type is a
union of models (``BuildConfig.source``) stays one field holding the nested object.
:func:`nest` turns flat values back into the nested dict the model validates.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pydantic import BaseModel

from flows.model_docs import field_descriptions

__all__ = ["FlatField", "flat_fields", "nest", "unwrap_optional"]


@dataclass(frozen=True)
class FlatField:
    """One leaf field of a (possibly nested) configuration model.

    Attributes:
        name: the flat name, ``visual_weights`` (CLI option ``--visual-weights``).
        path: where it sits in the model, ``("visual", "weights")``.
        annotation: the leaf field's type.
        metadata: the leaf field's constraints (``ge=0`` ...), as pydantic keeps them.
        required: no default: the caller must give it.
        default: the model's default (None when required).
        description: one line of text (the field's description or docstring entry).
    """

    name: str
    path: tuple[str, ...]
    annotation: Any
    metadata: tuple[Any, ...]
    required: bool
    default: Any
    description: str


def unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _single_model(tp: Any) -> type[BaseModel] | None:
    """The model class when ``tp`` is one model (optionally ``| None``), else None (unions of models stay whole)."""
    tp = unwrap_optional(tp)
    return tp if inspect.isclass(tp) and issubclass(tp, BaseModel) else None


def flat_fields(model: type[BaseModel], skip: Sequence[str] = (), _prefix: tuple[str, ...] = ()) -> list[FlatField]:
    """The leaf fields of ``model`` in declaration order (``skip``: top-level fields left out).

    A nested model's ``name`` field takes its parent's flat name (``visual``), its ``kind``
    field (a discriminator) is left out, and its other fields are ``<parent>_<field>``.
    """
    texts = field_descriptions(model)
    out: list[FlatField] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = (*_prefix, name)
        sub = _single_model(field.annotation)
        if sub is not None:
            out.extend(flat_fields(sub, skip=("kind",), _prefix=path))
            continue
        flat = "_".join(path[:-1]) if _prefix and name == "name" else "_".join(path)
        out.append(FlatField(
            name=flat, path=path, annotation=field.annotation, metadata=tuple(field.metadata),
            required=field.is_required(), default=None if field.is_required() else field.get_default(call_default_factory=True),
            description=texts.get(name, ""),
        ))
    return out


def nest(fields: Sequence[FlatField], values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``values`` (by :attr:`FlatField.name`; None or absent = the model's default) -> the nested dict
    the model validates. Names that are not fields are left out."""
    data: dict[str, Any] = {}
    for field in fields:
        value = values.get(field.name)
        if value is None:
            continue
        node = data
        for parent in field.path[:-1]:
            child = node.setdefault(parent, {})
            if not isinstance(child, dict):  # a nested model given whole: keep it, refine it field by field
                child = node[parent] = child.model_dump() if isinstance(child, BaseModel) else {"name": child}
            node = child
        node[field.path[-1]] = value
    return data
