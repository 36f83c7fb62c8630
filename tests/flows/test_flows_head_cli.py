"""``wherewhen train``, ``explain`` and ``evaluate`` through their flows (subprocesses against the
session's Prefect server) on a tiny real store; the second ``train`` is a Prefect cache hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowtest_support import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 synthetic clips (3 classes → 1 val + 1 test clip each) extracted in-process by the library."""
    from features.extract import ExtractConfig, extract_features
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.synthetic import SyntheticSource

    root = tmp_path_factory.mktemp("split-store")
    source = SyntheticSource(clips=9, classes=3, seed=1, duration_s=3, size=64, min_event_s=1)
    summary = build_dataset(BuildConfig(source=source, out=root / "dataset", workers=1))
    assert summary.split_counts.get("test", 0) >= 1, summary.summary_line()
    store = extract_features(ExtractConfig(dataset_dir=root / "dataset", out_root=root / "features", workers=0),
                             progress=False)
    return Path(store.store_dir)


def test_train_explain_evaluate(prefect_server, split_store: Path, media_files, tmp_path: Path) -> None:
    env = prefect_server.env
    run_dir = tmp_path / "run"
    train = run_cli(["train", str(split_store), "--model", "stan", "--out", str(run_dir), "--epochs", "2",
                     "--min-steps", "0", "--device", "cpu"], env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "stan" in train.stdout and (run_dir / "run.json").is_file()

    again = run_cli(["train", str(split_store), "--model", "stan", "--out", str(run_dir), "--epochs", "2",
                     "--min-steps", "0", "--device", "cpu"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Cached" in again.stderr  # inputs + task source + store card unchanged, run folder present
    assert again.stdout == train.stdout

    explain_dir = tmp_path / "explain"
    explain = run_cli(["explain", str(run_dir), str(media_files.bigbuckbunny), "--out", str(explain_dir), "--json",
                       "--device", "cpu"], env)
    assert explain.returncode == 0, explain.stderr[-3000:]
    result = json.loads(explain.stdout)
    assert 0.0 <= result["probability"] <= 1.0
    assert result["files"] and all(Path(p).is_file() for p in result["files"].values())

    report = tmp_path / "report"
    evaluate = run_cli(["evaluate", str(run_dir), "--store", str(split_store), "--out", str(report),
                        "--explainers", "attention,gradcam", "--device", "cpu"], env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert (report / "report.json").is_file()
    assert "report:" in evaluate.stdout
