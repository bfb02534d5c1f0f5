"""The one process supervisor: spawn, liveness, stop, reap and log tails of background processes.

Background jobs (cai_core/jobs/__init__.py) and training runs (cai_core/training/runs.py) are both
processes started in their own session (so their process group is the whole job: the command, an
`accelerate launch` and its ranks, a llama.cpp child). Everything about those processes lives here:

- `spawn` starts one detached, its output appended to a log file;
- `alive` says whether it still runs (a zombie, i.e. an exited child nobody reaped yet, does not);
- `reap` collects the exit status of a child of this process (the app server, or a test); every
  spawned child is also reaped by its own waiter thread the moment it ends (no zombies while the
  app runs), and `reap` then answers from what that thread recorded;
- `stop` ends the process group: SIGTERM, a grace period for the item in flight, then SIGKILL;
  it returns only once no process of the group is left, with how the process really ended;
- `log_tail` / `failure_reason` read why a process died from its log.

A process started by another process (an earlier app server) is not our child: its exit status is
unknown here, so callers fall back to what the process itself recorded in the store.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL: long enough for a job to finish and store the item in flight


def spawn(argv: list[str], log_path: str | Path, *, env: dict | None = None, header: str | None = None) -> int:
    """Start argv detached (own session, stdin closed, stdout+stderr appended to log_path); returns the pid."""
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    child_env.setdefault("OMP_NUM_THREADS", "1")
    child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        if header:
            log.write(header.encode())
            log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=child_env, cwd=str(REPO_ROOT))
    with _LOCK:
        _EXIT_CODES.pop(proc.pid, None)  # a reused pid: the old exit code is not this process's
        _CHILDREN[proc.pid] = proc  # keeps the Popen (and with it our right to reap) for reap()
        _REAPED[proc.pid] = threading.Event()
    # reaped the moment it ends: an ended job left a zombie per job until the app stopped (issue 22)
    threading.Thread(target=_reap_when_done, args=(proc,), name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen] = {}
_EXIT_CODES: dict[int, int] = {}  # pid -> exit code (negative: killed by that signal), once reaped
_REAPED: dict[int, threading.Event] = {}  # pid -> set once its waiter thread recorded the exit code
_LOCK = threading.Lock()


def _reap_when_done(proc: subprocess.Popen) -> None:
    """Wait for one spawned child (in its own daemon thread) and record its exit code."""
    try:
        code = proc.wait()
    except Exception:  # noqa: BLE001 - reap() still polls it
        return
    with _LOCK:
        if _CHILDREN.get(proc.pid) is proc:
            _EXIT_CODES[proc.pid] = code
            _CHILDREN.pop(proc.pid, None)
        event = _REAPED.pop(proc.pid, None)
    if event is not None:
        event.set()


def _ended(pid: int) -> bool:
    """Whether pid is gone or a zombie (ended, perhaps not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def reap_all() -> dict[int, int]:
    """Reap every ended child spawned here (the waiter threads normally did already); {pid: exit code}."""
    with _LOCK:
        pids = list(_CHILDREN)
    return {pid: code for pid in pids if (code := reap(pid)) is not None}


def reap(pid: int | None) -> int | None:
    """Exit code of a finished child of this process (negative = the signal that ended it); None when
    it still runs or is not our child. Reaping is remembered, so asking twice gives the same answer."""
    if not pid:
        return None
    with _LOCK:
        if pid in _EXIT_CODES:
            return _EXIT_CODES[pid]
        proc = _CHILDREN.get(pid)
    if proc is not None:
        code = proc.poll()
        if code is None:
            # poll() answers None while the waiter thread holds the Popen's wait lock, even for an
            # ended child: when it has ended, let the waiter finish recording its exit code
            with _LOCK:
                event = _REAPED.get(pid)
            if event is not None and (not _ended(pid) or not event.wait(5)):
                return None  # still runs
            with _LOCK:  # the waiter recorded it (or had already, event None)
                return _EXIT_CODES.get(pid)
        with _LOCK:
            if _CHILDREN.get(pid) is proc:
                _CHILDREN.pop(pid, None)
            _EXIT_CODES[pid] = code
        return code
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        with _LOCK:  # its waiter thread may have reaped it between our two looks
            return _EXIT_CODES.get(pid)
    if done == 0:
        return None
    with _LOCK:
        _EXIT_CODES[pid] = os.waitstatus_to_exitcode(status)
        return _EXIT_CODES[pid]


def alive(pid: int | None) -> bool:
    """Whether the process runs (reaps it first when it is our exited child; a zombie is not alive)."""
    if not pid:
        return False
    if reap(pid) is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited child of someone else, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def group_alive(pgid: int | None) -> bool:
    """Whether any process of the group led by pgid still runs (children of a killed leader count)."""
    if not pgid:
        return False
    reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also answers for zombies: look for a live member
    try:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[2]) == pgid and rest[0] != "Z":
                return True
    except OSError:
        return alive(pgid)
    return False


def signal_group(pid: int, sig: int) -> None:
    """Send sig to the process group pid leads (its own session), else to the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Ended:
    """How a stopped process ended."""

    exit_code: int | None  # None: not our child, its status is unknown here
    killed: bool  # it ignored SIGTERM for the grace period and was SIGKILLed

    def describe(self) -> str:
        if self.killed:
            return "killed (SIGKILL) after it did not stop within the grace period"
        if self.exit_code is None:
            return "ended"
        if self.exit_code < 0:
            sig = -self.exit_code
            return f"ended by signal {signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig}"
        return f"exited with code {self.exit_code}"


def stop(pid: int | None, *, grace_s: float = STOP_GRACE_S, poll_s: float = 0.05) -> Ended:
    """End pid's process group: SIGTERM, then SIGKILL after grace_s (at once when grace_s is 0).
    Returns once none of it runs."""
    if not pid or not group_alive(pid):
        return Ended(reap(pid) if pid else None, False)
    if grace_s > 0:
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(poll_s)
    killed = False
    if group_alive(pid):
        killed = True
        signal_group(pid, signal.SIGKILL)
        try:  # the leader may be gone already while members live on
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 30
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(poll_s)
    return Ended(reap(pid), killed)


def log_tail(path: str | Path | None, lines: int = 30) -> str:
    """The last lines of a log file ("" when there is none)."""
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 16_384))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def error_line(tail: str) -> str | None:
    """The last line of a log tail that reads like an error, if any."""
    for line in reversed(tail.splitlines()):
        s = line.strip()
        if s.startswith("error:") or ("Error" in s and ":" in s) or s.startswith("Killed"):
            return s
    return None


def failure_reason(tail: str) -> str:
    """The most telling line of a log tail: the last exception line, else the last line."""
    found = error_line(tail)
    if found:
        return found
    return tail.strip().splitlines()[-1] if tail.strip() else "the process ended without a message"


def how_it_ended(code: int | None) -> str:
    return (f"signal {-code}" if code is not None and code < 0 else
            f"exit code {code}" if code is not None else "process gone")
