"""Running the real command line and SIGKILLing it (issue 15): what it leaves behind.

The command runs in its own session (``start_new_session``), so every process it starts, and
everything those start, carries the session id of the command's pid unless it leaves the session
itself; the processes of the session and the command's descendants are both looked at.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipelines.atomic import is_temp_name

REPO = Path(__file__).resolve().parents[2]
SHM = Path("/dev/shm")


def cli() -> list[str]:
    """The installed ``wherewhen`` script beside this interpreter."""
    script = Path(sys.executable).parent / "wherewhen"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "flows.cli"]


def session_processes(sid: int) -> dict[int, str]:
    """{pid: command line} of the live processes of session ``sid`` (zombies excluded)."""
    found: dict[int, str] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getsid(proc.pid) != sid:
                continue
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
        found[proc.pid] = " ".join(proc.info["cmdline"] or [])[:160]
    return found


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of ``pid``'s live descendants."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    out = {}
    for k in kids:
        try:
            if k.status() != psutil.STATUS_ZOMBIE:
                out[k.pid] = " ".join(k.cmdline())[:160]
        except psutil.Error:
            continue
    return out


def shm_in_use(pids: list[int]) -> set[str]:
    """Names under /dev/shm (POSIX semaphores ``sem.*``, shared memory ``psm_*``) that ``pids`` map or hold open."""
    names: set[str] = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    names.add(line.rsplit("/dev/shm/", 1)[1].split(" (deleted)")[0].strip())
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    names.add(target[len("/dev/shm/"):].split(" (deleted)")[0])
        except OSError:
            continue
    return names


@dataclass
class KillReport:
    """What one SIGKILLed command left."""

    delay_s: float                      # after the work marker
    killed_mid_run: bool                # False: the command had finished before the kill moment
    at_kill: dict[int, str] = field(default_factory=dict)     # its processes when it was killed
    left: dict[int, str] = field(default_factory=dict)        # still alive after the grace period
    leaked_shm: set[str] = field(default_factory=set)         # /dev/shm names they used, still there


def kill_at(args: list[str], cwd: Path, marker: re.Pattern[str], delay_s: float, log: Path,
            grace_s: float = 20.0, ready: Callable[[int], bool] | None = None) -> KillReport:
    """Run ``wherewhen ARGS``; ``delay_s`` seconds after the first stderr line matching ``marker``
    (the stage's work has begun: the imports are done) and, when ``ready`` is given, after
    ``ready(the command's pid)`` first holds (it is asked every 10 ms), SIGKILL the command's process only, as the
    OOM killer or ``kill -9`` would; then wait up to ``grace_s`` for every process it started to
    end, and look at what is left. Leftover processes are killed afterwards (and reported)."""
    with open(log, "ab") as err:
        err.write(f"\n=== {' '.join(args)} (kill {delay_s:.2f} s after the marker)\n".encode())
        err.flush()
        shm_before = _shm_names()
        proc = subprocess.Popen([*cli(), "-v", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=err,
                                stderr=subprocess.PIPE, start_new_session=True)
        assert proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        buf, seen, t_mark, deadline = b"", None, None, time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            chunk = proc.stderr.read() or b""
            if chunk:
                err.write(chunk)
                buf = (buf + chunk)[-20000:]
                if seen is None and marker.search(buf.decode("utf-8", "replace")):
                    seen = time.monotonic()
            if t_mark is None and seen is not None and (ready is None or ready(proc.pid)):
                t_mark = time.monotonic()
            if t_mark is not None and time.monotonic() >= t_mark + delay_s:
                break
            time.sleep(0.01)
        report = KillReport(delay_s=delay_s, killed_mid_run=proc.poll() is None)
        if report.killed_mid_run:
            report.at_kill = {**session_processes(proc.pid), **descendants(proc.pid)}
            shm = shm_in_use(list(report.at_kill))
            proc.kill()
        else:
            shm = set()
        proc.wait()
        err.write(proc.stderr.read() or b"")
        proc.stderr.close()
    end = time.monotonic() + grace_s
    left = {p: c for p, c in report.at_kill.items() if psutil.pid_exists(p)}
    while time.monotonic() < end:
        left = {**{p: c for p, c in left.items() if _alive(p)}, **session_processes(proc.pid)}
        if not left:
            break
        time.sleep(0.1)
    report.left = left
    _end(left)
    # what the run created (seen in its processes' maps at the kill, or new since its start) and no
    # live process uses: left behind
    candidates = {n for n in shm | (_shm_names() - shm_before) if (SHM / n).exists()}
    report.leaked_shm = candidates - shm_in_use(list(psutil.pids())) if candidates else set()
    return report


def _shm_names() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def _end(procs: dict[int, str]) -> None:
    """SIGKILL leftover processes, the resource trackers last (once the others are gone they remove
    the semaphores they track; a SIGKILLed tracker would leak them onto the machine)."""
    trackers = {p for p, c in procs.items() if "resource_tracker" in c}
    for pid in [p for p in procs if p not in trackers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while any(_alive(p) for p in trackers) and time.monotonic() < end:
        time.sleep(0.1)
    for pid in trackers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run_to_end(args: list[str], cwd: Path, log: Path, timeout_s: float = 300) -> None:
    """Run ``wherewhen ARGS`` to its end; it must exit 0."""
    with open(log, "ab") as err:
        err.write(f"\n=== {' '.join(args)} (to the end)\n".encode())
        err.flush()
        done = subprocess.run([*cli(), "-v", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                              timeout=timeout_s, start_new_session=True, check=False)
    assert done.returncode == 0, f"wherewhen {' '.join(args)} exited {done.returncode}; see {log}"


def leftover_files(root: Path) -> list[str]:
    """Files under ``root`` that only a killed writer leaves: atomic-write temp names, ``.part``,
    ``.tmp``, ``.lnk``, temp shards and shard claims."""
    odd = []
    for path in root.rglob("*"):
        name = path.name
        if (is_temp_name(name) or name.endswith((".part", ".part.json", ".tmp", ".lnk"))
                or name.startswith((".shard-", ".claim-")) or re.match(r"^\..+\.[a-z0-9_]{8}\.\w+$", name)):
            odd.append(str(path.relative_to(root)))
    return sorted(odd)


def file_set(root: Path) -> set[str]:
    """Relative paths of the files under ``root``."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
