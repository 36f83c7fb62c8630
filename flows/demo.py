"""The ``demo`` flow: the whole product on the embedded synthetic dataset, in one run.

build-dataset (synthetic) → extract-features → train-head (STAN) → evaluate (the fast explainers
unless told otherwise), each as a subflow (the same flows the command line and the deployments
run), then a ``demo-…`` Markdown artifact that says where everything is. ``make demo`` runs it
through ``wherewhen demo --out out/demo``; without a Prefect API the same stages run in-process
(:func:`run_demo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import artifact_key, publish_markdown
from flows.flow_params import config_flow
from flows.stage import run_stage
from stan_head.evaluation.evaluate import FAST_EXPLAINERS

__all__ = ["DemoConfig", "DemoResult", "demo_paths", "run_demo", "demo_flow"]


class DemoConfig(BaseModel):
    """What the demo is given.

    Attributes:
        out: folder for everything (dataset/, features/, run-stan/, report/).
        clips: synthetic clips; None = the generator's default.
        seed: seed of the synthetic dataset and of training.
        workers: extraction shard tasks at once; None = one per core.
        epochs: training epochs; None = the training default.
        device: where the CNN and the head run; None = each stage's default.
        explainers: what the evaluation scores (random and centre are always added).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path
    clips: int | None = Field(None, ge=1)
    seed: int = 0
    workers: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] | None = None
    explainers: tuple[str, ...] = FAST_EXPLAINERS


class DemoResult(BaseModel):
    """Where the demo put its outputs (paths only)."""

    model_config = ConfigDict(frozen=True)
    dataset_dir: Path
    store_dir: Path
    run_dir: Path
    report_dir: Path
    report_files: list[Path]


def demo_paths(out: Path) -> dict[str, Path]:
    """The fixed layout under ``out``: dataset/, features/, run-stan/, report/."""
    return {"dataset": out / "dataset", "features": out / "features", "run": out / "run-stan", "report": out / "report"}


def _given(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def run_demo(config: DemoConfig, tracked: bool) -> DemoResult:
    """The four stages on ``config`` (paths absolute), as subflows when ``tracked``, else in-process."""
    from features.plan import ExtractConfig
    from pipelines.build import BuildConfig
    from pipelines.sources.synthetic import SyntheticSource
    from stan_head.evaluation.evaluate import EvaluateConfig
    from stan_head.train import TrainConfig

    paths = demo_paths(config.out)
    source = SyntheticSource(**_given(clips=config.clips, seed=config.seed))
    run_stage("build-dataset", BuildConfig(source=source, out=paths["dataset"]), tracked)
    store = run_stage("extract-features", ExtractConfig(
        dataset_dir=paths["dataset"], out_root=paths["features"], **_given(workers=config.workers, device=config.device)),
        tracked)
    run_stage("train-head", TrainConfig(store=store.store_dir, out=paths["run"], model="stan", seed=config.seed,
                                        **_given(device=config.device, epochs=config.epochs)), tracked)
    run_stage("evaluate", EvaluateConfig(run=paths["run"], store=store.store_dir, out=paths["report"],
                                         explainers=config.explainers, **_given(device=config.device)), tracked)
    report_files = sorted(p for p in paths["report"].rglob("*") if p.suffix in {".json", ".md", ".html"})
    return DemoResult(dataset_dir=paths["dataset"], store_dir=Path(store.store_dir), run_dir=paths["run"],
                      report_dir=paths["report"], report_files=report_files)


@config_flow(DemoConfig, name="demo")
def demo_flow(config: DemoConfig) -> DemoResult:
    """Build the synthetic dataset, extract its features, train STAN and evaluate it under ``config.out``."""
    result = run_demo(config, tracked=True)
    lines = [f"- {name}: `{value}`" for name, value in result.model_dump(mode="json").items()]
    publish_markdown(artifact_key("demo", config.out), "# wherewhen demo\n\n" + "\n".join(lines) + "\n",
                     "where the demo's outputs are")
    get_run_logger().info("demo finished: report in %s, store in %s", result.report_dir, result.store_dir)
    return result
