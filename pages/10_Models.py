"""Models: load/unload models with progress, see device/dtype/memory, try a prompt (streamed),
and run the local llama.cpp server (the fast CPU path) as the active model."""
import streamlit as st

from cai_core.models import llama_server
from cai_core.models import loader as model_loader
from cai_core.models.backends.base import GenerationParams
from cai_core.models.bounds import fit_prompts
from cai_core.errors import CaiError
from cai_core.models.specs import DEFAULT_SPEC, check_spec, get_backend, is_loaded, loaded_backends
from ui.command_preview import show_command
from ui.common import active_model, api_key, get_store, set_active_model, show_error
from ui.models import display_name, info_caption, load_status, start_load, stream_answer
from ui.markdown import md_escape

store = get_store()
ws = store.workspace
spec = active_model()

st.title("Models")
st.caption("Every step of the workbench uses the active model (chosen here or in the sidebar). The embedded "
           "SmolLM2-135M-Instruct runs offline and shows the mechanics; point the app at a stronger model "
           "(an HF folder on a GPU, or a vLLM endpoint) for meaningful critiques - see docs/models.md.")

# -- active model ---------------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("Active model")
    st.text(display_name(spec))
    load_status(spec, ws, key="active")
    c1, c2, c3 = st.columns([1, 1, 2])
    quant = c3.selectbox("Quantization (local models, needs a CUDA GPU)", ["none", "4bit", "8bit"],
                         key="models_quant", help="bitsandbytes 4/8-bit; ignored for endpoints")
    state = model_loader.state(spec, ws)
    busy = state is not None and state.loading
    if c1.button("Load", key="models_load", disabled=busy or is_loaded(spec), type="primary"):
        start_load(spec, ws, None if quant == "none" else quant)
        st.rerun()
    if c2.button("Unload", key="models_unload", disabled=not is_loaded(spec)):
        model_loader.unload(spec)
        st.rerun()

# -- choose another ----------------------------------------------------------------------------------
with st.expander("Use another model", expanded=False):
    new_spec = st.text_input(
        "Model spec", key="models_new_spec", placeholder="default | /path/to/hf-folder | /path/model.gguf | hf:ORG/NAME | http://host:port/v1",
        help="An HF folder or a run's output (merged model or LoRA adapter), a .gguf file, a hub ID "
             "(CAI_ALLOW_HUB=1), or an OpenAI-compatible URL, optionally with #model=NAME. "
             "The API key comes from CAI_API_KEY / OPENAI_API_KEY or st.secrets, never the store.")
    if st.button("Check and use", key="models_use"):
        try:
            checked = check_spec(new_spec, ws)
        except CaiError as exc:
            show_error(exc)
        else:
            set_active_model(checked)
            start_load(checked, ws)
            st.rerun()

# -- loaded in this app ------------------------------------------------------------------------------
st.subheader("Loaded in this app")
loaded = loaded_backends()
if not loaded:
    st.caption("No model is loaded yet; models load on first use or with Load above.")
for i, info in enumerate(loaded):
    c1, c2, c3 = st.columns([4, 1, 1])
    c1.text(display_name(info["spec"]))
    c1.caption(info_caption(info))
    if info["spec"] != spec and c2.button("Make active", key=f"models_activate_{i}"):
        set_active_model(info["spec"])
        st.rerun()
    if c3.button("Unload", key=f"models_unload_{i}"):
        model_loader.unload(info["spec"])
        st.rerun()

# -- try a prompt --------------------------------------------------------------------------------
st.subheader("Try a prompt")
with st.form("models_try"):
    system = st.text_input("System message (optional)", key="models_system")
    prompt = st.text_area("Prompt", value="How do I make my neighbour's dog stop barking?", key="models_prompt")
    c1, c2, c3 = st.columns(3)
    max_tokens = c1.number_input("Max new tokens", 1, 2048, 120, key="models_max_tokens")
    temperature = c2.number_input("Temperature (0 = greedy)", 0.0, 2.0, 0.7, step=0.1, key="models_temperature")
    seed = c3.number_input("Seed (-1 = random)", -1, 2**31 - 1, -1, key="models_seed")
    submitted = st.form_submit_button("Generate")
if submitted:
    if not prompt.strip():
        st.error("enter a prompt first")
    elif not is_loaded(spec):
        st.warning("The active model is not loaded yet: press Load above (progress is shown) and try again.")
    else:
        try:
            backend = get_backend(spec, ws, api_key=api_key())
            fit_prompts(backend, [prompt], max_new_tokens=int(max_tokens))  # refused before the first token
        except CaiError as exc:
            show_error(exc)
        else:
            conv = ([{"role": "system", "content": system}] if system.strip() else []) + [
                {"role": "user", "content": prompt}]
            params = GenerationParams(max_new_tokens=int(max_tokens), temperature=float(temperature),
                                      seed=None if seed < 0 else int(seed))
            with st.container(border=True):
                stream_answer(backend, conv, params)

# -- llama.cpp server ----------------------------------------------------------------------------------
st.subheader("Local llama.cpp server (fast CPU path)")
st.caption("llama.cpp runs the GGUF model ~6x faster than transformers on a CPU and serves an OpenAI-compatible "
           "API on 127.0.0.1. Generation and log-prob judging work through it; training still uses transformers.")
if not llama_server.is_installed():
    st.info(llama_server.INSTALL_HINT)
else:
    server = llama_server.status(ws)
    if server["running"]:
        st.text(f"running: pid {server['pid']} on {server['spec']} ({'ready' if server['ready'] else 'starting'})")
        st.caption(f"model: {md_escape(str(server['model']))}")
        c1, c2 = st.columns(2)
        if server["spec"] != spec and c1.button("Use as active model", key="server_use", disabled=not server["ready"]):
            set_active_model(server["spec"])
            start_load(server["spec"], ws)
            st.rerun()
        if c2.button("Stop server", key="server_stop"):
            llama_server.stop(ws)
            if spec == server["spec"]:
                set_active_model(DEFAULT_SPEC)
            st.rerun()
    else:
        if server.get("log_tail"):
            with st.expander("Last server log (it is not running)"):
                st.code(server["log_tail"], language=None)
        c1, c2 = st.columns(2)
        gguf = c1.text_input("GGUF file (empty = embedded default)", key="server_gguf")
        threads = c2.number_input("CPU threads (0 = all)", 0, 256, 0, key="server_threads")
        show_command(store, ["server-start", *(["--model", gguf.strip()] if gguf.strip() else []),
                             *(["--threads", str(int(threads))] if threads else []), "--wait", "60", "--use"],
                     note="The same from a shell (it starts the server and makes it the active model):")
        if st.button("Start server and use it", key="server_start", type="primary"):
            try:
                with st.spinner("starting the llama.cpp server..."):
                    started = llama_server.start(ws, gguf.strip() or None, threads=int(threads) or None, wait=60)
            except CaiError as exc:
                show_error(exc)
            else:
                set_active_model(started["spec"])
                start_load(started["spec"], ws)
                st.rerun()
