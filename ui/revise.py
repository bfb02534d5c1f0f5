"""Critique and Revise page helpers: safe rendering of model text, word diffs, trajectories side by side.

Model output is data: it is shown with st.text, or inside st.markdown only escaped (ui/markdown.py).
"""
from __future__ import annotations

import time

import streamlit as st

from cai_core.supervised.revision import verdict_source_words
from cai_core.data.textdiff import word_diff
from ui.common import fmt_eta
from ui.markdown import md_escape, segments_markdown
from ui.transcript import show_step_transcripts


def diff_markdown(old: str, new: str) -> str:
    """Word diff of two texts as escaped, coloured markdown."""
    return segments_markdown(word_diff(old or "", new or "")) or "_(no text)_"


def verdict_label(violation, source: str | None = None, p_yes: float | None = None) -> str:
    """The critique's verdict and where it came from (revision.verdict_source_words): the critique's
    own "Verdict:" line, or the model's answer to the yes/no question asked after it, with P(yes) (a
    critique calling a response "extremely inappropriate" beside a green "no violation" reads as a
    bug unless the page says the verdict is the model's yes/no answer at P(yes) 0.3)."""
    label = {1: ":red[violation found]", 0: ":green[no violation]"}.get(violation, ":gray[verdict unclear]")
    return label + " · " + md_escape(verdict_source_words(violation, source, p_yes))


def principle_label(pid: str | None, names: dict[str, str]) -> str:
    """"id - name" of a principle, markdown-escaped (both are user text)."""
    if not pid:
        return ""
    name = names.get(pid)
    return md_escape(f"{pid} - {name}" if name and name != pid else pid)


def show_diff(old: str, new: str) -> None:
    with st.expander("Changes (word diff)", expanded=True):
        st.markdown(diff_markdown(old, new))


def render_trajectory(traj: dict, names: dict[str, str] | None = None) -> None:
    """The answer and each round side by side: principle, critique (CoT apart), revision, diff."""
    names = names or {}
    steps = traj["steps"]
    st.caption(f"Trajectory {traj['id']} · batch {md_escape(traj.get('batch') or '-')} · "
               f"{md_escape(traj['constitution_name'])}@{traj['constitution_version']} · "
               f"model {md_escape(traj['model'])} · seed {traj['seed']} · {traj['status']}")
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
            st.markdown("Critique · " + verdict_label(step.get("violation"), step.get("verdict_source"), step.get("p_yes")))
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
            show_step_transcripts(step)


WORDS_PER_TOKEN = 0.75  # English text through a BPE tokenizer: the first stage's length guess, in words


class LiveProgress:
    """Where a streamed run is (stage, round), how fast it writes (words/s) and about how long it has left.

    Speed is counted in words of the text written so far, not in streamed pieces: a piece is whatever
    the engine hands over at once (a word, a token, or a whole drafted run of tokens under prompt
    lookup), so pieces/s would say little. Stages: the answer, then a critique and a revision per
    round. A stage's length is guessed from the stages already written (max_new_tokens in words before
    the first ends); stored stages replayed from the store count as done but not towards the speed."""

    def __init__(self, rounds: int, max_new_tokens: int, clock=time.monotonic):
        self.rounds, self.max_new, self.clock = rounds, max_new_tokens * WORDS_PER_TOKEN, clock
        self.stages = 1 + 2 * rounds
        self.done_stages = 0
        self.stage = "starting"
        self.stage_text = ""
        self.stage_words = 0
        self.words = 0  # written live (not replayed)
        self.written: list[int] = []  # words of each finished live stage
        self.started: float | None = None

    def _new_stage(self, label: str) -> None:
        self.stage, self.stage_text, self.stage_words = label, "", 0

    def _critique(self, rnd: int) -> str:
        return f"round {rnd} of {self.rounds}: critique" if rnd <= self.rounds else "finishing"

    def _next_after(self, ev) -> str:
        """The stage that starts when ev ends one: the name moves on at the boundary, not when the next
        stage's first words arrive (it read "stage 5 of 5 ... critique" during the last revision)."""
        if ev.kind == "initial_done":
            return self._critique(1)
        if ev.kind == "critique_done" and not (ev.data or {}).get("stopped"):
            return f"round {ev.round} of {self.rounds}: revision"
        return self._critique(ev.round + 1)

    def on_event(self, ev) -> None:
        stored = bool(ev.data and ev.data.get("stored"))
        if ev.kind in ("initial", "critique", "revision"):
            label = {"initial": "answer", "critique": f"round {ev.round} of {self.rounds}: critique",
                     "revision": f"round {ev.round} of {self.rounds}: revision"}[ev.kind]
            if label != self.stage:
                self._new_stage(label)
            if not stored:
                if self.started is None:
                    self.started = self.clock()
                self.stage_text += ev.text or ""
                words = len(self.stage_text.split())
                self.words += words - self.stage_words
                self.stage_words = words
        elif ev.kind in ("initial_done", "critique_done", "revision_done"):
            if self.stage_words:
                self.written.append(self.stage_words)
            self.done_stages += 1
            self._new_stage(self._next_after(ev))
            if ev.kind == "critique_done" and (ev.data or {}).get("stopped"):
                self.stages -= 1  # no violation: no revision in this round
        elif ev.kind == "verdict":  # the critique is written; its verdict is read (the yes/no question)
            self._new_stage(f"round {ev.round} of {self.rounds}: reading the critique's verdict")
        elif ev.kind == "done":
            self.done_stages, self.stage = self.stages, "done"
        if ev.kind == "round":
            self._new_stage(f"round {ev.round} of {self.rounds}: critique")

    def rate(self) -> float | None:
        """Words per second written live so far (None before two words)."""
        if self.started is None or self.words < 2:
            return None
        elapsed = self.clock() - self.started
        return self.words / elapsed if elapsed > 0 else None

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate is None:
            return None
        per_stage = sum(self.written) / len(self.written) if self.written else self.max_new
        left_in_stage = max(0.0, min(self.max_new, per_stage) - self.stage_words)
        later = max(0, self.stages - self.done_stages - 1) * per_stage
        return (left_in_stage + later) / rate

    def fraction(self) -> float:
        return min(1.0, self.done_stages / max(1, self.stages))

    def text(self) -> str:
        if self.stage == "done":
            return f"done: {self.words} words written" + (f" at {self.rate():.1f} words/s" if self.rate() else "")
        rate, eta = self.rate(), self.eta_s()
        parts = [f"stage {self.done_stages + 1} of {self.stages} - {self.stage}" if self.done_stages < self.stages
                 else f"all {self.stages} stages written - {self.stage}"]
        parts.append(f"{rate:.1f} words/s" if rate else "waiting for the first words")
        if eta is not None:
            parts.append(f"about {fmt_eta(eta)}")
        return " · ".join(parts)


class LiveView:
    """Placeholders for a streamed run: a progress line, one column for the answer, one per round."""

    def __init__(self, rounds: int, names: dict[str, str], max_new_tokens: int = 200, refresh_s: float = 0.5):
        self.names = names
        self.progress = LiveProgress(rounds, max_new_tokens)
        self.progress_box = st.empty()
        self.refresh_s, self.shown_at = refresh_s, 0.0
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

    def show_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.shown_at >= self.refresh_s:  # every token would flood the browser
            self.shown_at = now
            self.progress_box.progress(self.progress.fraction(), text=self.progress.text())

    def handle(self, ev) -> None:
        self.progress.on_event(ev)
        self.show_progress(force=ev.kind not in ("initial", "critique", "revision"))
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
            slot["verdict"].markdown("Critique · " + verdict_label(ev.data.get("violation"), ev.data.get("verdict_source"),
                                                                   ev.data.get("p_yes")))
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
