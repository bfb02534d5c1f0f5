"""Model helpers shared by the sidebar and the Models page: load progress, model info, live streaming."""
from __future__ import annotations

import streamlit as st

from cai_core.models import loader as model_loader
from cai_core.models.specs import DEFAULT_NAME, DEFAULT_SPEC, is_http, is_loaded, loaded_backends
from ui.common import api_key, show_error
from ui.markdown import md_escape


def display_name(spec: str) -> str:
    return f"{DEFAULT_NAME} (embedded)" if spec == DEFAULT_SPEC else spec


def info_for(spec: str) -> dict | None:
    return next((b for b in loaded_backends() if b.get("spec") == spec), None)


def info_caption(info: dict) -> str:
    """"cpu · float32 · 513 MB" for a local model, "server · model NAME" for an endpoint (markdown-escaped)."""
    if info.get("kind") == "http":
        bits = ["endpoint", f"model {info.get('model') or '?'}", f"log-probs: {info.get('logprobs')}"]
        return md_escape(" · ".join(bits))
    bits = [info.get("device"), info.get("dtype"), info.get("quantization")]
    text = " · ".join(str(b) for b in bits if b)
    if info.get("memory_mb"):  # a tiny test model rounded to "0 MB · 0M params"
        mb = info["memory_mb"]
        text += " · <1 MB" if mb < 1 else f" · {mb:.0f} MB"
    if info.get("parameters"):
        millions = info["parameters"] / 1e6
        text += " · <1M params" if millions < 1 else f" · {millions:.0f}M params"
    if info.get("adapter"):
        text += f" · adapter {info['adapter']}"
    return md_escape(text)


def start_load(spec: str, workspace, quantization: str | None = None) -> None:
    kwargs = {"quantization": quantization} if quantization else {}
    if is_http(spec):
        kwargs = {"api_key": api_key()}  # from the environment or st.secrets, handed over, never stored
    model_loader.start_load(spec, workspace, **kwargs)


def load_status(spec: str, workspace, *, key: str) -> None:
    """Progress of a running load (polled), the loaded model's info, or the load's error."""
    state = model_loader.state(spec, workspace)
    if state is not None and state.loading:
        _poll_load(spec, workspace, key)
        return
    if state is not None and state.error:
        st.error(md_escape(f"could not load {display_name(spec)}: {state.error}"))
        return
    info = info_for(spec)
    if info:
        st.caption(info_caption(info))
    else:
        st.caption("ready: loads on first use (or press Load on the Models page)")


def _poll_load(spec: str, workspace, key: str) -> None:
    @st.fragment(run_every=1)
    def poll():
        state = model_loader.state(spec, workspace)
        if state is None or state.done:
            st.rerun()  # full rerun: the rest of the page now sees the loaded model (or the error)
        st.progress(min(1.0, state.fraction), text=md_escape(f"loading {display_name(spec)}: {state.message} "
                                                                f"({state.seconds:.0f}s)"))

    poll()


def stream_answer(backend, conversation: list[dict], params) -> str:
    """Show the answer token by token as plain text (model output is data, never markdown)."""
    box = st.empty()
    text = ""
    try:
        for piece in backend.stream(conversation, params):
            text += piece
            box.text(text)
    except Exception as exc:  # noqa: BLE001 - shown, the page keeps working
        show_error(exc)
    if not text:
        box.caption("(the model returned no text)")
    return text


__all__ = ["display_name", "info_for", "info_caption", "start_load", "load_status", "stream_answer", "is_loaded"]
