"""The ``wherewhen`` command line: help on every command, and dataset builds through the real
flows (subprocesses against the session's Prefect server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from flows.cli import main
from flowtest_support import run_cli


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (its commands may be loaded on first use: ask the group)."""
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += _all_commands(cmd, prefix + (name,))
        else:
            out.append(prefix + (name,))
    return out


def test_every_command_has_help() -> None:
    commands = _all_commands(main)
    names = {" ".join(c) for c in commands}
    for expected in ("dataset build synthetic", "dataset build folder", "dataset build ave", "dataset build youtube-csv",
                     "dataset info", "extract-features", "features info", "train", "explain", "evaluate", "serve", "demo"):
        assert expected in names
    runner = CliRunner()
    for cmd in commands:
        result = runner.invoke(main, [*cmd, "--help"])
        assert result.exit_code == 0, (cmd, result.output)
        assert "Usage: " in result.output and "--help" in result.output


def test_options_come_from_the_library_configs() -> None:
    runner = CliRunner()
    synthetic = runner.invoke(main, ["dataset", "build", "synthetic", "--help"]).output
    for option in ("--clips", "--seed", "--classes", "--out", "--strict"):
        assert option in synthetic
    folder = runner.invoke(main, ["dataset", "build", "folder", "--help"]).output
    assert "ROOT" in folder and "--out" in folder
    extract = runner.invoke(main, ["extract-features", "--help"]).output
    for option in ("--visual", "--audio", "--format", "--workers", "--dask-address", "--device"):
        assert option in extract


def test_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dataset", "build", "synthetic", "--clips", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "clips" in result.output


@pytest.fixture(scope="module")
def folder_root(media_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Contract 1 folder: 3 good clips, 1 without audio, 1 truncated, 1 zero-byte, 1 text named .mp4."""
    root = tmp_path_factory.mktemp("folder-dataset")
    videos = root / "videos"
    videos.mkdir()
    files = {
        "good_a": media_files.bigbuckbunny, "good_b": media_files.bigbuckbunny, "good_c": media_files.bigbuckbunny,
        "silent": media_files.bikes, "truncated": media_files.truncated, "empty": media_files.empty,
        "text": media_files.text,
    }
    rows = ["video_id,label,split"]
    splits = {"good_a": "train", "good_b": "val", "good_c": "test", "silent": "train"}
    for vid, src in files.items():
        shutil.copyfile(src, videos / f"{vid}.mp4")
        rows.append(f"{vid},{'bikes' if vid == 'silent' else 'bunny'},{splits.get(vid, 'train')}")
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_dataset_build_folder_records_failures_and_exits_0(prefect_server, folder_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = run_cli(["dataset", "build", "folder", str(folder_root), "--out", str(out)], prefect_server.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    manifest = pd.read_parquet(out / "manifest.parquet")
    failures = pd.read_parquet(out / "failures.parquet")
    assert len(manifest) == 4
    assert manifest.set_index("clip_id").loc["silent", "has_audio"] == False  # noqa: E712
    assert int(manifest["has_audio"].sum()) == 3
    assert len(failures) == 3
    assert set(failures["relpath"].map(lambda p: Path(p).stem)) == {"truncated", "empty", "text"}
    assert all(len(m) > 10 for m in failures["message"])

    info = run_cli(["dataset", "info", str(out)], prefect_server.env)
    assert info.returncode == 0, info.stderr
    assert "failures: 3" in info.stdout and "bunny" in info.stdout


@pytest.mark.slow
def test_dataset_build_folder_strict_fails(prefect_server, folder_root: Path, tmp_path: Path) -> None:
    proc = run_cli(["dataset", "build", "folder", str(folder_root), "--out", str(tmp_path / "ds"), "--strict"],
                   prefect_server.env)
    assert proc.returncode != 0


@pytest.mark.slow
def test_synthetic_build_twice_is_byte_identical(prefect_server, tmp_path: Path) -> None:
    args = ["dataset", "build", "synthetic", "--clips", "4", "--seed", "0", "--duration-s", "3", "--size", "64"]
    first = run_cli([*args, "--out", str(tmp_path / "a")], prefect_server.env)
    second = run_cli([*args, "--out", str(tmp_path / "b")], prefect_server.env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "a" / "manifest.parquet").read_bytes() == (tmp_path / "b" / "manifest.parquet").read_bytes()
    assert len(pd.read_parquet(tmp_path / "a" / "manifest.parquet")) == 4


def test_serve_without_a_prefect_api_says_how_to_start_one(tmp_path: Path) -> None:
    from flowtest_support import client_env, free_port

    env = client_env(f"http://127.0.0.1:{free_port()}/api", tmp_path / "prefect-home")
    proc = run_cli(["serve"], env, timeout=120)
    assert proc.returncode == 1
    assert "prefect server start" in proc.stderr
