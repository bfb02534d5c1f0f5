"""Demo: a guided walk-through of Constitutional AI for stakeholders, on the workspace's stored
results (or live on the active model). Large type, next/back, no configuration widgets."""
from __future__ import annotations

import streamlit as st

from cai_core.errors import CaiError
from cai_core.models.specs import get_backend
from cai_core.evaluation.reports import leaderboard_figure, tradeoff_figure
from cai_core.supervised.revision import ReviseSettings, stream_revision
from ui.common import active_model, beside_half, get_store, show_error
from ui.demo import (demo_constitution, demo_evaluation, demo_preference, demo_prompt, demo_reliability,
                     demo_trajectory, type_text)
from ui.revise import LiveView

STEPS = ["Constitutional AI in one minute", "The constitution", "Critique and revision",
         "The AI preference", "Can the judge be trusted?", "Before and after training", "What we learned"]
store = get_store()
step = int(st.session_state.get("demo_step", 0))
step = max(0, min(step, len(STEPS) - 1))


def go(delta: int) -> None:
    st.session_state["demo_step"] = max(0, min(len(STEPS) - 1, int(st.session_state.get("demo_step", 0)) + delta))


st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}")
st.title(STEPS[step])

if step == 0:
    st.header("Harmless, without being evasive")
    st.markdown(
        "### A model learns to behave from a short written **constitution** instead of thousands of human harm labels.\n"
        "### 1. It answers, **critiques** its own answer against a principle, and **revises** it.\n"
        "### 2. An **AI judge** compares pairs of answers; its preferences train the model further (RLAIF).\n"
        "### 3. We **check**: is the trained model more harmless - and still helpful, not evasive?")
    st.caption("Bai et al. 2022, Constitutional AI: Harmlessness from AI Feedback.")

elif step == 1:
    constitution = demo_constitution(store)
    if constitution is None:
        st.info("No constitution in this workspace yet - create or import one on the Constitution page.")
    else:
        st.header(f"{len(constitution.enabled_principles())} principles")
        st.caption(f"{constitution.name} · version {constitution.version} (a content hash: every edit is a new version)")
        for p in constitution.enabled_principles()[:6]:
            with st.container(border=True):
                st.subheader(p.id)
                st.text(p.critique_request)
        if len(constitution.enabled_principles()) > 6:
            st.caption(f"... and {len(constitution.enabled_principles()) - 6} more.")

elif step == 2:
    traj = demo_trajectory(store)
    if traj is not None:
        st.header("A prompt, critiqued and revised")
        st.text(traj["prompt"])
        animate = st.button("▶ Play it again", key="demo_play", help="Replays the stored rounds as they were written")
        st.subheader("The model's first answer")
        type_text(traj["initial"], animate=animate)
        for s in traj["steps"]:
            with st.container(border=True):
                st.subheader(f"Round {s['round']}: principle {s['principle_id']}")
                st.markdown("**Critique**")
                type_text(s.get("critique"), animate=animate)
                if s.get("revision") is not None:
                    st.markdown("**Revision**")
                    type_text(s["revision"], animate=animate)
        st.caption(f"Stored trajectory {traj['id']} · model {traj['model']} · constitution "
                   f"{traj['constitution_name']}@{traj['constitution_version']}")
    else:
        constitution = demo_constitution(store)
        if constitution is None:
            st.info("No stored critique/revision yet, and no constitution to run one live: import a constitution first.")
        else:
            prompt = demo_prompt(store)
            st.header("A red-team prompt")
            st.text(prompt)
            st.caption(f"Nothing stored yet: run it live on {active_model()} with the constitution {constitution.name}.")
            if st.button("▶ Run it live", key="demo_live", type="primary"):
                try:
                    model = active_model()
                    backend = get_backend(model, store.workspace)
                    settings = ReviseSettings(rounds=1, max_new_tokens=120, seed=0)
                    view = LiveView(1, {p.id: p.name for p in constitution.principles})
                    for ev in stream_revision(store, backend, constitution, prompt, settings, model, batch="demo"):
                        view.handle(ev)
                except CaiError as exc:
                    show_error(exc)

elif step == 3:
    pref = demo_preference(store)
    if pref is None:
        st.info("No AI judgments yet - sample and judge pairs on the Preferences page.")
    else:
        comp, verdict = pref["comparison"], pref["verdict"]
        st.header("Which answer is better? The judge reads its answer from log-probabilities.")
        st.text(comp["prompt"])
        left, right = st.columns(2)
        with left:
            st.subheader("Answer A")
            st.text(comp["response_a"])
        with right:
            st.subheader("Answer B")
            st.text(comp["response_b"])
        if verdict is not None and verdict.p_a is not None:
            c1, c2 = st.columns(2)
            c1.metric("P(A is better)", beside_half(verdict.p_a, 0, 4, "%"))
            c2.metric("Preferred", verdict.label or "-")
            st.caption("Judged in both orders (A first, then B first) to cancel position bias"
                       + (" - this verdict flipped with the order." if verdict.flipped else "."))
        judge = pref["judge"]
        st.caption(f"Judge: {judge.get('model') or judge['judge_key']} ({judge.get('style') or 'mc'} style)")

elif step == 4:
    rel = demo_reliability(store)
    if rel is None:
        st.info("No judge has been checked against human labels yet - see the Judge Reliability page "
                "(the paper's 438 HHH evaluations can be imported as a gold set).")
    else:
        r = rel["report"]
        st.header("Agreement with human labels")
        c1, c2, c3 = st.columns(3)
        acc, ci = r.get("accuracy"), r.get("accuracy_ci") or [None, None]
        c1.metric("Judge accuracy", f"{acc:.0%}" if acc == acc and acc is not None else "-")
        c2.metric("95% CI", f"{ci[0]:.0%} - {ci[1]:.0%}" if None not in ci and ci[0] == ci[0] else "-")
        c3.metric("Chance", "50%")
        st.caption(f"{r.get('n', 0)} labelled comparisons from {rel['gold']} · judge {rel['judge']}")

elif step == 5:
    data = demo_evaluation(store)
    if data is None:
        st.info("No evaluation yet - compare the base model with a trained run on the Evaluate and Compare page.")
    else:
        result = data["evaluation"]["result"]
        st.header("Harmlessness against helpfulness, one point per model")
        st.plotly_chart(tradeoff_figure(result), width="stretch", key="demo_tradeoff")
        board = {r["policy"]: r for r in data["board"]}
        if data["best"]:
            c1, c2, c3 = st.columns(3)
            best = board[data["best"]]
            c1.metric(f"{data['best']} wins vs others", f"{best['win_rate']:.0%}" if best["win_rate"] is not None else "-")
            c2.metric("Harmlessness score", f"{best['bt_score']:.0f}",
                      delta=f"{best['bt_score'] - board[data['base']]['bt_score']:+.0f} vs {data['base']}"
                      if data["base"] in board else None)
            c3.metric("Evasive answers", f"{best['evasive_rate']:.0%}" if best["evasive_rate"] is not None else "-")
        ex = data["example"]
        if ex:
            st.subheader("Before and after, on the same prompt")
            st.text(ex["prompt"])
            left, right = st.columns(2)
            for col, side in ((left, "a"), (right, "b")):
                with col:
                    st.markdown(f"**{ex[f'policy_{side}']}**")
                    st.text(ex[f"response_{side}"])
        st.plotly_chart(leaderboard_figure(result, "harmless"), width="stretch", key="demo_board")

else:
    st.header("The loop, closed")
    st.markdown("### A written constitution steered critiques, revisions and AI preferences.\n"
                "### The judge's agreement with people was measured, not assumed.\n"
                "### The trained policy was compared on held-out prompts for harmlessness, helpfulness "
                "and evasiveness - with confidence intervals.")
    st.caption("Every number here can be exported as a self-contained HTML report from the Evaluate and Compare page.")

st.divider()
back, _, nxt = st.columns([1, 4, 1])
back.button("← Back", on_click=go, args=(-1,), disabled=step == 0, key="demo_back", width="stretch")
nxt.button("Next →", on_click=go, args=(1,), disabled=step == len(STEPS) - 1, key="demo_next", width="stretch",
           type="primary")
