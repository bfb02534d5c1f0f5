"""Background jobs: long work (batch revise, sampling, judging, evaluation) as its own process.

A page or the CLI calls `start_job(...)`; it records the job, then spawns
`python -m cai_core <command> ... --job-id N` detached (own session), with its output in
workspace/jobs/N.log. The job process reports progress through `JobReporter`. Closing the
browser or restarting the app never stops a job; `refresh()` marks jobs whose process died
as failed, with the reason from the log tail.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cai_core.command_line import cli_argv
from cai_core.errors import CaiError
from cai_core.store import Store, dumps, loads, now

TERMINAL = {"finished", "failed", "stopped"}


@dataclass
class Job:
    id: int
    kind: str
    title: str | None
    status: str
    argv: list[str]
    pid: int | None
    total: int | None
    done: int
    message: str | None
    log_path: str | None
    result: dict | None
    exit_code: int | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    updated_at: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the rate so far (None until one item is done)."""
        if not self.total or not self.done or not self.started_at or self.status in TERMINAL:
            return None
        elapsed = (self.updated_at or now()) - self.started_at
        return elapsed / self.done * (self.total - self.done)

    @classmethod
    def from_row(cls, row) -> "Job":
        return cls(
            id=row["id"], kind=row["kind"], title=row["title"], status=row["status"],
            argv=loads(row["argv_json"], []), pid=row["pid"], total=row["total"], done=row["done"],
            message=row["message"], log_path=row["log_path"], result=loads(row["result_json"]),
            exit_code=row["exit_code"], error=row["error"], created_at=row["created_at"],
            started_at=row["started_at"], ended_at=row["ended_at"], updated_at=row["updated_at"],
        )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited child not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def log_tail(path: str | Path | None, lines: int = 30) -> str:
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 16_384))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _error_line(tail: str) -> str | None:
    for line in reversed(tail.splitlines()):
        s = line.strip()
        if s.startswith("error:") or ("Error" in s and ":" in s) or s.startswith("Killed"):
            return s
    return None


def failure_reason(tail: str) -> str:
    """The most telling line of a log tail: the last exception line, else the last line."""
    found = _error_line(tail)
    if found:
        return found
    return tail.strip().splitlines()[-1] if tail.strip() else "the process ended without a message"


def start_job(store: Store, kind: str, args: list[str], *, title: str | None = None, total: int | None = None,
              env: dict | None = None) -> int:
    """Record and spawn `python -m cai_core <args> --workspace W --job-id N` in the background.

    `env` adds to the job's environment (the way a secret such as CAI_API_KEY from the app's
    .streamlit/secrets.toml reaches the job): never to its argv, its row or its log."""
    with store.tx() as conn:
        cur = conn.execute(
            "INSERT INTO jobs (kind, title, status, argv_json, total, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
            (kind, title, "queued", dumps(args), total, now(), now()),
        )
        job_id = int(cur.lastrowid)
    log_path = store.workspace.jobs_dir / f"{job_id}.log"
    argv = cli_argv(args, store.workspace.root, python=sys.executable) + ["--job-id", str(job_id)]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    child_env.setdefault("OMP_NUM_THREADS", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=child_env, cwd=str(Path(__file__).resolve().parent.parent),
        )
    store.execute(
        "UPDATE jobs SET pid=?, log_path=?, argv_json=?, updated_at=? WHERE id=?",
        (proc.pid, str(log_path), dumps(argv), now(), job_id),
    )
    return job_id


def get_job(store: Store, job_id: int) -> Job:
    row = store.one("SELECT * FROM jobs WHERE id=?", (job_id,))
    if row is None:
        raise CaiError(f"no job {job_id}")
    return Job.from_row(row)


def list_jobs(store: Store, kind: str | None = None, limit: int = 50) -> list[Job]:
    refresh(store)
    if kind:
        rows = store.query("SELECT * FROM jobs WHERE kind=? ORDER BY id DESC LIMIT ?", (kind, limit))
    else:
        rows = store.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    return [Job.from_row(r) for r in rows]


def refresh(store: Store) -> None:
    """Mark jobs whose process is gone (killed, crashed) as failed, with the reason from the log."""
    for row in store.query("SELECT * FROM jobs WHERE status IN ('queued','running')"):
        job = Job.from_row(row)
        if job.pid and not pid_alive(job.pid):
            tail = log_tail(job.log_path)
            reason = _error_line(tail)
            if reason is None:  # no exception logged: it was killed (kill -9, OOM, reboot), not a bug in the job
                last = tail.strip().splitlines()[-1].strip() if tail.strip() else ""
                reason = (f"the job's process {job.pid} ended without finishing (killed?)"
                          + (f"; last output: {last}" if last else ""))
            store.execute(
                "UPDATE jobs SET status='failed', error=?, ended_at=?, updated_at=? WHERE id=? AND status IN ('queued','running')",
                (reason, now(), now(), job.id),
            )


def stop_job(store: Store, job_id: int) -> None:
    """Ask a job to stop (SIGTERM to its process group); it finishes the item in flight and exits."""
    job = get_job(store, job_id)
    if job.status in TERMINAL:
        return
    if job.pid and pid_alive(job.pid):
        try:
            os.killpg(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    store.execute("UPDATE jobs SET status='stopped', ended_at=?, updated_at=? WHERE id=?", (now(), now(), job_id))


class JobReporter:
    """Used inside a job process (or a CLI run without a job) to report progress to the store."""

    def __init__(self, store: Store | None, job_id: int | None, total: int | None = None):
        self.store = store if job_id else None
        self.job_id = job_id
        self._stop = False
        self._last = 0.0
        if self.store is not None:
            self.store.execute(
                "UPDATE jobs SET status='running', pid=?, started_at=COALESCE(started_at, ?), total=COALESCE(?, total), updated_at=? WHERE id=?",
                (os.getpid(), now(), total, now(), job_id),
            )
            signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self._stop = True

    @property
    def should_stop(self) -> bool:
        return self._stop

    def progress(self, done: int, total: int | None = None, message: str | None = None, force: bool = False) -> None:
        if self.store is None:
            return
        t = now()
        if not force and t - self._last < 0.5:
            return
        self._last = t
        self.store.execute(
            "UPDATE jobs SET done=?, total=COALESCE(?, total), message=COALESCE(?, message), updated_at=? WHERE id=?",
            (done, total, message, t, self.job_id),
        )

    def finish(self, result: dict | None = None, status: str | None = None) -> None:
        if self.store is None:
            return
        status = status or ("stopped" if self._stop else "finished")
        self.store.execute(
            "UPDATE jobs SET status=?, result_json=?, exit_code=0, ended_at=?, updated_at=? WHERE id=?",
            (status, dumps(result) if result is not None else None, now(), now(), self.job_id),
        )

    def fail(self, error: str) -> None:
        if self.store is None:
            return
        self.store.execute(
            "UPDATE jobs SET status='failed', error=?, exit_code=1, ended_at=?, updated_at=? WHERE id=?",
            (error, now(), now(), self.job_id),
        )


def wait_job(store: Store, job_id: int, timeout: float = 600, poll: float = 0.5) -> Job:
    """Block until a job ends (tests and scripts)."""
    deadline = time.time() + timeout
    while True:
        refresh(store)
        job = get_job(store, job_id)
        if job.status in TERMINAL:
            return job
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
        time.sleep(poll)
