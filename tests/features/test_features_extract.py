"""Extraction end to end on real encoded synthetic video: store contents, no-op re-run, formats,
worker-count invariance, SIGKILL + resume, a real Dask scheduler with two workers, bad clips."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from features.clip import ClipFeaturizer
from features.compute_kind import ComputeKindMismatch
from features.extract import ExtractConfig, extract_features, plan_store
from features.store import FeatureStore, clip_sha256, shard_path
from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[2]
SEGMENT = {"num_segments": 4, "frame_size": 64, "frames_per_segment": 2}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """12 real h264+AAC clips of 4 s at 64 px (the synthetic source and build): small and fast."""
    out = tmp_path_factory.mktemp("tiny") / "ds"
    build_dataset(BuildConfig(source=SyntheticSource(clips=12, classes=3, duration_s=4, size=64, fps=5, seed=3),
                              out=out, workers=1))
    return out


def _cfg(dataset: Path, out: Path, **kw) -> ExtractConfig:
    base = dict(dataset_dir=dataset, out_root=out, segment=SEGMENT, shard_size=3, batch_size=5, workers=0)
    base.update(kw)
    return ExtractConfig(**base)


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """An uninterrupted in-process build (hdf5): the values every other build must reproduce."""
    out = tmp_path_factory.mktemp("ref")
    summary = extract_features(_cfg(tiny_dataset, out), progress=False)
    return summary, FeatureStore.open(summary.store_dir)


def _sha(store: FeatureStore) -> dict[str, str]:
    return dict(zip(store.index["clip_id"], store.index["sha256"]))


def test_store_contents(reference, tiny_dataset):
    summary, store = reference
    assert summary.clips == 12 and summary.failures == 0 and summary.shards == 4 and not summary.skipped
    assert sorted(p.name for p in summary.store_dir.iterdir()) == [
        "boxes.parquet", "compute.json", "failures.parquet", "index.parquet", *[f"shard-{i:05d}.h5" for i in range(4)], "store.json"]
    card = store.card
    assert card.visual["name"] == "efficientnet_lite0" and card.visual["weights_sha256"].startswith("5793442")
    assert card.audio["name"] == "logmel" and card.audio_dim == 128
    assert card.visual_shape == (2, 2, 1280) and card.num_segments == 4 and card.frames_per_segment == 2
    assert card.dataset_fingerprint and card.classes and card.store_id == summary.store_id
    assert card.compute["device"] == "cpu" and card.compute["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"plan_s", "shards_decode_s", "shards_visual_s", "shards_write_s", "total_s"} <= set(card.timings)
    batch = store.read(np.arange(len(store)))
    assert batch.visual.shape == (12, 4, 2, 2, 1280) and batch.visual.dtype == np.float16
    assert np.isfinite(batch.visual.astype(np.float32)).all() and batch.visual.any()
    for i in range(len(store)):
        assert clip_sha256(batch.visual[i], batch.audio[i], batch.segment_mask[i]) == store.index["sha256"][i]
    # segment labels follow the manifest's event interval; background is K
    k = len(card.classes)
    manifest = pd.read_parquet(tiny_dataset / "manifest.parquet").set_index("clip_id")
    for i, cid in enumerate(batch.clip_id):
        row = manifest.loc[cid]
        starts = np.arange(4)
        inside = (np.minimum(starts + 1, row.event_end_s) - np.maximum(starts, row.event_start_s)) >= 0.5
        assert batch.segment_label[i].tolist() == [row.label_idx if e else k for e in inside]
    assert store.boxes is not None and store.boxes[["x0", "y0", "x1", "y1"]].stack().between(0, 1).all()
    assert set(store.index["split"]) <= {"train", "val", "test"}


def test_second_run_is_a_noop(reference, tiny_dataset):
    summary, _ = reference
    mtimes = {p.name: p.stat().st_mtime_ns for p in summary.store_dir.iterdir()}
    again = extract_features(_cfg(tiny_dataset, summary.store_dir.parents[1]), progress=False)
    assert again.skipped and again.store_id == summary.store_id and again.clips == 12
    assert {p.name: p.stat().st_mtime_ns for p in summary.store_dir.iterdir()} == mtimes


def test_store_id_depends_on_what_changes_values(tiny_dataset, tmp_path):
    a = plan_store(_cfg(tiny_dataset, tmp_path))
    assert plan_store(_cfg(tiny_dataset, tmp_path, workers=2)).store_id == a.store_id
    assert plan_store(_cfg(tiny_dataset, tmp_path, format="parquet")).store_id != a.store_id
    assert plan_store(_cfg(tiny_dataset, tmp_path, audio={"name": "vggish", "weights": "random"})).store_id != a.store_id
    assert plan_store(_cfg(tiny_dataset, tmp_path, segment={**SEGMENT, "frames_per_segment": 1})).store_id != a.store_id
    assert plan_store(_cfg(tiny_dataset, tmp_path, visual={"name": "efficientnet_lite0", "engine": "eager"})).store_id != a.store_id
    # an open batch size is resolved for the device before hashing: the store-id names the number
    auto = plan_store(_cfg(tiny_dataset, tmp_path, batch_size=None))
    assert auto.config.batch_size == 4
    assert auto.store_id == plan_store(_cfg(tiny_dataset, tmp_path, batch_size=4)).store_id != a.store_id
    # ... and for the frame size on the CPU: fewer frames per batch where 4 would outgrow a thread's heap
    large = plan_store(_cfg(tiny_dataset, tmp_path, batch_size=None, segment={**SEGMENT, "frame_size": 448}))
    assert large.config.batch_size == 2
    assert plan_store(_cfg(tiny_dataset, tmp_path, batch_size=None, device="cuda",
                           segment={**SEGMENT, "frame_size": 448})).config.batch_size == 64


def test_parquet_store_reads_back_the_same_tensors(reference, tiny_dataset, tmp_path):
    _, ref = reference
    summary = extract_features(_cfg(tiny_dataset, tmp_path, format="parquet"), progress=False)
    pq_store = FeatureStore.open(summary.store_dir)
    assert pq_store.card.format == "parquet" and _sha(pq_store) == _sha(ref)
    order = np.arange(len(ref))[::-1]
    a, b = ref.read(order), pq_store.read(order)
    for name in ("visual", "audio", "segment_mask", "label_idx", "segment_label"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_clip_featurizer_reproduces_the_store(reference, tiny_dataset):
    _, store = reference
    fz = ClipFeaturizer.from_card(store.card, device="cpu")
    from pipelines.manifest import load_dataset

    ds = load_dataset(tiny_dataset)
    cid = store.index["clip_id"][5]
    feats = fz.featurize_video(ds.clip_path(cid))
    want = store.read([5])
    np.testing.assert_array_equal(feats.segment_mask, want.segment_mask[0])
    np.testing.assert_array_equal(fz.decode(ds.clip_path(cid)).frames, feats.decoded.frames)
    from pipelines.media import ClipDecoder

    with ClipDecoder() as dec:   # a caller's long-lived decoder gives the same clip
        mine = fz.decode(ds.clip_path(cid), decoder=dec)
        assert dec.pid is not None
    np.testing.assert_array_equal(mine.frames, feats.decoded.frames)
    np.testing.assert_array_equal(mine.centre_frames(), feats.decoded.frames[:, 1])   # F = 2: the later one
    assert mine.centre_frames().shape == (4, 64, 64, 3)
    np.testing.assert_allclose(feats.visual, want.visual[0].astype(np.float32), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(feats.audio, want.audio[0].astype(np.float32), rtol=2e-3, atol=2e-2)
    import torch

    x = torch.from_numpy(feats.decoded.frames[:, 0].copy()).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    y = fz.visual_from_float(x)
    assert y.shape == (4, 2, 2, 1280)
    y.sum().backward()
    assert x.grad is not None


def test_card_carries_the_extractor_configs_and_the_featurizer_is_rebuilt_from_them(reference, tiny_dataset):
    """Round trip: the configs the store was extracted with -> store.json -> the same extractors."""
    from features.extractors import AudioConfig, VisualConfig
    from features.store import StoreError

    summary, store = reference
    cfg = _cfg(tiny_dataset, summary.store_dir.parents[1])
    assert VisualConfig.model_validate(store.card.visual_config) == cfg.visual
    assert AudioConfig.model_validate(store.card.audio_config) == cfg.audio
    fz = ClipFeaturizer.from_card(store.card.model_dump(mode="json"), device="cpu")
    assert fz.visual.card() == store.card.visual and fz.audio.card() == store.card.audio
    assert fz.visual.engine == cfg.visual.engine
    assert store.card.segment_spec == cfg.segment == fz.spec
    assert fz.audio.weights_sha256 is None and store.card.audio["weights_sha256"] is None   # logmel: no weights
    old = store.card.model_copy(update={"visual_config": None, "audio_config": None})   # a card from before
    with pytest.raises(StoreError, match="extract the store again"):
        ClipFeaturizer.from_card(old)


def test_the_manifest_is_read_once_per_extraction(tiny_dataset, tmp_path, monkeypatch):
    """plan_store reads (and hashes) the manifest; the shards and finalize use what the plan carries."""
    import pipelines.manifest

    hashed = []
    real = pipelines.manifest.file_sha256
    monkeypatch.setattr(pipelines.manifest, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    summary = extract_features(_cfg(tiny_dataset, tmp_path), progress=False)
    assert hashed == ["manifest.parquet"] and summary.clips == 12
    assert FeatureStore.open(summary.store_dir).boxes is not None


def test_bad_clip_is_recorded_and_the_rest_goes_on(tiny_dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(tiny_dataset, copy)
    manifest = pd.read_parquet(copy / "manifest.parquet")
    from pipelines.manifest import load_dataset

    victim = manifest["clip_id"][4]
    path = load_dataset(copy).clip_path(victim)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    summary = extract_features(_cfg(copy, tmp_path / "out"), progress=False)
    assert summary.clips == 11 and summary.failures == 1
    store = FeatureStore.open(summary.store_dir)
    assert victim not in set(store.index["clip_id"])
    row = store.failures.iloc[0]
    assert row["clip_id"] == victim and row["stage"] == "decode" and str(path.name) in row["message"]


@pytest.mark.slow
def test_worker_count_does_not_change_values(reference, tiny_dataset, tmp_path):
    """Fixed shard assignment + fixed batching: --workers 1 and --workers 2 store the same bytes."""
    _, ref = reference
    shas = []
    for workers in (1, 2):
        summary = extract_features(_cfg(tiny_dataset, tmp_path / f"w{workers}", workers=workers), progress=False)
        shas.append(_sha(FeatureStore.open(summary.store_dir)))
    assert shas[0] == shas[1] == _sha(ref)


_KILL_SCRIPT = """
import sys
from features.extract import ExtractConfig, extract_features
if __name__ == "__main__":
    cfg = ExtractConfig.model_validate_json(sys.argv[1])
    extract_features(cfg, progress=False)
"""


@pytest.mark.slow
def test_sigkill_midway_then_resume_matches_an_uninterrupted_build(reference, tiny_dataset, tmp_path):
    _, ref = reference
    cfg = _cfg(tiny_dataset, tmp_path, shard_size=2)     # 6 shards
    plan = plan_store(cfg)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), cfg.model_dump_json()], cwd=REPO, env=env,
                            start_new_session=True)
    first = shard_path(plan.store_dir, 0, "hdf5")
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), "no shard was completed before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)       # the run and its decoder child, mid-build
    proc.wait()
    done = sorted(p.name for p in plan.store_dir.glob("shard-*.h5"))
    assert 1 <= len(done) < 6 and not (plan.store_dir / "store.json").exists()
    (plan.store_dir / ".shard-00005.h5.abc123.h5").write_bytes(b"half a shard")   # as a writer killed mid-write leaves it
    resumed = extract_features(cfg, progress=False)
    assert resumed.shards_skipped == len(done) and not resumed.skipped
    store = FeatureStore.open(resumed.store_dir)
    assert _sha(store) == _sha(ref)
    cols = ["clip_id", "label_idx", "split", "sha256", "event_start_s", "event_end_s"]
    pd.testing.assert_frame_equal(store.index[cols], ref.index[cols])
    assert not list(plan.store_dir.glob(".shard-*"))   # leftover temp files are removed once the store is complete
    assert FeatureStore.open(resumed.store_dir).card.complete


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_dask_scheduler_and_two_workers(reference, tiny_dataset, tmp_path):
    _, ref = reference
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                           "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                          cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            summary = extract_features(_cfg(tiny_dataset, tmp_path / "out", workers=None,
                                            dask_address=f"tcp://127.0.0.1:{port}"), progress=False)
            ran_on = {w for w in client.run(lambda: os.getpid()).values()}
        assert len(ran_on) == 2
        store = FeatureStore.open(summary.store_dir)
        assert _sha(store) == _sha(ref)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_local_cluster_runs_shard_tasks_in_threads_of_this_process(reference, tiny_dataset, tmp_path):
    """The default runner: one Dask worker inside this process, one thread per shard task. The two
    threads share one extractor (built once), store the same bytes as the serial reference, give this
    process its torch thread count back and leave no decoder child behind."""
    import psutil
    import torch

    from features.extract import dask_client

    _, ref = reference
    cfg = _cfg(tiny_dataset, tmp_path, workers=2)
    with dask_client(cfg) as client:
        workers = client.scheduler_info()["workers"]
        assert [w["nthreads"] for w in workers.values()] == [2]
        assert set(client.run(os.getpid).values()) == {os.getpid()}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = extract_features(cfg, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert _sha(FeatureStore.open(summary.store_dir)) == _sha(ref)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _decoder_children(psutil.Process()):
        time.sleep(0.1)
    assert _decoder_children(psutil.Process()) == []


def _decoder_children(proc) -> list:
    return [c for c in proc.children(recursive=True) if "pipelines.media" in " ".join(c.cmdline())]


_RAISE_STEP = """
if sys.argv[1] == "raise":
    from features.malloc import raise_malloc_thresholds
    assert raise_malloc_thresholds() is True
else:
    from features.extractors import VisualConfig, build_visual
    build_visual(VisualConfig(), input_size=64)
"""


@pytest.mark.parametrize("how", ["raise", "build_visual"])
def test_raised_malloc_thresholds_reuse_heap_pages_instead_of_fresh_mmaps(how):
    """Under Dask's nanny setting (MALLOC_TRIM_THRESHOLD_=65536 freezes glibc's mmap threshold at 128 KiB)
    every large buffer is a fresh mmap whose pages the kernel zeroes on first touch (so are buffers over
    32 MiB, glibc's largest own threshold, whatever the setting); after raise_malloc_thresholds(), which
    building the visual CNN calls, the same buffers reuse heap pages."""
    import platform

    from heap_probe import assert_fresh_then_reused, faults_around  # here: a child imports this module without tests/

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    before, after = faults_around(_RAISE_STEP, [how], 32 << 20, {"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert_fresh_then_reused(before, after, 32 << 20)


def test_resume_on_another_cpu_kind_is_refused_naming_both(tiny_dataset, tmp_path):
    """A store started with torch's DEFAULT CPU kernels (ATEN_CPU_CAPABILITY=default, as on a CPU
    without AVX2), killed before it finished, then resumed with this machine's kernels: refused."""
    here = torch.backends.cpu.get_cpu_capability()
    if here == "DEFAULT":
        pytest.skip("this CPU has no kernels above torch's DEFAULT, so no second kind to compare")
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from test_features_extract import _cfg; from features.extract import extract_features; "
            "print(extract_features(_cfg(Path(sys.argv[2]), Path(sys.argv[3])), progress=False).store_dir)")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tiny_dataset), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store_dir = Path(proc.stdout.strip().splitlines()[-1])
    for name in ("store.json", "index.parquet", "shard-00003.h5"):  # as if killed before the last shard
        (store_dir / name).unlink()
    with pytest.raises(ComputeKindMismatch) as err:
        extract_features(_cfg(tiny_dataset, tmp_path), progress=False)
    assert "cpu DEFAULT" in str(err.value) and f"cpu {here}" in str(err.value) and str(store_dir) in str(err.value)
    assert not (store_dir / "shard-00003.h5").exists() and not (store_dir / "store.json").exists()
    # the same on a Dask LocalCluster (the shard tasks refuse; the refusal is raised once)
    with pytest.raises(ComputeKindMismatch, match="cpu DEFAULT"):
        extract_features(_cfg(tiny_dataset, tmp_path, workers=1), progress=False)


def test_one_runner_decision_for_the_library_and_the_flow():
    """workers=0 runs in this thread, an address wins over workers, else the in-process LocalCluster."""
    from features.runner import local_cluster_kwargs, runner_kind

    assert runner_kind(0, None) == "serial"
    assert runner_kind(None, None) == runner_kind(3, None) == "local"
    assert runner_kind(0, "tcp://127.0.0.1:8786") == runner_kind(2, "tcp://127.0.0.1:8786") == "remote"
    assert local_cluster_kwargs(3) == {"n_workers": 1, "threads_per_worker": 3, "processes": False,
                                       "dashboard_address": None}


def test_a_onednn_isa_cap_is_another_compute_kind(monkeypatch):
    """oneDNN picks convolution kernels by ISA (a cap changes float16 features), so a cap is another kind."""
    from features.compute_kind import compute_kind

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    native = compute_kind(torch.device("cpu"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = compute_kind(torch.device("cpu"))
    assert native != capped and "oneDNN max AVX2" in capped["cpu_isa"]
