"""Flows whose parameters are the fields of their configuration model, named like the CLI's options.

``@config_flow(ExtractConfig, name="extract-features")`` over ``def body(config: ExtractConfig)``
makes a Prefect flow whose signature has one keyword parameter per leaf field of the model
(:func:`flows.flat_config.flat_fields`): ``dataset_dir``, ``out_root``, ``visual``,
``visual_weights``, ``workers``, ... — the CLI's ``--visual-weights`` is the deployment's
``visual_weights``. Each parameter carries the field's type, constraints, default and description,
so the Prefect UI shows a described form and the API refuses a value outside the field's range
when the run is created. The flow validates the values into the model once (:func:`flow_config`:
errors name the parameters, relative paths are refused) and calls ``body`` with it:

    prefect deployment run extract-features/wherewhen --param dataset_dir=/abs/data --param out_root=/abs/features

A deliberate error (:func:`flows.errors.is_deliberate`) ends the run in a Failed state whose message
is the one-line error, logged without a traceback (:mod:`flows.prefect_logs`); calling the flow
from Python raises it, as the library would. In Python, ``flow(**flow_parameters(config))`` runs
it on a model.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Callable, Optional, TypeVar

from prefect import Flow, flow
from pydantic import BaseModel, ValidationError

from flows.errors import error_text, field_name, is_deliberate, validation_text
from flows.flat_config import flat_fields, nest
from flows.model_docs import describe_schema
from flows.prefect_logs import one_line_deliberate_errors
from flows.stage import relative_paths

__all__ = ["config_flow", "flow_config", "flow_parameters"]

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


def _signature(model: type[BaseModel], skip: tuple[str, ...]) -> inspect.Signature:
    """Keyword parameters: required fields without a default, the others default None (= the model's
    default, which the description states: a preset or a nested model may fill it)."""
    params = []
    for field in flat_fields(model, skip=skip):
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        if field.required:
            params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
        else:
            params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Optional[annotation]))
    return inspect.Signature(params)


def _shown(default: Any) -> str:
    if isinstance(default, (tuple, list)):
        return "[" + ", ".join(str(d) for d in default) + "]"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _docstring(summary: str, model: type[BaseModel], skip: tuple[str, ...]) -> str:
    """``summary`` plus a Google-style ``Args:`` section (Prefect shows it as the parameters' descriptions)."""
    lines = [summary.strip(), "", "Args:"]
    for field in flat_fields(model, skip=skip):
        text = field.description or field.name.replace("_", " ")
        if not field.required and field.default is not None and not isinstance(field.default, BaseModel):
            text += f" [default: {_shown(field.default)}]"
        lines.append(f"    {field.name}: {text}")
    return "\n".join(lines) + "\n"


def flow_config(model: type[M], values: dict[str, Any]) -> M:
    """The flow's parameters (nested as the model's fields) validated into ``model``, every path absolute.

    Served flows run in the folder ``wherewhen serve`` started in, so a relative path would mean
    a folder the person submitting the run never chose: it is refused. Raises ValueError with one
    line naming the parameters (``visual_weights``, ``source.root``), what is wrong and what to do.
    """
    try:
        config = model.model_validate(values)
    except ValidationError as exc:
        raise ValueError(validation_text(exc, "fix the run's parameters", style="parameter")) from None
    relative = relative_paths(config)
    if relative:
        named = ", ".join(f"{field_name(loc, 'parameter')}={str(value)!r}" for loc, value in relative)
        raise ValueError(f"{named}: relative path(s), which a served flow would resolve against the folder "
                         f"`wherewhen serve` runs in; give absolute paths")
    return config


def _failed(exc: BaseException) -> Any:
    """The Failed state of a run stopped by a deliberate error: its one line as the message."""
    from prefect.states import Failed

    text = error_text(exc)
    # the state carries the error (calling the flow raises it); a pydantic error as its text (it does not pickle)
    return Failed(message=text, data=ValueError(text) if isinstance(exc, ValidationError) else exc)


def config_flow(model: type[M], *, name: str, skip: tuple[str, ...] = ()) -> Callable[[Callable[[M], R]], Flow]:
    """Decorator: ``body(config: model)`` -> a flow named ``name`` with one parameter per field (module docstring).

    ``skip`` leaves top-level fields out of the parameters (they keep the model's default).
    """
    fields = flat_fields(model, skip=skip)

    def wrap(body: Callable[[M], R]) -> Flow:
        def entry(**params: Any) -> R:
            one_line_deliberate_errors()
            try:
                return body(flow_config(model, nest(fields, params)))
            except Exception as exc:
                if not is_deliberate(exc):
                    raise
                return _failed(exc)

        entry.__signature__ = _signature(model, skip)  # type: ignore[attr-defined]
        entry.__name__ = entry.__qualname__ = body.__name__
        entry.__module__ = body.__module__
        entry.__doc__ = _docstring(body.__doc__ or name, model, skip)
        made = flow(name=name, log_prints=False, validate_parameters=False)(entry)
        # nested models in the form (BuildConfig.source) get their fields' descriptions too
        made.parameters = type(made.parameters).model_validate(describe_schema(made.parameters.model_dump(), [model]))
        return made

    return wrap


def flow_parameters(config: BaseModel, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``config`` as the keyword arguments of its :func:`config_flow` flow (by flat name)."""
    values: dict[str, Any] = {}
    for field in flat_fields(type(config), skip=skip):
        node: Any = config
        for part in field.path:
            node = getattr(node, part)
        values[field.name] = node
    return values
