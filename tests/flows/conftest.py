"""Fixtures for the flow and CLI tests: a real Prefect server on a free loopback port
(helpers in ``flowtest_support``)."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from flowtest_support import BIN, PrefectServer, client_env, free_port, stop_process


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """Start ``prefect server start`` on a free port; wait for ``/api/health``; stop it at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = client_env(api_url, home)
    log = home / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui",
             "--analytics-off"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(api_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield PrefectServer(api_url=api_url, home=home, env=env, log=log)
    finally:
        stop_process(proc)




@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic dataset (6 clips of 3 s at 64², 3 classes), built once per session by the
    real generator and build (``pipelines.build.build_dataset``); small so that the end-to-end
    extraction tests stay within their CI budget on 2 cores."""
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.synthetic import SyntheticSource

    out = tmp_path_factory.mktemp("tiny-synthetic") / "dataset"
    source = SyntheticSource(clips=6, classes=3, seed=0, duration_s=3, size=64, min_event_s=1)
    summary = build_dataset(BuildConfig(source=source, out=out, workers=1))
    assert summary.clips == 6 and summary.failures == 0, summary.summary_line()
    return out
