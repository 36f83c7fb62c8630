"""Every deliberate error of the command line is one line on stderr with the right exit code, and
nothing is written: the real ``wherewhen`` in a subprocess, without a Prefect API (in-process stages)."""

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


def _folder(root: Path, dataset: Path, header: str) -> Path:
    """A folder dataset with the synthetic dataset's videos and an annotations.csv with ``header``."""
    videos = root / "videos"
    shutil.copytree(dataset / "videos", videos)
    rows = [header] + [f"{p.stem},thing" for p in sorted(videos.iterdir())]
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


def test_misspelled_csv_column(tiny_dataset: Path, tmp_path: Path, env) -> None:
    root = _folder(tmp_path / "mine", tiny_dataset, "video_id,lable")
    out = tmp_path / "ds"
    line = _one_error_line(run_cli(["dataset", "build", "folder", str(root), "--out", str(out)], env), 1)
    assert "annotations.csv" in line and "label" in line and "header must be" in line
    assert not out.exists()


def test_workers_zero_is_a_usage_error(tiny_dataset: Path, tmp_path: Path, env) -> None:
    root = _folder(tmp_path / "mine", tiny_dataset, "video_id,label")
    out = tmp_path / "ds"
    line = _one_error_line(run_cli(["dataset", "build", "folder", str(root), "--out", str(out), "--workers", "0"], env), 2)
    assert "--workers" in line and "(got 0)" in line and "--help" in line
    assert not out.exists()


def test_dataset_given_as_a_store(tiny_dataset: Path, tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    line = _one_error_line(run_cli(["train", str(tiny_dataset), "--out", str(out)], env), 1)
    assert str(tiny_dataset) in line and "extract-features" in line and "<store-id>" in line
    assert "AVE" not in line
    assert not out.exists()


def test_explain_on_a_text_file(tmp_path: Path, env) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "explain"
    line = _one_error_line(run_cli(["explain", str(run_dir), str(notes), "--out", str(out)], env), 1)
    assert str(notes) in line and "not a video" in line and "row" not in line
    assert not out.exists()


def test_dataset_info_on_a_non_dataset(tmp_path: Path, env) -> None:
    (tmp_path / "some-folder").mkdir()
    line = _one_error_line(run_cli(["dataset", "info", str(tmp_path / "some-folder")], env), 1)
    assert "some-folder" in line and "dataset build" in line


def test_debug_shows_the_traceback(tmp_path: Path, env) -> None:
    (tmp_path / "some-folder").mkdir()
    proc = run_cli(["--debug", "dataset", "info", str(tmp_path / "some-folder")], env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_info_and_help_do_not_import_torch_or_prefect(tiny_dataset: Path, tmp_path: Path, env) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom flows.cli import main\n"
            "for args in (['--help'], ['dataset', 'build', 'folder', '--help'], ['dataset', 'info', sys.argv[1]]):\n"
            "    r = CliRunner().invoke(main, args)\n    assert r.exit_code == 0, (args, r.output)\n"
            "print(sorted(m for m in ('torch', 'timm', 'prefect', 'distributed') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_dataset)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
