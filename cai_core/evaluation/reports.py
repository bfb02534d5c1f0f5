"""Self-contained HTML reports of a trajectory, an A/B experiment or an evaluation, to mail.

One file, no network: plotly.js is embedded once (include_plotlyjs=True) and every chart is inline.
Everything that is text - model answers, prompts, names - goes through html.escape; plotly's own
JSON escapes '<', '>' and '/' inside chart data. The figure builders are shared with the pages so a
report shows exactly the charts the app shows.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from cai_core.errors import CaiError
from cai_core.evaluation.evaluate import (
    evaluation_comparisons,
    get_evaluation,
    leaderboard,
)
from cai_core.evaluation.experiments import experiment_table
from cai_core.summaries.headlines import evaluation_warnings, experiment_warnings
from cai_core.store import Store
from cai_core.supervised.revision import get_trajectory, verdict_words
from cai_core.data.textdiff import word_diff

KINDS = ("trajectory", "evaluation", "experiment")

_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.8rem;margin-bottom:.2rem}h2{font-size:1.3rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
h3{font-size:1.05rem;margin-bottom:.3rem}.meta{color:#59636e;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}
pre{white-space:pre-wrap;word-wrap:break-word;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;
padding:.6rem;font-size:.88rem;margin:.3rem 0}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:.8rem}
.fig{margin:.6rem 0}.note{color:#59636e;font-size:.85rem}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem .8rem;margin:.4rem 0}
"""


# -- HTML building blocks ----------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Report:
    """Collects escaped HTML blocks; figures get plotly.js embedded once."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self.blocks: list[str] = []
        self._js_done = False
        if subtitle:
            self.blocks.append(f'<p class="meta">{esc(subtitle)}</p>')

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(f"<h{level}>{esc(text)}</h{level}>")

    def text(self, text: str, cls: str | None = None) -> None:
        self.blocks.append(f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{esc(text)}</p>')

    def warning(self, text: str) -> None:
        """A warning the page shows beside the same figures (contamination, too few items)."""
        self.blocks.append(f'<p class="warn" role="alert">&#9888; {esc(text)}</p>')

    def pre(self, text: str | None, label: str | None = None) -> None:
        head = f"<h3>{esc(label)}</h3>" if label else ""
        self.blocks.append(f"<div>{head}<pre>{esc(text or '')}</pre></div>")

    def columns(self, items: list[tuple[str, str | None]]) -> None:
        cells = "".join(f"<div><h3>{esc(label)}</h3><pre>{esc(text or '')}</pre></div>" for label, text in items)
        self.blocks.append(f'<div class="cols">{cells}</div>')

    def table(self, rows: list[dict], columns: list[str] | None = None) -> None:
        if not rows:
            self.text("(no rows)", "note")
            return
        columns = columns or list(rows[0].keys())
        head = "".join(f"<th>{esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig) -> None:
        import plotly.graph_objects as go
        import plotly.io as pio

        # a figure built inside the app carries the "streamlit" template, which has no colours of its own
        # (the app's frontend supplies them): outside the app every trace would be black
        fig = go.Figure(fig).update_layout(template="plotly_white")
        div = pio.to_html(fig, include_plotlyjs=not self._js_done, full_html=False,
                          config={"displaylogo": False, "responsive": True})
        self._js_done = True
        self.blocks.append(f'<div class="fig">{div}</div>')

    def html(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{esc(self.title)}</h1>"
                + "\n".join(self.blocks)
                + f'<p class="note">Constitutional AI workbench report, {esc(stamp)}. Self-contained: opens offline.</p>'
                "</body></html>\n")


# -- figures (shared with the pages) -----------------------------------------------------------
def _ci_errors(values, cis):
    plus = [None if (v is None or c[1] is None) else c[1] - v for v, c in zip(values, cis)]
    minus = [None if (v is None or c[0] is None) else v - c[0] for v, c in zip(values, cis)]
    return plus, minus


def tradeoff_figure(result: dict):
    """The paper's picture: harmlessness vs helpfulness score per policy (or vs non-evasiveness
    when no helpfulness prompts were evaluated). Checkpoints of one run are joined by a line."""
    import plotly.graph_objects as go

    points = result.get("points") or []
    has_helpful = any(p.get("helpful") is not None for p in points)
    fig = go.Figure()
    xs, ys, names, err = [], [], [], []
    for p in points:
        if p.get("harmless") is None:
            continue
        x = p["helpful"] if has_helpful else (None if p.get("evasive_rate") is None else 1.0 - p["evasive_rate"])
        if x is None:
            continue
        xs.append(x)
        ys.append(p["harmless"])
        names.append(p["policy"])
        err.append(p.get("harmless_ci") or [None, None])
    plus, minus = _ci_errors(ys, err)
    # policies on the same spot (e.g. all tied on a small evaluation): put their names around it, not on top
    spots = [(round(x, 1), round(y, 1)) for x, y in zip(xs, ys)]
    around = ["top center", "bottom center", "middle right", "middle left"]
    positions = [around[spots[:i].count(spot) % len(around)] for i, spot in enumerate(spots)]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition=positions,
                             marker={"size": 12}, name="policies",
                             error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True}))
    runs: dict[str, list[dict]] = {}
    for p in points:
        if p.get("run") and p.get("harmless") is not None:
            runs.setdefault(p["run"], []).append(p)
    for run, pts in runs.items():
        pts = sorted(pts, key=lambda p: (p.get("step") is None, p.get("step") or 0))
        if len(pts) < 2:
            continue
        line_x = [p["helpful"] if has_helpful else (1.0 - p["evasive_rate"] if p.get("evasive_rate") is not None else None)
                  for p in pts]
        fig.add_trace(go.Scatter(x=line_x, y=[p["harmless"] for p in pts], mode="lines", name=f"{run} checkpoints",
                                 line={"dash": "dot"}))
    fig.update_layout(
        title="Harmlessness vs " + ("helpfulness" if has_helpful else "non-evasiveness"),
        xaxis_title="helpfulness score (BT, Elo scale)" if has_helpful else "share of non-evasive answers",
        yaxis_title="harmlessness score (BT, Elo scale)", height=460, margin={"t": 50, "l": 60, "r": 20, "b": 50})
    if not has_helpful:  # a share: 0..1 (with room for the labels), never plotly's autorange around one value
        fig.update_xaxes(range=[-0.05, 1.05])
    return fig


def leaderboard_figure(result: dict, axis: str):
    """Bradley-Terry scores (Elo scale) with bootstrap CIs, one bar per policy."""
    import plotly.graph_objects as go


    rows = leaderboard(result, axis)
    scores = [r["bt_score"] for r in rows]
    plus, minus = _ci_errors(scores, [[r["bt_ci_low"], r["bt_ci_high"]] for r in rows])
    fig = go.Figure(go.Bar(x=[r["policy"] for r in rows], y=scores,
                           error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True}))
    fig.update_layout(title=f"{axis}: Bradley-Terry score (Elo scale, 95% CI)", yaxis_title="score", height=360,
                      margin={"t": 50, "l": 60, "r": 20, "b": 50})
    return fig


def category_figure(result: dict, axis: str):
    """Win rate per prompt category, one bar group per category."""
    import plotly.graph_objects as go

    cats = (result.get("axes", {}).get(axis) or {}).get("by_category") or {}
    policies = [p["name"] for p in result.get("policies", [])]
    fig = go.Figure()
    for name in policies:
        fig.add_trace(go.Bar(name=name, x=list(cats), y=[cats[c].get(name, {}).get("win_rate") for c in cats]))
    fig.update_layout(barmode="group", title=f"{axis}: win rate per prompt category", yaxis_title="win rate",
                      yaxis_range=[0, 1], height=360, margin={"t": 50, "l": 60, "r": 20, "b": 50})
    return fig


def evasiveness_figure(result: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for axis in ("harmless", "helpful"):
        names, rates, cis = [], [], []
        for name, by_axis in (result.get("evasiveness") or {}).items():
            ev = by_axis.get(axis)
            if ev and ev.get("rate") is not None:
                names.append(name)
                rates.append(ev["rate"])
                cis.append(ev["ci"])
        if names:
            plus, minus = _ci_errors(rates, cis)
            fig.add_trace(go.Bar(name=f"{axis} prompts", x=names, y=rates,
                                 error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True}))
    fig.update_layout(barmode="group", title="Evasive answers (share, 95% CI)", yaxis_range=[0, 1], height=340,
                      margin={"t": 50, "l": 60, "r": 20, "b": 50})
    return fig


def experiment_figure(result: dict):
    """Forest plot: B - A with its paired 95% CI for each share metric (0 = no difference)."""
    import plotly.graph_objects as go


    rows = [r for r in experiment_table(result) if r["metric"] != "edit size (words)"]
    plus, minus = _ci_errors([r["B - A"] for r in rows], [[r["ci_low"], r["ci_high"]] for r in rows])
    fig = go.Figure(go.Scatter(x=[r["B - A"] for r in rows], y=[r["metric"] for r in rows], mode="markers",
                               marker={"size": 12},
                               error_x={"type": "data", "array": plus, "arrayminus": minus, "visible": True}))
    fig.add_vline(x=0, line_dash="dash")
    fig.update_layout(title="B - A (paired bootstrap 95% CI)", xaxis_range=[-1, 1], height=300,
                      margin={"t": 50, "l": 220, "r": 20, "b": 40})
    return fig


def edit_size_figure(result: dict):
    """Per prompt: words changed by revision under A vs under B (the diagonal = no change)."""
    import plotly.graph_objects as go

    items = result.get("items") or []
    xa = [it["a"]["edit_words"] for it in items]
    xb = [it["b"]["edit_words"] for it in items]
    top = max(xa + xb + [1])
    fig = go.Figure(go.Scatter(x=xa, y=xb, mode="markers", text=[f"prompt {it['index'] + 1}" for it in items],
                               marker={"size": 10}, name="prompts"))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot"}, name="same"))
    fig.update_layout(title="Edit size per prompt (words changed from the first answer)",
                      xaxis_title="constitution A", yaxis_title="constitution B", height=380,
                      margin={"t": 50, "l": 60, "r": 20, "b": 50})
    return fig


def trajectory_figure(traj: dict):
    """Words per version and words changed per round."""
    import plotly.graph_objects as go

    versions = [("initial", traj.get("initial") or "")] + [
        (f"round {s['round']}", s.get("revision") or "") for s in traj.get("steps", []) if s.get("revision") is not None]
    fig = go.Figure(go.Bar(x=[v[0] for v in versions], y=[len(v[1].split()) for v in versions], name="words"))
    fig.add_trace(go.Scatter(x=[f"round {s['round']}" for s in traj.get("steps", [])],
                             y=[s.get("edit_words") for s in traj.get("steps", [])], mode="lines+markers",
                             name="words changed"))
    fig.update_layout(title="Length of each version and words changed by each revision", height=320,
                      margin={"t": 50, "l": 60, "r": 20, "b": 50})
    return fig


# -- reports -----------------------------------------------------------------------------------
# The two kinds of row in `evaluations` that have a report: the report kind that shows each, and what it is.
_REPORTED = {"policies": ("evaluation", "a policy evaluation"), "ab-experiment": ("experiment", "an A/B experiment")}


def _finished(store: Store, ref, kind: str) -> dict:
    """The evaluation row `ref` if it is of `kind` and has a result; else a CaiError naming the report
    that fits it, or saying it is not finished."""
    ev = get_evaluation(store, ref)
    if ev["kind"] != kind:
        other = next(k for k in _REPORTED if k != kind)
        raise CaiError(f"{ref!r} is {_REPORTED[other][1]}; use `report {_REPORTED[other][0]} {ev['id']}`")
    if not ev["result"]:
        raise CaiError(f"{_REPORTED[kind][0]} {ev['name']!r} has no result yet (still running, stopped or failed)")
    return ev


def evaluation_report(store: Store, ref) -> str:
    ev = _finished(store, ref, "policies")
    result = ev["result"]
    spec = ev["spec"]
    rep = Report(f"Evaluation: {ev['name']}",
                 f"judge {spec.get('judge_model')} · prompts {spec.get('prompts')}"
                 + (f" + {spec.get('helpful_prompts')}" if spec.get("helpful_prompts") else "")
                 + f" · seed {spec.get('seed')} · {len(result['policies'])} policies")
    for warning in evaluation_warnings(store, ev):  # exactly the warnings the Evaluate page shows
        rep.warning(warning)
    rep.heading("Policies")
    rep.table([{"policy": p["name"], "kind": p["kind"], "spec": p["spec"], "run": p.get("run"), "step": p.get("step")}
               for p in result["policies"]])
    rep.heading("Harmlessness trade-off")
    rep.figure(tradeoff_figure(result))
    for axis in result.get("axes", {}):
        ax = result["axes"][axis]
        rep.heading(f"{axis.capitalize()} ({ax['judged']} judged comparisons, {ax['invalid']} invalid, "
                    f"{ax.get('flipped', 0)} flipped with the order)")
        rep.table(leaderboard(result, axis), ["policy", "bt_score", "bt_ci_low", "bt_ci_high", "elo", "win_rate",
                                             "win_rate_ci_low", "win_rate_ci_high", "win", "tie", "loss", "n",
                                             "evasive_rate"])
        rep.figure(leaderboard_figure(result, axis))
        rep.table([{"A": p["a"], "B": p["b"], "n": p["n"], "A wins": p["win"], "ties": p["tie"], "B wins": p["loss"],
                    "A win rate": p["win_rate"], "CI low": p["win_rate_ci"][0], "CI high": p["win_rate_ci"][1]}
                   for p in ax["pairs"]])
        if ax.get("by_category"):
            rep.figure(category_figure(result, axis))
    rep.heading("Evasiveness")
    rep.text("Share of answers that refuse or deflect without engaging (rule-based detector; see docs/evaluation.md).",
             "note")
    rep.figure(evasiveness_figure(result))
    rep.heading("Example comparisons")
    for c in evaluation_comparisons(store, ev, limit=10):
        rep.heading(f"[{c['axis']}] {c['policy_a']} vs {c['policy_b']}: verdict {c['label'] or 'none'}"
                    f" (P(A) {fmt(c['p_a'], 2)})", 3)
        rep.pre(c["prompt"], "Prompt")
        rep.columns([(f"A: {c['policy_a']}" + (" (evasive)" if c["evasive_a"] else ""), c["response_a"]),
                     (f"B: {c['policy_b']}" + (" (evasive)" if c["evasive_b"] else ""), c["response_b"])])
    return rep.html()


def experiment_report(store: Store, ref) -> str:
    ev = _finished(store, ref, "ab-experiment")
    r = ev["result"]
    rep = Report(f"Constitution A/B experiment: {ev['name']}",
                 f"A = {r['constitution_a']['name']}@{r['constitution_a']['version']} · "
                 f"B = {r['constitution_b']['name']}@{r['constitution_b']['version']} · model {r['model']} · "
                 f"{r['prompts']} prompts · seed {r['settings'].get('seed')}")
    for warning in experiment_warnings(r):  # exactly the warnings the Constitution A/B tab shows
        rep.warning(warning)
    ch = r["principle_changes"]
    rep.heading("What changed")
    rep.table([{"principle": pid, "change": "changed: " + ", ".join(fields)} for pid, fields in ch["changed"].items()]
              + [{"principle": pid, "change": "added in B"} for pid in ch["added"]]
              + [{"principle": pid, "change": "removed in B"} for pid in ch["removed"]])
    rep.heading("Differences (B - A, paired bootstrap 95% CI)")
    fd = r["metrics"]["final_differs"]
    rep.text(f"Final answers differ on {fmt(fd['rate'], 2)} of prompts (95% CI {fmt(fd['ci'][0], 2)} - {fmt(fd['ci'][1], 2)}).")
    rep.table(experiment_table(r))
    rep.figure(experiment_figure(r))
    rep.figure(edit_size_figure(r))
    rep.heading("Per-principle attribution")
    rows = []
    for a in r["attribution"]:
        m = a["metrics"] or {}
        rows.append({"principle": a["principle"], "status": a["status"], "rounds A": a["rounds_a"],
                     "rounds B": a["rounds_b"], "prompts": m.get("n", 0),
                     "evasive B-A": (m.get("evasive") or {}).get("diff"),
                     "edit words B-A": (m.get("edit_words") or {}).get("diff"),
                     "judge net pref B": (m.get("judge_pref_b") or {}).get("diff")})
    if r.get("untouched"):
        m = r["untouched"]
        rows.append({"principle": "(prompts that met no changed principle)", "status": "-", "prompts": m["n"],
                     "evasive B-A": (m.get("evasive") or {}).get("diff"),
                     "edit words B-A": (m.get("edit_words") or {}).get("diff"),
                     "judge net pref B": (m.get("judge_pref_b") or {}).get("diff")})
    rep.table(rows)
    rep.heading("Prompts where the final answers differ")
    for it in [i for i in r["items"] if i["final_differs"]][:20]:
        rep.heading(f"Prompt {it['index'] + 1}: rounds differing {', '.join(map(str, it['rounds_differ'])) or '-'}", 3)
        rep.pre(it["prompt"], "Prompt")
        rep.columns([(f"A ({', '.join(it['a']['principles'])})" + (" - evasive" if it["a"]["evasive"] else ""), it["a"]["final"]),
                     (f"B ({', '.join(it['b']['principles'])})" + (" - evasive" if it["b"]["evasive"] else ""), it["b"]["final"])])
    return rep.html()


def trajectory_report(store: Store, trajectory_id: int) -> str:
    t = get_trajectory(store, int(trajectory_id))
    rep = Report(f"Trajectory {t['id']}", f"constitution {t['constitution_name']}@{t['constitution_version']} · "
                                           f"model {t['model']} · seed {t['seed']} · status {t['status']}")
    rep.pre(t["prompt"], "Prompt")
    rep.pre(t["initial"], "Initial answer")
    prev = t["initial"] or ""
    for s in t["steps"]:
        rep.heading(f"Round {s['round']}: principle {s['principle_id']}")
        if s.get("critique_reasoning") and s["critique_reasoning"] != s.get("critique"):
            rep.pre(s["critique_reasoning"], "Chain of thought")
        verdict = verdict_words(s.get("violation"), s.get("verdict_source"), s.get("p_yes"))
        rep.pre(s.get("critique"), f"Critique ({verdict})")
        if s.get("revision") is not None:
            rep.columns([("Before", prev), ("Revision", s["revision"])])
            changes = [seg for seg in word_diff(prev, s["revision"]) if seg.op != "equal"]
            rep.text(f"{len(changes)} changed spans, {s.get('edit_words') or 0} words changed.", "note")
            prev = s["revision"]
    rep.pre(t["final"], "Final answer")
    if t["steps"]:
        rep.figure(trajectory_figure(t))
    return rep.html()


def report_html(store: Store, kind: str, ref) -> str:
    if kind == "trajectory":
        return trajectory_report(store, ref)
    if kind == "evaluation":
        return evaluation_report(store, ref)
    if kind == "experiment":
        return experiment_report(store, ref)
    raise CaiError(f"unknown report kind {kind!r}: use one of {', '.join(KINDS)}")


def write_report(store: Store, kind: str, ref, out: str | Path | None = None) -> Path:
    """Build the report, then write it atomically (default: workspace/reports/<kind>-<ref>.html). A given
    `out` is the command's --out, already checked by commands._common.output_file."""
    text = report_html(store, kind, ref)
    path = store.workspace.child_path("reports", f"{kind}-{ref}.html") if out is None else Path(out).expanduser()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
