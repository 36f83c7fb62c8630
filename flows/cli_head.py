"""``wherewhen train``, ``explain`` and ``evaluate``: options from TrainConfig, ExplainConfig and
EvaluateConfig (their modules import torch: imported when a command runs, not for ``--help``)."""

from __future__ import annotations

from typing import Any, Callable

import click

from flows.cli_common import CONTEXT, config_of, stage
from flows.cli_options import load_model, model_params
from flows.inputs import require_video, store_folder

__all__ = ["train", "explain", "evaluate"]

TRAIN_CONFIG = "stan_head.train:TrainConfig"
EXPLAIN_CONFIG = "stan_head.explain:ExplainConfig"
EVALUATE_CONFIG = "stan_head.evaluation.evaluate:EvaluateConfig"


def _train(**values: Any) -> None:
    """Train a head on the feature STORE (a store folder, or features/<dataset> holding one store).

    Never touches video. The run folder --out gets the checkpoint, run.json and metrics.jsonl; a
    run folder with the same configuration resumes.
    """
    config = config_of(load_model(TRAIN_CONFIG), {**values, "store": store_folder(values["store"])})
    click.echo(stage("train-head", config).summary_line())


def _explain(as_json: bool, **values: Any) -> None:
    """Explain the trained RUN's prediction on any VIDEO file: where (α) and when (β)."""
    require_video(values["video"])   # before the model's modules (torch) are imported: a text file fails at once
    result = stage("explain", config_of(load_model(EXPLAIN_CONFIG), values))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    click.echo(result.summary_line())
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")


def _evaluate(**values: Any) -> None:
    """Evaluate the explanations of a trained RUN on --store: pointing game, deletion/insertion, reliability.

    --store is a store folder, or features/<dataset> holding one store. STEP (minutes per clip on a
    CPU) runs only when named: --explainers attention,attention_v,gradcam,step.
    """
    values = {**values, "store": store_folder(values["store"]) if values.get("store") else None}
    summary = stage("evaluate", config_of(load_model(EVALUATE_CONFIG), values))
    click.echo(f"report: {summary.report_md}  ({summary.report_json})")
    click.echo(f"clips={summary.clips}  accuracy={summary.accuracy}  "
               + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.headline.items()))


def _commands() -> dict[str, Callable[[], click.Command]]:
    return {
        "train": lambda: click.Command("train", callback=_train, help=_train.__doc__, context_settings=CONTEXT,
                                       params=model_params(TRAIN_CONFIG, positional=("store",))),
        "explain": lambda: click.Command(
            "explain", callback=_explain, help=_explain.__doc__, context_settings=CONTEXT,
            params=[*model_params(EXPLAIN_CONFIG, positional=("run", "video")),
                    click.Option(["--json", "as_json"], is_flag=True, help="Print the result as JSON.")]),
        "evaluate": lambda: click.Command("evaluate", callback=_evaluate, help=_evaluate.__doc__,
                                          context_settings=CONTEXT, params=model_params(EVALUATE_CONFIG, positional=("run",))),
    }


def __getattr__(name: str) -> click.Command:
    """``train``, ``explain`` and ``evaluate``, each built when asked for (one command's model never
    stands in the way of another's help)."""
    builders = _commands()
    if name in builders:
        return builders[name]()
    raise AttributeError(name)
