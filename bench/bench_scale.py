"""Paper scale (issue 21 item 7): how much of a server the workbench's `revise` keeps busy.

Starts the project's own OpenAI-compatible server (cai_core/models/mock_server.py) in its own
process, answering every completion after --latency seconds (default 0.5 s) however many arrive at
once - what continuous batching (vLLM) looks like to a client - optionally with --fail-rate 503s
and --drop-rate dropped connections. Then, against the same server:

- bare client: 32 threads, each sending one /v1/chat/completions request after another over a
  kept-alive connection (http.client), for --bare-seconds; its completions/s is the most a simple
  client gets;
- workbench: `python -m cai_core revise --model URL --constitution ... --prompts FILE --rounds 2`
  with every other setting at its default (cai_core.cli.main in this process, imports done first,
  a fresh workspace), --prompts prompts (default 200; 20 with --quick). Its rate is the server's
  model requests (chat and text completions: answers, critiques, revisions, the violation
  question) during the run / the run's wall time (backend load and probe included).

ratio = workbench completions/s / bare client completions/s at --latency; target 0.9. The same
two figures against an instant server (latency 0) are reported too (not part of the ratio).

    python bench/bench_scale.py [--quick] [--latency 0.5] [--prompts 200] [--fail-rate 0.05 --drop-rate 0.05]

`--database-url postgresql://user@host:port/db` keeps the workbench's store in PostgreSQL instead of the
workspace's SQLite file: each revise run gets a fresh database created on that server (the URL's user
needs CREATEDB) and dropped afterwards, so no run resumes another's work.
"""
from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable

from benchlib import ROOT, finish, parser, red_team_prompts

TARGET = 0.9
BARE_THREADS = 32
CONSTITUTION = ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml"


def bare_client(url: str, seconds: float, threads: int = BARE_THREADS) -> tuple[float, int, int]:
    """(completions/s, completions, errors): `threads` threads each POSTing one chat completion after another."""
    parsed = urllib.parse.urlparse(url)
    path = parsed.path.rstrip("/") + "/chat/completions"
    prompts = red_team_prompts(64)
    done, errors = [0] * threads, [0] * threads
    stop_at = [0.0]
    start = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        i = k
        start.wait()
        while time.monotonic() < stop_at[0]:
            body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                               "max_tokens": 200, "temperature": 0.7, "seed": i})
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    done[k] += 1
                else:
                    errors[k] += 1
            except (OSError, http.client.HTTPException):
                errors[k] += 1
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            i += threads
        conn.close()

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - t0
    return sum(done) / elapsed, sum(done), sum(errors)


def fresh_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database on the PostgreSQL server of server_url: (its URL, drop it)."""
    import uuid

    import psycopg

    name = f"cai_bench_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # the CLI's store may still hold one

    return urllib.parse.urlparse(server_url)._replace(path=f"/{name}").geturl(), drop


def workbench(url: str, prompts_file: Path, rounds: int, extra: list[str], database_url: str | None = None) -> dict:
    """One `revise` through the CLI's main() in this process, in a fresh workspace (and, with
    database_url, a fresh PostgreSQL database on that server)."""
    from cai_core.cli import main
    from cai_core.models.mock_server import fetch_stats

    ws = tempfile.mkdtemp(prefix="cai-bench-scale-")
    db_url, drop = fresh_database(database_url) if database_url else (None, lambda: None)
    before = fetch_stats(url)
    t0 = time.monotonic()
    code = main(["revise", "--workspace", ws, "--model", url, "--constitution", str(CONSTITUTION),
                 "--prompts", str(prompts_file), "--rounds", str(rounds), "--batch", "scale", *extra,
                 *(["--database-url", db_url] if db_url else [])])
    seconds = time.monotonic() - t0
    after = fetch_stats(url)
    if code != 0:
        drop()
        raise SystemExit(f"revise exited {code}")
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    store = Store(Workspace.open(ws), db_url)
    statuses = dict(store.query("SELECT status, COUNT(*) FROM trajectories GROUP BY status"))
    store.close()
    drop()
    by_path = {p: after["by_path"].get(p, 0) - before["by_path"].get(p, 0) for p in after["by_path"]}
    model = after["model_requests"] - before["model_requests"]
    return {"seconds": seconds, "model_requests": model, "rate": model / seconds, "statuses": statuses,
            "by_path": {p: n for p, n in by_path.items() if n and p != "/mock/stats"}, "peak_in_flight": after["peak_in_flight"],
            "faults": {k: after[k] - before[k] for k in ("failed_503", "dropped", "rate_limited")}}


def measure(latency: float, args, prompts_file: Path, n: int) -> dict:
    from cai_core.models.mock_server import MockOptions, start_process

    opts = MockOptions(latency=latency, fail_rate=args.fail_rate, drop_rate=args.drop_rate, seed=0)
    with start_process(opts) as srv:
        bare_rate, bare_n, bare_err = bare_client(srv.url, args.bare_seconds)
    # a fresh server for the workbench: its peak in flight and counters are the run's own
    with start_process(opts) as srv:
        wb = workbench(srv.url, prompts_file, args.rounds, args.revise_args.split() if args.revise_args else [],
                       args.database_url)
    expected = n
    done = wb["statuses"].get("done", 0)
    return {"bare": bare_rate, "bare_line": f"{bare_rate:.1f} completions/s ({bare_n} in {args.bare_seconds:g} s, "
                                           f"{BARE_THREADS} threads, {bare_err} errors)",
            "workbench": wb["rate"], "workbench_line": (
                f"{wb['rate']:.1f} completions/s ({wb['model_requests']} model requests in {wb['seconds']:.1f} s; "
                f"peak {wb['peak_in_flight']} in flight; trajectories {wb['statuses']} of {expected}; "
                f"requests by path {wb['by_path']}; server faults {wb['faults']})"),
            "complete": done == expected}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.5, help="server seconds per completion (default 0.5)")
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests the server answers 503")
    p.add_argument("--drop-rate", type=float, default=0.0, help="share of connections the server drops")
    p.add_argument("--prompts", type=int, default=None, help="prompts (default 200; 20 with --quick)")
    p.add_argument("--rounds", type=int, default=2, help="critique/revision rounds (default 2)")
    p.add_argument("--bare-seconds", type=float, default=None, help="bare client's run (default 8 s; 3 with --quick)")
    p.add_argument("--revise-args", default="", help="extra revise arguments (default none: its defaults)")
    p.add_argument("--no-instant", action="store_true", help="skip the instant-server (latency 0) figures")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="keep the workbench's store in PostgreSQL (postgresql://user@host:port/db, a user who may "
                        "create databases: each run gets a fresh one, dropped after) instead of a SQLite file")
    args = p.parse_args()
    n = args.prompts or (20 if args.quick else 200)
    args.bare_seconds = args.bare_seconds or (3.0 if args.quick else 8.0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cai_core.cli  # noqa: F401 - imports (torch, transformers) before any timing

    prompts_file = Path(tempfile.mkdtemp(prefix="cai-bench-scale-")) / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": f"{t} (#{i})"}) + "\n"
                                    for i, t in enumerate(red_team_prompts(n))))
    figures: dict = {"store": "PostgreSQL" if args.database_url else "SQLite (workspace file)",
                     "server": f"mock_server, latency {args.latency:g} s, fail {args.fail_rate:g}, drop {args.drop_rate:g}",
                     "workload": f"revise, {n} prompts x {args.rounds} rounds, defaults otherwise "
                                 f"{args.revise_args or ''}".strip()}
    main_run = measure(args.latency, args, prompts_file, n)
    figures["bare client"] = main_run["bare_line"]
    figures["workbench"] = main_run["workbench_line"]
    if not args.no_instant:
        instant = measure(0.0, args, prompts_file, n)
        figures["instant server: bare client"] = instant["bare_line"]
        figures["instant server: workbench"] = instant["workbench_line"]
        figures["instant server: ratio"] = round(instant["workbench"] / instant["bare"], 3)
    if not main_run["complete"]:
        figures["WARNING"] = "not every prompt finished"
    finish(args, figures, main_run["workbench"] / main_run["bare"], TARGET)


if __name__ == "__main__":
    main()
