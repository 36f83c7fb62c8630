"""End to end through Prefect: a real server, ``wherewhen serve``, and
``prefect deployment run extract-features/wherewhen`` through the real Prefect CLI."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from flowtest_support import BIN, dataset_dir_of, stop_process, store_fingerprint

pytestmark = pytest.mark.slow


def _deployment_run(server, params: dict[str, str]) -> str:
    """``prefect deployment run extract-features/wherewhen --param k=v ...``; returns the flow-run id."""
    args = [str(BIN / "prefect"), "deployment", "run", "extract-features/wherewhen"]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    proc = subprocess.run(args, env=server.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
    assert match, proc.stdout
    return match.group(1)


def test_serve_and_run_extract_features_deployment(prefect_server, tiny_dataset, tmp_path: Path) -> None:
    dataset_dir = dataset_dir_of(tiny_dataset)
    out_root = tmp_path / "features"
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as fh:
        serve = subprocess.Popen([str(BIN / "wherewhen"), "serve"], env=prefect_server.env, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        names = ["build-dataset", "extract-features", "train-head", "evaluate", "explain", "demo"]
        while not all(prefect_server.get(f"/deployments/name/{n}/wherewhen").status_code == 200 for n in names):
            assert serve.poll() is None, serve_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "deployments not registered:\n" + serve_log.read_text()[-3000:]
            time.sleep(1)

        params = {"dataset_dir": str(dataset_dir), "out_root": str(out_root), "workers": "1", "shard_size": "2"}
        first_id = _deployment_run(prefect_server, params)
        first = prefect_server.wait_flow_run(first_id, timeout=240)
        assert first["state_type"] == "COMPLETED", serve_log.read_text()[-5000:]

        stores = [p.parent for p in out_root.rglob("store.json")]
        assert len(stores) == 1
        store = stores[0]
        from features.store import FeatureStore
        from pipelines.manifest import load_dataset

        fs = FeatureStore.open(store)
        assert sorted(fs.index["clip_id"]) == sorted(load_dataset(dataset_dir).clips["clip_id"])
        assert len(list(store.glob("shard-*"))) == -(-len(fs.index) // 2)
        before = store_fingerprint(store)
        mtimes = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
        first_artifacts = " ".join(str(a.get("description")) for a in prefect_server.artifacts(first_id))
        assert "extracted" in first_artifacts

        second_id = _deployment_run(prefect_server, params)
        second = prefect_server.wait_flow_run(second_id, timeout=180)
        assert second["state_type"] == "COMPLETED", serve_log.read_text()[-5000:]
        deadline = time.monotonic() + 60  # logs are shipped in batches, possibly after the state change
        while not any("no-op" in m for m in prefect_server.logs(second_id)):
            assert time.monotonic() < deadline, prefect_server.logs(second_id)
            time.sleep(1)
        artifacts = prefect_server.artifacts(second_id)
        assert any("no-op" in str(a.get("description")) + str(a.get("data")) for a in artifacts)
        assert store_fingerprint(store) == before
        assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == mtimes  # nothing rewritten
    finally:
        stop_process(serve)
