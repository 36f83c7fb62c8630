"""Prefect as an operator expects it (issue 16.6), against the session's real Prefect server with a real
``wherewhen serve``: parameters named like the CLI options and described, a value outside a field's
range refused when the run is submitted, relative paths and invalid values failing the run with one
line (no traceback in its logs), and ``serve`` stopping cleanly on SIGTERM and on SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowtest_support import BIN, stop_process

pytestmark = pytest.mark.slow


@dataclass
class Served:
    proc: subprocess.Popen
    log: Path


def _serve(server, log: Path) -> Served:
    """``wherewhen serve`` in its own session; returns once it says it is serving."""
    with log.open("wb") as fh:
        proc = subprocess.Popen([str(BIN / "wherewhen"), "serve"], env=server.env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 180
    while "stop with Ctrl-C or SIGTERM" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "serve did not start:\n" + log.read_text()[-3000:]
        time.sleep(0.5)
    return Served(proc, log)


def _stop_with(served: Served, signum: int) -> str:
    """Send ``signum``; the process must exit 0 on its own. Returns its output."""
    served.proc.send_signal(signum)
    try:
        code = served.proc.wait(timeout=60)
    finally:
        stop_process(served.proc)
    text = served.log.read_text()
    assert code == 0, text[-3000:]
    return text


def _submit(server, deployment: str, params: dict[str, str]) -> subprocess.CompletedProcess:
    args = [str(BIN / "prefect"), "deployment", "run", deployment]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    return subprocess.run(args, env=server.env, capture_output=True, text=True, timeout=120)


def _run_id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
    assert match, proc.stdout
    return match.group(1)


def _failed_with_one_line(server, run_id: str) -> str:
    """The run failed; its state message is one line; no log record of it carries a traceback."""
    run = server.wait_flow_run(run_id, timeout=180)
    assert run["state_type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "\n" not in message and "Traceback" not in message
    logs = server.logs(run_id)
    assert not any("Traceback" in m for m in logs), logs
    assert not any("exited with unexpected exception" in m for m in logs), logs
    return message


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory: pytest.TempPathFactory):
    s = _serve(prefect_server, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield s
    finally:
        stop_process(s.proc)


def test_parameters_are_named_and_described_like_the_options(prefect_server, served) -> None:
    r = prefect_server.get("/deployments/name/extract-features/wherewhen")
    r.raise_for_status()
    schema = r.json()["parameter_openapi_schema"]["properties"]
    for name in ("dataset_dir", "out_root", "visual", "visual_weights", "audio", "workers", "shard_size", "preset"):
        assert name in schema, sorted(schema)
        assert schema[name].get("description"), (name, schema[name])
    assert "config" not in schema
    explain = prefect_server.get("/deployments/name/explain/wherewhen").json()["parameter_openapi_schema"]["properties"]
    assert {"run", "video", "out", "mp4"} <= set(explain)


def test_value_out_of_range_is_refused_on_submission(prefect_server, served, tiny_dataset: Path, tmp_path: Path) -> None:
    before = prefect_server.post("/flow_runs/count", {}).json()
    proc = _submit(prefect_server, "extract-features/wherewhen",
                   {"dataset_dir": str(tiny_dataset), "out_root": str(tmp_path / "f"), "workers": "-1"})
    assert proc.returncode != 0
    assert "workers" in proc.stdout + proc.stderr
    assert prefect_server.post("/flow_runs/count", {}).json() == before      # no run was created
    assert not (tmp_path / "f").exists()


def test_relative_paths_fail_the_run_with_one_line(prefect_server, served, tmp_path: Path) -> None:
    run_id = _run_id(_submit(prefect_server, "extract-features/wherewhen", {"dataset_dir": "data/synth",
                                                                           "out_root": "features"}))
    message = _failed_with_one_line(prefect_server, run_id)
    assert "dataset_dir='data/synth'" in message and "out_root='features'" in message
    assert "absolute" in message and "config." not in message


def test_invalid_value_fails_the_run_with_one_line(prefect_server, served, tiny_run, tmp_path: Path) -> None:
    run_id = _run_id(_submit(prefect_server, "evaluate/wherewhen", {
        "run": str(tiny_run.run), "store": str(tiny_run.store), "out": str(tmp_path / "report"),
        "explainers": '["attention", "bogus"]'}))
    message = _failed_with_one_line(prefect_server, run_id)
    assert message.startswith("explainers: ") and "bogus" in message and "Value error" not in message
    assert not (tmp_path / "report").exists()


def test_input_refused_inside_a_task_fails_the_run_with_one_line(prefect_server, served, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run_id = _run_id(_submit(prefect_server, "train-head/wherewhen", {"store": str(tmp_path / "empty"),
                                                                     "out": str(tmp_path / "run")}))
    message = _failed_with_one_line(prefect_server, run_id)
    assert message.startswith(f"{tmp_path / 'empty'}: not a feature store")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly(prefect_server, tmp_path: Path, signum: int) -> None:
    text = _stop_with(_serve(prefect_server, tmp_path / "serve.log"), signum)
    assert "never awaited" not in text and "Traceback" not in text and "error:" not in text, text[-3000:]
    assert f"stopped ({signal.Signals(signum).name})" in text
    assert prefect_server.get("/deployments/name/extract-features/wherewhen").json()["paused"] is True
