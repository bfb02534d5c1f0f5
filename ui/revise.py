"""Critique and Revise page helpers: safe rendering of model text, word diffs, trajectories side by side.

Model output is data: it is shown with st.text, or inside st.markdown only escaped (ui/markdown.py).
"""
from __future__ import annotations

import streamlit as st

from cai_core.textdiff import word_diff
from ui.markdown import segments_markdown


def diff_markdown(old: str, new: str) -> str:
    """Word diff of two texts as escaped, coloured markdown."""
    return segments_markdown(word_diff(old or "", new or "")) or "_(no text)_"


def verdict_label(violation) -> str:
    return {1: ":red[violation found]", 0: ":green[no violation]"}.get(violation, ":gray[verdict unclear]")


def principle_label(pid: str | None, names: dict[str, str]) -> str:
    if not pid:
        return ""
    name = names.get(pid)
    return f"{pid} - {name}" if name and name != pid else pid


def show_diff(old: str, new: str) -> None:
    with st.expander("Changes (word diff)", expanded=True):
        st.markdown(diff_markdown(old, new))


def render_trajectory(traj: dict, names: dict[str, str] | None = None) -> None:
    """The answer and each round side by side: principle, critique (CoT apart), revision, diff."""
    names = names or {}
    steps = traj["steps"]
    st.caption(f"Trajectory {traj['id']} · batch {traj.get('batch') or '-'} · {traj['constitution_name']}"
               f"@{traj['constitution_version']} · model {traj['model']} · seed {traj['seed']} · {traj['status']}")
    st.markdown("**Prompt**")
    st.text(traj["prompt"])
    cols = st.columns(1 + max(1, len(steps)))
    with cols[0]:
        st.markdown("**Initial answer**")
        st.text(traj.get("initial") or "")
    previous = traj.get("initial") or ""
    for col, step in zip(cols[1:], steps):
        with col:
            st.markdown(f"**Round {step['round']}**")
            st.caption("Principle: " + principle_label(step["principle_id"], names))
            st.markdown("Critique · " + verdict_label(step.get("violation")))
            if step.get("critique_reasoning"):
                with st.expander("Chain of thought"):
                    st.text(step["critique_reasoning"])
            st.text(step.get("critique") or "")
            if step.get("revision") is not None:
                st.markdown("**Revision**")
                st.text(step["revision"])
                show_diff(previous, step["revision"])
                previous = step["revision"]
            elif step.get("state") == "stopped":
                st.caption("No violation found: stopped early, no revision.")
            else:
                st.caption("Revision pending.")


class LiveView:
    """Placeholders for a streamed run: one column for the answer, one per round."""

    def __init__(self, rounds: int, names: dict[str, str]):
        self.names = names
        cols = st.columns(1 + max(1, rounds))
        with cols[0]:
            st.markdown("**Initial answer**")
            self.initial = st.empty()
        self.rounds = []
        for col in cols[1:]:
            with col:
                slot = {"title": st.empty(), "principle": st.empty(), "verdict": st.empty(),
                        "reasoning": st.container(), "critique": st.empty(), "revision_title": st.empty(),
                        "revision": st.empty(), "diff": st.container()}
                self.rounds.append(slot)
        self.buffers: dict[tuple, str] = {}
        self.texts = {0: ""}

    def _append(self, key: tuple, piece: str, box, stored: bool) -> None:
        self.buffers[key] = piece if stored else self.buffers.get(key, "") + piece
        box.text(self.buffers[key])

    def handle(self, ev) -> None:
        stored = bool(ev.data and ev.data.get("stored"))
        if ev.kind == "initial":
            self._append(("initial",), ev.text, self.initial, stored)
        elif ev.kind == "initial_done":
            self.texts[0] = ev.text or ""
        elif ev.kind == "round" and ev.round <= len(self.rounds):
            slot = self.rounds[ev.round - 1]
            slot["title"].markdown(f"**Round {ev.round}**")
            slot["principle"].caption("Principle: " + principle_label(ev.principle_id, self.names))
            slot["verdict"].markdown("Critique · ...")
        elif ev.kind == "critique" and ev.round <= len(self.rounds):
            self._append(("critique", ev.round), ev.text, self.rounds[ev.round - 1]["critique"], stored)
        elif ev.kind == "critique_done" and ev.round <= len(self.rounds):
            slot = self.rounds[ev.round - 1]
            slot["verdict"].markdown("Critique · " + verdict_label(ev.data.get("violation")))
            if ev.data.get("reasoning"):
                with slot["reasoning"]:
                    with st.expander("Chain of thought"):
                        st.text(ev.data["reasoning"])
            slot["critique"].text(ev.text)
            if ev.data.get("stopped"):
                slot["revision_title"].caption("No violation found: stopped early, no revision.")
        elif ev.kind == "revision" and ev.round <= len(self.rounds):
            slot = self.rounds[ev.round - 1]
            slot["revision_title"].markdown("**Revision**")
            self._append(("revision", ev.round), ev.text, slot["revision"], stored)
        elif ev.kind == "revision_done" and ev.round <= len(self.rounds):
            previous = self.texts.get(ev.round - 1, self.texts[0])
            self.texts[ev.round] = ev.text
            with self.rounds[ev.round - 1]["diff"]:
                show_diff(previous, ev.text)
