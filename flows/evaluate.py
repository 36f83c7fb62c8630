"""The ``evaluate`` flow: a trained run + its store → the explanation-evaluation report.

Tasks: ``evaluate-run`` (``stan_head.evaluation.evaluate.evaluate_run``) →
``publish-evaluation-artifacts`` (headline metrics table; the report's overlay images shown
and linked in a Markdown artifact).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from features.store import CARD_FILE
from flows.artifacts import artifact_key, images_markdown, publish_markdown, publish_table
from flows.caching import cached_unless_missing, inputs_source_and_files
from flows.flow_params import config_flow
from flows.stage import checked
from stan_head.checkpoint import run_files
from stan_head.evaluation.evaluate import EvaluateConfig, EvaluationSummary, evaluate_run
from stan_head.evaluation.report import REPORT_JSON


def _evaluated_files(inputs: dict) -> list[Path]:
    cfg = inputs["config"]
    return [*run_files(cfg.run), Path(cfg.store) / CARD_FILE]


@task(name="evaluate-run", cache_policy=inputs_source_and_files(_evaluated_files))
def evaluate_task(config: EvaluateConfig) -> EvaluationSummary:
    """Score the run's explanations; returns the library's summary (report paths, headline metrics).

    Cached on the config, this code, the run's weights and card and the store's card (the
    evaluation is seeded); recomputed when the report is gone.
    """
    summary = evaluate_run(config)
    get_run_logger().info("evaluation report in %s", config.out)
    return summary


@task(name="publish-evaluation-artifacts")
def publish_evaluation_artifacts(summary: EvaluationSummary) -> None:
    """Headline metrics and metric reliability as a table; the report's figures (pointing-game
    bars, deletion/insertion curves, attention overlays) shown inline and linked."""
    key = artifact_key("evaluate", summary.out)
    rows = [{"metric": "accuracy", "value": summary.accuracy}, {"metric": "clips", "value": summary.clips}]
    rows += [{"metric": k, "value": v} for k, v in summary.headline.items()]
    rows += [{"metric": f"reliability α ({k})", "value": v} for k, v in summary.reliability.items()]
    publish_table(key, rows, f"evaluate ({summary.split}): report {summary.report_md}")
    figures = [Path(f) for f in summary.figures if Path(f).suffix.lower() in {".png", ".jpg", ".svg"}]
    if figures:
        publish_markdown(f"{key}-figures", images_markdown(f"evaluation figures ({summary.out})", figures),
                         "pointing game, deletion/insertion curves and attention overlays")


@config_flow(EvaluateConfig, name="evaluate")
def evaluate_flow(config: EvaluateConfig) -> EvaluationSummary:
    """Evaluate the explanations of the trained ``config.run`` on ``config.store``; write the report to ``config.out``."""
    summary = checked("evaluate", config, cached_unless_missing(evaluate_task, [Path(config.out) / REPORT_JSON]), get_run_logger())
    publish_evaluation_artifacts(summary)
    return summary
