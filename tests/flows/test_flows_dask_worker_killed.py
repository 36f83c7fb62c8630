"""The extraction flow on a real ``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1,
with one worker killed (SIGKILL) midway: the flow completes and the store equals an undisturbed
build on the same cluster (index + per-clip feature sha256).

The reference runs on the same cluster because the stored float16 values depend on torch's
intra-op thread count (which the worker's core share sets), not on which worker ran a shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowtest_support import BIN, stop_process, store_fingerprint

pytestmark = pytest.mark.slow


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as fh:
        return subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(p.read_text()[-2000:] for p in logs))
        time.sleep(0.2)


def test_flow_survives_a_killed_dask_worker(prefect_server, tiny_dataset: Path, tmp_path: Path) -> None:
    env = dict(prefect_server.env, DASK_DISTRIBUTED__WORKER__DAEMON="False", OMP_NUM_THREADS="1")
    sched_file = tmp_path / "scheduler.json"
    logs = [tmp_path / "scheduler.log", tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(sched_file)], env, logs[0]))
        _wait_for(sched_file.is_file, 60, "the scheduler file", logs)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(_start([str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard", "--name", f"w{i}"], env, logs[1 + i]))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)

        root = tmp_path / "features"
        run_log = tmp_path / "flow.log"
        run = _start([str(BIN / "wherewhen"), "extract-features", str(tiny_dataset), "--out", str(root),
                      "--dask-address", address, "--shard-size", "2"], env, run_log)
        logs.append(run_log)
        done = lambda: list(root.rglob("shard-*.h5"))  # noqa: E731 - complete shards only (temp names start with '.')
        _wait_for(lambda: bool(done()) or run.poll() is not None, 300, "the first complete shard", logs)
        assert run.poll() is None, "flow ended before a worker could be killed:\n" + run_log.read_text()[-3000:]
        shards_at_kill = len(done())
        os.killpg(procs[1].pid, signal.SIGKILL)  # worker w0 and its decoder child
        procs[1].wait(timeout=30)
        assert not list(root.rglob("index.parquet")), "the store was finished before the kill"
        assert run.wait(timeout=300) == 0, run_log.read_text()[-5000:]
        assert shards_at_kill < 3

        # the undisturbed build: the library's own Dask path on the same cluster (the surviving worker)
        from features.extract import ExtractConfig, extract_features

        cfg = ExtractConfig(dataset_dir=tiny_dataset, out_root=tmp_path / "reference", dask_address=address, shard_size=2)
        with Client(address, timeout=60) as client:
            reference = extract_features(cfg, client=client, progress=False)
        (store,) = [p.parent for p in root.rglob("store.json")]
        assert store == root / reference.store_dir.relative_to(tmp_path / "reference")  # same store-id
        got, want = store_fingerprint(store), store_fingerprint(reference.store_dir)
        assert len(got) == 6
        assert got == want
    finally:
        for proc in reversed(procs):
            stop_process(proc)
