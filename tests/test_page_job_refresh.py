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
