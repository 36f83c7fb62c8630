"""Every deliberate error of the command line is one line on stderr, ``error: <path>: <what is wrong>;
<what to do>``, with exit 1 (2 for usage), and nothing is written: the real ``wherewhen`` in a
subprocess, without a Prefect API (in-process stages), one test per bad input of issue 16; the last
test runs one of them with run tracking against the session's Prefect server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowtest_support import local_env, run_cli


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path / "prefect-home")


def _one_error_line(proc, exit_code: int) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    return lines[0]


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns): what a refused command must not change."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _folder(root: Path, dataset: Path, header: str, label=lambda i: "thing") -> Path:
    """A folder dataset with the synthetic dataset's videos and an annotations.csv with ``header``."""
    videos = root / "videos"
    shutil.copytree(dataset / "videos", videos)
    rows = [header] + [f"{p.stem},{label(i)}" for i, p in enumerate(sorted(videos.iterdir()))]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


# --- bad CSV, not a dataset -----------------------------------------------------------------------


def test_misspelled_csv_column(tiny_dataset: Path, tmp_path: Path, env) -> None:
    root = _folder(tmp_path / "mine", tiny_dataset, "video_id,lable")
    out = tmp_path / "ds"
    line = _one_error_line(run_cli(["dataset", "build", "folder", str(root), "--out", str(out)], env), 1)
    assert "annotations.csv" in line and "label" in line and "header must be" in line
    assert not out.exists()


def test_folder_without_annotations(tmp_path: Path, env) -> None:
    (tmp_path / "mine" / "videos").mkdir(parents=True)
    out = tmp_path / "ds"
    line = _one_error_line(run_cli(["dataset", "build", "folder", str(tmp_path / "mine"), "--out", str(out)], env), 1)
    assert "annotations.csv" in line and "video_id,label" in line
    assert not out.exists()


def test_dataset_info_on_a_non_dataset(tmp_path: Path, env) -> None:
    (tmp_path / "some-folder").mkdir()
    line = _one_error_line(run_cli(["dataset", "info", str(tmp_path / "some-folder")], env), 1)
    assert "some-folder" in line and "dataset build" in line


def test_extract_features_given_a_store(tiny_run, tmp_path: Path, env) -> None:
    out = tmp_path / "features"
    line = _one_error_line(run_cli(["extract-features", str(tiny_run.store), "--out", str(out)], env), 1)
    assert str(tiny_run.store) in line and "not a dataset" in line and "dataset build" in line
    assert not out.exists()


# --- not a store, mismatched store, not a run -------------------------------------------------------


def test_dataset_given_as_a_store(tiny_dataset: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    line = _one_error_line(run_cli(["train", str(tiny_dataset), "--out", str(out)], env), 1)
    assert str(tiny_dataset) in line and "extract-features" in line and "<store-id>" in line
    assert "AVE" not in line
    assert not out.exists()


def test_dataset_given_as_the_store_to_evaluate(tiny_run, tmp_path: Path, env) -> None:
    out = tmp_path / "report"
    proc = run_cli(["evaluate", str(tiny_run.run), "--store", str(tiny_run.dataset), "--out", str(out)], env)
    line = _one_error_line(proc, 1)
    assert "not a feature store" in line and "extract-features" in line
    assert not out.exists()


def test_folder_that_is_not_a_store(tmp_path: Path, env) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    line = _one_error_line(run_cli(["train", str(tmp_path / "empty"), "--out", str(out)], env), 1)
    assert str(tmp_path / "empty") in line and "not a feature store" in line
    assert not out.exists()


def test_run_evaluated_on_another_store(tiny_run, tmp_path: Path, env) -> None:
    out = tmp_path / "report"
    proc = run_cli(["evaluate", str(tiny_run.run), "--store", str(tiny_run.other_store), "--out", str(out)], env)
    line = _one_error_line(proc, 1)
    assert str(tiny_run.run) in line and tiny_run.other_store.name in line and tiny_run.store.name in line
    assert not out.exists()


def test_evaluate_a_folder_that_is_not_a_run(tiny_run, tmp_path: Path, env) -> None:
    (tmp_path / "notarun").mkdir()
    out = tmp_path / "report"
    proc = run_cli(["evaluate", str(tmp_path / "notarun"), "--store", str(tiny_run.store), "--out", str(out)], env)
    line = _one_error_line(proc, 1)
    assert "notarun" in line and "run.json" in line and "wherewhen train" in line
    assert not out.exists()


# --- bad video files --------------------------------------------------------------------------------


def test_explain_on_a_text_file(tiny_run, tmp_path: Path, env) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    out = tmp_path / "explain"
    line = _one_error_line(run_cli(["explain", str(tiny_run.run), str(notes), "--out", str(out)], env), 1)
    assert str(notes) in line and "not a video" in line and "row" not in line
    assert not out.exists()


def test_explain_on_an_empty_file(tiny_run, tmp_path: Path, env) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "explain"
    line = _one_error_line(run_cli(["explain", str(tiny_run.run), str(empty), "--out", str(out)], env), 1)
    assert str(empty) in line and "empty file" in line
    assert not out.exists()


# --- refused configurations ---------------------------------------------------------------------------


def test_missing_weights(tiny_dataset: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "features"
    line = _one_error_line(run_cli(["extract-features", str(tiny_dataset), "--out", str(out), "--audio", "vggish"], env), 1)
    assert "vggish" in line and "--audio-weights" in line
    assert not out.exists()


def test_weights_file_that_does_not_exist(tiny_dataset: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "features"
    missing = tmp_path / "resnet18.pth"
    proc = run_cli(["extract-features", str(tiny_dataset), "--out", str(out), "--visual", "resnet18",
                    "--visual-weights", str(missing)], env)
    line = _one_error_line(proc, 1)
    assert str(missing) in line
    assert not out.exists()


@pytest.fixture(scope="module")
def one_class_store(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of a folder dataset whose clips all have one label."""
    from features.extract import ExtractConfig, extract_features
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.folder import FolderSource

    root = tmp_path_factory.mktemp("one-class")
    folder = _folder(root / "mine", tiny_dataset, "video_id,label")
    build_dataset(BuildConfig(source=FolderSource(root=folder), out=root / "ds", workers=1))
    cfg = ExtractConfig(dataset_dir=root / "ds", out_root=root / "features", workers=0,
                        segment={"num_segments": 3, "frame_size": 64})
    return Path(extract_features(cfg, progress=False).store_dir)


def test_one_class_dataset_is_refused(one_class_store: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    line = _one_error_line(run_cli(["train", str(one_class_store), "--out", str(out)], env), 1)
    assert "1 class" in line and "at least two" in line
    assert not out.exists()


def test_existing_run_with_another_configuration(tiny_run, tmp_path: Path, env) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    before = _files(run)
    line = _one_error_line(run_cli(["train", str(tiny_run.store), "--out", str(run), "--epochs", "3",
                                    "--device", "cpu"], env), 1)
    assert str(run) in line and "epochs" in line and "--out" in line
    assert _files(run) == before


# --- usage errors (exit 2) ----------------------------------------------------------------------------


def test_workers_zero_is_a_usage_error(tiny_dataset: Path, tmp_path: Path, env) -> None:
    root = _folder(tmp_path / "mine", tiny_dataset, "video_id,label")
    out = tmp_path / "ds"
    line = _one_error_line(run_cli(["dataset", "build", "folder", str(root), "--out", str(out), "--workers", "0"], env), 2)
    assert "--workers" in line and "(got 0)" in line and "--help" in line
    assert not out.exists()


def test_value_outside_the_choices_is_a_usage_error(tiny_dataset: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "features"
    line = _one_error_line(run_cli(["extract-features", str(tiny_dataset), "--out", str(out), "--visual", "vgg"], env), 2)
    assert "--visual" in line and "efficientnet_lite0" in line and "extract-features --help" in line
    assert not out.exists()


def test_unknown_explainer_is_a_usage_error(tiny_run, tmp_path: Path, env) -> None:
    out = tmp_path / "report"
    proc = run_cli(["evaluate", str(tiny_run.run), "--store", str(tiny_run.store), "--out", str(out),
                    "--explainers", "attention,bogus"], env)
    line = _one_error_line(proc, 2)
    assert "--explainers" in line and "bogus" in line and "gradcam" in line and "Value error" not in line
    assert not out.exists()


def test_unknown_command_and_option(env) -> None:
    assert "No such command" in _one_error_line(run_cli(["frobnicate"], env), 2)
    line = _one_error_line(run_cli(["dataset", "build", "synthetic", "--clipz", "3"], env), 2)
    assert "--clipz" in line and "--clips" in line


def test_debug_shows_the_traceback(tmp_path: Path, env) -> None:
    (tmp_path / "some-folder").mkdir()
    proc = run_cli(["--debug", "dataset", "info", str(tmp_path / "some-folder")], env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


# --- with run tracking: Prefect does not say it again --------------------------------------------------


@pytest.mark.slow
def test_tracked_error_is_said_once(prefect_server, media_files, tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()           # refused inside the explain flow (its input check), not before it
    out = tmp_path / "explain"
    proc = run_cli(["explain", str(tmp_path / "notarun"), str(media_files.bigbuckbunny), "--out", str(out)],
                   prefect_server.env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "not a run folder" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Finished in state" not in proc.stderr
    assert "View at" in proc.stderr          # the tracked run's link is still shown
    assert not out.exists()
