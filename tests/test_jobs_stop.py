"""Stop means stopped: the job's whole process group ends (SIGTERM, SIGKILL after a grace period),
its status says what really happened, and nothing of it writes to the store after Stop returns."""
from __future__ import annotations

import json
import sys
import time

import pytest

from cai_core.jobs import supervisor
from cai_core.jobs import get_job, start_job, stop_job, wait_job
from cai_core.jobs.specs import JudgeJobSpec

CONSTITUTION = {"name": "mini", "principles": [
    {"id": "harm", "name": "Harmless", "critique_request": "Identify harm.", "revision_request": "Remove harm.",
     "comparison_question": "Which response is less harmful?"}]}


def _judgments(store) -> int:
    return int(store.scalar("SELECT COUNT(*) FROM judgments"))


@pytest.mark.slow
def test_stopping_a_judge_job_stops_its_writes(store, tmp_path, tiny_model_dir):
    (tmp_path / "c.json").write_text(json.dumps(CONSTITUTION))
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": f"No {i}."}
            for i in range(400)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = JudgeJobSpec(judge_model=str(tiny_model_dir), constitution=str(tmp_path / "c.json"),
                        pairs=str(tmp_path / "pairs.jsonl"), batch_size=1)
    job_id = start_job(store, spec)
    deadline = time.time() + 180
    while _judgments(store) < 3:
        job = get_job(store, job_id)
        assert job.status in ("queued", "running"), (job.status, job.error)
        assert time.time() < deadline, "the judge job stored nothing"
        time.sleep(0.2)
    job = stop_job(store, job_id)
    after = _judgments(store)
    assert job.status == "stopped", (job.status, job.error)
    assert not supervisor.group_alive(job.pid)
    assert 3 <= after < 800, after
    time.sleep(3)
    assert _judgments(store) == after, "a judgment was written after Stop returned"
    assert get_job(store, job_id).status == "stopped"
    assert get_job(store, job_id).spec["pairs"] == str(tmp_path / "pairs.jsonl")


@pytest.mark.slow
def test_a_process_that_ignores_sigterm_is_killed_with_its_children(tmp_path):
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)']); print('up', flush=True); "
            "time.sleep(120)")
    log = tmp_path / "p.log"
    pid = supervisor.spawn([sys.executable, "-c", code], log)
    deadline = time.time() + 30
    while "up" not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    ended = supervisor.stop(pid, grace_s=0.5)
    assert time.monotonic() - t0 < 20
    assert ended.killed and ended.exit_code == -9, ended
    assert not supervisor.group_alive(pid) and not supervisor.alive(pid)
    assert "SIGKILL" in ended.describe()


def test_a_graceful_exit_reports_its_own_exit_code(tmp_path):
    pid = supervisor.spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "q.log")
    time.sleep(0.3)
    ended = supervisor.stop(pid, grace_s=10)
    assert not ended.killed and ended.exit_code == -15, ended  # ended by the SIGTERM itself
    assert supervisor.reap(pid) == -15 and not supervisor.alive(pid)


def test_a_job_that_finished_before_stop_stays_finished(store, tmp_path):
    """Stop on a job whose process already ended keeps the status the job wrote (no fake 'stopped')."""
    from cai_core.jobs.specs import ExportPrefsSpec

    job_id = start_job(store, ExportPrefsSpec(name="nothing-here"))  # fails at once: nothing to export
    job = wait_job(store, job_id, timeout=120)
    assert job.status == "failed"
    assert stop_job(store, job_id).status == "failed"


def test_dead_job_is_failed_with_the_exit_status(store, tmp_path):
    """refresh() reaps an exited child and says how it ended."""
    from cai_core.jobs import refresh
    from cai_core.store import dumps, now

    pid = supervisor.spawn([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                           tmp_path / "r.log")
    job_id = store.execute("INSERT INTO jobs(kind, status, argv_json, pid, log_path, created_at) VALUES (?,?,?,?,?,?)",
                           ("judge", "running", dumps([]), pid, str(tmp_path / "r.log"), now())).lastrowid
    for _ in range(100):
        if not supervisor.alive(pid):
            break
        time.sleep(0.05)
    refresh(store)
    job = get_job(store, job_id)
    assert job.status == "failed" and job.exit_code == -9 and "signal 9" in job.error, job
