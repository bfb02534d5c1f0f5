"""The one side-by-side view of a comparison: the prompt, then answer A and answer B in two columns.

Used wherever two answers are compared (Preferences, Judge Reliability, the Demo). Model text is data:
the prompt and answers are shown with st.text; the column titles (which may name a policy) are escaped.
"""
from __future__ import annotations

import streamlit as st

from ui.markdown import md_escape


def show_pair(prompt: str, response_a: str, response_b: str, *, titles: tuple[str, str] = ("Response A", "Response B"),
              question: str | None = None, notes: tuple[str, str] | None = None) -> None:
    """Prompt (and the question put to the judge, when the pair came with one), then A | B side by side,
    each with an optional note under it (e.g. why the answer counts as evasive)."""
    st.markdown("**Prompt**")
    st.text(prompt or "")
    if question:
        st.markdown("**Question asked of the judge (from the file)**")
        st.text(question)
    for col, title, text, note in zip(st.columns(2), titles, (response_a, response_b), notes or (None, None)):
        with col:
            st.markdown(f"**{md_escape(title)}**")
            st.text(text or "(empty answer)")
            if note:
                st.caption(md_escape(note))
