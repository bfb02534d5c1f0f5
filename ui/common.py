"""Shared page helpers: the workspace store, the active model, errors, job progress."""
from __future__ import annotations

import os
import time

import streamlit as st

from cai_core.errors import CaiError
from cai_core.constitution.versions import constitution_names
from cai_core.data.prompt_sets import list_prompt_sets
from cai_core.settings import DEFAULT_CURRENT, get_current, set_current
from cai_core.store import Store, open_store
from ui.markdown import md_escape

ACTIVE_MODEL_KEY = "active_model"


@st.cache_resource(show_spinner=False)
def _store(root: str, url: str | None = None) -> Store:
    return open_store(root, url)


def database_url() -> str | None:
    """The PostgreSQL store's URL: CAI_DATABASE_URL, else `CAI_DATABASE_URL` in .streamlit/secrets.toml;
    None keeps the store in the workspace's SQLite file. Never stored or shown (jobs get it through
    their environment)."""
    url = os.environ.get("CAI_DATABASE_URL")
    if url:
        return url
    try:
        return st.secrets.get("CAI_DATABASE_URL") or None  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - no secrets file is fine
        return None


def workspace_root() -> str:
    return os.environ.get("CAI_WORKSPACE", "workspace")


def get_store() -> Store:
    return _store(workspace_root(), database_url())


def store_cached(fn, *args, **kwargs):
    """fn(store, *args, **kwargs) for the workspace store, computed once per store change: cached
    (every session of this process) under Store.change_counter(), which moves on every commit by
    this process or another, so a page never shows data older than its render. Arguments must be
    hashable by st.cache_data (str, int, tuples, lists); the result is a copy (safe to mutate).
    fn must be a module-level function: its qualified name is part of the key, and two lambdas or
    nested functions of one module would share it."""
    if "<" in fn.__qualname__:
        raise CaiError(f"store_cached needs a module-level function, not {fn.__qualname__}")
    store = get_store()
    return _store_cached(workspace_root(), store.change_counter(), f"{fn.__module__}.{fn.__qualname__}", fn,
                         args, tuple(sorted(kwargs.items())))


@st.cache_data(max_entries=128, show_spinner=False)
def _store_cached(root: str, counter: str, name: str, _fn, args: tuple, kwargs: tuple):
    return _fn(get_store(), *args, **dict(kwargs))


def active_model() -> str:
    """The workspace's active model spec, read from the store on every call (no per-session copy: a
    model picked in another tab or with `python -m cai_core models use` shows at the next rerun)."""
    return get_current(get_store(), "model", os.environ.get("CAI_MODEL", "default"))


def set_active_model(spec: str) -> None:
    set_current(get_store(), "model", spec)


def current_item(kind: str) -> str | None:
    """The workspace's current constitution / prompt set ("constitution" | "prompt_set")."""
    return get_current(get_store(), kind)


def set_current_item(kind: str, name: str | None, *, keep: str | None = None) -> None:
    """Make `name` the workspace's current item. The store is the one source of truth: every picker
    that shows the current item reads it before it is drawn (pick_current), so nothing else is reset
    here. `keep` is accepted for old callers and not needed any more."""
    set_current(get_store(), kind, name)


def item_names(kind: str) -> list[str]:
    """The names of the stored items of a kind ("constitution" | "prompt_set")."""
    store = get_store()
    if kind == "constitution":
        return constitution_names(store)
    return [s["name"] for s in list_prompt_sets(store)]


def _picked(kind: str, key: str) -> None:
    """A current-item picker's callback: a real item becomes current; a pseudo option ("(default)")
    stays this picker's own choice."""
    value = st.session_state.get(key)
    if value in item_names(kind):
        set_current_item(kind, value)


def pick_current(container, kind: str, label: str, options: list[str], *, key: str, in_form: bool = False,
                 local: bool = False, **kwargs) -> str | None:
    """A select box over item names (stable ids, never positions) tied to the workspace's current item.

    By default the box IS the current item: before it is drawn its value is set from the store
    (st.session_state[key] = current, which Streamlit also sends to the browser's box; `index=` never
    changes a box the browser already shows, which is how the sidebar and a page came to name different
    constitutions), and picking writes the store. An option that is not a stored item (e.g. "(default)")
    is kept as this box's own pick and does not change the current item.

    With local=True, or in_form=True (a form's widgets have no callbacks), the box is plainly a local
    view, and its help says so: it starts on the current item, follows it until the user picks another
    option there, and picking never changes the current item.
    """
    if not options:  # nothing to pick: an empty box, and the current item is left as it is
        return container.selectbox(label, options, key=key, **kwargs)
    items = item_names(kind)
    current = current_item(kind)
    value = st.session_state.get(key)
    if current not in items:  # none chosen yet, or the current one was deleted: choose one for everybody
        wanted = DEFAULT_CURRENT.get(kind)
        fallback = (wanted if wanted in items else value if value in items and value in options
                    else next((o for o in options if o in items), None))
        if fallback is not None:
            set_current_item(kind, fallback)
            current = fallback
    if local or in_form:
        base_key = f"_pick_base_{key}"  # the current item this local box last started on
        following = value == st.session_state.get(base_key)
        if value not in options or (following and current in options and value != current):
            start = current if current in options else options[0]
            st.session_state[key] = st.session_state[base_key] = start
        what = kind.replace("_", " ")
        note = (f"A local pick: it starts on the workspace's current {what} (sidebar) and picking here "
                f"does not change that.")
        kwargs["help"] = f"{kwargs['help']} {note}" if kwargs.get("help") else note
    else:
        pseudo = value in options and value not in items  # the user's own pick of a non-item option
        if current in options and not pseudo and value != current:
            st.session_state[key] = current
        elif value not in options:
            st.session_state[key] = current if current in options else options[0]
        kwargs["on_change"] = _picked
        kwargs["args"] = (kind, key)
    return container.selectbox(label, options, key=key, **kwargs)


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


def job_progress(job) -> None:
    """One job's progress bar in the job's own unit (cai_core.jobs.Job.progress: what the store
    holds, e.g. "stopped - 16 of 112 judgments"), with ETA while it runs and its status line."""
    prog = job.progress
    label = f"{md_escape(job.title or job.kind)} - {md_escape(prog.text())}"
    if prog.state == "running" and prog.total:
        label += f" - {fmt_eta(job.eta_s)}"
    st.progress(prog.fraction, text=label)
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
    from cai_core.data.uploads import check_upload

    data = uploaded.getvalue()
    check_upload(uploaded.name, data, allowed)
    return data.decode("utf-8-sig")
