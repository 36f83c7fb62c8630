"""Shard claims (issue 15.6): extractions started together on one store extract each shard once.

Real processes and threads on real encoded video; the count of extracted shards over both
extractions is the number of shards (without the claims each extraction extracts nearly all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from features.extract import ExtractConfig, extract_features, extract_shard, plan_store
from features.store import FeatureStore
from features.store.card import claim_path
from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[2]

_RUN = """
import json, sys, time
from pathlib import Path
from features.extract import ExtractConfig, extract_features
cfg = ExtractConfig.model_validate_json(sys.argv[1])
gate = Path(sys.argv[2])
Path(sys.argv[3]).write_text("ready")
while not gate.exists():
    time.sleep(0.01)
summary = extract_features(cfg, progress=False)
print(json.dumps({"shards": summary.shards, "skipped_shards": summary.shards_skipped, "noop": summary.skipped}))
"""


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """8 real h264+AAC clips of 3 s at 64 px."""
    out = tmp_path_factory.mktemp("claims") / "ds"
    build_dataset(BuildConfig(source=SyntheticSource(clips=8, classes=2, duration_s=3, size=64, fps=5, seed=5),
                              out=out, workers=1))
    return out


def _cfg(dataset: Path, out: Path) -> ExtractConfig:
    return ExtractConfig(dataset_dir=dataset, out_root=out, segment={"num_segments": 3, "frame_size": 64},
                         shard_size=1, batch_size=3, workers=0)


@pytest.mark.slow
def test_two_extractions_started_together_extract_each_shard_once(small_dataset, tmp_path):
    cfg = _cfg(small_dataset, tmp_path / "stores")
    plan = plan_store(cfg)
    gate = tmp_path / "go"
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), cfg.model_dump_json(), str(gate), str(r)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(r.exists() for r in ready), "the two extraction processes did not start"
    gate.write_text("go")   # both have imported the library: they plan and extract at the same time
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert not any(o["noop"] for o in outs), "one extraction found the store complete: they did not overlap"
    extracted = [o["shards"] - o["skipped_shards"] for o in outs]
    assert sum(extracted) == plan.num_shards == 8, f"shards extracted by each run: {extracted}"
    store = FeatureStore.open(plan.store_dir)
    assert store.card.complete and len(store) == 8
    assert not list(plan.store_dir.glob(".claim-*"))   # the claims go once the store is complete


def test_a_duplicate_task_in_another_thread_waits_and_returns_the_written_shard(small_dataset, tmp_path):
    plan = plan_store(_cfg(small_dataset, tmp_path / "stores"))
    results = [None, None]

    def run(i: int) -> None:
        results[i] = extract_shard(plan, 0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(r.skipped for r in results) == [False, True]   # one extracted it, the other read it back
    assert results[0].rows == results[1].rows
    assert claim_path(plan.store_dir, 0).exists()   # kept until the store is complete
