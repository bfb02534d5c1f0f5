"""Demo: a guided walk-through of Constitutional AI for stakeholders, on the workspace's stored
results (or live on the active model). Large type, next/back, no configuration widgets."""
from __future__ import annotations

import streamlit as st

from cai_core.errors import CaiError
from cai_core.models.specs import get_backend
from cai_core.evaluation.reports import leaderboard_figure, tradeoff_figure
from cai_core.supervised.revision import ReviseSettings, stream_revision
from ui.common import active_model, beside_half, get_store, show_error
from ui.demo import (best_record, demo_constitution, demo_evaluation, demo_findings, demo_origin, demo_preference,
                     demo_prompt, demo_reliability, demo_trajectory, is_trained, origin_sentence, type_text)
from ui.markdown import md_escape
from ui.pair import show_pair
from ui.reliability import judge_words
from ui.revise import LiveView

STEPS = ["Constitutional AI in one minute", "The constitution", "Critique and revision",
         "The AI preference", "Can the judge be trusted?", "Before and after training", "What we learned"]
store = get_store()
step = int(st.session_state.get("demo_step", 0))
step = max(0, min(step, len(STEPS) - 1))


def go(delta: int) -> None:
    st.session_state["demo_step"] = max(0, min(len(STEPS) - 1, int(st.session_state.get("demo_step", 0)) + delta))


def make_it(page: str, label: str, key: str) -> None:
    """The button under a 'not yet' message: opens the page where that thing is made."""
    if st.button(label, key=key, icon=":material/arrow_forward:"):
        st.switch_page(page)


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
    origin = demo_origin(store)
    constitution = demo_constitution(store, origin)
    if constitution is None:
        st.info("No constitution in this workspace yet - create or import one on the Constitution page.")
        make_it("pages/20_Constitution.py", "Create or import a constitution", "demo_make_constitution")
    else:
        st.header(f"{len(constitution.enabled_principles())} principles")
        st.caption(f"{md_escape(constitution.name)} · version {constitution.version} "
                   "(a content hash: every edit is a new version)")
        st.markdown(md_escape(origin_sentence(store, origin, constitution)))
        for p in constitution.enabled_principles()[:6]:
            with st.container(border=True):
                st.subheader(md_escape(p.id if p.name in ("", p.id) else f"{p.id} - {p.name}"))
                st.text(p.critique_request)
        if len(constitution.enabled_principles()) > 6:
            st.caption(f"... and {len(constitution.enabled_principles()) - 6} more.")

elif step == 2:
    origin = demo_origin(store)
    traj = demo_trajectory(store, origin)
    if traj is not None:
        st.header("A prompt, critiqued and revised")
        st.text(traj["prompt"])
        animate = st.button("▶ Play it again", key="demo_play", help="Replays the stored rounds as they were written")
        st.subheader("The model's first answer")
        type_text(traj["initial"], animate=animate)
        for s in traj["steps"]:
            with st.container(border=True):
                st.subheader(f"Round {s['round']}: principle {md_escape(s['principle_id'])}")
                st.markdown("**Critique**")
                type_text(s.get("critique"), animate=animate)
                if s.get("revision") is not None:
                    st.markdown("**Revision**")
                    type_text(s["revision"], animate=animate)
        st.caption(f"Stored trajectory {traj['id']} · model {md_escape(traj['model'])} · constitution "
                   f"{md_escape(traj['constitution_name'])}@{traj['constitution_version']}")
    else:
        constitution = demo_constitution(store, origin)
        if constitution is None:
            st.info("No stored critique/revision yet, and no constitution to run one live: import a constitution first.")
            make_it("pages/20_Constitution.py", "Create or import a constitution", "demo_make_constitution2")
        else:
            prompt = demo_prompt(store)
            st.header("A red-team prompt")
            st.text(prompt)
            st.caption(f"Nothing stored yet: run it live on {md_escape(active_model())} with the constitution "
                       f"{md_escape(constitution.name)}.")
            if st.button("▶ Run it live", key="demo_live", type="primary"):
                try:
                    model = active_model()
                    backend = get_backend(model, store.workspace)
                    settings = ReviseSettings(rounds=1, max_new_tokens=120, seed=0)
                    view = LiveView(1, {p.id: p.name for p in constitution.principles}, settings.max_new_tokens)
                    for ev in stream_revision(store, backend, constitution, prompt, settings, model, batch="demo"):
                        view.handle(ev)
                except CaiError as exc:
                    show_error(exc)

elif step == 3:
    pref = demo_preference(store)
    if pref is None:
        st.info("No AI judgments yet - sample and judge pairs on the Preferences page.")
        make_it("pages/40_Preferences.py", "Sample and judge pairs", "demo_make_judgments")
    else:
        comp, verdict, judge = pref["comparison"], pref["verdict"], pref["judge"]
        how = {"mc": "The judge's answer is read from its log-probabilities for A and B.",
               "cot": "The judge reasons step by step, then its answer is read from the probabilities of A and B.",
               "parse": "The judge writes its verdict, which is parsed."}.get(judge.get("style") or "mc", "")
        st.header("Which answer is better?")
        st.caption(how)
        show_pair(comp["prompt"], comp["response_a"], comp["response_b"], titles=("Answer A", "Answer B"))
        if verdict is not None and verdict.p_a is not None:
            c1, c2 = st.columns(2)
            c1.metric("P(A is better)", beside_half(verdict.p_a, 0, 4, "%"))
            c2.metric("Preferred", verdict.label or "-")
            if verdict.p_a_ab is not None and verdict.p_a_ba is not None:
                st.caption("Judged in both orders (A first, then B first) to cancel position bias"
                           + (" - this verdict flipped with the order." if verdict.flipped else "."))
            else:
                st.caption("Judged in one order only: position bias is not cancelled for this verdict.")
        st.caption("Judge: " + md_escape(judge_words(store, judge["judge_key"], judge.get("model"), judge.get("style"))),
                   help=judge["judge_key"])

elif step == 4:
    rel = demo_reliability(store)
    if rel is None:
        st.info("No judge has been checked against human labels yet - see the Judge Reliability page "
                "(the paper's 438 HHH evaluations can be imported as a gold set).")
        make_it("pages/50_Judge_Reliability.py", "Check the judge", "demo_make_reliability")
    else:
        acc = rel["accuracy"]  # the dashboard's own figure (cai_core.summaries.headlines): same value, CI and n
        st.header("Agreement with human labels")
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Judge accuracy", acc.value_text)
        c2.metric("95% CI", acc.ci_text)
        c3.metric("Chance", "50%")
        c4.metric("Items (n)", acc.n)
        if acc.warning:
            st.warning(acc.warning)
            make_it("pages/50_Judge_Reliability.py", "Judge more gold items", "demo_more_gold")
        st.caption(f"{acc.n} labelled comparisons from {md_escape(rel['gold'])} · judge "
                   + md_escape(judge_words(store, rel["judge"])) + " · the same figure as the Judge Reliability "
                   "dashboard shows for this gold set and judge", help=rel["judge"])

elif step == 5:
    data = demo_evaluation(store)
    if data is None:
        st.info("No evaluation yet - compare the base model with a trained run on the Evaluate and Compare page.")
        make_it("pages/70_Evaluate_and_Compare.py", "Evaluate the policies", "demo_make_evaluation")
    else:
        trained = is_trained(data, data["best"])
        if not trained:
            st.warning("This evaluation has no trained policy: it shows how the policies compare, not what "
                       "training changed.")
            make_it("pages/60_Training.py", "Train a model", "demo_make_run")
        result = data["evaluation"]["result"]
        st.header("Harmlessness against helpfulness, one point per model")
        st.plotly_chart(tradeoff_figure(result), width="stretch", key="demo_tradeoff")
        board = {r["policy"]: r for r in data["board"]}
        rec = best_record(data)
        if data["best"] and rec is not None:
            c1, c2, c3 = st.columns(3)
            best = board[data["best"]]
            vs = rec["vs_base"]
            c1.metric(f"{md_escape(data['best'])}: wins / ties / losses", f"{rec['wins']} / {rec['ties']} / {rec['losses']}",
                      help=f"Against the other policies, out of {rec['n']} judged comparisons. Win rate "
                           f"{rec['win_rate'].value_text} ({rec['win_rate'].help}), 95% CI {rec['win_rate'].ci_text}.")
            c1.caption(f"{rec['record']}; win rate {rec['win_rate'].value_text} ({rec['win_rate'].help}) - "
                       f"n={rec['n']}")
            c2.metric("Harmlessness score", f"{best['bt_score']:.0f}",
                      delta=None if vs is None else f"{vs['diff']:+.0f} vs {md_escape(data['base'])}",
                      delta_color="off" if vs is not None and vs["caution"] else "normal")
            c3.metric("Evasive answers", f"{best['evasive_rate']:.0%}" if best["evasive_rate"] is not None else "-")
            if vs is not None and vs["caution"]:
                st.warning(md_escape(f"Not a conclusion: {vs['text']}."))
        ex = data["example"]
        if ex:
            st.subheader("Before and after training, on the same prompt" if trained else "Two policies, one prompt")
            show_pair(ex["prompt"], ex["response_a"], ex["response_b"], titles=(ex["policy_a"], ex["policy_b"]))
        st.plotly_chart(leaderboard_figure(result, "harmless"), width="stretch", key="demo_board")

else:
    findings = demo_findings(store)
    missing = [f for f in findings if not f.done]
    st.header("The loop, closed" if not missing else f"The loop so far: {len(findings) - len(missing)} of "
              f"{len(findings)} steps shown by this workspace")
    for i, f in enumerate(findings):
        with st.container(border=True):
            st.markdown(("### " if f.done else "#### ") + ("✓ " if f.done else "Not yet: ") + md_escape(f.text))
            if not f.done and f.page:
                make_it(f.page, f.action or "Open", f"demo_finding_{i}")
    st.caption("Every sentence above is read from this workspace. Evaluations can be exported as a self-contained "
               "HTML report from the Evaluate and Compare page.")

st.divider()
back, _, nxt = st.columns([1, 4, 1])
back.button("← Back", on_click=go, args=(-1,), disabled=step == 0, key="demo_back", width="stretch")
nxt.button("Next →", on_click=go, args=(1,), disabled=step == len(STEPS) - 1, key="demo_next", width="stretch",
           type="primary")
