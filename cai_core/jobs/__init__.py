"""Background jobs: long work (batch revise, sampling, judging, evaluation) as its own process.

A page builds a typed spec (cai_core/jobs/specs.py) and calls `start_job(store, spec)`; it records
the job with the spec's JSON, then spawns `python -m cai_core <spec argv> --job-id N` through the
process supervisor (cai_core/jobs/supervisor.py: own session, output in workspace/jobs/N.log). The job
process reports progress through `JobReporter`. Closing the browser or restarting the app never
stops a job; `refresh()` marks jobs whose process died as failed, with the exit status and the
reason from the log tail; `stop_job` ends the whole process group before it returns.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from cai_core.jobs import supervisor
from cai_core.jobs.command_line import cli_argv
from cai_core.errors import CaiError
from cai_core.jobs.specs import SPECS, JobSpec, spec_from_json
from cai_core.store import Store, dumps, loads, now

TERMINAL = {"finished", "failed", "stopped"}
ACTIVE = ("queued", "running")

# The unit a job's progress counts, by kind, when the job did not name one (JobReporter unit=...).
UNITS = {"revise": "steps", "judge": "judgments", "eval-judge": "judgments", "pairs-sample": "prompts",
         "export-prefs": "comparisons", "export-sft": "trajectories"}
COUNT_KEYS = ("total", "done", "failed", "skipped", "retries")


@dataclass(frozen=True)
class JobProgress:
    """A job's progress in its own unit: what the card, the jobs panel and `jobs list|show` print.

    done + failed + skipped items of `total` are behind the job (skipped: not run by this job, e.g.
    already stored by an earlier one); `stored` says the counts were read from the store's rows of the
    job (judgments), not only from what the job reported."""

    state: str  # queued | running | finished | failed | stopped
    unit: str
    total: int | None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    stored: bool = False

    @property
    def processed(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        if self.total:
            return min(1.0, self.processed / self.total)
        return 1.0 if self.state == "finished" else 0.0

    def counted(self) -> str:
        """'16 of 112 judgments (2 failed, 8 already stored, 3 retries)'; '' when nothing is known."""
        if self.total is None and not self.processed:
            return ""
        text = (f"{self.processed} of {self.total} {self.unit}" if self.total is not None
                else f"{self.processed} {self.unit}")
        extra = [f"{n} {what}" for n, what in ((self.failed, "failed"), (self.skipped, "skipped (already done)"),
                                               (self.retries, "retries" if self.retries != 1 else "retry")) if n]
        return text + (f" ({', '.join(extra)})" if extra else "")

    def text(self) -> str:
        """'stopped - 16 of 112 judgments'."""
        counted = self.counted()
        return f"{self.state} - {counted}" if counted else self.state

    def to_dict(self) -> dict:
        return {"state": self.state, "unit": self.unit, "total": self.total, "done": self.done,
                "failed": self.failed, "skipped": self.skipped, "retries": self.retries,
                "processed": self.processed, "stored": self.stored, "text": self.text()}


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
    counts: dict | None = None  # what the job reported through JobReporter.count (unit, total, done, ...)
    stored: dict | None = None  # what the store holds of the job's work (store_counts), filled by get_job/list_jobs

    @property
    def progress(self) -> JobProgress:
        """Progress in the job's unit: the store's count of the job's rows where there is one (a
        judge job's judgments), else what the job reported; total from what the job reported."""
        c = self.counts or {}
        unit = c.get("unit") or UNITS.get(self.kind, "items")
        total = c.get("total", self.total)
        done = int(c.get("done", self.done) or 0)
        failed, skipped, retries = (int(c.get(k) or 0) for k in ("failed", "skipped", "retries"))
        stored = False
        if self.stored and self.stored.get("unit") == unit:
            done, failed, stored = int(self.stored.get("done", 0)), int(self.stored.get("failed", 0)), True
        if total is not None and done + failed + skipped > total:
            total = done + failed + skipped  # the job's plan grew (or was never reported): never read "20 of 16"
        return JobProgress(self.status, unit, total, done, failed, skipped, retries, stored)

    @property
    def fraction(self) -> float:
        return self.progress.fraction

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the rate so far (None until one item is done)."""
        prog = self.progress
        worked = prog.done + prog.failed  # skipped items took no time
        if not prog.total or not worked or not self.started_at or self.status in TERMINAL:
            return None
        elapsed = (self.updated_at or now()) - self.started_at
        return elapsed / worked * max(0, prog.total - prog.processed)

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
            spec=loads(row["spec_json"]) if "spec_json" in row.keys() else None,
            counts=loads(row["counts_json"]) if "counts_json" in row.keys() else None,
            pid=row["pid"], total=row["total"], done=row["done"],
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
            "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
            (spec.KIND, title or spec.title(), "queued", dumps(args), dumps(spec.to_dict()), total, now(), now()),
        )
        job_id = int(cur.fetchall()[0][0])  # fetchall: the statement is finished before the commit
    log_path = store.workspace.jobs_dir / f"{job_id}.log"
    argv = cli_argv(args, store.workspace.root, python=sys.executable) + ["--job-id", str(job_id)]
    pid = supervisor.spawn(argv, log_path, env={**store.child_env(), **(env or {})})  # a PostgreSQL store's URL too
    store.execute(
        "UPDATE jobs SET pid=?, host=?, log_path=?, argv_json=?, updated_at=? WHERE id=?",
        (pid, socket.gethostname(), str(log_path), dumps(argv), now(), job_id),
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
    return _with_stored(store, [Job.from_row(row)])[0]


def list_jobs(store: Store, kind: str | None = None, limit: int = 50) -> list[Job]:
    refresh(store)
    if kind:
        rows = store.query("SELECT * FROM jobs WHERE kind=? ORDER BY id DESC LIMIT ?", (kind, limit))
    else:
        rows = store.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    return _with_stored(store, [Job.from_row(r) for r in rows])


# Kinds whose work the store counts per job: kind -> (unit, SQL giving job_id, done, failed for job ids).
_STORED_COUNTS = {
    "judge": ("judgments", "SELECT job_id, SUM(CASE WHEN parse_status='error' THEN 0 ELSE 1 END), "
                           "SUM(CASE WHEN parse_status='error' THEN 1 ELSE 0 END) FROM judgments "
                           "WHERE job_id IN ({ids}) GROUP BY job_id"),
}
_STORED_COUNTS["eval-judge"] = _STORED_COUNTS["judge"]


def store_counts(store: Store, jobs: list[Job]) -> dict[int, dict]:
    """What the store holds of each job's work, for the kinds it can count (judge jobs: the
    judgments stored with the job's id; parse errors count as failed): {job_id: {unit, done, failed}}."""
    out: dict[int, dict] = {}
    for kind, (unit, sql) in _STORED_COUNTS.items():
        ids = [j.id for j in jobs if j.kind == kind]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for job_id, done, failed in store.query(sql.format(ids=",".join("?" * len(chunk))), chunk):
                out[int(job_id)] = {"unit": unit, "done": int(done or 0), "failed": int(failed or 0)}
        for job_id in ids:
            out.setdefault(job_id, {"unit": unit, "done": 0, "failed": 0})
    return out


def _with_stored(store: Store, jobs: list[Job]) -> list[Job]:
    counted = store_counts(store, jobs)
    for job in jobs:
        job.stored = counted.get(job.id)
    return jobs


def refresh(store: Store) -> None:
    """Mark jobs whose process is gone (killed, crashed) as failed, with the reason from the log.
    Only this machine's jobs: another machine's pid means nothing here (a store shared by several)."""
    for row in store.query("SELECT * FROM jobs WHERE status IN ('queued','running') AND (host IS NULL OR host=?)",
                           (socket.gethostname(),)):
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
    host = store.scalar("SELECT host FROM jobs WHERE id=?", (job_id,))
    if host and host != socket.gethostname():
        raise CaiError(f"job {job_id} runs on {host}: stop it there (python -m cai_core jobs stop {job_id})")
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
    """Used inside a job process (or a CLI run without a job) to report progress to the store.

    Two ways to report, mixable:
    - `progress(done, total, message)`: the done/total columns, in the job's unit (throttled to 2/s);
    - `count(unit=, total=, done=, failed=, skipped=, retries=)`: the job's counts (jobs.counts_json),
      absolute values, any subset (merged with earlier ones); once a job has counts, its card,
      the jobs panel and `jobs list|show` read them (see Job.progress), not the columns.
    `finish(result, counts=...)` stores the final counts and copies them into result["counts"].
    Without a job id (a plain CLI run) every call is a no-op except that `counts` are remembered.
    """

    def __init__(self, store: Store | None, job_id: int | None, total: int | None = None, *, unit: str | None = None):
        self.store = store if job_id else None
        self.job_id = job_id
        self._stop = False
        self._last = 0.0
        self._last_counts = 0.0
        self.counts: dict = {}
        if unit is not None:
            self.counts["unit"] = unit
        if total is not None and unit is not None:
            self.counts["total"] = int(total)
        if self.store is not None:
            self.store.execute(
                "UPDATE jobs SET status='running', pid=?, started_at=COALESCE(started_at, ?), total=COALESCE(?, total), updated_at=? WHERE id=?",
                (os.getpid(), now(), total, now(), job_id),
            )
            if self.counts:
                self._write_counts(now())
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

    def count(self, *, unit: str | None = None, total: int | None = None, done: int | None = None,
              failed: int | None = None, skipped: int | None = None, retries: int | None = None,
              message: str | None = None, force: bool = False) -> dict:
        """Set the job's counts (absolute, not increments; None leaves one as it was); written at most
        twice a second unless force. Returns the merged counts."""
        given = {"unit": unit, "total": total, "done": done, "failed": failed, "skipped": skipped, "retries": retries}
        for key, value in given.items():
            if value is None:
                continue
            if key != "unit" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise CaiError(f"job count {key} must be a whole number >= 0, not {value!r}")
            self.counts[key] = value
        if self.store is not None:
            t = now()
            if force or t - self._last_counts >= 0.5:
                self._write_counts(t, message)
        return dict(self.counts)

    def _write_counts(self, t: float, message: str | None = None) -> None:
        self._last_counts = t
        c = self.counts
        processed = sum(int(c.get(k) or 0) for k in ("done", "failed", "skipped"))
        self.store.execute(
            "UPDATE jobs SET counts_json=?, done=?, total=COALESCE(?, total), message=COALESCE(?, message), "
            "updated_at=? WHERE id=?",
            (dumps(c), processed, c.get("total"), message, t, self.job_id),
        )

    def finish(self, result: dict | None = None, status: str | None = None, counts: dict | None = None) -> None:
        """Record the job's end: 'stopped' when it was asked to stop, else 'finished' (or `status`);
        `counts` (the keys of count()) are merged and stored, and copied into result["counts"]."""
        if counts:
            self.count(**counts, force=True)
        elif self.counts and self.store is not None:
            self._write_counts(now())
        if self.counts and result is not None:
            result = {**result, "counts": dict(self.counts)}
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
        if self.counts:  # the counts so far (a throttled count() may not have been written)
            self._write_counts(now())
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
