"""`python -m cai_core judge` contract, bad input, and kill -9 mid-way then rerun without duplicates."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here runs `python -m cai_core` in a subprocess, most on a model

CONSTITUTION = {"name": "mini", "principles": [
    {"id": "harm", "name": "Harmless", "critique_request": "Identify harm.", "revision_request": "Remove harm.",
     "comparison_question": "Which response is less harmful?"},
    {"id": "help", "name": "Helpful", "critique_request": "Identify unhelpfulness.", "revision_request": "Help more.",
     "comparison_question": "Which response is more helpful?"},
]}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(CONSTITUTION))
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer one {i}.", "response_b": "No."}
            for i in range(3)]
    rows.append({"prompt": "hi", "chosen": "Hello!", "rejected": "Go away."})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path


def read_out(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_contract_out_rows(files, tiny_model_dir):
    ws, out = files / "ws", files / "out.jsonl"
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", str(files / "c.json"),
                "--pairs", str(files / "pairs.jsonl"), "--out", str(out), "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    rows = read_out(out)
    assert [row["id"] for row in rows] == ["p0", "p1", "p2", "pairs-4"]
    for row in rows:
        assert {"id", "p_a", "label", "p_a_ab", "p_a_ba", "flipped", "invalid"} <= set(row)
        assert row["p_a"] == pytest.approx((row["p_a_ab"] + row["p_a_ba"]) / 2)
        assert row["label"] == ("A" if row["p_a"] > 0.5 else "B")
        assert row["invalid"] == 0
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", str(files / "c.json"),
                "--pairs", str(files / "pairs.jsonl"), "--cot", "--no-swap", "--max-new-tokens", "4",
                "--out", str(out), "--workspace", str(ws), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["style"] == "cot" and summary["swap"] is False and summary["pairs"] == 4
    for row in read_out(out):
        assert row["p_a_ba"] is None and 0.4 <= row["p_a"] <= 0.6


def test_bad_input_writes_nothing(files, tiny_model_dir):
    ws = files / "ws"
    (files / "bad.jsonl").write_text('{"id": "a", "prompt": "p", "response_a": "x", "response_b": "y"}\n{oops\n')
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", str(files / "c.json"),
                "--pairs", str(files / "bad.jsonl"), "--workspace", str(ws))
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr and r.stderr.startswith("error:")
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", "nope",
                "--pairs", str(files / "pairs.jsonl"), "--workspace", str(ws))
    assert r.returncode == 2 and "neither a file nor a stored constitution" in r.stderr
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", str(files / "c.json"),
                "--pairs", str(files / "pairs.jsonl"), "--principles", "harm,zzz", "--workspace", str(ws))
    assert r.returncode == 2 and "zzz" in r.stderr
    from cai_core.store import open_store

    store = open_store(ws)
    assert store.scalar("SELECT COUNT(*) FROM comparisons") == 0
    assert store.scalar("SELECT COUNT(*) FROM judgments") == 0
    assert store.scalar("SELECT COUNT(*) FROM constitutions") == 0


def test_kill_9_then_rerun_has_no_duplicates(tmp_path, tiny_model_dir):
    (tmp_path / "c.json").write_text(json.dumps(CONSTITUTION))
    n = 24
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": f"Other {i}."}
            for i in range(n)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ws, out = tmp_path / "ws", tmp_path / "out.jsonl"
    args = ["judge", "--judge-model", str(tiny_model_dir), "--constitution", str(tmp_path / "c.json"),
            "--pairs", str(tmp_path / "pairs.jsonl"), "--cot", "--max-new-tokens", "24", "--batch-size", "1",
            "--out", str(out), "--workspace", str(ws)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cai_core", *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if (ws / "cai.sqlite3").exists():
            store = Store(Workspace.open(ws))
            done = store.scalar("SELECT COUNT(*) FROM judgments")
            store.close()
            if done >= 3:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < done < 2 * n, "the run should have been killed mid-way"
    assert not out.exists()  # --out is written only when complete
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    store = Store(Workspace.open(ws))
    total = store.scalar("SELECT COUNT(*) FROM judgments")
    distinct = store.scalar("SELECT COUNT(*) FROM (SELECT DISTINCT comparison_id, judge_key, principle_id, order_shown FROM judgments)")
    assert total == distinct == 2 * n
    assert store.scalar("SELECT COUNT(*) FROM comparisons") == n
    assert len(read_out(out)) == n
