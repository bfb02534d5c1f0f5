"""Home: the CAI flow in a few lines, each step linked, with live counts from the store."""
import streamlit as st

from cai_core.summaries.overview import workspace_counts
from ui.common import get_store

st.title("Constitutional AI workbench")
st.markdown(
    "Constitutional AI (Bai et al. 2022) trains a model to be **harmless without being evasive**, "
    "using a written constitution instead of human harm labels:\n\n"
    "1. **Supervised phase** - the model answers red-team prompts, critiques its own answer against a "
    "principle, and revises it; the revisions become SFT data.\n"
    "2. **RL phase (RLAIF)** - an AI judge compares pairs of answers against the constitution; those "
    "preferences train a reward model, and PPO (or DPO/RLOO/GRPO) trains the policy.\n"
    "3. **Check** - how far can the AI judges be trusted, and did training make the policy more "
    "harmless without making it evasive?"
)
st.page_link("pages/80_Demo.py", label="Start the guided demo (for stakeholders)", icon=":material/slideshow:")
counts = workspace_counts(get_store())
steps = [
    ("pages/20_Constitution.py", "Constitution", f"{counts['constitutions']} constitutions, {counts['constitution_versions']} versions"),
    ("pages/30_Critique_and_Revise.py", "Critique and Revise", f"{counts['trajectories']} trajectories"),
    ("pages/40_Preferences.py", "Preferences", f"{counts['comparisons']} comparisons, {counts['judgments']} judgments, {counts['human_labels']} human labels"),
    ("pages/50_Judge_Reliability.py", "Judge Reliability", f"{counts['human_labels']} human labels to check against"),
    ("pages/60_Training.py", "Training", f"{counts['runs']} runs, {counts['exports']} dataset exports"),
    ("pages/70_Evaluate_and_Compare.py", "Evaluate and Compare", f"{counts['evaluations']} evaluations"),
]
cols = st.columns(3)
for i, (path, label, detail) in enumerate(steps):
    with cols[i % 3]:
        with st.container(border=True):
            st.page_link(path, label=f"{i + 1}. {label}")
            st.caption(detail)
st.caption("The embedded default model (SmolLM2-135M-Instruct) shows the mechanics of CAI offline; its critiques "
           "are generic. Point the app at a stronger model in the sidebar for meaningful results.")
