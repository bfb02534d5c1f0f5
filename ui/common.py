"""Shared page helpers: the workspace store, the active model, errors, job progress."""
from __future__ import annotations

import os
import time

import streamlit as st

from cai_core.errors import CaiError
from cai_core.settings import get_current, get_setting, set_current, set_setting
from cai_core.store import Store, open_store
from ui.markdown import md_escape

ACTIVE_MODEL_KEY = "active_model"


@st.cache_resource(show_spinner=False)
def _store(root: str) -> Store:
    return open_store(root)


def workspace_root() -> str:
    return os.environ.get("CAI_WORKSPACE", "workspace")


def get_store() -> Store:
    return _store(workspace_root())


def active_model() -> str:
    if ACTIVE_MODEL_KEY not in st.session_state:
        fallback = os.environ.get("CAI_MODEL", "default")
        st.session_state[ACTIVE_MODEL_KEY] = get_setting(get_store(), ACTIVE_MODEL_KEY, fallback)
    return st.session_state[ACTIVE_MODEL_KEY]


def set_active_model(spec: str) -> None:
    st.session_state[ACTIVE_MODEL_KEY] = spec
    set_setting(get_store(), ACTIVE_MODEL_KEY, spec)


def current_item(kind: str) -> str | None:
    """The workspace's current constitution / prompt set ("constitution" | "prompt_set")."""
    return get_current(get_store(), kind)


def set_current_item(kind: str, name: str | None, *, keep: str | None = None) -> None:
    """Make `name` current; every picker of that kind (except `keep`, the one the user just changed)
    starts on it at its next render."""
    set_current(get_store(), kind, name)
    for key in st.session_state.get("_current_pickers", {}).get(kind, ()):
        if key != keep:
            st.session_state.pop(key, None)


def pick_current(container, kind: str, label: str, options: list[str], *, key: str, in_form: bool = False,
                 **kwargs) -> str | None:
    """A select box over item names (stable ids, never positions) that starts on the workspace's
    current item and keeps the user's pick across reruns while it exists; outside a form, picking
    makes it current (a form's widgets have no callbacks: call set_current_item on submit)."""
    st.session_state.setdefault("_current_pickers", {}).setdefault(kind, set()).add(key)
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]  # the picked item is gone (deleted): start on the current one again
    current = current_item(kind)
    index = options.index(current) if current in options else 0
    if not in_form:
        kwargs["on_change"] = lambda: set_current_item(kind, st.session_state.get(key), keep=key)
    return container.selectbox(label, options, index=index, key=key, **kwargs)


def api_key() -> str | None:
    """The endpoint API key: environment or st.secrets only, never the store."""
    key = os.environ.get("CAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    try:
        return st.secrets.get("CAI_API_KEY")  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - no secrets file is fine
        return None


def error_box(text: str) -> None:
    """An error whose text cannot change the layout: the first line (with its "where:" prefix) as an
    escaped one-line st.error, any further lines (a parser's context with its caret) verbatim in st.code."""
    headline, _, details = str(text).strip("\n").partition("\n")
    st.error(md_escape(" ".join(headline.split())) or "error")
    if details.strip():
        st.code(details.rstrip(), language=None)


def show_error(exc: Exception) -> None:
    error_box(str(exc) if isinstance(exc, CaiError) else f"{type(exc).__name__}: {exc}")


def beside_half(p: float, digits: int, most: int, spec: str = "f") -> str:
    """p with `digits` decimals ("f", or "%" for a percentage), more (up to `most`) while rounding
    would hide which side of 0.5 decided a verdict: "0.500" or "50%" next to a label A/B reads like
    a bug, 0.5003 or 49.98% does not."""
    while digits < most and p != 0.5 and f"{p:.{digits}{spec}}" == f"{0.5:.{digits}{spec}}":
        digits += 1
    return f"{p:.{digits}{spec}}"


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s left" if seconds >= 60 else f"{seconds}s left"


# What a job's done/total counts, where it is not obvious (a revise batch counts generation steps:
# prompts x (answer + critique and revision per round)).
JOB_UNITS = {"revise": "steps", "judge": "judgments", "eval-judge": "judgments", "pairs-sample": "prompts"}


def job_progress(job) -> None:
    """One job's progress bar with ETA and status line."""
    label = f"{md_escape(job.title or job.kind)} - {job.status}"
    if job.total:
        label += f" - {job.done}/{job.total}"
        if job.kind in JOB_UNITS:
            label += f" {JOB_UNITS[job.kind]}"
        if job.status == "running":
            label += f" - {fmt_eta(job.eta_s)}"
    st.progress(job.fraction if job.total else (1.0 if job.status == "finished" else 0.0), text=label)
    pinned = job.pinned()
    if pinned:  # what the job works on, as started: never re-read from the page's current picks
        st.caption(" · ".join(f"{k}: {v}" for k, v in pinned.items()))
    if job.message and job.status == "running":
        st.caption(md_escape(job.message))
    if job.status == "failed" and job.error:
        error_box(f"job {job.id} failed: {job.error}")


def rerun_when_jobs_end(jobs, key: str) -> None:
    """In a polling fragment: rerun the whole page once when a job it showed running has ended.

    A fragment reruns only itself, so without this the page's other tabs (results, batch pickers,
    counts) kept what they read before the job wrote anything until the user reloaded.
    """
    from cai_core.jobs import TERMINAL

    seen = st.session_state.get(key, {})
    now = {job.id: job.status for job in jobs}
    st.session_state[key] = now
    if any(status in TERMINAL and seen.get(job_id) not in (None, *TERMINAL) for job_id, status in now.items()):
        st.rerun()


def age(ts: float | None) -> str:
    if not ts:
        return "-"
    d = time.time() - ts
    if d < 60:
        return f"{int(d)}s ago"
    if d < 3600:
        return f"{int(d // 60)}m ago"
    if d < 86400:
        return f"{int(d // 3600)}h ago"
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def read_upload(uploaded, allowed: tuple[str, ...]) -> str:
    """An uploaded file's text after the upload checks (type, size, no pickles); raises CaiError."""
    from cai_core.uploads import check_upload

    data = uploaded.getvalue()
    check_upload(uploaded.name, data, allowed)
    return data.decode("utf-8-sig")
