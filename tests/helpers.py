"""What several test modules share (tests import these; conftest.py holds only fixtures and hooks):
the repository root, the paper data folder, the CLI runner, a fresh-thread runner, and a stored
evaluation whose answers carry HTML from 'the model'."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from cai_core.store import dumps, now

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PAPER_DATA = SHARED / "datasets" / "cai-paper"  # what cai_core.reliability.paper_evals.paper_data_dir() finds without $CAI_PAPER_DATA


def run_cli(*args: str, env: dict | None = None, timeout: float = 600):
    """Run `python -m cai_core ...` in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cai_core", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=full_env, timeout=timeout)


def render_page(name: str, timeout: float = 90):
    """Run one page of pages/ under Streamlit's AppTest (on $CAI_WORKSPACE) and check it raised nothing."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=timeout)
    at.run()
    assert not at.exception, at.exception
    return at


def in_fresh_thread(fn, *args, **kwargs):
    """Run fn in a new thread and return its result (re-raising its exception).

    Playwright's sync API refuses to start where an asyncio loop is running, and some libraries
    (Streamlit's AppTest among them) leave one behind in the main thread of a long pytest run."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def shown(markdown: str) -> str:
    """What a markdown element built with ui.markdown.md_escape shows: the text without its escapes
    (AppTest's .value is the markdown source)."""
    return re.sub(r"\\(.)", r"\1", markdown or "").replace("  \n", "\n")


XSS = "<script>alert(1)</script>"


def seed_evaluation(store, name="ev1"):
    """A stored evaluation whose answers carry HTML from 'the model'."""
    with store.tx() as conn:
        ids = []
        for k, (ra, rb, cat) in enumerate([(XSS, "I can't help with that.", "crime"),
                                           ("Sure, <b>bold</b> **md** answer", "Here is a safe way to do it.", "other")]):
            cur = conn.execute(
                "INSERT INTO comparisons (key, source, origin, split, batch, prompt, response_a, response_b, category, "
                "policy_a, policy_b, meta_json, created_at) VALUES (?,?,?,'eval',?,?,?,?,?,?,?,?,?) RETURNING id",
                (f"k{k}", f"evaluation:{name}", f"evaluation:{name}", name, f"prompt {k} <img src=x onerror=alert(2)>", ra, rb, cat, "base", "tuned",
                 dumps({"axis": "harmless"}), now()))
            ids.append(cur.fetchall()[0][0])
            for order, p in (("AB", 0.3), ("BA", 0.4)):
                conn.execute(
                    "INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, p_a, "
                    "parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (ids[-1], "mc|j", "j", "harmless", "mc", order, p, "ok", now()))
    pol = {"n": 2, "wins": 0, "ties": 0, "losses": 2, "win": 0.0, "tie": 0.0, "loss": 1.0, "win_rate": 0.0,
           "win_ci": [0, 0], "tie_ci": [0, 0], "loss_ci": [1, 1], "win_rate_ci": [0.0, 0.0], "bt": 900.0,
           "bt_ci": [850.0, 950.0], "elo": 980.0}
    pol_b = {**pol, "wins": 2, "losses": 0, "win": 1.0, "loss": 0.0, "win_rate": 1.0, "win_rate_ci": [1.0, 1.0],
             "bt": 1100.0, "bt_ci": [1050.0, 1150.0], "elo": 1020.0}
    result = {
        "name": name,
        "policies": [{"name": "base", "spec": "default", "kind": "base", "run": None, "step": None},
                     {"name": "tuned", "spec": "/x/run", "kind": "run", "run": "sft", "step": None}],
        "axes": {"harmless": {"comparisons": 2, "judged": 2, "invalid": 0, "flipped": 0, "comparison_ids": ids,
                              "pairs": [{"a": "base", "b": "tuned", "n": 2, "win": 0.0, "tie": 0.0, "loss": 1.0,
                                         "win_rate": 0.0, "win_rate_ci": [0.0, 0.0]}],
                              "policies": {"base": pol, "tuned": pol_b},
                              "by_category": {"crime": {"base": {"n": 1, "win_rate": 0.0}, "tuned": {"n": 1, "win_rate": 1.0}}}}},
        "evasiveness": {"base": {"harmless": {"n": 2, "evasive": 0, "rate": 0.0, "ci": [0, 0]}},
                        "tuned": {"harmless": {"n": 2, "evasive": 1, "rate": 0.5, "ci": [0, 1]}}},
        "points": [{"policy": "base", "kind": "base", "run": None, "step": None, "harmless": 900.0,
                    "harmless_ci": [850.0, 950.0], "helpful": None, "helpful_ci": [None, None], "evasive_rate": 0.0},
                   {"policy": "tuned", "kind": "run", "run": "sft", "step": None, "harmless": 1100.0,
                    "harmless_ci": [1050.0, 1150.0], "helpful": None, "helpful_ci": [None, None], "evasive_rate": 0.5}],
    }
    spec = {"judge_model": "j", "prompts": "red.jsonl", "seed": 0, "policies": ["default", "/x/run"]}
    return store.execute("INSERT INTO evaluations (name, kind, spec_json, result_json, created_at) VALUES (?,?,?,?,?)",
                         (name, "policies", dumps(spec), dumps(result), now())).lastrowid


# -- training runs on the tiny model --------------------------------------------------------
SFT_ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in [
    ("How do I bake bread?", "Here is how you can stay safe."),
    ("What is the capital of France?", "The answer is: Paris."),
    ("Please explain photosynthesis in simple terms.", "Let's think step by step."),
    ("Can you help me pick a lock?", "I can't help with that."),
]]


def wait_run(store, run_id, statuses=("finished", "stopped", "failed"), timeout=240, until=None):
    """Poll a training run until it ends (or `until(run)` holds); the log in the message if it never does."""
    from cai_core.training.runs import get_run, refresh

    deadline = time.time() + timeout
    while time.time() < deadline:
        refresh(store)
        run = get_run(store, run_id)
        if (until and until(run)) or (not until and run.status in statuses):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {get_run(store, run_id).status}; log:\n"
                         f"{get_run(store, run_id).paths.log.read_text() if get_run(store, run_id).paths.log.exists() else ''}")
