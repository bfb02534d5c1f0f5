"""Job progress in the job's own unit, from what the store holds (issue 22 item 3): a stopped judge
job reads "stopped - 16 of 112 judgments", never "4/4" (pairs) with a full bar; the card, the jobs
panel and `python -m cai_core jobs` print the same words."""
from __future__ import annotations

import json
import time

import pytest

from cai_core.errors import CaiError
from cai_core.jobs import JobReporter, get_job, list_jobs
from cai_core.store import dumps, now
from tests.helpers import run_cli


def _job(store, kind="judge", status="running", **cols) -> int:
    cols = {"kind": kind, "status": status, "argv_json": "[]", "created_at": now(), **cols}
    names = ", ".join(cols)
    return int(store.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(cols))})",
                             tuple(cols.values())).lastrowid)


def _judgments(store, job_id, n, *, start=0, errors=0):
    with store.tx() as conn:
        for i in range(start, start + n):
            cid = conn.execute("INSERT INTO comparisons (key, source, prompt, response_a, response_b, created_at) "
                               "VALUES (?,?,?,?,?,?)", (f"k{job_id}-{i}", "sampled", "q", "a", "b", now())).lastrowid
            conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, "
                         "p_a, parse_status, job_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (cid, "j", "m", "p", "mc", "AB", 0.5, "error" if i - start < errors else "ok", job_id, now()))


def test_the_reporter_stores_counts_in_the_jobs_unit(store):
    job_id = _job(store)
    rep = JobReporter(store, job_id, unit="judgments")
    rep.count(total=112, done=3, skipped=8, force=True)
    rep.count(done=5, retries=2, force=True)  # absolute values, merged with the earlier ones
    job = get_job(store, job_id)
    assert job.counts == {"unit": "judgments", "total": 112, "done": 5, "skipped": 8, "retries": 2}
    assert (job.done, job.total) == (13, 112)  # the columns carry done + failed + skipped
    rep.finish({"pairs": 4}, counts={"done": 6, "failed": 1})
    job = get_job(store, job_id)
    assert job.status == "finished"
    assert job.result["counts"] == {"unit": "judgments", "total": 112, "done": 6, "skipped": 8, "retries": 2, "failed": 1}
    with pytest.raises(CaiError, match="whole number"):
        rep.count(done=-1)
    with pytest.raises(CaiError, match="whole number"):
        rep.count(failed=1.5)


def test_without_a_job_the_reporter_only_remembers(store):
    rep = JobReporter(store, None, unit="steps")
    assert rep.count(total=4, done=1) == {"unit": "steps", "total": 4, "done": 1}
    rep.finish({"x": 1})  # no job: nothing written, no error


def test_a_stopped_judge_job_reads_what_the_store_holds(store):
    """The job said 4/4 at its end (pairs, the old bug); the store holds 16 of its judgments."""
    job_id = _job(store, status="stopped", total=4, done=4,
                  counts_json=dumps({"unit": "judgments", "total": 112, "done": 4}))
    _judgments(store, job_id, 16)
    other = _job(store, status="finished")
    _judgments(store, other, 5, start=100)  # another job's judgments are not this one's
    prog = get_job(store, job_id).progress
    assert (prog.done, prog.total, prog.unit, prog.stored) == (16, 112, "judgments", True)
    assert prog.text() == "stopped - 16 of 112 judgments"
    assert prog.fraction == pytest.approx(16 / 112)
    assert {j.id: j.progress.done for j in list_jobs(store)} == {job_id: 16, other: 5}


def test_parse_errors_count_as_failed_and_skipped_as_skipped(store):
    job_id = _job(store, counts_json=dumps({"unit": "judgments", "total": 20, "done": 0, "skipped": 4}))
    _judgments(store, job_id, 6, errors=2)
    prog = get_job(store, job_id).progress
    assert (prog.done, prog.failed, prog.skipped, prog.processed) == (4, 2, 4, 10)
    assert prog.text() == "running - 10 of 20 judgments (2 failed, 4 skipped (already done))"


def test_jobs_without_counts_keep_their_columns_and_kind_unit(store):
    job_id = _job(store, kind="revise", status="finished", total=6, done=6)
    assert get_job(store, job_id).progress.text() == "finished - 6 of 6 steps"
    queued = _job(store, kind="export-prefs", status="queued")
    assert get_job(store, queued).progress.text() == "queued"
    # a plan that grew past its recorded total never reads "20 of 16"
    grown = _job(store, kind="pairs-sample", status="running", total=16, done=20)
    assert get_job(store, grown).progress.text() == "running - 20 of 20 prompts"


def test_jobs_cli_prints_the_same_words(store, workspace):
    job_id = _job(store, status="stopped", total=4, done=4,
                  counts_json=dumps({"unit": "judgments", "total": 112, "done": 4}))
    _judgments(store, job_id, 16)
    out = run_cli("jobs", "list", "--workspace", str(workspace.root), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stopped - 16 of 112 judgments" in out.stdout
    out = run_cli("jobs", "show", str(job_id), "--json", "--workspace", str(workspace.root), timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["progress"]["text"] == "stopped - 16 of 112 judgments"
    assert shown["progress"]["done"] == 16 and shown["status"] == "stopped"
    out = run_cli("jobs", "show", "999", "--workspace", str(workspace.root), timeout=120)
    assert out.returncode == 2 and "no job 999" in out.stderr


CONSTITUTION = {"name": "mini", "principles": [
    {"id": "harm", "name": "Harmless", "critique_request": "Identify harm.", "revision_request": "Remove harm.",
     "comparison_question": "Which response is less harmful?"}]}


def _judge_spec(tmp_path, tiny_model_dir, n):
    from cai_core.jobs.specs import JudgeJobSpec

    (tmp_path / "c.json").write_text(json.dumps(CONSTITUTION))
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": f"No {i}."}
            for i in range(n)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return JudgeJobSpec(judge_model=str(tiny_model_dir), constitution=str(tmp_path / "c.json"),
                        pairs=str(tmp_path / "pairs.jsonl"), batch_size=1)


@pytest.mark.slow
def test_a_real_judge_job_counts_judgments_finished_and_stopped(store, tmp_path, tiny_model_dir):
    from cai_core.jobs import start_job, stop_job, wait_job

    # finished: 4 pairs x 2 orders = 8 judgments, in judgments from start to end (it read "4/4" at the end)
    job = wait_job(store, start_job(store, _judge_spec(tmp_path, tiny_model_dir, 4)), timeout=300)
    assert job.status == "finished", job.error
    assert job.progress.text() == "finished - 8 of 8 judgments"
    assert job.result["counts"]["done"] == 8 and job.result["pairs"] == 4
    # the same pairs again: every judgment is already stored, none is done again
    again = wait_job(store, start_job(store, _judge_spec(tmp_path, tiny_model_dir, 4)), timeout=300)
    assert again.progress.text() == "finished - 8 of 8 judgments (8 skipped (already done))"
    # stopped at k of N: k is what the store holds of the job
    job_id = start_job(store, _judge_spec(tmp_path, tiny_model_dir, 300))
    deadline = time.time() + 180
    while int(store.scalar("SELECT COUNT(*) FROM judgments WHERE job_id=?", (job_id,))) < 3:
        assert time.time() < deadline, "the judge job stored nothing"
        time.sleep(0.2)
    job = stop_job(store, job_id)
    held = int(store.scalar("SELECT COUNT(*) FROM judgments WHERE job_id=?", (job_id,)))
    assert job.status == "stopped"
    # 300 pairs x 2 orders, 8 of them stored by the first job
    assert job.progress.text() == f"stopped - {held + 8} of 600 judgments (8 skipped (already done))"
    assert job.progress.fraction < 0.5


@pytest.mark.slow
def test_an_eval_judge_job_counts_stored_judgments_as_skipped(tmp_path, tiny_model_dir):
    """eval-judge ends in judgments too: a second run over the same gold items reads "4 of 4
    judgments (4 skipped (already done))", not "0 of 4" from the store's count of its own rows."""
    from cai_core.store import open_store
    from tests.helpers import PAPER_DATA

    hhh = PAPER_DATA / "438HHHEvaluations.jsonl"
    if not hhh.exists():
        pytest.skip("the paper's HHH file is not in shared/datasets")
    ws = tmp_path / "ws"
    store = open_store(ws)
    texts = []
    for _ in range(2):
        job_id = _job(store, kind="eval-judge", status="queued")
        out = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(hhh), "--limit", "2",
                      "--n-boot", "50", "--workspace", str(ws), "--job-id", str(job_id), timeout=300)
        assert out.returncode == 0, out.stderr
        texts.append(get_job(store, job_id).progress.text())
    assert texts == ["finished - 4 of 4 judgments", "finished - 4 of 4 judgments (4 skipped (already done))"]
