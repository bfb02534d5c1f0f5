"""Issue 22 item 11: a finished job's process is reaped when it ends, not left a zombie until the app
stops; its exit code is still known afterwards (reap / alive / stop answer from what was recorded)."""
from __future__ import annotations

import os
import sys
import time

import pytest

from cai_core.jobs import supervisor


def _state(pid: int) -> str | None:
    """The process state letter in /proc (Z: zombie), None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _state(pid) is None:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_ended_children_are_reaped_without_anyone_asking(tmp_path):
    pids = [supervisor.spawn([sys.executable, "-c", f"import sys; sys.exit({code})"], tmp_path / f"{code}.log")
            for code in (0, 3, 5)]
    # nobody calls reap/alive/stop: before, each stayed a zombie ('Z') until this process ended
    for pid in pids:
        assert _gone(pid), f"process {pid} is still in /proc as {_state(pid)!r} after it ended"
    assert [supervisor.reap(pid) for pid in pids] == [0, 3, 5]  # the exit codes are remembered
    assert not any(supervisor.alive(pid) for pid in pids)
    assert supervisor.stop(pids[1]).exit_code == 3


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_running_child_is_not_reaped_early(tmp_path):
    pid = supervisor.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "s.log")
    time.sleep(0.3)
    assert supervisor.alive(pid) and supervisor.reap(pid) is None and _state(pid) not in (None, "Z")
    ended = supervisor.stop(pid, grace_s=10)
    assert ended.exit_code == -15 and _gone(pid)
    assert supervisor.reap_all() == {}  # nothing ended is left unreaped


@pytest.mark.slow
def test_a_finished_job_leaves_no_zombie(store):
    """A job that writes its own end is never looked at by refresh() again: its process must still go."""
    from cai_core.jobs import get_job, start_job
    from cai_core.jobs.specs import ExportPrefsSpec

    job_id = start_job(store, ExportPrefsSpec(name="empty-export"))
    deadline = time.time() + 120
    while get_job(store, job_id).status in ("queued", "running") and time.time() < deadline:
        time.sleep(0.2)  # reads the store only: no reap, no alive
    job = get_job(store, job_id)
    assert job.status in ("finished", "failed"), job.status
    assert _gone(job.pid), f"job {job_id}'s process {job.pid} is {_state(job.pid)!r}"


def test_asking_while_the_waiter_reaps_gives_the_exit_code(tmp_path):
    """reap() racing the waiter thread never answers 'still running' for long, nor a wrong code."""
    for i in range(6):
        pid = supervisor.spawn([sys.executable, "-c", "import sys; sys.exit(7)"], tmp_path / f"r{i}.log")
        deadline = time.time() + 30
        code = None
        while code is None and time.time() < deadline:
            code = supervisor.reap(pid)  # asked over and over while the child ends and is reaped
        assert code == 7
        assert supervisor.stop(pid).exit_code == 7 and not supervisor.alive(pid)
