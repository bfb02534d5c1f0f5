"""Background jobs: long work (batch revise, sampling, judging, evaluation) as its own process.

A page builds a typed spec (cai_core/jobspecs.py) and calls `start_job(store, spec)`; it records
the job with the spec's JSON, then spawns `python -m cai_core <spec argv> --job-id N` through the
process supervisor (cai_core/supervisor.py: own session, output in workspace/jobs/N.log). The job
process reports progress through `JobReporter`. Closing the browser or restarting the app never
stops a job; `refresh()` marks jobs whose process died as failed, with the exit status and the
reason from the log tail; `stop_job` ends the whole process group before it returns.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

from cai_core import supervisor
from cai_core.command_line import cli_argv
from cai_core.errors import CaiError
from cai_core.jobspecs import SPECS, JobSpec, spec_from_json
from cai_core.store import Store, dumps, loads, now

TERMINAL = {"finished", "failed", "stopped"}
ACTIVE = ("queued", "running")


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
    spec: dict | None = None  # the typed spec's JSON (jobspecs); None for rows from before specs were stored

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

    def pinned(self) -> dict[str, str]:
        """The inputs the job works on, in words (batch, constitution@version, model, ...)."""
        try:
            return job_spec(self).pinned()
        except (CaiError, SystemExit, TypeError):
            return {}

    @classmethod
    def from_row(cls, row) -> "Job":
        return cls(
            id=row["id"], kind=row["kind"], title=row["title"], status=row["status"],
            argv=loads(row["argv_json"], []),
            spec=loads(row["spec_json"]) if "spec_json" in row.keys() else None, pid=row["pid"], total=row["total"], done=row["done"],
            message=row["message"], log_path=row["log_path"], result=loads(row["result_json"]),
            exit_code=row["exit_code"], error=row["error"], created_at=row["created_at"],
            started_at=row["started_at"], ended_at=row["ended_at"], updated_at=row["updated_at"],
        )


def start_job(store: Store, spec: JobSpec, *, title: str | None = None, total: int | None = None,
              env: dict | None = None) -> int:
    """Record the job (kind, spec JSON) and spawn `python -m cai_core <spec argv> --workspace W --job-id N`.

    `env` adds to the job's environment (the way a secret such as CAI_API_KEY from the app's
    .streamlit/secrets.toml reaches the job): never to its argv, its row or its log."""
    args = spec.to_argv()
    with store.tx() as conn:
        cur = conn.execute(
            "INSERT INTO jobs (kind, title, status, argv_json, spec_json, total, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (spec.KIND, title or spec.title(), "queued", dumps(args), dumps(spec.to_dict()), total, now(), now()),
        )
        job_id = int(cur.lastrowid)
    log_path = store.workspace.jobs_dir / f"{job_id}.log"
    argv = cli_argv(args, store.workspace.root, python=sys.executable) + ["--job-id", str(job_id)]
    pid = supervisor.spawn(argv, log_path, env=env)
    store.execute(
        "UPDATE jobs SET pid=?, log_path=?, argv_json=?, updated_at=? WHERE id=?",
        (pid, str(log_path), dumps(argv), now(), job_id),
    )
    return job_id


def job_spec(job: "Job") -> JobSpec:
    """The typed spec a job was started with (rows from before specs were stored: read from argv)."""
    if job.spec is not None:
        return spec_from_json(job.kind, job.spec)
    cls = SPECS.get(job.kind)
    if cls is None:
        raise CaiError(f"job {job.id} is of unknown kind {job.kind!r}")
    return cls.from_argv(job.argv)


def resume_job(store: Store, job_id: int, *, env: dict | None = None) -> int:
    """Start a stopped or failed job again with the same spec (finished items are skipped)."""
    refresh(store)
    job = get_job(store, job_id)
    if job.status not in ("stopped", "failed"):
        raise CaiError(f"job {job_id} is {job.status}; only a stopped or failed job can be resumed")
    return start_job(store, job_spec(job), title=job.title, total=job.total, env=env)


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
        if not job.pid or supervisor.alive(job.pid):
            continue
        code = supervisor.reap(job.pid)
        if store.scalar("SELECT status FROM jobs WHERE id=?", (job.id,)) not in ACTIVE:
            continue  # it wrote its own end between our two reads
        tail = supervisor.log_tail(job.log_path)
        reason = supervisor.error_line(tail)
        if reason is None:  # no exception logged: it was killed (kill -9, OOM, reboot), not a bug in the job
            last = tail.strip().splitlines()[-1].strip() if tail.strip() else ""
            reason = (f"the job's process {job.pid} ended without finishing ({supervisor.how_it_ended(code)})"
                      + (f"; last output: {last}" if last else ""))
        store.execute(
            "UPDATE jobs SET status='failed', error=?, exit_code=COALESCE(?, exit_code), ended_at=?, updated_at=? "
            "WHERE id=? AND status IN ('queued','running')",
            (reason, code, now(), now(), job.id),
        )


def stop_job(store: Store, job_id: int, *, grace_s: float = supervisor.STOP_GRACE_S) -> Job:
    """Stop a job and return once its whole process group has ended.

    SIGTERM first (the job finishes and stores the item in flight, then records 'stopped'), SIGKILL
    after grace_s. The status is what really happened: the job's own final status when it wrote one
    (it may have finished just before), else 'stopped' with the exit code or signal. Nothing of the
    job writes to the store after this returns.
    """
    job = get_job(store, job_id)
    if job.status in TERMINAL:
        return job
    ended = supervisor.stop(job.pid, grace_s=grace_s)
    own = get_job(store, job_id)
    if own.status in TERMINAL:  # the job recorded its own end (stopped after the item in flight, or finished)
        if ended.exit_code is not None:
            store.execute("UPDATE jobs SET exit_code=? WHERE id=?", (ended.exit_code, job_id))
        return get_job(store, job_id)
    code = ended.exit_code if ended.exit_code is not None else (-9 if ended.killed else None)
    store.execute(
        "UPDATE jobs SET status='stopped', exit_code=?, message=?, ended_at=?, updated_at=? WHERE id=? "
        "AND status IN ('queued','running')",
        (code, f"stopped by the user: {ended.describe()}", now(), now(), job_id),
    )
    return get_job(store, job_id)


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
