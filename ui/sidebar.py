"""The sidebar: workspace path, active model (name, device, dtype, memory) and the model picker, and
the workspace's current constitution and prompt set (every page's pickers start on them)."""
from __future__ import annotations

import streamlit as st

from cai_core.constitution.versions import list_constitutions
from cai_core.errors import CaiError
from cai_core.data.prompt_sets import list_prompt_sets
from cai_core.models.specs import DEFAULT_SPEC, ENGINES, check_spec, default_engine, is_http, set_default_engine
from cai_core.settings import get_setting, set_setting
from ui.common import pick_current, set_active_model, show_error
from ui.markdown import md_code
from ui.models import display_name, load_status, start_load

SOURCES = ["Embedded default", "Local folder or .gguf", "Hugging Face ID", "OpenAI-compatible URL"]
ENGINE_LABELS = {
    "auto": "auto (transformers)",
    "ctranslate2": "CTranslate2 float32 (CPU)",
    "transformers": "transformers (GPU, adapters, GGUF)",
    "ctranslate2-int8": "CTranslate2 int8 (opt-in)",
}


def _source_of(spec: str) -> int:
    if spec == DEFAULT_SPEC:
        return 0
    if spec.startswith("hf:"):
        return 2
    if is_http(spec):
        return 3
    return 1


def render_sidebar(store, root: str, spec: str) -> None:
    with st.sidebar:
        st.caption(f"Workspace: {md_code(str(store.workspace.root))}")
        st.markdown("**Active model**")
        st.text(display_name(spec))
        load_status(spec, store.workspace, key="sidebar")
        current_items(store)
        engine_picker(store)
        with st.expander("Change model"):
            source = st.radio("Source", SOURCES, index=_source_of(spec), key="sb_model_source",
                              help="Where the model comes from. The embedded default works offline.")
            value = DEFAULT_SPEC
            if source == SOURCES[1]:
                value = st.text_input("Folder or .gguf path", value="" if spec == DEFAULT_SPEC else spec,
                                      key="sb_model_path", help="An HF model folder, a run's output folder, or a .gguf file")
            elif source == SOURCES[2]:
                value = "hf:" + st.text_input("Hub ID", value=spec[3:] if spec.startswith("hf:") else "",
                                              key="sb_model_hf", help="Needs CAI_ALLOW_HUB=1 (the app is offline by default)")
            elif source == SOURCES[3]:
                value = st.text_input("Base URL", value=spec if is_http(spec) else "http://127.0.0.1:8000/v1",
                                      key="sb_model_url",
                                      help="vLLM, llama.cpp server, TGI, Ollama... API key from CAI_API_KEY or st.secrets")
            if st.button("Use this model", key="sb_use_model"):
                if not value or value in ("hf:",):
                    st.error("enter a model first")
                else:
                    try:
                        checked = check_spec(value, store.workspace)
                    except CaiError as exc:
                        show_error(exc)
                    else:
                        set_active_model(checked)
                        start_load(checked, store.workspace)  # in the background; progress shows above
                        st.rerun()


def current_items(store) -> None:
    """The current constitution (with its newest version) and prompt set: read fresh from the store on
    every run (ui.common.pick_current), so an item created, imported or picked on any page, in another
    tab or by a command shows here at once, and picking here makes it current everywhere."""
    constitutions = {c["name"]: c for c in list_constitutions(store)}
    if constitutions:
        name = pick_current(st, "constitution", "Current constitution", list(constitutions),
                            key="sb_current_constitution",
                            help="Pre-selected on every page; picking a constitution on a page makes it current too.")
        st.caption(f"newest version {md_code(constitutions[name]['version'])}, "
                   f"{constitutions[name]['principles']} principles")
    sets = {s["name"]: s for s in list_prompt_sets(store)}
    if sets:
        pick_current(st, "prompt_set", "Current prompt set", list(sets), key="sb_current_prompt_set",
                     format_func=lambda n: f"{n} ({sets[n]['prompts']} prompts, {sets[n]['kind']})")


def engine_picker(store) -> None:
    """The workspace's engine for local models (setting "engine"): this server and the background jobs
    it starts use it (a job inherits $CAI_ENGINE); models already loaded keep theirs until reloaded."""
    saved = get_setting(store, "engine") or default_engine()
    if saved != default_engine():
        set_default_engine(saved)
    if st.session_state.get("sb_engine") != saved:  # the store's choice, also sent to the browser's box
        st.session_state["sb_engine"] = saved
    st.selectbox("Engine for local models", ENGINES, key="sb_engine", on_change=_engine_picked, args=(store,),
                 format_func=ENGINE_LABELS.get,
                 help="The same as --engine on the command line. auto: transformers for everything. "
                      "ctranslate2: CTranslate2 float32 on the CPU (the same numbers as transformers). "
                      "ctranslate2-int8: generation on CTranslate2 int8 (batches about 1.1x faster on the CPU; "
                      "the live run no faster than auto's), but its text differs from float32's after a "
                      "few tokens, so the rows it writes "
                      "record the model as \"<model> [int8]\" (kept apart from float32 runs); option "
                      "scoring and mc judges stay on transformers float32.")


def _engine_picked(store) -> None:
    """The engine box's callback: the store holds the workspace's engine (one source for every session)."""
    choice = st.session_state["sb_engine"]
    set_setting(store, "engine", choice)
    set_default_engine(choice)
