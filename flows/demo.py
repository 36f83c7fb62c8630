"""The ``demo`` flow: the whole product on the embedded synthetic dataset, in one run.

build-dataset (synthetic) → extract-features → train-head (STAN) → evaluate, each as a subflow
(the same flows the command line and the deployments run), then a ``demo-…`` Markdown artifact
that says where everything is. ``make demo`` runs it through ``wherewhen demo --out out/demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from flows._params import build_config
from flows.artifacts import artifact_key, publish_markdown
from flows.build_dataset import build_dataset_flow
from flows.evaluate import evaluate_flow
from flows.extract_features import extract_features_flow
from flows.train_head import train_head_flow
from pipelines.build import BuildConfig
from pipelines.sources.synthetic import SyntheticSource


class DemoResult(BaseModel):
    """Where the demo put its outputs (paths only) and the headline numbers."""

    model_config = ConfigDict(frozen=True)
    dataset_dir: Path
    store_dir: Path
    run_dir: Path
    report_dir: Path
    report_files: list[Path]


def demo_paths(out: Path) -> dict[str, Path]:
    """The fixed layout under ``out``: dataset/, features/, run-stan/, report/."""
    return {"dataset": out / "dataset", "features": out / "features", "run": out / "run-stan", "report": out / "report"}


@flow(name="demo", log_prints=False)
def demo_flow(
    out: str = "out/demo",
    clips: Optional[int] = None,
    seed: int = 0,
    workers: Optional[int] = None,
    epochs: Optional[int] = None,
    device: Optional[Literal["auto", "cpu", "cuda"]] = None,
    explainers: Optional[list[str]] = None,
) -> DemoResult:
    """Build the synthetic dataset, extract its features, train STAN and evaluate it under ``out``.

    ``explainers``: what the evaluation scores (default: the library's list, STEP included).
    """
    log = get_run_logger()
    paths = demo_paths(Path(out).resolve())
    source = build_config(SyntheticSource, clips=clips, seed=seed)
    build_dataset_flow(BuildConfig(source=source, out=paths["dataset"]))
    store = extract_features_flow(
        dataset_dir=str(paths["dataset"]), out_root=str(paths["features"]), workers=workers, device=device
    )
    train_head_flow(store=str(store.store_dir), out=str(paths["run"]), model="stan", device=device, seed=seed, epochs=epochs)
    evaluation = evaluate_flow(run=str(paths["run"]), store=str(store.store_dir), out=str(paths["report"]), device=device,
                               explainers=explainers)
    report_files = sorted(p for p in paths["report"].rglob("*") if p.suffix in {".json", ".md", ".html"})
    result = DemoResult(
        dataset_dir=paths["dataset"], store_dir=Path(store.store_dir), run_dir=paths["run"],
        report_dir=paths["report"], report_files=report_files,
    )
    lines = [f"- {name}: `{value}`" for name, value in result.model_dump(mode="json").items()]
    publish_markdown(artifact_key("demo", out), "# wherewhen demo\n\n" + "\n".join(lines) + "\n", "where the demo's outputs are")
    log.info("demo finished: report in %s, store in %s (%s)", result.report_dir, result.store_dir, evaluation)
    return result
