"""Deployments of every flow, served from one process by ``wherewhen serve``.

Each flow gets one deployment named ``DEPLOYMENT`` (``wherewhen``), so the names are short and
stable: ``build-dataset/wherewhen``, ``extract-features/wherewhen``, ``train-head/wherewhen``,
``evaluate/wherewhen``, ``explain/wherewhen``, ``demo/wherewhen``. Entry points are module paths
(``flows.extract_features:extract_features_flow``), so the served runs do not depend on the
folder the server was started from. Runs are triggered with
``prefect deployment run extract-features/wherewhen --param dataset_dir=… --param out_root=…``.
"""

from __future__ import annotations

import logging

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

logger = logging.getLogger(__name__)

DEPLOYMENT = "wherewhen"


def all_flows() -> list:
    """Every flow of the project, in pipeline order."""
    from flows.build_dataset import build_dataset_flow
    from flows.demo import demo_flow
    from flows.evaluate import evaluate_flow
    from flows.explain import explain_flow
    from flows.extract_features import extract_features_flow
    from flows.train_head import train_head_flow

    return [build_dataset_flow, extract_features_flow, train_head_flow, evaluate_flow, explain_flow, demo_flow]


def build_deployments(name: str = DEPLOYMENT, tags: list[str] | None = None) -> list[RunnerDeployment]:
    """One ``RunnerDeployment`` per flow, named ``name``, with module-path entry points."""
    return [
        f.to_deployment(name=name, tags=tags or ["wherewhen"], entrypoint_type=EntrypointType.MODULE_PATH)
        for f in all_flows()
    ]


def serve_all(name: str = DEPLOYMENT, limit: int | None = None) -> None:
    """Register every deployment with the configured Prefect API and serve them until stopped.

    ``limit`` caps concurrent flow runs in this process (None: no cap).
    """
    deployments = build_deployments(name)
    logger.info("serving %s", ", ".join(f"{d.flow_name}/{d.name}" for d in deployments))
    serve(*deployments, limit=limit)
