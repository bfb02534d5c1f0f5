"""UI: how long each page takes to render (AppTest, the whole app with its sidebar) with a big store.

The store is seeded directly (one transaction per table) with N trajectories (one critique/revision
round each), N comparisons in 10 batches with two judgments each (both orders), N/10 human labels,
the sample constitutions and prompt sets, and a few finished runs with metrics. Each page is run
twice through `app.py` (AppTest.switch_page), each time in a fresh session; the second (warm:
imports and caches done, as for a user opening the page) is the figure, the first (the page's data
computed for the first time since the store changed) is printed too, against its own target.
pandas and plotly are imported before any page is timed: a server process pays that once, whichever
page comes first, and it does not grow with the rows.

Each render is timed on two clocks: wall (what a user waits, when the machine is free) and the
process's CPU seconds (what the render costs; on a shared, loaded box the wall clock swings 5x while
CPU seconds do not). `--clock` picks the one the targets are checked on (default wall).

ratio = the slowest page's warm render time in seconds. Target < 1 s warm and < 2 s on the first
render (issue 21: N = 100,000); `--rows 1000000` checks that the pages stay usable at 1M.
"""
from __future__ import annotations

import cProfile
import json
import os
import random
import shutil
import time
from pathlib import Path

from benchlib import ROOT, finish, parser, setup, temp_store

TARGET = 1.0        # seconds, warm render, slowest page
FIRST_TARGET = 2.0  # seconds, first render, slowest page


def seed(store, n: int) -> None:
    from cai_core.data.sample_data import ensure_samples
    from cai_core.constitution.versions import list_constitutions

    ensure_samples(store)
    version = list_constitutions(store)[0]
    rng = random.Random(0)
    t0 = time.time() - n
    words = "the assistant answers questions helpfully honestly and harmlessly while refusing dangerous help".split()

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    c_name = version["name"]
    c_ver = store.scalar("SELECT version FROM constitutions WHERE name=? ORDER BY created_at DESC LIMIT 1", (c_name,))
    with store.tx() as conn:
        conn.executemany(
            "INSERT INTO trajectories (key, batch, prompt, constitution_name, constitution_version, model, params_json,"
            " seed, initial, final, status, created_at, updated_at, rounds, change_ratio) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(f"bench-{i}", f"batch-{i % 10}", f"prompt {i}: " + text(20), c_name, c_ver, "default", "{}", 0,
              text(60), text(60), "done", t0 + i, t0 + i, 1, rng.random()) for i in range(n)])
        ids = [r[0] for r in conn.execute("SELECT id FROM trajectories ORDER BY id")]
        conn.executemany(
            "INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, revision, created_at,"
            " state, edit_words, refusal_introduced) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(tid, 1, f"p{tid % 8}", text(40), tid % 2, text(60), t0 + k, "revised", rng.randrange(60), tid % 7 == 0)
             for k, tid in enumerate(ids)])
        conn.executemany(
            "INSERT INTO comparisons (key, source, batch, prompt, response_a, response_b, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            [(f"cmp-{i}", "sampled", f"pairs-{i % 10}", f"prompt {i}: " + text(20), text(50), text(50), t0 + i)
             for i in range(n)])
        cids = [r[0] for r in conn.execute("SELECT id FROM comparisons ORDER BY id")]
        judge_key = f"mc|default|{c_ver}|random|00000000"
        conn.execute("INSERT INTO judges (judge_key, model, constitution_name, constitution_version, style, spec_json,"
                     " created_at) VALUES (?,?,?,?,?,?,?)", (judge_key, "default", c_name, c_ver, "mc", "{}", t0))
        conn.executemany(
            "INSERT INTO judgments (comparison_id, judge_key, judge_model, constitution_version, principle_id, style,"
            " order_shown, p_a, raw_output, parse_status, latency_s, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(cid, judge_key, "default", c_ver, f"p{cid % 8}", "mc", order, rng.random(), "{}", "ok", 0.01, t0 + cid)
             for cid in cids for order in ("AB", "BA")])
        conn.executemany(
            "INSERT INTO human_labels (comparison_id, annotator, label, is_override, blind, created_at)"
            " VALUES (?,?,?,?,?,?)",
            [(cid, "bench", rng.choice(["A", "B", "tie"]), 0, 1, t0 + cid) for cid in cids[: max(1, n // 10)]])
        for r in range(3):
            run_dir = store.workspace.runs_dir / f"bench-run-{r}"
            run_dir.mkdir(exist_ok=True)
            cur = conn.execute(
                "INSERT INTO runs (name, kind, spec_json, status, run_dir, created_at, started_at, ended_at)"
                " VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (f"bench-run-{r}", "sft", json.dumps({"kind": "sft", "name": f"bench-run-{r}", "dataset": "d",
                                                      "model": "default"}),
                 "finished", str(run_dir), t0, t0, t0 + 60))
            run_id = cur.fetchall()[0][0]
            conn.executemany("INSERT INTO run_metrics (run_id, step, data_json, created_at) VALUES (?,?,?,?)",
                             [(run_id, s, json.dumps({"step": s, "time": t0 + s, "loss": 2.0 / (s + 1),
                                                             "learning_rate": 1e-4}), t0 + s) for s in range(1, 501)])


_PROFILE: dict = {"now": None}


def _profile_script_thread() -> None:
    """AppTest runs the page in its own thread: profile that thread with the current _PROFILE."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    inner = LocalScriptRunner._run_script_thread

    def run(self) -> None:
        prof = _PROFILE["now"]
        if prof is None:
            return inner(self)
        prof.enable()
        try:
            return inner(self)
        finally:
            prof.disable()

    LocalScriptRunner._run_script_thread = run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="trajectories and comparisons (default 10000; 1000 with --quick)")
    p.add_argument("--pages", default=None, help="only the pages whose file name contains one of these comma-separated words")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="write a cProfile of each page's first and warm render to DIR/<page>.{first,warm}.prof")
    p.add_argument("--keep", action="store_true", help="keep the seeded workspace (deleted at the end by default: "
                                                          "1M rows take ~5 GB)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="the clock the targets are checked on: wall seconds, or the process's CPU seconds "
                        "(steady on a shared, loaded machine); both are printed")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="seed and render on PostgreSQL (postgresql://user@host:port/db, an empty database) "
                        "instead of the temporary workspace's SQLite file")
    args = p.parse_args()
    setup(args)
    if args.database_url:
        os.environ["CAI_DATABASE_URL"] = args.database_url  # temp_store() and the pages open this store
    n = args.rows or (1000 if args.quick else 10000)
    store = temp_store()
    t = time.time()
    seed(store, n)
    seeded = time.time() - t
    if store.postgres:  # planner statistics for the bulk load, as autovacuum takes them within a minute of it
        store.conn().execute("ANALYZE")
    os.environ["CAI_WORKSPACE"] = str(store.workspace.root)
    from benchlib import model_dir

    args.quick = True  # the sidebar's active model: the tiny one, never loaded by rendering
    os.environ["CAI_MODEL"] = str(model_dir(args))
    args.quick = n < 10000
    from streamlit.testing.v1 import AppTest

    if args.profile:
        _profile_script_thread()
    import pandas  # noqa: F401  - imported once per server process, not per page (see the docstring)
    import plotly.express  # noqa: F401

    results, errors = {}, {}
    pages = sorted((ROOT / "pages").glob("[0-9]*_*.py"))
    if args.pages:
        pages = [pg for pg in pages if any(w.strip().lower() in pg.stem.lower() for w in args.pages.split(","))]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    cpu_results = {}
    for page in pages:
        times, cpu = [], []
        for which in ("first", "warm"):  # a fresh session each time (AppTest re-sends widget states, which go stale)
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
            at.switch_page(str(page.relative_to(ROOT)))
            prof = _PROFILE["now"] = cProfile.Profile() if args.profile else None
            t, c = time.perf_counter(), time.process_time()
            at.run()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if prof:
                prof.dump_stats(str(Path(args.profile) / f"{page.stem}.{which}.prof"))
        if at.exception:
            errors[page.stem] = str(at.exception[0].value)[:200]
        elif not at.title:
            errors[page.stem] = "rendered no title: did the page run?"
        results[page.stem] = times
        cpu_results[page.stem] = cpu
    checked = cpu_results if args.clock == "cpu" else results
    slow = {k: round(v[1], 2) for k, v in checked.items() if v[1] >= TARGET}
    slow_first = {k: round(v[0], 2) for k, v in checked.items() if v[0] >= FIRST_TARGET}
    figures = {"rows": n, "seed_seconds": round(seeded, 1), "clock": args.clock}
    for k, (cold, warm) in results.items():
        ccold, cwarm = cpu_results[k]
        over = [w for w, bad in (("warm", checked[k][1] >= TARGET), ("first", checked[k][0] >= FIRST_TARGET)) if bad]
        figures[k] = (f"warm {warm:.2f}s (first {cold:.2f}s); cpu warm {cwarm:.2f}s (first {ccold:.2f}s)"
                      + (f"  <- over target ({', '.join(over)})" if over else ""))
    figures["pages_over_target"] = slow or "none"
    figures["first_renders_over_target"] = slow_first or "none"
    figures["slowest_first_render"] = round(max(v[0] for v in checked.values()), 3)
    figures["first_target"] = FIRST_TARGET
    if errors:
        figures["page_exceptions"] = errors
    if args.keep:
        figures["workspace"] = str(store.workspace.root)
    else:
        store.close()
        shutil.rmtree(store.workspace.root, ignore_errors=True)
    finish(args, figures, max(v[1] for v in checked.values()), TARGET, higher_is_better=False)


if __name__ == "__main__":
    main()
