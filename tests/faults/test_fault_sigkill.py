"""SIGKILL at 5 seeded random moments each of build, extract and train (issue 15 acceptance).

The real command line (``wherewhen dataset build synthetic`` / ``extract-features`` / ``train``)
runs in its own session and is SIGKILLed (its own process only, as ``kill -9`` or the OOM killer
would) at a seeded random moment after its work began; the five killed runs share one output
folder, each resuming what the last left. After each kill: no process it started is left
(decoder children ``pipelines.media.child``, synthetic encoder processes, multiprocessing's
resource tracker, anything else of its session) and no POSIX semaphore or shared-memory block it
used is left in /dev/shm. After a final uninterrupted run: no temporary file is left and the
result equals an uninterrupted run's (the library's, same configuration): every dataset file's
bytes; the store's index, failures, boxes, card (timings aside) and each clip's stored values and
sha256; the run's weights and training state bytes, card and metrics (timings aside).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from features.extract import ExtractConfig, extract_features
from features.store import FeatureStore
from features.store.shards import clip_sha256
from pipelines.atomic import is_temp_name
from pipelines.build import BuildConfig, build_dataset
from pipelines.sources.synthetic import SyntheticSource
from stan_head.train import TrainConfig, train_head
from sigkill_helpers import KillReport, file_set, kill_at, leftover_files, run_to_end, session_processes

pytestmark = pytest.mark.slow

SEED = 15
KILLS = 5
SYN = dict(clips=8, classes=2, duration_s=3, size=64, fps=5)
SYN_ARGS = ["--clips", "8", "--classes", "2", "--duration-s", "3", "--size", "64", "--fps", "5"]
SEGMENT = {"num_segments": 3, "frame_size": 64}
EXTRACT_ARGS = ["--segment-num-segments", "3", "--segment-frame-size", "64", "--shard-size", "1", "--batch-size", "3",
                "--workers", "0"]
HEAD = {"d_model": 16, "attn_dim": 8, "hidden_dim": 16, "lstm_hidden": 8, "dropout": 0.1}
TRAIN = dict(epochs=12, min_steps=0, batch_size=8, lr=3e-3, num_threads=1, device="cpu", progress=False, patience=0)
TRAIN_ARGS = ["--epochs", "12", "--min-steps", "0", "--batch-size", "8", "--lr", "0.003", "--num-threads", "1", "--device", "cpu",
              "--no-progress", "--patience", "0", "--head-d-model", "16", "--head-attn-dim", "8", "--head-hidden-dim", "16",
              "--head-lstm-hidden", "8", "--head-dropout", "0.1"]

# the first log line of each stage's work (the imports are done)
BUILD_MARK = re.compile(r"synthetic: \d+ of \d+ clips to encode")
EXTRACT_MARK = re.compile(r"store \S+(: \d+ shards,| is complete)")
TRAIN_MARK = re.compile(r"loaded split 'train'")


def _kills(stage: str, window_s: float, left: Callable[[], float], run: Callable[[float], KillReport]) -> list[KillReport]:
    """Five kills at seeded random moments of the work still to do: the n-th run is killed u_n x
    ``window_s`` x ``left()`` seconds after its work began (u_n uniform in [0, 1); ``window_s`` the
    uninterrupted run's length; ``left()`` the fraction of the work the folder still lacks, at
    least 0.2 for the run's fixed part), so that the resumed runs are killed mid-work too."""
    rng = random.Random(f"{SEED}-{stage}")
    return [run(round(rng.random() * window_s * max(0.2, left()), 3)) for _ in range(KILLS)]


def _check_kills(reports: list[KillReport], log: Path) -> None:
    killed = [r for r in reports if r.killed_mid_run]
    for r in reports:   # shown with pytest -s
        print(f"kill {r.delay_s:6.2f} s into the work: {'killed with ' + str(len(r.at_kill)) + ' processes' if r.killed_mid_run else 'had finished'}"
              f"; left {len(r.left)}, leaked shm {len(r.leaked_shm)}")
    assert killed, f"no run was still working at its kill moment: the test killed nothing (see {log})"
    for r in killed:
        assert not r.left, (f"processes left {r.delay_s:.2f} s into the work after SIGKILL of the command: {r.left} "
                            f"(at the kill: {r.at_kill})")
        assert not r.leaked_shm, f"/dev/shm entries left after the kill at {r.delay_s:.2f} s: {sorted(r.leaked_shm)}"


def _same_files(ref: Path, out: Path, skip: set[str], log: Path) -> None:
    assert leftover_files(out) == [], f"temp files left after the re-run: {leftover_files(out)} (see {log})"
    assert file_set(out) == file_set(ref), f"files differ: only in the resumed {sorted(file_set(out) - file_set(ref))}, " \
                                           f"only in the uninterrupted {sorted(file_set(ref) - file_set(out))}"
    differ = [rel for rel in sorted(file_set(ref) - skip) if (out / rel).read_bytes() != (ref / rel).read_bytes()]
    assert differ == [], f"bytes differ from the uninterrupted run: {differ}"


def _without(record: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def test_build_killed_5_times_resumes_to_the_same_dataset(tmp_path: Path) -> None:
    """Expected: no process or /dev/shm entry left after any kill; after the re-run no temp file and
    every file byte-identical to an uninterrupted build (the probe cache aside)."""
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    build_dataset(BuildConfig(source=SyntheticSource(**SYN), out=ref, workers=2))
    window = time.perf_counter() - t0
    out, log = tmp_path / "ds", tmp_path / "cli.log"
    args = ["dataset", "build", "synthetic", *SYN_ARGS, "--workers", "2", "--out", str(out)]
    # first a kill while both encoder processes run and one writes its clip (the case issue 15 saw
    # leave the encoders, the resource tracker and the pool's semaphores behind; the clip's temp
    # file stays too), then the five at random moments
    def encoding_now(pid: int) -> bool:
        writing = any(is_temp_name(p.name) for p in (out / "videos").glob(".syn*"))
        return writing and sum("spawn_main" in c for c in session_processes(pid).values()) >= 2

    encoding = kill_at(args, tmp_path, BUILD_MARK, 0.0, log, ready=encoding_now)
    assert encoding.killed_mid_run and sum("spawn_main" in c for c in encoding.at_kill.values()) >= 2, encoding
    reports = [encoding, *_kills("build", window, lambda: 1 - len(list(out.glob("videos/syn*.mp4"))) / SYN["clips"],
                                 lambda d: kill_at(args, tmp_path, BUILD_MARK, d, log))]
    _check_kills(reports, log)
    run_to_end(args, tmp_path, log)
    _same_files(ref, out, {".cache/probe.jsonl"}, log)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sigkill_ds") / "ds"
    build_dataset(BuildConfig(source=SyntheticSource(**SYN), out=out, workers=1))
    return out


def test_extract_killed_5_times_resumes_to_the_same_store(dataset: Path, tmp_path: Path) -> None:
    """Expected: no process or /dev/shm entry left after any kill; after the re-run no temp file or
    shard claim, and the store equals an uninterrupted extraction: index, failures, boxes and card
    (timings aside) byte for byte, every clip's stored values and their sha256."""
    t0 = time.perf_counter()
    ref = extract_features(ExtractConfig(dataset_dir=dataset, out_root=tmp_path / "ref", segment=SEGMENT, shard_size=1,
                                         batch_size=3, workers=0), progress=False)
    window = time.perf_counter() - t0
    out_root, log = tmp_path / "stores", tmp_path / "cli.log"
    args = ["extract-features", str(dataset), "--out", str(out_root), *EXTRACT_ARGS]
    reports = _kills("extract", window, lambda: 1 - len(list(out_root.glob("*/*/shard-*.h5"))) / SYN["clips"],
                     lambda d: kill_at(args, tmp_path, EXTRACT_MARK, d, log))
    _check_kills(reports, log)
    run_to_end(args, tmp_path, log)
    store_dir = out_root / ref.store_dir.relative_to(tmp_path / "ref")
    shards = {p for p in file_set(ref.store_dir) if p.startswith("shard-")}   # their metadata holds timings and paths
    _same_files(ref.store_dir, store_dir, {"store.json", *shards}, log)
    cards = [json.loads((d / "store.json").read_text()) for d in (ref.store_dir, store_dir)]
    assert _without(cards[0], ("timings",)) == _without(cards[1], ("timings",))
    a, b = FeatureStore.open(ref.store_dir), FeatureStore.open(store_dir)
    ids = list(a.index["clip_id"])
    assert ids == list(b.index["clip_id"]) and len(ids) == SYN["clips"]
    x, y = a.read(range(len(ids))), b.read(range(len(ids)))
    assert x.clip_id == y.clip_id == ids
    for name in ("visual", "audio", "segment_mask", "label_idx", "segment_label"):
        assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert [clip_sha256(y.visual[i], y.audio[i], y.segment_mask[i]) for i in range(len(ids))] == list(b.index["sha256"])


def _head_store(root: Path) -> Path:
    """A real 60-clip feature store (tests/stan_head/head_store.py)."""
    path = Path(__file__).resolve().parents[1] / "stan_head" / "head_store.py"
    spec = importlib.util.spec_from_file_location("head_store_sigkill", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["head_store_sigkill"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.make_feature_store(root, clips=60)


def test_train_killed_5_times_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """Expected: no process left after any kill; after the re-run no temp file, and the best and
    last weights byte-identical to an uninterrupted run, its card and metrics equal (timings aside)."""
    store = _head_store(tmp_path / "store")
    run, ref, log = tmp_path / "run", tmp_path / "ref", tmp_path / "cli.log"
    t0 = time.perf_counter()
    train_head(TrainConfig(store=store, out=run, head=HEAD, **TRAIN))
    window = time.perf_counter() - t0
    run.rename(ref)            # the same folder name for both: run.json records it
    args = ["train", str(store), "--out", str(run), *TRAIN_ARGS]
    metrics = run / "metrics.jsonl"
    reports = _kills("train", window, lambda: 1 - (len(metrics.read_text().splitlines()) if metrics.is_file() else 0) / TRAIN["epochs"],
                     lambda d: kill_at(args, tmp_path, TRAIN_MARK, d, log))
    _check_kills(reports, log)
    run_to_end(args, tmp_path, log)
    _same_files(ref, run, {"metrics.jsonl"}, log)
    metrics = [[_without(json.loads(line), ("train_seconds", "epoch_seconds")) for line in (d / "metrics.jsonl").read_text().splitlines()]
               for d in (ref, run)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == TRAIN["epochs"]
    shutil.rmtree(store)
