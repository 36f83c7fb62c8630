"""What each field of a configuration model means, in one place for the CLI's ``--help`` and the
deployments' parameter forms.

A field's text is its ``Field(description=...)`` or, failing that, its entry in the model's
Google-style docstring (``Attributes:``, one entry may name several fields: ``visual / audio:``).
"""

from __future__ import annotations

import inspect
import re
from functools import cache
from typing import Any

from pydantic import BaseModel

__all__ = ["field_descriptions", "describe_schema"]

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _plain(text: str) -> str:
    """One line of plain text from docstring markup (``x`` and :func:`x` become x)."""
    return " ".join(_LITERAL.sub(r"\1", _ROLE.sub(r"\1", text)).split())


@cache
def _docstring_attributes(model: type[BaseModel]) -> dict[str, str]:
    from griffe import Docstring

    text = inspect.getdoc(model) or ""
    found: dict[str, str] = {}
    for section in Docstring(text).parse("google", warnings=False):
        if section.kind.value != "attributes":
            continue
        for attr in section.value:
            description = _plain(attr.description)
            for name in attr.name.replace(",", "/").split("/"):
                found[name.strip()] = description
    return found


def field_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> one-line description (empty string when the model says nothing)."""
    from_doc = _docstring_attributes(model)
    return {
        name: _plain(field.description or from_doc.get(name, ""))
        for name, field in model.model_fields.items()
    }


def _models_in(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> None:
    """``model`` and every model its fields name (through unions and containers), by class name."""
    if model.__name__ in seen:
        return
    seen[model.__name__] = model
    for field in model.model_fields.values():
        stack: list[Any] = [field.annotation]
        while stack:
            tp = stack.pop()
            if inspect.isclass(tp) and issubclass(tp, BaseModel):
                _models_in(tp, seen)
            stack.extend(getattr(tp, "__args__", ()) or ())


def describe_schema(schema: dict[str, Any], models: list[type[BaseModel]]) -> dict[str, Any]:
    """Fill missing ``description`` entries of a JSON schema's model definitions from :func:`field_descriptions`.

    ``schema`` is changed in place and returned (Prefect's parameter schema: ``definitions`` holds
    one entry per model, named after the class).
    """
    by_name: dict[str, type[BaseModel]] = {}
    for model in models:
        _models_in(model, by_name)
    for key in ("definitions", "$defs"):
        for name, definition in (schema.get(key) or {}).items():
            model = by_name.get(name)
            if model is None:
                continue
            texts = field_descriptions(model)
            for field, prop in (definition.get("properties") or {}).items():
                if texts.get(field) and not prop.get("description"):
                    prop["description"] = texts[field]
    return schema
