"""The command behind a page action: the `python -m cai_core ...` line a start form previews, and
the one way pages start background jobs (so the preview and the job's argv cannot differ, and the
endpoint key from .streamlit/secrets.toml reaches the job through its environment only)."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from cai_core.jobs.command_line import cli_argv, command_line
from cai_core.errors import CaiError
from cai_core import jobs
from cai_core.jobs.specs import JobSpec
from cai_core.store import Store
from ui.common import api_key, show_error
from ui.markdown import md_escape


def job_env() -> dict[str, str]:
    """What a background job needs in its environment beyond os.environ: the endpoint API key when
    it comes from st.secrets (a job is a separate process that cannot read st.secrets)."""
    key = api_key()
    return {"CAI_API_KEY": key} if key else {}


def show_command(store: Store, what: JobSpec | list[str] | None, *, problem: str | None = None,
                 note: str = "The same job from a shell (e.g. on a cluster node); the page runs exactly this:") -> None:
    """The copyable shell line of what a form would start: a job spec (as given to start_page_job),
    or the arguments of another command (a training run)."""
    if what is None:
        st.caption(f"Command: {md_escape(problem) if problem else 'fill in the form to see it'}")
        return
    args = what.to_argv() if isinstance(what, JobSpec) else what
    st.caption(note)
    st.code(command_line(cli_argv(args, store.workspace.root)), language="bash", wrap_lines=True)


def start_page_job(store: Store, spec: JobSpec, *, title: str | None = None, total: int | None = None) -> int:
    """Start a background job from a page, with the key from st.secrets in its environment."""
    return jobs.start_job(store, spec, title=title, total=total, env=job_env())


def resume_page_job(store: Store, job_id: int) -> int:
    """Start a stopped or failed job again with its stored spec (and the key from st.secrets)."""
    return jobs.resume_job(store, job_id, env=job_env())


def form_spec(store: Store, build: Callable[[], JobSpec]) -> tuple[JobSpec | None, str | None]:
    """A form's job spec, or why there is none yet (a CaiError's message, shown, not raised), with the
    command line it would run shown below the form: every start form previews its command this way."""
    try:
        spec, problem = build(), None
    except CaiError as exc:
        spec, problem = None, str(exc)
    show_command(store, spec, problem=problem)
    return spec, problem


def preview_button(key: str) -> bool:
    """Inside an st.form: a submit button that only refreshes the command preview (a form's widgets
    reach the script on submit, so the preview shows the values as of the last click)."""
    return st.form_submit_button("Preview command", key=key)


def start_from_form(store: Store, spec: JobSpec | None, problem: str | None, *,
                    title: str | None = None, total: int | None = None) -> int | None:
    """Start the previewed job, or show why it cannot start; returns the job id or None."""
    if spec is None:
        show_error(CaiError(problem or "the form is incomplete"))
        return None
    try:
        return start_page_job(store, spec, title=title, total=total)
    except CaiError as exc:
        show_error(exc)
        return None
