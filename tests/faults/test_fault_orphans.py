"""No orphans (issue 15.4): children end with a SIGKILLed parent, without the parent's help.

Each case runs a real parent process that starts real children (a blocked child, the decord
decoder child, a loopback HTTP server, Prefect's temporary API server), SIGKILLs the parent and
looks at what is left. Expected: nothing the parent started outlives it by more than a few seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from pipelines.lifetime import PARENT_PID_ENV

REPO = Path(__file__).resolve().parents[2]


def _start(script: str, tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """Run ``script`` (it prints ``name=pid`` lines, then ``ready``); return it and the pids it printed."""
    path = tmp_path / "parent.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(PARENT_PID_ENV, None)
    proc = subprocess.Popen([sys.executable, str(path)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    pids: dict[str, int] = {}
    for line in proc.stdout:
        line = line.strip()
        if line == "ready":
            return proc, pids
        name, _, pid = line.partition("=")
        pids[name] = int(pid)
    raise AssertionError(f"the parent script ended (exit {proc.wait()}) before it was ready")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive (zombies count as ended) after waiting up to ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.Error:
                pass
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("watch", [True, False])
def test_a_blocked_child_that_watches_its_parent_ends_with_it(watch: bool, tmp_path: Path) -> None:
    """Expected: a child blocked in a system call (as a hung decode would be) ends within 2 s of its
    parent's SIGKILL when it runs exit_with_parent; without it, it is still there (the control)."""
    child = ("from pipelines.lifetime import exit_with_parent; exit_with_parent(); " if watch else "") + \
        "import os; r, w = os.pipe(); os.read(r, 1)"
    proc, pids = _start(f"""
        import os, subprocess, sys, time
        env = {{**os.environ, "{PARENT_PID_ENV}": str(os.getpid())}}
        child = subprocess.Popen([sys.executable, "-c", {child!r}], env=env)
        time.sleep(1.0)
        print(f"child={{child.pid}}", flush=True)
        print("ready", flush=True)
        time.sleep(300)
        """, tmp_path)
    try:
        assert _gone_within([pids["child"]], 0.0) == [pids["child"]], "the child ended before its parent"
        proc.kill()
        proc.wait()
        left = _gone_within([pids["child"]], 2.0)
        assert (left == []) is watch, f"watch={watch}: child left {left}"
    finally:
        _kill([pids["child"]])


def test_the_decoder_child_ends_with_its_parent_while_its_pipe_stays_open(media_files, tmp_path: Path) -> None:
    """Expected: the decord child of a SIGKILLed ClipDecoder owner ends within 2 s although a forked
    sibling still holds its request pipe open (so it never sees end-of-file on stdin)."""
    proc, pids = _start(f"""
        import os, time
        from pipelines.media import ClipDecoder
        dec = ClipDecoder(timeout_s=60)
        dec.probe({str(media_files.bigbuckbunny)!r})
        sibling = os.fork()
        if sibling == 0:
            time.sleep(60)
            os._exit(0)
        print(f"decoder={{dec.pid}}", flush=True)
        print(f"sibling={{sibling}}", flush=True)
        print("ready", flush=True)
        time.sleep(300)
        """, tmp_path)
    try:
        proc.kill()
        proc.wait()
        assert _gone_within([pids["decoder"]], 2.0) == [], "the decoder child outlived its parent"
        assert _gone_within([pids["sibling"]], 0.0) == [pids["sibling"]]   # the pipe was held open all along
    finally:
        _kill([pids["decoder"], pids["sibling"]])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_guardian_ends_third_party_children_and_theirs(tmp_path: Path) -> None:
    """Expected: with guard_descendants, a loopback HTTP server and a shell with two sleeping
    children, none of which knows its parent, all end within 10 s of the parent's SIGKILL; the
    guardian ends too."""
    proc, pids = _start("""
        import socket, subprocess, sys, time
        from pipelines.lifetime import guard_descendants
        guardian = guard_descendants(poll_s=0.1, grace_s=2.0)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shell = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)   # the guardian has seen them all
        print(f"port={port}", flush=True)
        for name, p in (("guardian", guardian), ("server", server), ("shell", shell)):
            print(f"{name}={p.pid}", flush=True)
        print("ready", flush=True)
        time.sleep(300)
        """, tmp_path)
    victims = [pids["server"], pids["shell"], *(c.pid for c in psutil.Process(pids["shell"]).children(recursive=True))]
    try:
        assert len(victims) == 4 and _port_open(pids["port"])
        proc.kill()
        proc.wait()
        assert _gone_within(victims, 10.0) == []
        assert not _port_open(pids["port"])
        assert _gone_within([pids["guardian"]], 5.0) == []
    finally:
        _kill([*victims, pids["guardian"]])


@pytest.mark.slow
def test_the_guardian_ends_prefects_temporary_api_server(tmp_path: Path) -> None:
    """Expected: Prefect's temporary API server (what ``wherewhen --track`` starts without a
    PREFECT_API_URL; issue 15 saw it outlive 15 of 15 SIGKILLed commands) ends within 15 s of its
    parent's SIGKILL when the parent runs guard_descendants; its port closes."""
    home = tmp_path / "prefect_home"
    proc, pids = _start(f"""
        import os, time
        os.environ["PREFECT_HOME"] = {str(home)!r}
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        os.environ.pop("PREFECT_API_URL", None)
        from pipelines.lifetime import guard_descendants
        guardian = guard_descendants(poll_s=0.2)
        from prefect.server.api.server import SubprocessASGIServer
        server = SubprocessASGIServer()
        server.start(timeout=240)
        time.sleep(1.0)   # the guardian has seen it
        print(f"port={{server.port}}", flush=True)
        print(f"server={{server.server_process.pid}}", flush=True)
        print(f"guardian={{guardian.pid}}", flush=True)
        print("ready", flush=True)
        time.sleep(300)
        """, tmp_path)
    try:
        assert _port_open(pids["port"])
        proc.kill()
        proc.wait()
        assert _gone_within([pids["server"]], 15.0) == [], "Prefect's temporary server outlived its parent"
        assert not _port_open(pids["port"])
    finally:
        _kill([pids["server"], pids["guardian"]])
