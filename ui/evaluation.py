"""Page helpers for evaluations and A/B experiments: leaderboards, charts, side-by-side views.
Model text is always rendered with st.text (data, never markdown or HTML)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from cai_core.evaluation.evaluate import evaluation_comparisons, leaderboard
from cai_core.evaluation.evasiveness import detect
from cai_core.evaluation.experiments import experiment_table
from cai_core.evaluation.reports import (
    category_figure,
    edit_size_figure,
    evasiveness_figure,
    experiment_figure,
    leaderboard_figure,
    report_html,
    tradeoff_figure,
)
from cai_core.summaries.headlines import experiment_warnings
from ui.common import show_error
from ui.markdown import md_code, md_escape
from ui.pair import show_pair


def ci_text(value, lo, hi, digits: int = 1) -> str:
    if value is None:
        return "-"
    if lo is None or hi is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def leaderboard_frame(result: dict, axis: str) -> pd.DataFrame:
    rows = []
    for r in leaderboard(result, axis):
        rows.append({
            "policy": r["policy"],
            "BT score (Elo scale) [95% CI]": ci_text(r["bt_score"], r["bt_ci_low"], r["bt_ci_high"]),
            "Elo": round(r["elo"], 1) if r["elo"] is not None else None,
            "win rate [95% CI]": ci_text(r["win_rate"], r["win_rate_ci_low"], r["win_rate_ci_high"], 2),
            "win / tie / loss": f"{r['win']:.2f} / {r['tie']:.2f} / {r['loss']:.2f}" if r["n"] else "-",
            "comparisons": r["n"],
            "evasive": None if r["evasive_rate"] is None else round(r["evasive_rate"], 2),
        })
    return pd.DataFrame(rows)


def render_contamination(check: dict, warn: bool = True) -> None:
    """The leaderboard's contamination flag: evaluation prompts that a training export already holds
    (warn=False: the warning itself is shown with the others from cai_core.summaries.headlines.evaluation_warnings)."""
    if not check.get("flagged"):
        st.caption(f"Contamination check: none of the {check.get('checked', 0)} evaluation prompts occurs in a "
                   "training export.")
        return
    if warn:
        st.warning(f"Contamination: {check['flagged']} of {check['checked']} evaluation prompts also occur in training "
                   f"export(s) {', '.join(md_escape(n) for n in check['exports'])}; scores on them may be inflated.")
    st.dataframe(pd.DataFrame([{"axis": p["axis"], "prompt #": p["prompt_index"], "prompt": p["prompt"],
                                "in exports": ", ".join(p["exports"])} for p in check["prompts"]]),
                 hide_index=True, width="stretch")


def render_evaluation(result: dict) -> None:
    """Leaderboards with CIs per axis, the harmless-vs-helpful scatter, per-category and evasiveness bars."""
    st.plotly_chart(tradeoff_figure(result), width="stretch", key="ev_tradeoff")
    axes = list(result.get("axes", {}))
    for axis, tab in zip(axes, st.tabs([a.capitalize() for a in axes])):
        with tab:
            ax = result["axes"][axis]
            st.caption(f"{ax['judged']} judged comparisons · {ax['invalid']} invalid · "
                       f"{ax.get('flipped', 0)} verdicts flipped with the order (counted as ties)")
            st.dataframe(leaderboard_frame(result, axis), hide_index=True, width="stretch")
            c1, c2 = st.columns(2)
            c1.plotly_chart(leaderboard_figure(result, axis), width="stretch", key=f"ev_lb_{axis}")
            c2.plotly_chart(category_figure(result, axis), width="stretch", key=f"ev_cat_{axis}")
            st.markdown("**Head to head** (A's win rate against B)")
            st.dataframe(pd.DataFrame([{"A": p["a"], "B": p["b"], "n": p["n"],
                                        "A wins": p["win"], "ties": p["tie"], "B wins": p["loss"],
                                        "A win rate [95% CI]": ci_text(p["win_rate"], *p["win_rate_ci"], 2)}
                                       for p in ax["pairs"]]), hide_index=True, width="stretch")
    st.plotly_chart(evasiveness_figure(result), width="stretch", key="ev_evasive")


def render_comparison(c: dict) -> None:
    """One comparison side by side, the verdict as the leaderboard counts it (a flipped verdict is a
    tie there, so it reads as a tie here too) and each answer's evasiveness with its reason."""
    counted = c["counted_label"]
    leaned = (f" (the judge leaned {c['label']}, but " + ("its verdict flipped with the order)" if c.get("flipped")
                                                        else "within the tie margin)")
              if counted == "tie" and c.get("label") not in (None, "tie") else "")
    st.markdown(f"**{c['axis']}** · verdict: **{counted or 'no valid judgment'}**{leaned}"
                + (f" · P(A better) = {c['p_a']:.2f}" if c.get("p_a") is not None else ""))
    verdicts = [detect(c["response_a"]), detect(c["response_b"])]
    show_pair(c["prompt"], c["response_a"], c["response_b"], titles=(f"A: {c['policy_a']}", f"B: {c['policy_b']}"),
              notes=tuple(("evasive - " if v.evasive else "not evasive - ") + v.reason for v in verdicts))


def comparisons_browser(store, evaluation: dict) -> None:
    result = evaluation["result"]
    c1, c2 = st.columns(2)
    axis = c1.selectbox("Axis", ["all"] + list(result.get("axes", {})), key="cmp_axis")
    policy = c2.selectbox("Policy", ["all"] + [p["name"] for p in result.get("policies", [])], key="cmp_policy")
    rows = evaluation_comparisons(store, evaluation, axis=None if axis == "all" else axis,
                                  policy=None if policy == "all" else policy, limit=500)
    if not rows:
        st.info("No comparisons match.")
        return
    table = pd.DataFrame([{"id": r["id"], "axis": r["axis"], "A": r["policy_a"], "B": r["policy_b"],
                           "verdict": r["counted_label"], "P(A)": None if r["p_a"] is None else round(r["p_a"], 2),
                           "prompt": r["prompt"][:80]} for r in rows])
    event = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key="cmp_table")
    picked = event.selection.rows[0] if event and event.selection.rows else 0
    st.divider()
    render_comparison(rows[picked])


def render_experiment(result: dict) -> None:
    ch = result["principle_changes"]
    arm = {side: md_code(f"{result[f'constitution_{side}']['name']}@{result[f'constitution_{side}']['version']}")
           for side in ("a", "b")}
    st.markdown(f"**A** {arm['a']} vs **B** {arm['b']} · {result['prompts']} prompts · model {md_code(result['model'])}")
    changed = [f"{pid} ({', '.join(f)})" for pid, f in ch["changed"].items()]
    st.caption(md_escape("Changed principles: " + (", ".join(changed) or "none") + " · added: "
                         + (", ".join(ch["added"]) or "none") + " · removed: " + (", ".join(ch["removed"]) or "none")))
    fd = result["metrics"]["final_differs"]
    st.metric("Final answers that differ", f"{fd['rate']:.0%}" if fd["rate"] is not None else "-",
              help="Share of prompts whose final answer under B is not the same text as under A")
    rows = experiment_table(result)
    st.dataframe(pd.DataFrame([{**{k: v for k, v in r.items() if k != "too_few"},
                                "significant": "yes" if r["significant"] else
                                ("no (too few prompts)" if r["too_few"] else "no")} for r in rows]),
                 hide_index=True, width="stretch")
    for warning in experiment_warnings(result):  # the same list the HTML report carries
        st.warning(md_escape(warning))
    c1, c2 = st.columns(2)
    c1.plotly_chart(experiment_figure(result), width="stretch", key="ab_forest")
    c2.plotly_chart(edit_size_figure(result), width="stretch", key="ab_edits")
    st.markdown("**Per-principle attribution**")
    def diff(m: dict, key: str) -> str:
        """A signed difference, or why there is none (a blank cell would read as a bug)."""
        if not m:
            return "no prompt used it"
        value = (m.get(key) or {}).get("diff")
        return "not measured" if value is None else f"{value:+.3g}"

    attr = []
    for a in result["attribution"]:
        m = a["metrics"] or {}
        attr.append({"principle": a["principle"], "status": a["status"], "rounds A": a["rounds_a"],
                     "rounds B": a["rounds_b"], "prompts using it": m.get("n", 0),
                     "evasive B-A": diff(m, "evasive"), "edit words B-A": diff(m, "edit_words"),
                     "judge net pref. B": diff(m, "judge_pref_b")})
    if attr:
        st.dataframe(pd.DataFrame(attr), hide_index=True, width="stretch")
    else:
        st.caption("No principle text differs between the versions (only few-shot examples or the name changed).")
    differing = [it for it in result["items"] if it["final_differs"]]
    st.markdown(f"**Prompts where the final answers differ** ({len(differing)})")
    if differing:
        by_index = {item["index"]: item for item in differing}  # the prompt's own index, never a list position
        it = by_index[st.selectbox("Prompt", list(by_index), key="ab_item",
                                   format_func=lambda i: f"{i + 1}: {by_index[i]['prompt'][:70]}")]
        st.text(it["prompt"])
        left, right = st.columns(2)
        for col, arm in ((left, "a"), (right, "b")):
            with col:
                st.markdown(f"**{arm.upper()}** · principles {md_escape(', '.join(it[arm]['principles']) or '-')} · "
                            f"{it[arm]['edit_words']} words changed")
                st.text(it[arm]["final"] or "(empty)")
                st.caption(("evasive - " if it[arm]["evasive"] else "not evasive - ") + md_escape(it[arm]["evasive_reason"]))


def report_button(store, kind: str, ref, label: str = "Download HTML report", key: str | None = None) -> None:
    """A self-contained HTML report of this view (charts inline, opens offline)."""
    try:
        data = report_html(store, kind, ref)
    except Exception as exc:  # noqa: BLE001 - shown to the user, the page goes on
        show_error(exc)
        return
    st.download_button(label, data=data, file_name=f"{kind}-{ref}.html", mime="text/html", key=key or f"rep_{kind}_{ref}")
