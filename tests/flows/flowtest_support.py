"""Helpers for the flow and CLI tests: a real Prefect server, subprocess environments, the CLI.

One ``prefect server start`` per test session, with its own PREFECT_HOME (SQLite database,
result storage) in a temp dir; subprocesses get ``PREFECT_API_URL`` pointing at it, so no
command starts its own temporary server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group this test started (``start_new_session``), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class PrefectServer:
    """A running Prefect server: its API URL, home and the environment for client subprocesses."""

    api_url: str
    home: Path
    env: dict[str, str]
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.api_url + path, timeout=30)

    def post(self, path: str, json: dict) -> httpx.Response:
        return httpx.post(self.api_url + path, json=json, timeout=30)

    def flow_run(self, flow_run_id: str) -> dict:
        r = self.get(f"/flow_runs/{flow_run_id}")
        r.raise_for_status()
        return r.json()

    def wait_flow_run(self, flow_run_id: str, timeout: float) -> dict:
        """Poll until the flow run is in a terminal state; returns the run (fails on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(flow_run_id)
            if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return run
            time.sleep(1.0)
        raise AssertionError(f"flow run {flow_run_id} not finished after {timeout} s: {run['state_type']}")

    def logs(self, flow_run_id: str) -> list[str]:
        """Every log message of a flow run (its tasks' included)."""
        r = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        r.raise_for_status()
        return [entry["message"] for entry in r.json()]

    def artifacts(self, flow_run_id: str) -> list[dict]:
        """Every artifact a flow run created."""
        r = self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        r.raise_for_status()
        return r.json()


def client_env(api_url: str, home: Path) -> dict[str, str]:
    """Environment for a Prefect client process talking to ``api_url`` with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``wherewhen`` command; returns the completed process (text output)."""
    return subprocess.run(
        [str(BIN / "wherewhen"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def dataset_dir_of(fixture_value) -> Path:
    """The dataset folder (holding manifest.parquet) of the ``synthetic_dataset`` fixture's value."""
    for attr in ("dataset_dir", "out", "root", "path"):
        value = getattr(fixture_value, attr, None)
        if value is not None and (Path(value) / "manifest.parquet").is_file():
            return Path(value)
    path = Path(fixture_value)
    assert (path / "manifest.parquet").is_file(), f"no manifest.parquet in {path}"
    return path


def store_fingerprint(store: Path) -> dict[str, str]:
    """A store's content as compared between builds: clip_id → (shard, row, feature sha256)."""
    import pandas as pd

    index = pd.read_parquet(store / "index.parquet").sort_values("clip_id")
    return {r.clip_id: f"{r.shard}/{r.row}/{r.sha256}" for r in index.itertuples()}


def local_env(home: Path) -> dict[str, str]:
    """Environment for a command without any Prefect API (no PREFECT_* variables, an empty Prefect home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    return env
