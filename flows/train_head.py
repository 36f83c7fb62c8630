"""The ``train-head`` flow: feature store → trained head (STAN or a baseline) in a run folder.

Tasks: ``train-head`` (``stan_head.train.train_head``; cached on inputs + task source + the
store's card; the library resumes from the run folder's checkpoint) → ``publish-train-artifacts``
(metrics table).
"""

from __future__ import annotations

from pathlib import Path
from prefect import get_run_logger, task

from features.store import CARD_FILE
from flows.artifacts import artifact_key, publish_table
from flows.caching import cached_unless_missing, inputs_source_and_files
from flows.flow_params import config_flow
from flows.stage import checked
from stan_head.checkpoint import run_files
from stan_head.train import TrainConfig, TrainSummary, train_head


def _store_card(inputs: dict) -> list[Path]:
    return [Path(inputs["config"].store) / CARD_FILE]


@task(name="train-head", cache_policy=inputs_source_and_files(_store_card))
def train_task(config: TrainConfig) -> TrainSummary:
    """Train the head; returns the library's small summary (run folder, accuracies).

    Cached on the config, this code and the store's card (training is seeded and deterministic
    on CPU); recomputed when the run folder's files are gone. Not retried: a failure here is a
    bug or a bad config, and re-running the flow resumes from the run folder's checkpoint.
    """
    summary = train_head(config)
    get_run_logger().info(summary.summary_line())
    return summary


@task(name="publish-train-artifacts")
def publish_train_artifacts(summary: TrainSummary) -> None:
    """The summary's scalar metrics as a table artifact."""
    data = summary.model_dump(mode="json")
    row = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    publish_table(artifact_key("train-head", summary.run_dir), [row], f"train-head: {summary.run_dir}")


@config_flow(TrainConfig, name="train-head")
def train_head_flow(config: TrainConfig) -> TrainSummary:
    """Train ``config.model`` on the feature store ``config.store``; write the run folder ``config.out``."""
    summary = checked("train-head", config, cached_unless_missing(train_task, run_files(config.out)), get_run_logger())
    publish_train_artifacts(summary)
    return summary
