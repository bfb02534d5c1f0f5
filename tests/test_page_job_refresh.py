"""Pages that poll background jobs rerun in full once when a job they showed running has ended, so
the tabs next to the job list (results, pickers, counts) see what the job wrote without a reload."""
from __future__ import annotations


def _script():
    from types import SimpleNamespace

    import streamlit as st

    from ui.common import rerun_when_jobs_end

    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    jobs = [SimpleNamespace(id=7, status=st.session_state.get("status", "running"))]
    if st.session_state.get("second_job"):
        jobs.append(SimpleNamespace(id=8, status="finished"))
    rerun_when_jobs_end(jobs, "test_jobs")


def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_script, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_job_seen_running_that_ends_reruns_the_page_once():
    at = _app()
    assert at.session_state["runs"] == 1
    at.run()  # still running: no extra rerun
    assert at.session_state["runs"] == 2
    at.session_state["status"] = "finished"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["runs"] == 4  # this run + the full rerun it asked for
    at.run()  # already seen finished: no loop
    assert at.session_state["runs"] == 5


def test_jobs_already_ended_when_first_seen_do_not_rerun():
    at = _app()
    at.session_state["second_job"] = True  # an old finished job appears: nothing new to show
    at.run()
    assert at.session_state["runs"] == 2
    at.session_state["status"] = "failed"
    at.run()
    assert at.session_state["runs"] == 4


def _show_revise_job():
    from cai_core.jobs import Job
    from ui.common import job_progress

    job_progress(Job(id=1, kind="revise", title="revise red_team", status="finished", argv=[], pid=None, total=6,
                     done=6, message=None, log_path=None, result=None, exit_code=0, error=None, created_at=0.0,
                     started_at=0.0, ended_at=1.0, updated_at=1.0))


def test_job_progress_names_what_it_counts():
    """A 2-prompt revise batch is 6 generation steps: the bar says "6 of 6 steps", not a bare "6/6"
    next to the page's "2/2 prompts done"."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_show_revise_job)
    at.run()
    assert not at.exception
    [bar] = at.get("progress")
    assert "6 of 6 steps" in bar.proto.text
