"""A tracked command's children end with it: ``wherewhen --track`` without a Prefect API starts
Prefect's temporary API server as a child process; when the command is SIGKILLed (no clean-up
runs), the guardian the command line starts (``pipelines.lifetime.guard_descendants``) ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowtest_support import BIN, local_env

pytestmark = pytest.mark.slow


def _children(pid: int) -> dict[int, str]:
    """Every descendant of ``pid``: pid -> command line (from /proc)."""
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            try:
                found[kid] = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            frontier.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_sigkilled_tracked_command_leaves_no_prefect_server(tmp_path: Path) -> None:
    env = local_env(tmp_path / "prefect-home")          # no PREFECT_API_URL: --track starts a temporary server
    args = [str(BIN / "wherewhen"), "--track", "dataset", "build", "synthetic", "--clips", "40", "--out",
            str(tmp_path / "ds")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while not server:
            assert proc.poll() is None, "the command ended before its temporary server was seen"
            assert time.monotonic() < deadline, _children(proc.pid)
            server = {p: c for p, c in _children(proc.pid).items() if "uvicorn" in c or "prefect" in c.split()[1:3]}
            time.sleep(0.2)
        guardian = [p for p, c in _children(proc.pid).items() if "pipelines.lifetime" in c]
        assert guardian, "no guardian among the command's children"
        time.sleep(1.5)                                    # the guardian polls every 0.5 s: let it see the server
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in server), server
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in [*_children(proc.pid), *server]:    # what this test started, if the guardian failed
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
