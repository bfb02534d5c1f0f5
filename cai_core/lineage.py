"""The workspace's experiment notebook: every constitution version, batch, judge, export, training
run and evaluation, and the lineage between them as one graph (which version revised which batch,
which judges labelled which pairs, which export fed which run, where a run was evaluated).

Read-only: built from what the store already records (trajectory and judge constitution versions,
export cards, runs.export_id / parent_run_id / spec, evaluation results), so it shows what happened,
not what a form intended. `notebook_html` writes the same view as one self-contained HTML file
(the reports' Report: plotly.js embedded, every name escaped) to share.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from cai_core.evaluation.reports import Report
from cai_core.store import Store, loads

# Columns of the graph, left to right: the order in which CAI work feeds the next step.
LAYERS = ("constitution", "revision batch", "pair batch", "judge", "export", "run", "evaluation")
COLOURS = {"constitution": "#8250df", "revision batch": "#1a7f37", "pair batch": "#0969da", "judge": "#bf8700",
           "export": "#cf222e", "run": "#953800", "evaluation": "#116329"}
MAX_GRAPH_NODES = 400  # beyond this the picture is unreadable; the tables still list everything


@dataclass
class Node:
    id: str
    kind: str            # one of LAYERS
    label: str           # short, shown on the graph
    detail: dict = field(default_factory=dict)
    created_at: float = 0.0


@dataclass
class Edge:
    src: str
    dst: str
    label: str           # what the arrow means ("revised", "trained on", ...)


@dataclass
class Lineage:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def link(self, src: str | None, dst: str | None, label: str) -> None:
        if src and dst and src in self.nodes and dst in self.nodes and src != dst:
            if not any(e.src == src and e.dst == dst and e.label == label for e in self.edges):
                self.edges.append(Edge(src, dst, label))

    def of_kind(self, kind: str) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.kind == kind), key=lambda n: (n.created_at, n.id))

    def parents(self, node_id: str) -> list[tuple[Node, str]]:
        return [(self.nodes[e.src], e.label) for e in self.edges if e.dst == node_id]

    def children(self, node_id: str) -> list[tuple[Node, str]]:
        return [(self.nodes[e.dst], e.label) for e in self.edges if e.src == node_id]


def _cid(name: str, version: str) -> str:
    return f"constitution:{name}@{version}"


def workspace_lineage(store: Store) -> Lineage:
    """Every item of the workspace and how each came from the others."""
    lin = Lineage()
    versions: dict[str, str] = {}  # version hash -> node id (a hash names one version whatever the name)
    for r in store.query("SELECT name, version, parent_version, note, created_at FROM constitutions ORDER BY id"):
        nid = lin.add(Node(_cid(r["name"], r["version"]), "constitution", f"{r['name']}@{r['version'][:8]}",
                           {"name": r["name"], "version": r["version"], "note": r["note"]}, r["created_at"] or 0))
        versions.setdefault(r["version"], nid)
    for r in store.query("SELECT name, version, parent_version FROM constitutions WHERE parent_version IS NOT NULL"):
        lin.link(_cid(r["name"], r["parent_version"]), _cid(r["name"], r["version"]), "edited into")

    for r in store.query(
            "SELECT batch, constitution_name, constitution_version, model, COUNT(*) AS n, "
            "SUM(status='done') AS done, MIN(created_at) AS t FROM trajectories "
            "GROUP BY batch, constitution_name, constitution_version, model ORDER BY t"):
        batch = r["batch"] or "(no batch)"
        nid = f"revision:{batch}"
        node = lin.nodes.get(nid) or Node(nid, "revision batch", batch, {"batch": batch, "trajectories": 0,
                                                                          "done": 0, "models": []}, r["t"] or 0)
        node.detail["trajectories"] += r["n"]
        node.detail["done"] += r["done"] or 0
        if r["model"] not in node.detail["models"]:
            node.detail["models"].append(r["model"])
        lin.add(node)
        lin.link(versions.get(r["constitution_version"]) or _cid(r["constitution_name"], r["constitution_version"]),
                 nid, "revised")

    for r in store.query("SELECT batch, source, COUNT(*) AS n, MIN(created_at) AS t FROM comparisons "
                         "GROUP BY batch, source ORDER BY t"):
        batch = r["batch"] or "(no batch)"
        nid = f"pairs:{batch}"
        node = lin.nodes.get(nid) or Node(nid, "pair batch", batch, {"batch": batch, "comparisons": 0, "sources": []},
                                          r["t"] or 0)
        node.detail["comparisons"] += r["n"]
        if r["source"] not in node.detail["sources"]:
            node.detail["sources"].append(r["source"])
        lin.add(node)

    for r in store.query("SELECT judge_key, model, constitution_name, constitution_version, style, created_at "
                         "FROM judges ORDER BY created_at"):
        constitution = (f"{r['constitution_name'] or 'constitution'}@{(r['constitution_version'] or '')[:8]}"
                        if r["constitution_version"] else "no constitution")
        nid = lin.add(Node(f"judge:{r['judge_key']}", "judge", f"{r['style']} · {r['model']} · {constitution}",
                           {"key": r["judge_key"], "model": r["model"], "style": r["style"],
                            "constitution": constitution}, r["created_at"] or 0))
        lin.link(versions.get(r["constitution_version"] or ""), nid, "judges with")
    for r in store.query("SELECT j.judge_key, c.batch, COUNT(DISTINCT c.id) AS n FROM judgments j "
                         "JOIN comparisons c ON c.id = j.comparison_id GROUP BY j.judge_key, c.batch"):
        lin.link(f"judge:{r['judge_key']}", f"pairs:{r['batch'] or '(no batch)'}", "judged")

    for r in store.query("SELECT id, name, kind, path, card_json, created_at FROM exports ORDER BY id"):
        card = loads(r["card_json"], {}) or {}
        nid = lin.add(Node(f"export:{r['name']}", "export", f"{r['name']} ({r['kind']})",
                           {"name": r["name"], "kind": r["kind"], "path": r["path"],
                            "rows": (card.get("counts") or {}).get("total", (card.get("counts") or {}).get("exported"))},
                           r["created_at"] or 0))
        for batch in (card.get("lineage") or {}).get("batches") or []:
            lin.link(f"revision:{batch}", nid, "exported")
        for judge in card.get("judges") or []:
            lin.link(f"judge:{judge.get('judge_key')}", nid, "labels from")
        batch = (card.get("filters") or {}).get("batch")
        if batch:
            lin.link(f"pairs:{batch}", nid, "exported")

    runs_by_dir: dict[str, str] = {}
    run_rows = store.query("SELECT id, name, kind, status, spec_json, run_dir, parent_run_id, export_id, created_at "
                           "FROM runs ORDER BY id")
    names_by_id = {r["id"]: r["name"] for r in run_rows}
    for r in run_rows:
        spec = loads(r["spec_json"], {}) or {}
        nid = lin.add(Node(f"run:{r['name']}", "run", f"{r['name']} ({r['kind']}, {r['status']})",
                           {"name": r["name"], "kind": r["kind"], "status": r["status"], "run_dir": r["run_dir"],
                            "model": spec.get("model"), "dataset": spec.get("dataset")}, r["created_at"] or 0))
        runs_by_dir[str(Path(r["run_dir"]))] = nid
    exports_by_id = {r["id"]: r["name"] for r in store.query("SELECT id, name FROM exports")}
    for r in run_rows:
        nid = f"run:{r['name']}"
        spec = loads(r["spec_json"], {}) or {}
        if r["export_id"] in exports_by_id:
            lin.link(f"export:{exports_by_id[r['export_id']]}", nid, "trained on")
        if r["parent_run_id"] in names_by_id:
            lin.link(f"run:{names_by_id[r['parent_run_id']]}", nid, "started from")
        reward = spec.get("reward_model")
        if reward:
            lin.link(f"run:{reward}" if f"run:{reward}" in lin.nodes else _run_of_path(runs_by_dir, reward),
                     nid, "rewarded by")

    for r in store.query("SELECT id, name, kind, spec_json, result_json, created_at FROM evaluations ORDER BY id"):
        spec, result = loads(r["spec_json"], {}) or {}, loads(r["result_json"]) or {}
        nid = lin.add(Node(f"evaluation:{r['id']}", "evaluation", f"{r['name']} ({r['kind']})",
                           {"name": r["name"], "kind": r["kind"], "finished": bool(result)}, r["created_at"] or 0))
        for point in result.get("points") or []:  # what the evaluation really compared, resolved
            lin.link(f"run:{point['run']}" if point.get("run") else None, nid, "evaluated")
        for policy in spec.get("policies") or []:  # not finished yet: the policies as given
            text = str(policy).partition("=")[2] if "=" in str(policy) else str(policy)
            if text.startswith("run:"):
                lin.link(f"run:{text[4:].partition('/')[0]}", nid, "evaluated")
            else:
                lin.link(_run_of_path(runs_by_dir, text), nid, "evaluated")
        for arm in ("constitution_a", "constitution_b"):
            c = result.get(arm)
            if isinstance(c, dict) and c.get("version"):
                lin.link(versions.get(c["version"]), nid, f"arm {arm[-1].upper()}")
            elif isinstance(spec.get(arm), str) and "@" in spec[arm]:
                name, _, version = spec[arm].partition("@")
                lin.link(versions.get(version) or _cid(name, version), nid, f"arm {arm[-1].upper()}")
    return lin


def _run_of_path(runs_by_dir: dict[str, str], text: str) -> str | None:
    """The run whose folder holds this path (a policy or reward model given as a folder)."""
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    for run_dir, nid in runs_by_dir.items():
        if path == Path(run_dir) or Path(run_dir) in path.parents:
            return nid
    return None


def _plain(text: str) -> str:
    """Plotly reads a few HTML tags (<b>, <br>, <a href>) in labels and hover text: escape them, so a
    name is drawn as written (plotly turns &lt; back into '<' on screen)."""
    return html.escape(str(text), quote=False)


def positions(lin: Lineage) -> dict[str, tuple[float, float]]:
    """Layered layout: one column per kind (LAYERS), items top to bottom by creation time."""
    pos = {}
    for x, kind in enumerate(LAYERS):
        for y, node in enumerate(lin.of_kind(kind)):
            pos[node.id] = (float(x), -float(y))
    return pos


def lineage_figure(lin: Lineage):
    """The lineage graph (plotly): nodes by kind in columns, arrows from source to result; hover shows
    the details and what each arrow means."""
    import plotly.graph_objects as go

    nodes = sorted(lin.nodes.values(), key=lambda n: (LAYERS.index(n.kind), n.created_at))[:MAX_GRAPH_NODES]
    shown = {n.id for n in nodes}
    pos = positions(Lineage({n.id: n for n in nodes}, []))
    fig = go.Figure()
    ex, ey = [], []
    for e in lin.edges:
        if e.src in shown and e.dst in shown:
            (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
            fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                               showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1, arrowcolor="#8c959f",
                               standoff=8, startstandoff=8)
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#d0d7de", "width": 1}, hoverinfo="skip",
                             showlegend=False))
    for kind in LAYERS:
        group = [n for n in nodes if n.kind == kind]
        if not group:
            continue
        hover = []
        for n in group:
            lines = [f"{kind}: {n.label}"] + [f"{k}: {v}" for k, v in n.detail.items() if v not in (None, "", [])]
            lines += [f"← {label}: {p.label}" for p, label in lin.parents(n.id)]
            hover.append("<br>".join(_plain(s) for s in lines))
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in group], y=[pos[n.id][1] for n in group], mode="markers+text", name=kind,
            text=[_plain(n.label if len(n.label) <= 40 else n.label[:37] + "...") for n in group],
            textposition="bottom center", textfont={"size": 10}, hovertext=hover, hoverinfo="text",
            marker={"size": 14, "color": COLOURS[kind], "line": {"width": 1, "color": "white"}}))
    depth = max((-y for _, y in pos.values()), default=0)
    fig.update_layout(
        height=max(320, 90 * (depth + 1) + 120), margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"tickvals": list(range(len(LAYERS))), "ticktext": list(LAYERS), "side": "top", "showgrid": False,
               "zeroline": False, "range": [-0.5, len(LAYERS) - 0.5]},
        yaxis={"visible": False, "range": [-depth - 0.7, 0.5]},
        legend={"orientation": "h", "y": -0.02}, hovermode="closest")
    return fig


def notebook_rows(lin: Lineage, kind: str) -> list[dict]:
    """One table row per item of a kind, with where it came from and what it fed."""
    rows = []
    for n in lin.of_kind(kind):
        row = {"item": n.label, **{k: (", ".join(map(str, v)) if isinstance(v, list) else v)
                                   for k, v in n.detail.items()}}
        row["from"] = "; ".join(f"{label} {p.label}" for p, label in lin.parents(n.id)) or "-"
        row["fed"] = "; ".join(f"{label} {c.label}" for c, label in lin.children(n.id)) or "-"
        rows.append(row)
    return rows


def notebook_html(store: Store, title: str = "Experiment notebook") -> str:
    """The notebook as one self-contained HTML file (opens offline; every name escaped)."""
    lin = workspace_lineage(store)
    report = Report(title, f"workspace {store.workspace.root}: {len(lin.nodes)} items, {len(lin.edges)} links")
    if lin.nodes:
        report.heading("Lineage")
        report.figure(lineage_figure(lin))
    for kind in LAYERS:
        rows = notebook_rows(lin, kind)
        report.heading(f"{kind[0].upper()}{kind[1:]}s ({len(rows)})")
        report.table(rows)
    return report.html()
