"""Fixtures for the flow and CLI tests: a real Prefect server on a free loopback port (helpers in
``flowtest_support``), a tiny synthetic dataset, and two tiny stores of it with a run trained on one."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class TinyRun:
    """Two stores of ``tiny_dataset`` (other shard sizes, so other store-ids) and a STAN run trained on the first."""

    dataset: Path
    store: Path
    other_store: Path
    run: Path


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Extracted in-process at 64 px and trained for one epoch: real files, seconds to make."""
    from features.extract import ExtractConfig, extract_features
    from stan_head.train import TrainConfig, train_head

    root = tmp_path_factory.mktemp("tiny-run")
    stores = [
        extract_features(ExtractConfig(dataset_dir=tiny_dataset, out_root=root / name, workers=0, shard_size=size,
                                       segment={"num_segments": 3, "frame_size": 64}), progress=False).store_dir
        for name, size in (("features", 32), ("other", 2))
    ]
    run = root / "run"
    train_head(TrainConfig(store=stores[0], out=run, epochs=1, min_steps=0, device="cpu", progress=False))
    return TinyRun(dataset=tiny_dataset, store=Path(stores[0]), other_store=Path(stores[1]), run=run)
