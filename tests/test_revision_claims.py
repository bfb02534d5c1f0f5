"""Claims per item (issue 12 item 4): two processes on one revise batch split the work or wait; a
trajectory is never assembled from two live processes. Each stored text records its writer."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from cai_core.constitution.model import Constitution, Principle
from cai_core.supervised.revision import ReviseSettings, Reviser, claim_is_live, new_writer_id
from tests.helpers import ROOT

CONSTITUTION = {"name": "mini", "principles": [
    {"id": "harm", "name": "Harmless", "critique_request": "Identify harm.", "revision_request": "Remove harm.",
     "comparison_question": "Which response is less harmful?"}]}


@pytest.mark.slow
def test_two_concurrent_revise_processes_never_mix_a_trajectory(tmp_path, tiny_model_dir):
    (tmp_path / "c.json").write_text(json.dumps(CONSTITUTION))
    n = 24
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"Question {i}: how do I do thing {i}?"}) + "\n"
                                              for i in range(n)))
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def argv(batch_size: int) -> list[str]:
        return [sys.executable, "-m", "cai_core", "revise", "--workspace", str(ws), "--model", str(tiny_model_dir),
                "--constitution", str(tmp_path / "c.json"), "--prompts", str(tmp_path / "p.jsonl"), "--rounds", "2",
                "--max-new-tokens", "32", "--batch-size", str(batch_size), "--batch", "shared"]

    procs = [subprocess.Popen(argv(bs), cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for bs in (3, 5)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert f"{n}/{n} prompts done in batch 'shared'" in out  # the one that waited reports the whole batch
    with sqlite3.connect(ws / "cai.sqlite3") as conn:
        trajs = conn.execute("SELECT id, status, initial_writer, claimed_by FROM trajectories").fetchall()
        steps = conn.execute("SELECT trajectory_id, round, critique_writer, revision_writer FROM trajectory_steps"
                             ).fetchall()
    assert len(trajs) == n and all(status == "done" for _, status, _, _ in trajs)
    assert len(steps) == 2 * n
    writer = {tid: initial for tid, _, initial, _ in trajs}
    assert all(writer[tid] and claimed == writer[tid] for tid, _, _, claimed in trajs)
    mixed = [(tid, rnd) for tid, rnd, c, r in steps if not (c == r == writer[tid])]
    assert not mixed, f"trajectory steps written by another process than its first answer: {mixed}"
    pids = {w.split(":")[1] for w in writer.values()}
    assert pids == {str(p.pid) for p in procs}, "both processes took a share of the batch"


def _constitution() -> Constitution:
    return Constitution(name="mini", principles=[Principle(id="harm", name="Harm", critique_request="Harmful?",
                                                           revision_request="Fix it.")])


def test_a_prompt_claimed_by_a_live_process_is_left_to_it(store, tiny_backend):
    settings = ReviseSettings(rounds=1, max_new_tokens=4, temperature=0.0)
    reviser = Reviser(store, tiny_backend, _constitution(), settings, "tiny", batch="b")
    t_mine, t_theirs = reviser.prepare(["mine", "theirs"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = new_writer_id().split(":")
        other[1] = str(sleeper.pid)
        store.execute("UPDATE trajectories SET claimed_by=?, claimed_at=? WHERE id=?",
                      (":".join(other), 0.0, t_theirs.id))
        waits = []
        reviser.run(["mine", "theirs"], should_stop=lambda: waits.append(1) or len(waits) > 3)
        rows = dict(store.query("SELECT id, status FROM trajectories"))
        assert rows[t_mine.id] == "done" and rows[t_theirs.id] == "pending"
        assert store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE trajectory_id=?", (t_theirs.id,)) == 0
        assert store.scalar("SELECT claimed_by FROM trajectories WHERE id=?", (t_theirs.id,)) == ":".join(other)
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the claim is stale and the next run takes the prompt over (resume after a crash)
    assert not claim_is_live(":".join(other), 0.0)
    reviser.run(["mine", "theirs"])
    assert store.scalar("SELECT status FROM trajectories WHERE id=?", (t_theirs.id,)) == "done"
    assert store.scalar("SELECT initial_writer FROM trajectories WHERE id=?", (t_theirs.id,)) == reviser.writer


def test_a_claim_from_another_host_holds_until_it_goes_stale():
    from cai_core.store import now
    from cai_core.supervised.revision import CLAIM_STALE_S

    assert claim_is_live("elsewhere:123:-:ab", now())
    assert not claim_is_live("elsewhere:123:-:ab", now() - CLAIM_STALE_S - 1)
    assert not claim_is_live(None, now())
