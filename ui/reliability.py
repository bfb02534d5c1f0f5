"""Charts and tables of the Judge reliability page (plotly figures built from reliability reports) and judges
named in words. The headline figures, their n and the "too few items" rule are cai_core.summaries.headlines'."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cai_core.constitution.versions import get_by_version
from cai_core.errors import CaiError
from cai_core.summaries.headlines import MIN_ITEMS, num, pct, pct_range, reliability_headlines, too_few
from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE
from cai_core.rlaif.judges import APPROX_KEY_SUFFIX

__all__ = ["MIN_ITEMS", "too_few", "pct", "num", "ci_text"]  # the owner's rule and formats, re-exported for pages
BUILTIN_JUDGES = {c.version: c.name for c in (HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE)}
STYLE_WORDS = {"mc": "multiple choice (log-probs)", "cot": "chain of thought", "parse": "parsed verdict"}

# (report key, label, dash, label position): 85% and 81% lie close, so one label goes above its
# line and the other below, or they print over each other
REFERENCE_LINES = [
    ("gpt4_human_with_ties", "MT-Bench GPT-4 vs human, with ties (66%)", "dot", "top left"),
    ("gpt4_human_without_ties", "MT-Bench GPT-4 vs human, without ties (85%)", "dash", "top left"),
    ("human_human_without_ties", "MT-Bench human vs human, without ties (81%)", "dashdot", "bottom left"),
]


def judge_words(store, judge_key: str, model: str | None = None, style: str | None = None) -> str:
    """A judge key (style|model|constitution version|principles|settings hash) in words: model, style,
    principles and constitution@version. The raw key goes in the help text (hover) beside it."""
    parts = judge_key.split("|")
    if len(parts) < 5:
        return judge_key
    style = style or parts[0]
    model = model or "|".join(parts[1:-3])
    version, principles = parts[-3], parts[-2]
    principle_words = {"random": "one random principle per pair", "all": "every principle"}.get(
        principles, f"{principles[:-3]} chosen principle(s)" if principles.endswith("ids") else principles)
    constitution = "no constitution"
    if version and version != "-":
        try:
            constitution = f"{get_by_version(store, version).name}@{version}"
        except CaiError:  # a built-in judge constitution (evaluation, eval-judge) is not a stored one
            constitution = (f"built-in {BUILTIN_JUDGES[version]} question" if version in BUILTIN_JUDGES
                            else f"constitution {version}")
    approx = " (approximate: first-token top-k)" if APPROX_KEY_SUFFIX in parts[0] else ""
    return f"{model} · {STYLE_WORDS.get(style, style)}{approx} · {principle_words} · {constitution}"


ci_text = pct_range  # the owner's interval format (headlines.pct_range)


def agreement_table(report: dict, names: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per judge (plus the combined verdict when there are several): the judge in words, its key."""
    names = names or {}
    rows = list(report["judges"])
    if len(rows) > 1:
        rows = [{**report, "rater": "combined (mean P(A))"}] + rows
    return pd.DataFrame([{
        "judge": names.get(r["rater"], r["rater"]), "judge key": r["rater"] if r["rater"] in names else "",
        "n": f"{r['n']} (too few)" if too_few(r["n"]) else str(r["n"]),
        "accuracy": pct(r["accuracy"]), "95% CI": ci_text(r["accuracy_ci"]),
        "accuracy w/o ties": pct(r["accuracy_no_ties"]), "95% CI (w/o ties)": ci_text(r["accuracy_no_ties_ci"]),
        "Cohen's kappa": num(r["cohen_kappa"]),
        "kappa 95% CI": "-" if r["cohen_kappa_ci"][0] is None else f"{r['cohen_kappa_ci'][0]:.2f} to {r['cohen_kappa_ci'][1]:.2f}",
        "flip rate": pct(r.get("flip_rate")), "ECE": num(r.get("ece")), "Brier": num(r.get("brier")),
        "judge ties": pct(r["judge_tie_rate"]),
    } for r in rows])


def _add_reference_lines(fig: go.Figure, reference: dict, horizontal: bool = True) -> None:
    fig.add_hline(y=0.5, line_dash="solid", line_color="gray", annotation_text="chance (50%)",
                  annotation_position="bottom right")
    for key, label, dash, position in REFERENCE_LINES:
        fig.add_hline(y=reference[key], line_dash=dash, line_color="firebrick", annotation_text=label,
                      annotation_position=position, annotation_font_size=10)


def _bar(name: str, xs: list, values: list, cis: list) -> go.Bar:
    ys = [v if v is not None else 0 for v in values]
    plus = [(c[1] - v) if c and c[1] is not None and v is not None else 0 for c, v in zip(cis, values)]
    minus = [(v - c[0]) if c and c[0] is not None and v is not None else 0 for c, v in zip(cis, values)]
    return go.Bar(name=name, x=xs, y=ys, error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus))


def accuracy_figure(report: dict, names: dict[str, str] | None = None) -> go.Figure:
    """Accuracy with and without ties per judge (named in words), 95% CIs, chance and MT-Bench reference lines."""
    judges = report["judges"]
    names = [(names or {}).get(j["rater"], j["rater"]) for j in judges]
    fig = go.Figure([
        _bar("with ties", names, [j["accuracy"] for j in judges], [j["accuracy_ci"] for j in judges]),
        _bar("without ties", names, [j["accuracy_no_ties"] for j in judges], [j["accuracy_no_ties_ci"] for j in judges]),
    ])
    _add_reference_lines(fig, report["reference"])
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="agreement with gold", tickformat=".0%"),
                      height=420, margin=dict(t=30), legend=dict(orientation="h"))
    return fig


def calibration_figure(reports: dict[str, dict]) -> go.Figure:
    """Reliability diagram: mean P(A) per bin against the share of gold 'A' in it, per judge."""
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=dict(dash="dash", color="gray"))])
    for name, rep in reports.items():
        bins = [b for b in rep.get("calibration_bins") or [] if b["n"]]
        if not bins:
            continue
        fig.add_trace(go.Scatter(
            x=[b["mean_p"] for b in bins], y=[b["frac_a"] for b in bins], mode="lines+markers",
            name=f"{name} (ECE {num(rep.get('ece'), 3)})", marker=dict(size=[6 + min(20, b["n"]) for b in bins]),
            text=[f"{b['n']} items" for b in bins], hovertemplate="P(A) %{x:.2f}<br>share A %{y:.2f}<br>%{text}",
        ))
    # legend below the plot: judge keys (model paths) are long, and a side legend in a half-width column
    # left the 0-1 axis a few pixels wide
    fig.update_layout(xaxis=dict(range=[0, 1], title="judge's P(A) (bin mean)"),
                      yaxis=dict(range=[0, 1], title="share where gold says A"), height=480, margin=dict(t=30),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    return fig


def confusion_figure(confusion: dict, title: str = "") -> go.Figure:
    labels = confusion["labels"]
    matrix = confusion["matrix"]
    fig = go.Figure(go.Heatmap(z=matrix, x=[f"judge: {l}" for l in labels], y=[f"gold: {l}" for l in labels],
                               text=[[str(v) for v in row] for row in matrix], texttemplate="%{text}",
                               colorscale="Blues", showscale=False))
    fig.update_layout(title=title, yaxis=dict(autorange="reversed"), height=320, margin=dict(t=40 if title else 20))
    return fig


def group_figure(rows: list[dict], field: str, reference: dict, names: dict[str, str] | None = None) -> go.Figure:
    """Accuracy per principle (or category), one bar group per judge (named in words), with 95% CIs."""
    fig = go.Figure()
    for judge in sorted({r["rater"] for r in rows}):
        rs = [r for r in rows if r["rater"] == judge]
        fig.add_trace(_bar((names or {}).get(judge, judge), [r[field] for r in rs], [r["accuracy"] for r in rs],
                           [r["accuracy_ci"] for r in rs]))
    _add_reference_lines(fig, reference)
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1], title="accuracy", tickformat=".0%"),
                      height=420, margin=dict(t=30), legend=dict(orientation="h"))
    return fig


def metric_cards(report: dict) -> None:
    """The headline numbers (cai_core.summaries.headlines.reliability_headlines), each with the n its own number was
    computed over: accuracy, flip rate, first-position wins, length bias, calibration, kappa; and a plain
    warning when there are too few items to conclude anything (the owner's rule and words)."""
    h = reliability_headlines(report)
    warning = h["accuracy"].warning
    if warning:
        st.warning(warning + " Judge more items of this gold set (or pick a larger one).")
    c = st.columns(5)
    for col, key in zip(c, ("accuracy", "flip_rate", "longer", "ece", "kappa")):
        card = h[key]
        col.metric(card.label, card.value_text, help=card.help or None)
        col.caption(card.caption())
    c[1].caption(f"{h['first_position'].label.lower()} {h['first_position'].value_text} (50% = unbiased) - "
                 f"{h['first_position'].n_text}")
    c[2].caption(f"{h['gold_longer'].label.lower()} {h['gold_longer'].value_text} - {h['gold_longer'].n_text}; "
                 f"corr(P(A), length diff) {num(report.get('length_corr'), 2)} - n={report.get('n_length') or 0} items "
                 "with both lengths")
    c[3].caption(f"Brier score {num(report.get('brier'))}")
    thin = [card for key, card in h.items() if key != "accuracy" and card.n and card.too_few]
    if thin and not warning:
        st.caption("Few items behind: " + "; ".join(f"{card.label.lower()} n={card.n}" for card in thin)
                   + f" (fewer than {MIN_ITEMS}).")
