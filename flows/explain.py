"""The ``explain`` flow: a trained run + any video file → prediction with its where/when evidence.

Tasks: ``explain-video`` (``stan_head.explain.explain_video``) → ``publish-explanation-artifacts``
(the class and probability; the α overlay grid and the β plot shown and linked).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from flows.artifacts import artifact_key, images_markdown, publish_markdown, publish_table
from flows.flow_params import config_flow
from flows.stage import checked
from stan_head.explain import ExplainConfig, explain_video
from stan_head.explanation import ExplanationResult


@task(name="explain-video")
def explain_task(config: ExplainConfig) -> ExplanationResult:
    """Explain one video; returns the library's small result (class, probability, files)."""
    return explain_video(config)


@task(name="publish-explanation-artifacts")
def publish_explanation_artifacts(result: ExplanationResult, out: str) -> None:
    """The prediction as a table; the PNGs written as inline, linked images."""
    key = artifact_key("explain", out)
    rows = [{"rank": i + 1, "class": s.label, "probability": s.probability} for i, s in enumerate(result.top_k)]
    publish_table(key, rows, result.summary_line())
    images = sorted(Path(p) for p in result.files.values() if Path(p).suffix.lower() == ".png")
    if images:
        publish_markdown(f"{key}-images", images_markdown(f"where and when ({out})", images), "attention overlays")


@config_flow(ExplainConfig, name="explain")
def explain_flow(config: ExplainConfig) -> ExplanationResult:
    """Explain the prediction of the trained ``config.run`` on ``config.video``; write the files to ``config.out``."""
    result = checked("explain", config, explain_task, get_run_logger())
    publish_explanation_artifacts(result, str(config.out))
    return result
