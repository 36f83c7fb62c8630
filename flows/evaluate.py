"""The ``evaluate`` flow: a trained run + its store → the explanation-evaluation report.

Tasks: ``evaluate-run`` (``stan_head.evaluation.evaluate.evaluate_run``) →
``publish-evaluation-artifacts`` (headline metrics table; the report's overlay images shown
and linked in a Markdown artifact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from prefect import flow, get_run_logger, task

from flows._params import build_config
from flows.artifacts import artifact_key, images_markdown, publish_markdown, publish_table
from stan_head.evaluation.evaluate import EvaluateConfig, EvaluationSummary, evaluate_run


@task(name="evaluate-run", retries=1, retry_delay_seconds=5)
def evaluate_task(config: EvaluateConfig) -> EvaluationSummary:
    """Score the run's explanations; returns the library's summary (report paths, headline metrics)."""
    summary = evaluate_run(config)
    get_run_logger().info("evaluation report in %s", config.out)
    return summary


@task(name="publish-evaluation-artifacts")
def publish_evaluation_artifacts(summary: EvaluationSummary, out: str) -> None:
    """Headline metrics as a table; every PNG the report wrote as an inline, linked image."""
    key = artifact_key("evaluate", out)
    data = summary.model_dump(mode="json")
    metrics = data.get("metrics") or data.get("headline") or {}
    rows = [{"metric": k, "value": v} for k, v in metrics.items()] if isinstance(metrics, dict) else []
    rows += [{"metric": k, "value": v} for k, v in data.items() if not isinstance(v, (dict, list))]
    publish_table(key, rows, f"evaluate: {out}")
    images = sorted(Path(out).rglob("*.png"))
    if images:
        publish_markdown(f"{key}-images", images_markdown(f"evaluation figures ({out})", images), "figures and overlays")


@flow(name="evaluate", log_prints=False)
def evaluate_flow(
    run: str,
    store: str,
    out: str,
    split: Optional[str] = None,
    max_clips: Optional[int] = None,
    pixel_space: Optional[bool] = None,
    device: Optional[Literal["auto", "cpu", "cuda"]] = None,
) -> EvaluationSummary:
    """Evaluate the explanations of the trained ``run`` on ``store``; write the report to ``out``."""
    config = build_config(
        EvaluateConfig, run=run, store=store, out=out, split=split, max_clips=max_clips, pixel_space=pixel_space, device=device
    )
    summary = evaluate_task(config)
    publish_evaluation_artifacts(summary, out)
    return summary
