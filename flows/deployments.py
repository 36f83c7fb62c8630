"""Deployments of every flow, served from one process by ``wherewhen serve``.

Each flow gets one deployment named ``DEPLOYMENT`` (``wherewhen``), so the names are short and
stable: ``build-dataset/wherewhen``, ``extract-features/wherewhen``, ``train-head/wherewhen``,
``evaluate/wherewhen``, ``explain/wherewhen``, ``demo/wherewhen``. Entry points are module paths
(``flows.extract_features:extract_features_flow``), so the served runs do not depend on the
folder the server was started from. Runs are triggered with
``prefect deployment run extract-features/wherewhen --param dataset_dir=/abs/… --param out_root=/abs/…``.

:func:`serve_all` stops on SIGINT (Ctrl-C) or SIGTERM the same way: the runner stops polling,
cancels the runs it started, pauses the deployments' schedules and returns. (Prefect's own
``serve`` leaves a coroutine un-awaited on SIGTERM — its handler calls the async ``stop`` from
inside the event loop — and turns Ctrl-C into a KeyboardInterrupt.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Callable

from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner
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


async def _serve_until_signal(runner: Runner, on_ready: Callable[[], None] | None = None) -> str:
    """Run ``runner`` until SIGINT or SIGTERM (or until it stops by itself); returns the signal's name.

    ``on_ready`` is called once the runner polls for runs with these handlers in place.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: int, *_: Any) -> None:
        received.append(signal.Signals(signum).name)
        loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    # Runner.start replaces the SIGTERM handler with self.handle_sigterm (signal.signal, not through the loop): ours
    runner.handle_sigterm = on_signal  # type: ignore[method-assign]
    serving = asyncio.create_task(runner.start())
    waiting = asyncio.create_task(stop.wait())
    try:
        while not (runner.started or serving.done() or stop.is_set()):
            await asyncio.sleep(0.05)
        if on_ready is not None and runner.started:
            on_ready()
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            if runner.started:
                await runner.astop()    # cancels its runs and its loops; start() then pauses the schedules
            else:
                serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    finally:
        waiting.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return received[0] if received else "stopped"


def serve_all(name: str = DEPLOYMENT, limit: int | None = None, on_ready: Callable[[], None] | None = None) -> str:
    """Register every deployment with the configured Prefect API and serve them until SIGINT or SIGTERM.

    ``limit`` caps concurrent flow runs in this process (None: no cap); ``on_ready`` is called once
    the deployments are registered and polled for. Returns the name of the signal that stopped it,
    after the runner has paused the deployments.
    """
    deployments = build_deployments(name)
    runner = Runner(pause_on_shutdown=True, limit=limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    logger.info("serving %s", ", ".join(f"{d.flow_name}/{d.name}" for d in deployments))
    return asyncio.run(_serve_until_signal(runner, on_ready))
