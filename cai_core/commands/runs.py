"""`python -m cai_core runs list|show|stop|kill|resume|delete`: the run manager from the shell."""
from __future__ import annotations

import argparse
import json
import time

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.store import open_store
from cai_core.training.runs import (
    TERMINAL,
    delete_run,
    get_run,
    kill_run,
    latest_checkpoint,
    lineage,
    list_runs,
    read_metrics,
    refresh,
    resume_run,
    stop_run,
)


def register(sub) -> None:
    p = add_command(sub, "runs", "list, inspect, stop, kill, resume or delete training runs")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    # --workspace may come before or after the action; SUPPRESS keeps the parent's value when absent here.
    ws = argparse.ArgumentParser(add_help=False)
    ws.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder")

    a = actions.add_parser("list", parents=[ws], help="runs with status, duration and key metrics")
    a.add_argument("--kind", default=None)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_list)

    a = actions.add_parser("show", parents=[ws], help="one run: spec, status, lineage, metrics")
    a.add_argument("run", help="run id or name")
    a.add_argument("--metrics", type=int, default=5, help="how many of the last logged steps to print")
    a.set_defaults(func=cmd_show)

    a = actions.add_parser("stop", parents=[ws], help="graceful stop: save a checkpoint and the model, then exit")
    a.add_argument("run")
    a.add_argument("--wait", type=float, default=0, help="seconds to wait for the run to end")
    a.set_defaults(func=cmd_stop)

    a = actions.add_parser("kill", parents=[ws], help="SIGKILL the run's processes now (no save)")
    a.add_argument("run")
    a.set_defaults(func=cmd_kill)

    a = actions.add_parser("resume", parents=[ws], help="continue a stopped or failed run from its latest checkpoint")
    a.add_argument("run")
    a.add_argument("--max-steps", type=int, default=None, help="new total step count")
    a.add_argument("--accelerate-config", default=None)
    a.set_defaults(func=cmd_resume)

    a = actions.add_parser("delete", parents=[ws], help="forget a run and remove its folder")
    a.add_argument("run")
    a.add_argument("--keep-files", action="store_true")
    a.set_defaults(func=cmd_delete)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _store(args):
    return open_store(args.workspace)


def _fmt_duration(s):
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_list(args) -> int:
    rows = list_runs(_store(args), kind=args.kind)
    if args.json:
        print(json.dumps([{"id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "pid": r.pid,
                           "run_dir": str(r.run_dir), "duration_s": r.duration_s, "error": r.error,
                           "metrics": r.key_metrics()} for r in rows], indent=2))
        return 0
    if not rows:
        print("no runs yet - start one with `python -m cai_core train ...`")
        return 0
    for r in rows:
        metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                           for k, v in r.key_metrics().items())
        print(f"{r.id:>4} {r.name:<28} {r.kind:<6} {r.status:<9} {_fmt_duration(r.duration_s):>7}  {metrics}")
        if r.status == "failed" and r.error:
            print(f"{'':>5}error: {r.error}")
    return 0


def cmd_show(args) -> int:
    store = _store(args)
    refresh(store)
    run = get_run(store, args.run)
    ckpt = latest_checkpoint(run.run_dir)
    print(json.dumps({
        "id": run.id, "name": run.name, "kind": run.kind, "status": run.status, "pid": run.pid,
        "run_dir": str(run.run_dir), "command": run.command, "exit_code": run.exit_code, "error": run.error,
        "duration_s": run.duration_s, "latest_checkpoint": ckpt.name if ckpt else None,
        "lineage": lineage(store, run), "final_metrics": run.final_metrics,
        "last_metrics": read_metrics(store, run.id)[-args.metrics:] if args.metrics else [],
        "spec": run.spec,
    }, indent=2, default=str))
    return 0


def cmd_stop(args) -> int:
    store = _store(args)
    run = stop_run(store, args.run)
    print(f"stop requested for run {run.name}; it saves a checkpoint and the model at its next step")
    deadline = time.time() + args.wait
    while args.wait and time.time() < deadline:
        refresh(store)
        run = get_run(store, run.id)
        if run.status in TERMINAL:
            print(f"run {run.name} is {run.status}")
            return 0
        time.sleep(0.5)
    if args.wait:
        raise CaiError(f"run {run.name} still {run.status} after {args.wait:g}s")
    return 0


def cmd_kill(args) -> int:
    run = kill_run(_store(args), args.run)
    print(f"run {run.name} killed ({run.status})")
    return 0


def cmd_resume(args) -> int:
    run = resume_run(_store(args), args.run, max_steps=args.max_steps, accelerate_config=args.accelerate_config)
    print(json.dumps({"run_id": run.id, "name": run.name, "status": run.status, "pid": run.pid}))
    return 0


def cmd_delete(args) -> int:
    delete_run(_store(args), args.run, keep_files=args.keep_files)
    print(f"run {args.run} deleted")
    return 0
