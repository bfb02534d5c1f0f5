"""Preferences page helpers: the AI verdict with every member's vote, label history, and background-job
lists (the pair itself: ui/pair.py). Model text is always rendered with st.text (never HTML)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from cai_core.jobs import TERMINAL, list_jobs, stop_job
from ui.command_preview import resume_page_job
from ui.common import age, beside_half, job_progress
from ui.markdown import md_escape

# one key per choice; Streamlit reserves C and R, so "both bad" is X
CHOICES = [("A", "A is better", "A"), ("B", "B is better", "B"), ("tie", "Tie", "T"),
           ("skip", "Skip", "S"), ("both_bad", "Both bad", "X")]
JOB_KINDS = ("pairs-sample", "judge", "export-prefs")


def fmt_p(p) -> str:
    """Three decimals, more when rounding would hide which side of 0.5 decided the label."""
    return "-" if p is None else beside_half(p, 3, 8)


def show_verdict(verdict, gold_label: str | None = None) -> None:
    """The combined AI verdict, flip status, invalid count, each member's vote and the reasoning."""
    if verdict is None:
        st.info("No AI judgment yet for this comparison.")
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("AI label", verdict.label or "invalid")
    c2.metric("P(A) after swap", fmt_p(verdict.p_a))
    c3.metric("P(A) shown A/B | B/A", f"{fmt_p(verdict.p_a_ab)} | {fmt_p(verdict.p_a_ba)}")
    c4.metric("Invalid judgments", verdict.invalid)
    notes = []
    if verdict.flipped:
        notes.append("the judge flipped when the order was swapped (position bias)")
    if verdict.disagreement:
        notes.append("ensemble members disagree")
    if gold_label:
        notes.append(f"gold label from the file: {gold_label}")
    if notes:
        st.warning("; ".join(notes))
    members = pd.DataFrame([{
        "judge": m.judge_key, "principle": m.principle_id, "P(A)": m.p_a, "P(A) A/B": m.p_a_ab,
        "P(A) B/A": m.p_a_ba, "vote": m.label or "invalid", "flipped": m.flipped, "invalid": m.invalid,
    } for m in verdict.members])
    st.dataframe(members, hide_index=True, width="stretch")
    with_reasoning = [m for m in verdict.members if m.reasoning_ab or m.reasoning_ba]
    if with_reasoning:
        with st.expander("Judge reasoning (chain of thought)"):
            for m in with_reasoning:
                st.caption(f"principle {md_escape(m.principle_id)}")
                if m.reasoning_ab:
                    st.text("A/B order: " + m.reasoning_ab)
                if m.reasoning_ba:
                    st.text("B/A order: " + m.reasoning_ba)


def show_history(history: list[dict]) -> None:
    if not history:
        st.caption("No human label yet.")
        return
    st.dataframe(pd.DataFrame([{
        "when": age(h["created_at"]), "annotator": h["annotator"], "label": h["label"],
        "override": bool(h["is_override"]), "blind": bool(h["blind"]), "reason": h["reason"] or "",
    } for h in history]), hide_index=True, width="stretch")


def _nonzero(parts) -> str:
    return ", ".join(f"{label} {n}" for label, n in parts if n)


def job_summary(kind: str, result: dict) -> str:
    """A finished job's result as one short sentence (a raw field dump showed None/False noise)."""
    r = result or {}
    if kind == "pairs-sample":
        text = f"{r.get('pairs_added', 0)} new pair(s) from {r.get('prompts', 0)} prompt(s)"
        extra = _nonzero((("identical skipped", r.get("identical_skipped")),
                          ("prompts already done", r.get("prompts_already_done"))))
        text += f" ({extra})" if extra else ""
        text += f"; batch {r.get('batch')} now holds {r.get('pairs_in_batch', 0)} pair(s)."
    elif kind == "judge":
        how = f"{r.get('style', '?')}, both orders" if r.get("swap") else f"{r.get('style', '?')}, one order"
        text = (f"Judged {r.get('pairs', 0)} pair(s) ({how}): A {r.get('A', 0)}, B {r.get('B', 0)}, "
                f"tie {r.get('tie', 0)}")
        text += "".join(f", {label} {n}" for label, n in (("no valid judgment", r.get("no_valid_judgment")),) if n)
        text += f"; {r.get('flipped', 0)} flipped with the order, {r.get('disagreements', 0)} judge disagreement(s)"
        text += f", {r['invalid_judgments']} unparsable answer(s)." if r.get("invalid_judgments") else "."
        if r.get("out"):
            text += f" Written to {r['out']}."
    elif kind == "export-prefs":
        text = (f"Exported {r.get('exported', 0)} of {r.get('comparisons', 0)} comparison(s) "
                f"(human {r.get('from_human', 0)}, gold {r.get('from_gold', 0)}, AI {r.get('from_ai', 0)})")
        left_out = _nonzero((("tie", r.get("excluded_tie")), ("both bad", r.get("excluded_both_bad")),
                             ("invalid", r.get("excluded_invalid")), ("unjudged", r.get("excluded_unjudged")),
                             ("judged only by judges not used", r.get("excluded_other_judges"))))
        text += f"; left out: {left_out}" if left_out else ""
        text += f". Written to {r['path']}." if r.get("path") else "."
    else:
        text = ", ".join(f"{k}: {v}" for k, v in r.items()
                         if v not in (None, False, "") and not isinstance(v, (list, dict)))
    if r.get("stopped"):
        text += " Stopped early."
    return text


def jobs_panel(store) -> list:
    """Recent sampling / judging / export jobs with progress, ETA, stop and resume; returns the jobs shown."""
    jobs = [j for kind in JOB_KINDS for j in list_jobs(store, kind=kind, limit=5)]
    jobs.sort(key=lambda j: j.id, reverse=True)
    if not jobs:
        st.caption("No sampling, judging or export jobs yet.")
        return []
    for job in jobs[:8]:
        with st.container(border=True):
            job_progress(job)
            if job.status not in TERMINAL:
                if st.button("Stop", key=f"pref_stop_{job.id}"):
                    stop_job(store, job.id)
            elif job.status in ("failed", "stopped"):
                st.caption("Starting it again resumes where it stopped (finished items are skipped).")
                if st.button("Resume", key=f"pref_resume_{job.id}"):
                    resume_page_job(store, job.id)
            elif job.result:
                st.text(job_summary(job.kind, job.result))
    return jobs[:8]


def _counts_text(counts: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items()) or "-"


def show_export_judge(choice: dict, judge_name: dict) -> None:
    """Which judge an export with no judge picked takes its AI labels from, and why others are passed over."""
    name = lambda key: judge_name.get(key, key)  # noqa: E731
    if choice["default"]:
        st.caption(f"AI labels from: {md_escape(name(choice['default']))} (the newest complete judge).")
    elif choice["judges"]:
        st.warning("No complete judge for these comparisons: the export uses no AI labels unless you pick a judge.")
    passed = [j for j in choice["judges"] if j["judge_key"] != choice["default"]]
    if passed:
        st.caption("Passed over: " + "; ".join(
            f"{md_escape(name(j['judge_key']))} ({md_escape(j['why'] or 'not the newest complete judge')})"
            for j in passed))


def _left_out_text(card: dict) -> str:
    by_origin = card.get("left_out_by_origin")
    if by_origin is None:  # an export from before issue 22
        return ""
    parts = [f"{origin}: " + ", ".join(f"{why} {n}" for why, n in reasons.items()) for origin, reasons in by_origin.items()]
    return "\nleft out by origin: " + ("; ".join(parts) if parts else "none")


def _ai_labels_text(card: dict) -> str:
    ai = card.get("ai_labels")
    if ai is None:
        return ""
    keys = ", ".join(ai.get("judge_keys") or []) or "-"
    return f"\nAI labels: {ai.get('how')} ({keys})"


def show_export(exp: dict) -> None:
    """One preference export: where it is, what went in, what was left out (from its card)."""
    card = exp["card"]
    counts = card.get("counts", {})
    with st.container(border=True):
        st.markdown(f"**{md_escape(exp['name'])}** - {age(exp['created_at'])}")
        st.text(f"{exp['path']}\nrows {counts.get('exported')} of {counts.get('comparisons')} "
                f"(human {counts.get('from_human')}, gold {counts.get('from_gold')}, AI {counts.get('from_ai')}); "
                f"human overrides {counts.get('human_overrides')} ({card.get('share_human_overrides', 0):.1%}); "
                f"excluded tie {counts.get('excluded_tie')}, both bad {counts.get('excluded_both_bad')}, "
                f"invalid {counts.get('excluded_invalid')}, unjudged {counts.get('excluded_unjudged')}, judged only by "
                f"judges not used {counts.get('excluded_other_judges', 0)}\n"
                f"AI verdicts left out: flipped with the order {counts.get('excluded_ai_flipped', 0)}, within the "
                f"tie margin {counts.get('excluded_ai_within_margin', 0)}, below the minimum confidence "
                f"{counts.get('excluded_ai_low_confidence', 0)}\n"
                f"splits read: {', '.join(card.get('splits') or ['(before splits)'])}; rows by split "
                f"{_counts_text(card.get('rows_by_split'))}; rows by origin {_counts_text(card.get('rows_by_origin'))}; "
                f"held out {_counts_text(card.get('excluded_by_split'))}\n"
                f"constitution versions: {', '.join(card.get('constitution_versions') or []) or '-'}"
                + _ai_labels_text(card) + _left_out_text(card))
