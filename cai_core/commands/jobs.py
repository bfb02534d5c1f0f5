"""`python -m cai_core jobs list|show|stop|resume`: the background jobs (batch revise, sampling,
judging, exports, evaluations) from the shell, with progress in each job's own unit as the app's job
cards show it (cai_core.jobs.Job.progress: "stopped - 16 of 112 judgments")."""
from __future__ import annotations

import argparse
import json

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.jobs import TERMINAL, Job, get_job, list_jobs, refresh, resume_job, stop_job
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(sub, "jobs", "list, inspect, stop or resume background jobs (revise, sampling, judging, exports)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ws = argparse.ArgumentParser(add_help=False)  # --workspace before or after the action
    ws.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder")

    a = actions.add_parser("list", parents=[ws], help="recent jobs: id, kind, progress in the job's unit, title")
    a.add_argument("--kind", default=None, help="only jobs of this kind (judge, revise, pairs-sample, ...)")
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_list)

    a = actions.add_parser("show", parents=[ws], help="one job: status, progress, counts, result, error")
    a.add_argument("job", help="job id")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_show)

    a = actions.add_parser("stop", parents=[ws], help="stop a job (it stores the item in flight) and wait until it ended")
    a.add_argument("job", help="job id")
    a.set_defaults(func=cmd_stop)

    a = actions.add_parser("resume", parents=[ws], help="start a stopped or failed job again (finished items are skipped)")
    a.add_argument("job", help="job id")
    a.set_defaults(func=cmd_resume)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CaiError(f"job id must be a number, not {text!r}") from None
    if value < 1:
        raise CaiError(f"job id must be 1 or more, not {value}")
    return value


def job_dict(job: Job) -> dict:
    """A job as `jobs show --json` prints it (and `jobs list --json`, one per job)."""
    return {"id": job.id, "kind": job.kind, "title": job.title, "status": job.status,
            "progress": job.progress.to_dict(), "message": job.message, "pid": job.pid,
            "exit_code": job.exit_code, "error": job.error, "result": job.result, "log": job.log_path,
            "created_at": job.created_at, "started_at": job.started_at, "ended_at": job.ended_at,
            "spec": job.spec}


def cmd_list(args) -> int:
    if args.limit < 1:
        raise CaiError(f"--limit must be 1 or more, not {args.limit}")
    jobs = list_jobs(open_store(args.workspace), kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps([job_dict(j) for j in jobs], indent=2, default=str))
        return 0
    if not jobs:
        print("no jobs yet" + (f" of kind {args.kind}" if args.kind else ""))
        return 0
    for job in jobs:
        print(f"{job.id:>5}  {job.kind:<14} {job.progress.text():<48} {job.title or ''}")
        if job.status == "failed" and job.error:
            print(f"{'':>7}error: {job.error}")
    return 0


def cmd_show(args) -> int:
    store = open_store(args.workspace)
    refresh(store)
    job = get_job(store, _job_id(args.job))
    if args.json:
        print(json.dumps(job_dict(job), indent=2, default=str))
        return 0
    print(f"job {job.id} ({job.kind}) {job.title or ''}".rstrip())
    print(f"  {job.progress.text()}")
    for key, value in job.pinned().items():
        print(f"  {key}: {value}")
    if job.message and job.status not in TERMINAL:
        print(f"  {job.message}")
    if job.error:
        print(f"  error: {job.error}")
    if job.log_path:
        print(f"  log: {job.log_path}")
    return 0


def cmd_stop(args) -> int:
    job = stop_job(open_store(args.workspace), _job_id(args.job))
    print(f"job {job.id}: {job.progress.text()}")
    return 0


def cmd_resume(args) -> int:
    new_id = resume_job(open_store(args.workspace), _job_id(args.job))
    print(f"job {args.job} resumed as job {new_id}")
    return 0
