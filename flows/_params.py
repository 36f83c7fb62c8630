"""Turn flat flow parameters into a library config model (None keeps the model's default)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def build_config(config_model: type[M], /, **given: Any) -> M:
    """``config_model(**given)`` without the None values, so that omitted options keep the defaults.

    Raises ``ValueError`` naming the option when ``given`` holds a name the model does not know
    (the model forbids extras too, this message is just clearer at the command line).
    """
    unknown = [k for k, v in given.items() if v is not None and k not in config_model.model_fields]
    if unknown:
        raise ValueError(f"{config_model.__name__} has no option(s) {unknown}; known: {sorted(config_model.model_fields)}")
    return config_model(**{k: v for k, v in given.items() if v is not None})
