"""The ``train-head`` flow: feature store → trained head (STAN or a baseline) in a run folder.

Tasks: ``train-head`` (``stan_head.train.train_head``; the library resumes from the run
folder's checkpoint, so a retry continues) → ``publish-train-artifacts`` (metrics table).
"""

from __future__ import annotations

from typing import Literal, Optional

from prefect import flow, get_run_logger, task

from flows._params import build_config
from flows.artifacts import artifact_key, publish_table
from stan_head.train import TrainConfig, TrainSummary, train_head


@task(name="train-head", retries=1, retry_delay_seconds=5)
def train_task(config: TrainConfig) -> TrainSummary:
    """Train the head; returns the library's small summary (run folder, accuracies)."""
    summary = train_head(config)
    get_run_logger().info("trained %s → %s", config.model, summary.run_dir)
    return summary


@task(name="publish-train-artifacts")
def publish_train_artifacts(summary: TrainSummary) -> None:
    """The summary's scalar metrics as a table artifact."""
    data = summary.model_dump(mode="json")
    row = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    publish_table(artifact_key("train-head", summary.run_dir), [row], f"train-head: {summary.run_dir}")


@flow(name="train-head", log_prints=False)
def train_head_flow(
    store: str,
    out: str,
    model: Literal["stan", "late_fusion", "ave_att"] = "stan",
    device: Optional[Literal["auto", "cpu", "cuda"]] = None,
    seed: Optional[int] = None,
    epochs: Optional[int] = None,
) -> TrainSummary:
    """Train ``model`` on the feature store ``store``; write the run folder ``out``."""
    config = build_config(TrainConfig, store=store, out=out, model=model, device=device, seed=seed, epochs=epochs)
    summary = train_task(config)
    publish_train_artifacts(summary)
    return summary
