"""The exact text sent to a model, shown as a transcript (as Inspect's log viewer shows a sample):
each message's role, then its content rendered literally with st.text (never markdown or HTML).

Critique/revision steps and judgments store their messages when they are generated
(cai_core.supervised.revision.step_transcripts, cai_core.rlaif.judges.judgment_transcript).
"""
from __future__ import annotations

import json

import streamlit as st

from cai_core.rlaif.judges import judgment_transcript
from cai_core.supervised.revision import step_transcripts
from ui.markdown import md_escape

NOT_KEPT = "Not kept: this was generated before transcripts were stored."


def show_messages(messages: list[dict] | None, assistant_prefix: str | None = None,
                  output: str | None = None) -> None:
    """Every message in order; then the assistant text the options were scored after, and the output."""
    if not messages:
        st.caption(NOT_KEPT)
        return
    for i, m in enumerate(messages, start=1):
        st.caption(f"{i}. {md_escape(str(m.get('role', '?')))}")
        st.text(str(m.get("content", "")))
    if assistant_prefix is not None:
        st.caption("assistant (scored after this text: the options' log-probs are read next)")
        st.text(assistant_prefix)
    if output is not None:
        st.caption("model output")
        st.text(output)
    st.caption("Exact, as JSON (every space and newline visible)")
    exact = {"messages": messages}
    if assistant_prefix is not None:
        exact["assistant_prefix"] = assistant_prefix
    st.code(json.dumps(exact, ensure_ascii=False, indent=1), language="json")


def show_step_transcripts(step: dict) -> None:
    """One critique/revision round's two requests, exactly as sent."""
    t = step_transcripts(step)
    with st.expander("Transcript: exact text sent to the model"):
        st.markdown("**Critique request**")
        show_messages(t["critique"])
        if step.get("revision") is not None:
            st.markdown("**Revision request**")
            show_messages(t["revision"])


def show_judgment_transcripts(rows: list[dict]) -> None:
    """Each stored judgment (judge, principle, order) with the messages it was asked."""
    if not rows:
        return
    with st.expander(f"Transcripts: exact text sent to the judge ({len(rows)} judgments)"):
        for r in rows:
            st.markdown(f"**{md_escape(r['judge_key'])}** · principle {md_escape(r['principle_id'])} · "
                        f"order {r['order_shown']} · P(A) {'-' if r['p_a'] is None else round(r['p_a'], 4)}")
            t = judgment_transcript(r)
            if t is None:
                st.caption(NOT_KEPT)
                continue
            show_messages(t["messages"], t.get("assistant_prefix"),
                          r.get("raw_output") if r.get("style") != "mc" else None)
