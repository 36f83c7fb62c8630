"""The ``build-dataset`` flow: a source (synthetic | folder | ave | youtube-csv) → contract 2's
manifest, by ``pipelines.build.build_dataset``.

Tasks: ``build-dataset`` (retried with exponential backoff when the source downloads: ave,
youtube-csv; the library's downloads resume, so a retry continues where the last try stopped)
→ ``publish-dataset-artifacts`` (counts per split and class, failures with their reasons).
A synthetic build is a pure function of its config, so it is cached on inputs + task source
(recomputed when the output's ``dataset.json`` is gone); the other sources read files or URLs
whose content can change under the same config, so they always run (the library is idempotent:
same inputs → byte-identical manifest).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.tasks import exponential_backoff

from flows.artifacts import artifact_key, markdown_table, publish_markdown, publish_table
from flows.caching import cached_unless_missing
from flows.flow_params import config_flow
from flows.stage import checked
from pipelines.build import BuildConfig, BuildSummary, build_dataset
from pipelines.sources.registry import source_entry

@task(name="build-dataset", cache_policy=NO_CACHE)
def build_task(config: BuildConfig) -> BuildSummary:
    """Run the dataset build; returns the library's small summary record."""
    summary = build_dataset(config)
    get_run_logger().info(summary.summary_line())
    return summary


@task(name="publish-dataset-artifacts")
def publish_dataset_artifacts(summary: BuildSummary) -> None:
    """Counts per split and class, and the failures, as Prefect artifacts."""
    key = artifact_key("build-dataset", summary.out)
    data = summary.model_dump(mode="json")
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    publish_table(key, [scalars], summary.summary_line())
    parts = [f"# build-dataset\n\n{summary.summary_line()}\n"]
    for name, value in data.items():
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            parts.append(f"\n## {name}\n\n" + markdown_table([{"name": k, "count": v} for k, v in value.items()]))
    failure_rows = _failure_rows(summary)
    parts.append("\n## failures\n\n" + markdown_table(failure_rows))
    publish_markdown(f"{key}-details", "".join(parts), "counts and failures")


def _failure_rows(summary: BuildSummary) -> list[dict]:
    """Failure rows from the dataset folder's ``failures.parquet`` (empty when none)."""
    from pipelines.manifest import load_dataset

    try:
        failures = load_dataset(summary.out).failures
    except Exception as exc:  # the artifact must not fail the flow
        return [{"note": f"could not read failures: {exc}"}]
    if failures is None or len(failures) == 0:
        return []
    cols = [c for c in ("relpath", "stage", "error", "message") if c in failures.columns]
    return failures[cols].astype(str).to_dict("records")


@config_flow(BuildConfig, name="build-dataset")
def build_dataset_flow(config: BuildConfig) -> BuildSummary:
    """Build a dataset manifest from ``config.source`` into ``config.out``."""
    entry = source_entry(config.source)
    build = build_task
    if entry.downloads:
        build = build_task.with_options(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))
    elif entry.encodes_media:  # a pure function of its config
        build = cached_unless_missing(
            build_task.with_options(cache_policy=INPUTS + TASK_SOURCE), [Path(config.out) / "dataset.json"]
        )
    summary = checked("build-dataset", config, build, get_run_logger())
    publish_dataset_artifacts(summary)
    return summary
