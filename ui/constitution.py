"""Constitution page helpers: the editable draft kept in session state, and safe diff rendering.

The draft lives in widget keys named `ce{gen}_{uid}_{field}`: a principle keeps its uid when it is
moved, so reordering never mixes up texts, and loading another version bumps `gen` so every
widget starts fresh from the stored text.

A draft belongs to exactly one (name, version): `ce_loaded` says which one the widgets hold, and an
edited draft is kept in `ce_drafts[(name, version)]` after every run (Streamlit drops a widget's state
when the page is not shown), so switching to another constitution, version or page and back brings the
unsaved edits back, and a draft is only ever loaded into the widgets of its own (name, version).
"""
from __future__ import annotations

import streamlit as st

from cai_core.constitution.diff import FEW_SHOT_FIELDS, JUDGE_EXAMPLE_FIELDS
from cai_core.constitution.model import (
    ALLOWED_VARIABLES,
    FIELD_VARIABLES,
    Constitution,
    JUDGE_EXAMPLE_STYLES,
    FewShotExample,
    JudgeExample,
    Principle,
    template_variables,
)
from cai_core.errors import CaiError
from ui.markdown import md_escape, segments_markdown

def key(uid: str, fld: str) -> str:
    return f"ce{st.session_state.get('ce_gen', 0)}_{uid}_{fld}"


def drafts() -> dict:
    """(name, version) -> the unsaved edited Constitution of that version (this browser session)."""
    return st.session_state.setdefault("ce_drafts", {})


def has_draft(name: str, version: str | None = None) -> bool:
    return any(n == name and (version is None or v == version) for n, v in drafts())


def widgets_hold(name: str, version: str) -> bool:
    """Whether the edit widgets hold (name, version) right now (their state is gone after another page)."""
    return (st.session_state.get("ce_loaded") == (name, version)
            and f"ce{st.session_state.get('ce_gen', 0)}_description" in st.session_state)


def remember_draft() -> None:
    """Keep what the widgets hold as the draft of their own (name, version), or forget the draft when
    it equals the saved version. Called before the widgets are loaded with another version and after
    every run of the Edit tab."""
    loaded = st.session_state.get("ce_loaded")
    if not loaded or f"ce{st.session_state.get('ce_gen', 0)}_description" not in st.session_state:
        return
    draft = draft_constitution(loaded[0])
    if draft.version != loaded[1]:
        drafts()[tuple(loaded)] = draft
    else:
        drafts().pop(tuple(loaded), None)


def drafts_caption(name: str, version: str) -> None:
    """Which (name, version)s hold unsaved edits in this session, the shown one first."""
    remember_draft()  # the widgets' own edits of this run count too
    held = sorted(drafts(), key=lambda nv: nv != (name, version))
    if held:
        st.caption("Unsaved edits: " + ", ".join(
            f"{md_escape(n)} @ {v}" + (" (shown)" if (n, v) == (name, version) else "") for n, v in held)
            + ". Each stays with its own version; save or discard it there.")


def forget_draft(name: str, version: str) -> None:
    drafts().pop((name, version), None)


def discard(name: str, version: str) -> None:
    """Button callback: drop the unsaved edits of (name, version); the widgets reload the saved text."""
    forget_draft(name, version)
    st.session_state["ce_loaded"] = None


def show(get, name: str, version: str) -> None:
    """Make the edit widgets hold (name, version): its unsaved draft when there is one, else the stored
    text (`get(name, version)`). The draft the widgets held before is kept under its own (name, version)."""
    if widgets_hold(name, version):
        return
    remember_draft()
    draft = drafts().get((name, version))
    load_draft(draft if draft is not None else get(name, version), name, version)


def load_draft(c: Constitution, name: str, version: str) -> None:
    """Put a constitution into the widget state (fresh keys)."""
    gen = st.session_state.get("ce_gen", 0) + 1
    st.session_state["ce_gen"] = gen
    st.session_state["ce_loaded"] = (name, version)
    st.session_state["ce_next_uid"] = 0
    st.session_state["ce_order"] = []
    st.session_state["ce_few_order"] = []
    st.session_state["ce_judge_order"] = []
    st.session_state[f"ce{gen}_description"] = c.description
    for p in c.principles:
        add_principle(p)
    for ex in c.few_shot:
        add_few_shot(ex)
    for jex in c.judge_examples:
        add_judge_example(jex)


def _uid(prefix: str) -> str:
    n = st.session_state.get("ce_next_uid", 0)
    st.session_state["ce_next_uid"] = n + 1
    return f"{prefix}{n}"


def add_principle(p: Principle | None = None) -> None:
    uid = _uid("p")
    if p is None:
        existing = {st.session_state.get(key(u, "id")) for u in st.session_state["ce_order"]}
        k = len(existing) + 1
        while f"principle_{k}" in existing:
            k += 1
        p = Principle(id=f"principle_{k}", name="New principle", critique_request="", revision_request="")
    values = {"id": p.id, "name": p.name, "critique_request": p.critique_request,
              "revision_request": p.revision_request, "comparison_question": p.comparison_question,
              "tags": ", ".join(p.tags), "enabled": p.enabled}
    for fld, value in values.items():
        st.session_state[key(uid, fld)] = value
    st.session_state["ce_order"].append(uid)


def _add_example(prefix: str, order_key: str, ex, fields: tuple[str, ...]) -> None:
    """Put a worked example's fields into fresh widget keys and list it last in its order."""
    uid = _uid(prefix)
    for fld in fields:
        st.session_state[key(uid, fld)] = getattr(ex, fld) or ""
    st.session_state.setdefault(order_key, []).append(uid)


def add_few_shot(ex: FewShotExample | None = None) -> None:
    _add_example("f", "ce_few_order", ex or FewShotExample(question="", response="", critique="", revision=""),
                 FEW_SHOT_FIELDS)


def add_judge_example(ex: JudgeExample | None = None) -> None:
    _add_example("j", "ce_judge_order", ex or JudgeExample(conversation="Human: ", response_a="", response_b="",
                                                           answer="A"), JUDGE_EXAMPLE_FIELDS)


def move(order_key: str, uid: str, delta: int) -> None:
    order = st.session_state[order_key]
    i = order.index(uid)
    j = i + delta
    if 0 <= j < len(order):
        order[i], order[j] = order[j], order[i]


def remove(order_key: str, uid: str) -> None:
    st.session_state[order_key].remove(uid)


def principle_from_state(uid: str) -> Principle:
    g = lambda f: st.session_state.get(key(uid, f))  # noqa: E731
    tags = [t.strip() for t in (g("tags") or "").split(",") if t.strip()]
    return Principle(id=(g("id") or "").strip(), name=(g("name") or "").strip(),
                     critique_request=g("critique_request") or "", revision_request=g("revision_request") or "",
                     comparison_question=g("comparison_question") or "", tags=tags, enabled=bool(g("enabled")))


def draft_constitution(name: str) -> Constitution:
    """The constitution as currently edited (not validated)."""
    gen = st.session_state.get("ce_gen", 0)
    few = []
    for uid in st.session_state.get("ce_few_order", []):
        g = lambda f: st.session_state.get(key(uid, f)) or ""  # noqa: E731
        few.append(FewShotExample(question=g("question"), response=g("response"), critique=g("critique"),
                                  revision=g("revision"), principle_id=g("principle_id").strip() or None,
                                  critique_request=g("critique_request"), revision_request=g("revision_request")))
    judge = []
    for uid in st.session_state.get("ce_judge_order", []):
        g = lambda f: st.session_state.get(key(uid, f)) or ""  # noqa: E731
        judge.append(JudgeExample(conversation=g("conversation"), response_a=g("response_a"),
                                  response_b=g("response_b"), answer=g("answer") or "A", reasoning=g("reasoning"),
                                  question=g("question"), style=g("style") or "mc"))
    return Constitution(name=name, description=st.session_state.get(f"ce{gen}_description", "") or "",
                        principles=[principle_from_state(u) for u in st.session_state.get("ce_order", [])],
                        few_shot=few, judge_examples=judge)


def judge_example_editor(pos: int, uid: str, total: int) -> None:
    """One judge example's fields (the paper's RLMadison few-shot files give mc and cot ones)."""
    style = st.session_state.get(key(uid, "style")) or "mc"
    first_line = (st.session_state.get(key(uid, "conversation")) or "").strip().splitlines()[:1]
    with st.expander(f"Judge example {pos + 1} ({style}): {md_escape((first_line[0] if first_line else '')[:60])}",
                     key=f"jexp_{uid}"):
        cols = st.columns([2, 1, 1], vertical_alignment="bottom")
        with cols[0].container(horizontal=True):
            st.button("Up", key=f"jup_{uid}", disabled=pos == 0, on_click=move, args=("ce_judge_order", uid, -1))
            st.button("Down", key=f"jdown_{uid}", disabled=pos == total - 1, on_click=move,
                      args=("ce_judge_order", uid, 1))
            st.button("Remove", key=f"jrm_{uid}", on_click=remove, args=("ce_judge_order", uid))
        cols[1].selectbox("Style", list(JUDGE_EXAMPLE_STYLES), key=key(uid, "style"),
                          help="mc examples are shown to the mc and parse judges, cot examples to the cot judge")
        cols[2].selectbox("Better response", ["A", "B"], key=key(uid, "answer"))
        st.text_area("Conversation (Human: ... / Assistant: ...)", key=key(uid, "conversation"), height=90)
        st.text_area("Comparison question (empty = the question of the pair being judged)", key=key(uid, "question"),
                     height=68)
        st.text_area("Response (A)", key=key(uid, "response_a"), height=80)
        st.text_area("Response (B)", key=key(uid, "response_b"), height=80)
        if style == "cot":
            st.text_area("Reasoning (written before the answer)", key=key(uid, "reasoning"), height=100)


def variables_caption(text: str, fld: str) -> None:
    """Live: which variables a template uses, or why it is rejected."""
    try:
        used = template_variables(text)
    except CaiError as exc:
        st.error(md_escape(str(exc)))
        return
    unknown = used - FIELD_VARIABLES[fld]
    if unknown:
        allowed = ", ".join("{" + v + "}" for v in sorted(FIELD_VARIABLES[fld]))
        names = md_escape(", ".join("{" + u + "}" for u in sorted(unknown)))
        st.error(f"Unknown variable(s) {names}; allowed here: {allowed}")
    elif used:
        st.caption("Uses " + ", ".join("`{" + u + "}`" for u in sorted(used)))
    else:
        st.caption("No variables: asked after the conversation. Available: "
                   + ", ".join("`{" + v + "}`" for v in sorted(FIELD_VARIABLES[fld] & ALLOWED_VARIABLES)))


def render_segments(segments) -> None:
    """A word diff as markdown of escaped text: insertions green, deletions red and struck out."""
    st.markdown(segments_markdown(segments) or "_(empty)_")


STATUS_ICON = {"added": ":material/add_circle:", "removed": ":material/remove_circle:",
               "changed": ":material/edit:", "moved": ":material/swap_vert:"}


def render_changes(changes) -> None:
    if not changes:
        st.info("These two versions are identical.")
        return
    for ch in changes:
        title = f"{STATUS_ICON.get(ch.status, '')} {ch.kind.replace('_', '-')} **{md_escape(ch.key)}** - {ch.status}"
        if ch.kind == "principle" and ch.label != ch.key:
            title += f" ({md_escape(ch.label)})"
        if ch.status == "moved" or (ch.old_index is not None and ch.new_index is not None and ch.old_index != ch.new_index):
            title += f", position {ch.old_index + 1} -> {ch.new_index + 1}"
        with st.container(border=True):
            st.markdown(title)
            for fld, segments in ch.fields.items():
                st.caption(fld.replace("_", " "))
                render_segments(segments)
