"""A Dask cluster running a duplicate task (issue 15.6 acceptance): each shard is extracted once.

A real LocalCluster of two worker processes on 127.0.0.1; every shard task of a real store
(h264 + AAC clips) is submitted twice, once to each worker, at the same time, as a speculative or
retried duplicate would run. Expected: per shard, one task extracts it and the other returns the
written shard (``skipped``) with the same rows; one file per shard; the finalized store complete.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from features.extract import ExtractConfig, extract_shard, finalize_store, plan_store
from features.store import FeatureStore
from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dask_claims") / "ds"
    build_dataset(BuildConfig(source=SyntheticSource(clips=8, classes=2, duration_s=3, size=64, fps=5, seed=3),
                              out=out, workers=1))
    return out


def test_every_shard_submitted_to_two_dask_workers_is_extracted_once(dataset: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    cfg = ExtractConfig(dataset_dir=dataset, out_root=tmp_path / "stores", segment={"num_segments": 3, "frame_size": 64},
                        shard_size=2, batch_size=3, workers=0)
    plan = plan_store(cfg)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        futures = {(shard, w): client.submit(extract_shard, plan, shard, pure=False, workers=[w], allow_other_workers=False)
                   for shard in range(plan.num_shards) for w in workers}
        results = dict(zip(futures, client.gather(list(futures.values())), strict=True))
    for shard in range(plan.num_shards):
        pair = [results[(shard, w)] for w in workers]
        assert sorted(r.skipped for r in pair) == [False, True], f"shard {shard}: skipped flags {[r.skipped for r in pair]}"
        assert pair[0].rows == pair[1].rows
    assert sum(not r.skipped for r in results.values()) == plan.num_shards == 4
    assert sorted(p.name for p in plan.store_dir.glob("shard-*")) == [f"shard-{i:05d}.h5" for i in range(4)]
    finalize_store(plan, [next(r for (s, _), r in results.items() if s == shard and not r.skipped)
                          for shard in range(plan.num_shards)])
    store = FeatureStore.open(plan.store_dir)
    assert store.card.complete and len(store) == 8
    assert not list(plan.store_dir.glob(".claim-*")) and not list(plan.store_dir.glob(".shard-*"))
