"""Running one stage: as its Prefect flow (run tracking) or as the same library call in this process.

A stage's Prefect flow is only worth its cost when someone records the runs: with a Prefect API
configured (``PREFECT_API_URL`` in the environment or the active Prefect profile) the command
line runs the flow against it, so the run, its tasks, logs and artifacts show in the UI; without
one it calls the library function the flow's tasks wrap (no temporary API server, no Prefect
import). Deployments always run the flows.

Served flows run in the folder ``wherewhen serve`` started in, so the flows refuse relative
paths (:func:`relative_paths` names them; :func:`flows.flow_params.flow_config` refuses them); the
command line resolves them first (:func:`absolute_paths`).
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

__all__ = ["Stage", "STAGES", "checked", "configured_api_url", "run_stage", "absolute_paths", "relative_paths"]

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
    "extract-features": Stage("flows.extract_features:extract_features_flow", "features.extract:extract_features",
                              before="flows.inputs:before_extract"),
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
    from flows.prefect_logs import quiet_console

    flow = _load(entry.flow)
    quiet_console()
    return flow(**flow_parameters(config))


def relative_paths(model: BaseModel, _loc: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Path]]:
    """Every relative Path field of ``model`` (nested models included): (its location, its value)."""
    found: list[tuple[tuple[str, ...], Path]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            found.append(((*_loc, name), value))
        elif isinstance(value, BaseModel):
            found.extend(relative_paths(value, (*_loc, name)))
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
