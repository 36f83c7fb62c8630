"""Running one stage: as its Prefect flow (run tracking) or as the same library call in this process.

A stage's Prefect flow is only worth its cost when someone records the runs: with a Prefect API
configured (``PREFECT_API_URL`` in the environment or the active Prefect profile) the command
line runs the flow against it, so the run, its tasks, logs and artifacts show in the UI; without
one it calls the library function the flow's tasks wrap (no temporary API server, no Prefect
import). Deployments always run the flows.

Served flows run in the folder ``wherewhen serve`` started in, so the flows refuse relative
paths (:func:`require_absolute`); the command line resolves them first (:func:`absolute_paths`).
"""

from __future__ import annotations

import importlib
import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Stage", "STAGES", "checked", "configured_api_url", "run_stage", "absolute_paths", "require_absolute", "flow_config",
           "quiet_prefect_console"]

M = TypeVar("M", bound=BaseModel)

@dataclass(frozen=True)
class Stage:
    """One stage: its flow, the library function its tasks wrap, and its input checks
    (:mod:`flows.inputs`: ``before(config)`` raises or returns warnings, ``after(config, result)``
    returns notes), each as ``module:attribute``."""

    flow: str
    library: str
    before: str | None = None
    after: str | None = None


STAGES: dict[str, Stage] = {
    "build-dataset": Stage("flows.build_dataset:build_dataset_flow", "pipelines.build:build_dataset",
                           after="flows.inputs:after_build"),
    "extract-features": Stage("flows.extract_features:extract_features_flow", "features.extract:extract_features"),
    "train-head": Stage("flows.train_head:train_head_flow", "stan_head.train:train_head",
                        before="flows.inputs:before_train"),
    "evaluate": Stage("flows.evaluate:evaluate_flow", "stan_head.evaluation.evaluate:evaluate_run",
                      before="flows.inputs:before_evaluate"),
    "explain": Stage("flows.explain:explain_flow", "stan_head.explain:explain_video",
                     before="flows.inputs:before_explain"),
}


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def configured_api_url() -> str | None:
    """The Prefect API the user configured: ``PREFECT_API_URL``, else the active profile's; None without one.

    Read without importing Prefect (an import costs about a second): the environment, then
    ``PREFECT_PROFILES_PATH`` (default ``$PREFECT_HOME/profiles.toml``, ``~/.prefect/``) and the
    profile ``PREFECT_PROFILE`` or the file's ``active`` names.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    return (profiles.get("profiles", {}).get(active, {}) or {}).get("PREFECT_API_URL") or None


class _NotOnConsole(logging.Filter):
    """Drops the flow/task engines' failure records (the command line prints the error once itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def quiet_prefect_console() -> None:
    """Keep Prefect's console from repeating a failure the command line reports (the API still gets it)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(_NotOnConsole())


def checked(stage: str, config: BaseModel, run: Any, log: Any) -> Any:
    """``run(config)`` between the stage's ``before`` and ``after`` checks; their warnings go to ``log``."""
    entry = STAGES[stage]
    for line in _load(entry.before)(config) if entry.before else []:
        log.warning(line)
    out = getattr(config, "out", None)
    fresh = isinstance(out, Path) and not out.exists()
    try:
        result = run(config)
    except Exception:
        if fresh and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused input leaves nothing behind (an empty folder made before the refusal)
        raise
    for line in _load(entry.after)(config, result) if entry.after else []:
        log.warning(line)
    return result


def run_stage(stage: str, config: BaseModel, tracked: bool | None = None) -> Any:
    """Run ``stage`` on ``config``: its flow when ``tracked`` (default: a Prefect API is configured),
    otherwise the library function in this process between the stage's checks (the flow runs the
    same checks itself). Returns what they return (the same model)."""
    entry = STAGES[stage]
    if tracked is None:
        tracked = configured_api_url() is not None
    if not tracked:
        return checked(stage, config, _load(entry.library), logging.getLogger("wherewhen"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.flow_params import flow_parameters

    flow = _load(entry.flow)
    quiet_prefect_console()
    return flow(**flow_parameters(config))


def _relative_paths(model: BaseModel, prefix: str = "config.") -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            found.append((prefix + name, value))
        elif isinstance(value, BaseModel):
            found.extend(_relative_paths(value, f"{prefix}{name}."))
    return found


def absolute_paths(config: M, base: Path | None = None) -> M:
    """``config`` with every Path field (nested models included) made absolute against ``base`` (default: cwd)."""
    base = Path.cwd() if base is None else base
    updates: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (base / value).resolve()
        elif isinstance(value, BaseModel):
            fixed = absolute_paths(value, base)
            if fixed is not value:
                updates[name] = fixed
    return config.model_copy(update=updates) if updates else config


def require_absolute(config: BaseModel) -> None:
    """Refuse relative paths in a flow's parameters (a served flow would resolve them in the server's folder).

    Raises ValueError naming the parameter.
    """
    relative = _relative_paths(config)
    if relative:
        named = ", ".join(f"{dotted}={str(value)!r}" for dotted, value in relative)
        raise ValueError(f"{named}: relative path(s) in the flow parameters, which would resolve against the folder "
                         f"`wherewhen serve` runs in; give absolute paths")


def flow_config(model: type[M], value: M | dict[str, Any]) -> M:
    """A flow's ``config`` parameter as ``model``: validated (one-line errors naming ``config.<field>``)
    and with absolute paths only. The flows take their parameter unvalidated from Prefect
    (``validate_parameters=False``) so that a deployment run fails with this line, not pydantic's text.

    Raises ValueError.
    """
    from pydantic import ValidationError

    from flows.errors import validation_text

    try:
        config = value if isinstance(value, model) else model.model_validate(value)
    except ValidationError as exc:
        raise ValueError(validation_text(exc, "fix the run's parameters", style="parameter")) from None
    require_absolute(config)
    return config
