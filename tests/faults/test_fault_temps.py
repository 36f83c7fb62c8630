"""Temp files of killed writers (issue 15.4): the next atomic write in the folder removes them; a live
writer's temp file, or one written from another machine, is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.atomic import _node, atomic_path, atomic_write_text, is_temp_name, remove_stale_temps

REPO = Path(__file__).resolve().parents[2]


def _killed(script: str) -> Path:
    """Run ``script`` in a real process that prints the temp path it made, SIGKILL it, return that path."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return tmp


def _killed_writer(folder: Path, name: str) -> Path:
    """Run a real writer process that dies by SIGKILL inside atomic_path (half its bytes written);
    return the temp file it left."""
    tmp = _killed(f"""
        import sys, time
        from pathlib import Path
        from pipelines.atomic import atomic_path
        with atomic_path(Path({str(folder)!r}) / {name!r}) as tmp:
            tmp.write_bytes(b"half of it")
            print(tmp, flush=True)
            time.sleep(300)
        """)
    assert tmp.is_file() and is_temp_name(tmp.name)
    return tmp


@pytest.mark.parametrize("name", ["store.json", "shard-00003.h5", "model.safetensors", "syn00001.mp4"])
def test_the_next_write_in_the_folder_removes_a_killed_writers_temp_file(name: str, tmp_path: Path) -> None:
    """Expected: the killed writer's temp file is left (the destination untouched), and the next
    atomic write in that folder, of any file, removes it."""
    left = _killed_writer(tmp_path, name)
    assert not (tmp_path / name).exists()
    atomic_write_text(tmp_path / "other.txt", "x")
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    """Expected: a writer still inside atomic_path (another process) keeps its temp file while the
    folder is written and swept, and completes its file afterwards."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pipelines.atomic import atomic_path
        with atomic_path(Path({str(tmp_path)!r}) / "slow.bin") as tmp:
            tmp.write_bytes(b"all of it")
            print(tmp, flush=True)
            while not Path({str(go)!r}).exists():
                time.sleep(0.01)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    atomic_write_text(tmp_path / "other.txt", "x")
    assert remove_stale_temps(tmp_path) == [] and tmp.is_file()
    go.touch()
    assert proc.wait(timeout=60) == 0
    assert (tmp_path / "slow.bin").read_bytes() == b"all of it" and not tmp.exists()


def test_other_machines_temp_files_and_recycled_pids(tmp_path: Path) -> None:
    """Expected: a temp name from another machine (other node tag) is kept even with a dead pid; a
    temp whose pid now belongs to a process that started after the file was last written (a
    recycled pid) is removed; files that only look similar are kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    other_node = "000000" if _node() != "000000" else "111111"
    foreign = tmp_path / f".a.json.~{dead}-{other_node}.abcdefgh.json"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        recycled = tmp_path / f".b.json.~{sleeper.pid}-{_node()}.abcdefgh.json"
        similar = [tmp_path / ".hidden", tmp_path / "a.json", tmp_path / f".c.json.~{dead}-{_node()}.json"]
        for p in (foreign, recycled, *similar):
            p.write_text("x")
        hour_ago = time.time() - 3600
        os.utime(recycled, (hour_ago, hour_ago))
        assert remove_stale_temps(tmp_path) == [recycled]
        assert foreign.exists() and all(p.exists() for p in similar)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """Expected: an exception inside atomic_path removes its temp file and leaves the destination as it was."""
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"] and (tmp_path / "f.txt").read_text() == "old"


def test_a_killed_archive_writers_link_temp_is_swept_too(tmp_path: Path) -> None:
    """An archive's symlink is made under a temp name (symlink() cannot write onto a name) in the same
    writer-tagged pattern: a writer killed between symlink() and the rename leaves a dangling link,
    and the next write in that folder removes it."""
    left = _killed(f"""
        import os, time
        from pathlib import Path
        from pipelines.atomic import temp_name
        tmp = temp_name(Path({str(tmp_path)!r}) / "link", ".lnk")
        os.symlink("missing-target", tmp)
        print(tmp, flush=True)
        time.sleep(300)
        """)
    assert left.is_symlink() and not left.exists() and is_temp_name(left.name)
    atomic_write_text(tmp_path / "other.txt", "x")
    assert not left.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]
