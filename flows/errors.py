"""Errors in words: which errors are deliberate, and their one-line text (for the CLI and the flows).

Deliberate errors are the ones the project raises on purpose: OSError, ValueError (pydantic's
ValidationError included) and the error classes of pipelines/, features/, stan_head/ and flows/.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

__all__ = ["is_deliberate", "error_text", "validation_text", "field_name"]

_OUR_PACKAGES = {"pipelines", "features", "stan_head", "flows"}


def is_deliberate(exc: BaseException) -> bool:
    """True for an error raised on purpose: bad input, a missing file, a refused configuration."""
    if isinstance(exc, (OSError, ValueError)):
        return True
    return type(exc).__module__.split(".")[0] in _OUR_PACKAGES


def field_name(loc: Sequence[Any], style: Literal["option", "parameter"]) -> str:
    """A model field's location as the user named it: ``("visual", "weights")`` -> ``--visual-weights``
    (a CLI option) or ``visual_weights`` (a flow's deployment parameter, :mod:`flows.flow_params`);
    a nested ``name`` field is its parent's name (``("visual", "name")`` -> ``--visual`` / ``visual``).
    A dataset source's ``("source", "folder", "root")`` is ``--root`` as an option and ``source.root``
    as a parameter (the deployment takes the source as one object)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if len(parts) > 2 and parts[0] == "source":
        parts = [parts[0], *parts[2:]]  # drop the union's tag
    if parts and parts[0] == "source":
        if style == "parameter":
            return ".".join(parts)
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "name":
        parts = parts[:-1]
    if style == "parameter":
        return "_".join(parts)
    return "--" + "-".join(parts).replace("_", "-")


def validation_text(exc: Any, hint: str = "", style: Literal["option", "parameter"] = "option") -> str:
    """pydantic's ValidationError as one line: each option (or flow parameter), its value, what is wanted."""
    parts = []
    for err in exc.errors():
        value = err.get("input")
        shown = "" if isinstance(value, (dict, BaseException)) or value is None else f" (got {value!r})"
        message = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        parts.append(f"{field_name(err['loc'], style)}: {message}{shown}")
    return "; ".join(parts) + (f"; {hint}" if hint else "")


def error_text(exc: BaseException, hint: str = "") -> str:
    """The one-line message of a deliberate error (``hint`` is added to a ValidationError's)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return validation_text(exc, hint)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc):
        return f"{exc.filename}: {exc.strerror or exc}; check the path"
    return " ".join((str(exc) or type(exc).__name__).split())
