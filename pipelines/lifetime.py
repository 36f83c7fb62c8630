"""Child processes that end with their parent, even when the parent is SIGKILLed (Linux).

A parent that is killed with SIGKILL runs no cleanup, so a child that must not outlive it has to
notice by itself. Two mechanisms, neither needing the parent's cooperation at its death:

- :func:`exit_with_parent`, called *in* a child of ours (the decoder child, the synthetic encoder
  pool's initializer): a daemon thread polls ``os.getppid()`` and ends the process with
  ``os._exit`` once the parent it was started by is gone (the kernel re-parents an orphan). It
  works whichever thread of the parent started the child (``PR_SET_PDEATHSIG`` would fire when
  that *thread* ends) and needs no pipe that forked grandchildren could hold open.
- :func:`guard_descendants`, called once by a command-line process whose children are not ours to
  change (Prefect's temporary API server, a Dask worker, any third-party subprocess): it starts a
  small guardian process (``python -m pipelines.lifetime``, stdlib only) that records the
  caller's descendants every ``poll_s`` seconds and, when the caller is gone, sends them SIGTERM
  and, after ``grace_s``, SIGKILL. A child started less than ``poll_s`` before the caller died
  may be missed (it was never seen); the children of one that was seen are not.

Processes are named by (pid, start time), so a recycled pid is never signalled.
:func:`process_start_time` is also what :mod:`pipelines.atomic` uses to tell a dead writer's temp
file from a live one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["PARENT_PID_ENV", "exit_with_parent", "guard_descendants", "process_start_time"]

log = logging.getLogger(__name__)

#: environment variable that tells a child started with ``python -m ...`` its parent's pid
PARENT_PID_ENV = "WHEREWHEN_PARENT_PID"

#: exit status of a child that ended because its parent was gone
ORPHAN_EXIT = 75

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state, ppid, ...), None without such a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    return raw[raw.rfind(")") + 2:].split()   # the command name may hold spaces and ')'


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _start_ticks(pid: int) -> int | None:
    """Process ``pid``'s start in clock ticks after boot (its identity with the pid), None when
    there is none or it is a zombie (it has ended)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, to a clock tick), None when there is
    none (or it is a zombie, which has ended)."""
    ticks = _start_ticks(pid)
    return None if ticks is None else _boot_time() + ticks / _CLK_TCK


# ------------------------------------------------------------------------------- in the child


def _watch(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(ORPHAN_EXIT)


def exit_with_parent(parent_pid: int | None = None, poll_s: float = 0.2) -> threading.Thread | None:
    """In a child process: end it (``os._exit``) within ``poll_s`` seconds of its parent's death.

    Args:
        parent_pid: the pid of the process that started this one; None reads :data:`PARENT_PID_ENV`
            (nothing is watched when that is unset too). Pass it rather than reading
            ``os.getppid()`` here: a parent that died before this call is then noticed at once.
        poll_s: seconds between checks.
    Returns:
        The watching daemon thread, or None when nothing is watched. Usable as a
        ``ProcessPoolExecutor`` initializer: ``initializer=exit_with_parent, initargs=(os.getpid(),)``.
    """
    if parent_pid is None:
        value = os.environ.get(PARENT_PID_ENV)
        if not value:
            return None
        parent_pid = int(value)
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT)
    thread = threading.Thread(target=_watch, args=(parent_pid, poll_s), name="exit-with-parent", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------- guardian


def _children_map() -> dict[int, list[int]]:
    """{ppid: [pid, ...]} of every process visible in /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def _descendants(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _signal_all(procs: dict[int, int], sig: int) -> None:
    for pid, started in procs.items():
        if _start_ticks(pid) == started:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _alive(procs: dict[int, int]) -> dict[int, int]:
    return {pid: t for pid, t in procs.items() if _start_ticks(pid) == t}


def _wait(procs: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.monotonic() + seconds
    left = _alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _alive(left)
    return left


def _is_resource_tracker(pid: int) -> bool:
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _guard(parent_pid: int, poll_s: float, grace_s: float) -> None:
    """The guardian's loop (runs in the process :func:`guard_descendants` starts)."""
    me = os.getpid()
    seen: dict[int, int] = {}
    while os.getppid() == parent_pid:
        kids = _children_map()
        for pid in _descendants(parent_pid, kids):
            if pid != me and pid not in seen:
                started = _start_ticks(pid)
                if started is not None:
                    seen[pid] = started
        seen = _alive(seen)
        time.sleep(poll_s)
    # the parent is gone: everything it left, and whatever those started since
    kids = _children_map()
    victims = _alive(seen)
    for pid in list(victims):
        for sub in _descendants(pid, kids):
            started = _start_ticks(sub)
            if sub != me and started is not None:
                victims[sub] = started
    if not victims:
        return
    # multiprocessing's resource tracker ignores SIGTERM and removes leaked semaphores and shared
    # memory once every process holding its pipe is gone: give it that chance before any SIGKILL
    trackers = {p: t for p, t in victims.items() if _is_resource_tracker(p)}
    others = {p: t for p, t in victims.items() if p not in trackers}
    _signal_all(others, signal.SIGTERM)
    left = _wait(others, grace_s)
    _signal_all(left, signal.SIGKILL)
    _wait(left, grace_s)
    _signal_all(_wait(trackers, grace_s), signal.SIGKILL)


def guard_descendants(poll_s: float = 0.5, grace_s: float = 3.0) -> subprocess.Popen[bytes]:
    """Start the guardian of this process's descendants (see the module docstring); return it.

    Call once, early, in a process whose children must not outlive it, such as the command line
    before a stage that may start Prefect's temporary API server. The guardian ends by itself
    once this process is gone (after its clean-up), also after a normal exit.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.lifetime", str(os.getpid()), str(poll_s), str(grace_s)],
        stdin=subprocess.DEVNULL, env=env, close_fds=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry of ``python -m pipelines.lifetime PARENT_PID POLL_S GRACE_S`` (the guardian)."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group; clean up after it
    _guard(int(args[0]), float(args[1]), float(args[2]))


if __name__ == "__main__":
    main()
