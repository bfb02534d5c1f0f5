"""Training: launch SFT / reward / PPO / DPO / RLOO / GRPO runs and watch them live.

Runs are separate processes started by cai_core's run manager; this page only records the
user's choices, starts them, and polls status and metrics (every 3 s, without reloading).
"""
import streamlit as st

from cai_core.training import runs as tr
from ui.common import active_model, get_store
from ui.markdown import md_escape
from ui.training import compare, new_run_form, run_details, run_table

store = get_store()
st.title("Training")
st.caption("SFT on the critique-revision data, a reward model on the AI preferences, then PPO (or DPO, RLOO, "
           "GRPO). Each run is its own process: closing the browser or restarting the app does not stop it.")

launched = st.session_state.get("tr_launched")
if launched and launched["run_id"] == st.session_state.get("tr_selected"):
    st.success(md_escape(launched["text"]))
tr.refresh(store)  # a run that died since the last look is shown as failed, here and in the run list
all_runs = tr.list_runs(store)
if not all_runs:
    st.info("No runs yet - start one here.")
    new_run_form(store, active_model())
    st.stop()

if st.session_state.pop("tr_goto_runs", False):
    # just launched from "New run": show it running
    st.session_state["tr_tab"] = "Runs"
    st.session_state["tr_pick"] = st.session_state.get("tr_selected")
tab_runs, tab_new, tab_compare = st.tabs(["Runs", "New run", "Compare runs"], key="tr_tab", on_change="rerun")

with tab_runs:
    run_table(store, all_runs)
    ids = [r.id for r in all_runs]
    selected = st.session_state.get("tr_selected")
    index = ids.index(selected) if selected in ids else 0
    by_id = {r.id: r for r in all_runs}
    # one source for a run's status: the table above and the details below (a status in this label
    # went stale: the picker said "queued" while the table said "running")
    run_id = st.selectbox("Run", ids, index=index, key="tr_pick",
                          format_func=lambda i: f"{by_id[i].name} ({by_id[i].kind})")
    st.session_state["tr_selected"] = run_id

    @st.fragment(run_every=3)
    def live():
        run = run_details(store, run_id)
        if run is not None and run.status != by_id[run_id].status:
            st.rerun()  # status changed (stopped, finished, resumed): refresh the run list and picker too

    live()

with tab_new:
    new_run_form(store, active_model())

with tab_compare:
    compare(store, all_runs)
