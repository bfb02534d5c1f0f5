"""The notebook's graph (issue 22, item 10): a layered layout whose links never pass through an item,
links that read the right way in both columns, distinct labels, correct plurals, labels that fit."""
from __future__ import annotations

import math

from cai_core.summaries.lineage import (
    Lineage,
    Node,
    _distinct_labels,
    kind_title,
    layout,
    lineage_figure,
    notebook_rows,
    wrap_label,
)

X_PX, Y_PX, MARKER_PX = 150.0, 110.0, 7.0  # the drawing's scale (a rank ~150 px wide, a slot 110 px tall)


def _workspace() -> Lineage:
    """The shape that drew an export 'from a judge': pairs feed both a judge and (directly) the export the
    judge labels; a second judge and an evaluation arm span several columns; two versions of one
    constitution; two judges that read the same in words."""
    lin = Lineage()
    t = iter(range(100))

    def add(nid, kind, label, **detail):
        lin.add(Node(nid, kind, label, detail, float(next(t))))

    add("c1", "constitution", "redteam@aaaa")
    add("c2", "constitution", "redteam@bbbb")
    add("c3", "constitution", "helpful@cccc")
    add("rev", "revision batch", "rev1")
    add("rev2", "revision batch", "rev2")
    add("p1", "pair batch", "pairs1")
    add("p2", "pair batch", "pairs2")
    add("j1", "judge", "mc · default · redteam@bbbb", key="mc|default|bbbb|random|1111aaaa")
    add("j2", "judge", "mc · default · redteam@bbbb", key="mc|default|bbbb|random|2222bbbb")
    add("e1", "export", "sl1 (sft)")
    add("e2", "export", "prefs1 (preference)")
    add("r1", "run", "sft1 (sft, finished)")
    add("r2", "run", "dpo1 (dpo, finished)")
    add("ev", "evaluation", "ev1 (policies)")
    add("ab", "evaluation", "ab1 (ab-experiment)")
    for src, dst, label in [("c1", "c2", "edited into"), ("c2", "rev", "revised"), ("c3", "rev2", "revised"),
                            ("c2", "j1", "judges with"), ("c2", "j2", "judges with"),
                            ("p1", "j1", "judged by"), ("p2", "j2", "judged by"), ("p1", "e2", "exported"),
                            ("j1", "e2", "labels from"), ("rev", "e1", "exported"), ("rev2", "e1", "exported"),
                            ("e1", "r1", "trained on"), ("e2", "r2", "trained on"), ("r1", "r2", "started from"),
                            ("r1", "ev", "evaluated"), ("r2", "ev", "evaluated"),
                            ("c1", "ab", "arm A"), ("c2", "ab", "arm B")]:
        lin.link(src, dst, label)
    _distinct_labels(lin)
    return lin


def _distance(p, a, b) -> float:
    """Pixels from point p to segment ab."""
    (px, py), (ax, ay), (bx, by) = [(x * X_PX, y * Y_PX) for x, y in (p, a, b)]
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy or 1.0)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def test_no_link_is_drawn_through_an_item_and_links_run_left_to_right():
    lin = _workspace()
    lay = layout(lin)
    assert set(lay.pos) == set(lin.nodes)
    assert len(set(lay.pos.values())) == len(lay.pos)  # no two items on one spot
    assert len(lay.paths) == len(lin.edges)
    for edge, points in lay.paths:
        assert points[0] == lay.pos[edge.src] and points[-1] == lay.pos[edge.dst]
        xs = [x for x, _ in points]
        assert all(b - a == 1 for a, b in zip(xs, xs[1:])), (edge, points)  # one rank per segment, rightwards
        for a, b in zip(points, points[1:]):
            for nid, p in lay.pos.items():
                if p in (a, b):
                    continue
                assert _distance(p, a, b) > MARKER_PX + 1, (edge.src, edge.dst, nid)


def test_the_export_is_not_drawn_as_coming_from_the_judge_it_passes():
    """pairs1 -> prefs1 crosses the judges' column through a waypoint of its own, not through a judge."""
    lin = _workspace()
    lay = layout(lin)
    (path,) = [pts for e, pts in lay.paths if (e.src, e.dst) == ("p1", "e2")]
    assert len(path) == 3  # pairs rank -> waypoint on the judges' rank -> export rank
    judges_at = {lay.pos["j1"], lay.pos["j2"]}
    assert path[1] not in judges_at and path[1][0] == lay.pos["j1"][0]


def test_links_read_the_right_way_in_from_and_fed():
    lin = _workspace()
    versions = {r["item"]: r for r in notebook_rows(lin, "constitution")}
    assert versions["redteam@bbbb"]["from"] == "edited from redteam@aaaa"  # was "edited into redteam@aaaa"
    assert "edited into redteam@bbbb" in versions["redteam@aaaa"]["fed"]
    runs = {r["item"]: r for r in notebook_rows(lin, "run")}
    assert runs["sft1 (sft, finished)"]["from"] == "trained on sl1 (sft)"
    assert "evaluated in ev1 (policies)" in runs["sft1 (sft, finished)"]["fed"]
    judges = notebook_rows(lin, "judge")
    assert all("judged pairs of pairs" in j["from"] for j in judges)


def test_two_judges_that_read_alike_get_distinct_labels():
    lin = _workspace()
    labels = [n.label for n in lin.of_kind("judge")]
    assert len(set(labels)) == 2 and all(l.startswith("mc · default · redteam@bbbb · settings ") for l in labels)
    lin2 = Lineage()
    for k in range(3):
        lin2.add(Node(f"x{k}", "export", "same", {}, float(k)))
    _distinct_labels(lin2)
    assert sorted(n.label for n in lin2.nodes.values()) == ["same (#1)", "same (#2)", "same (#3)"]


def test_plurals_and_labels_that_fit():
    assert kind_title("revision batch") == "Revision batches" and kind_title("pair batch") == "Pair batches"
    assert kind_title("run") == "Runs" and kind_title("judge", 1) == "Judge"
    lines = wrap_label("a-very-long-constitution-name-that-goes-on-and-on-and-on@12345678", 18, 3)
    assert len(lines) == 3 and all(len(l) <= 18 for l in lines) and lines[-1].endswith("…")
    assert lines[0].startswith("a-very")  # shortened at its end, not cut at the left
    fig = lineage_figure(_workspace())
    texts = [t for tr in fig.data if tr.mode == "markers+text" for t in tr.text]
    assert all(len(line) <= 22 for t in texts for line in t.split("<br>"))
    xmin = fig.layout.xaxis.range[0]
    assert xmin <= -0.5  # room left of the first column for its centred labels


def test_random_workspaces_never_draw_a_link_through_an_item():
    """Seeded random graphs of every kind, with same-kind chains and links that skip columns."""
    import random

    from cai_core.summaries.lineage import LAYERS

    for seed in range(25):
        rng = random.Random(seed)
        lin = Lineage()
        nodes = []
        for k in range(rng.randint(3, 30)):
            kind = rng.choice(LAYERS)
            lin.add(Node(f"n{k}", kind, f"item {k}", {}, float(k)))
            nodes.append(lin.nodes[f"n{k}"])
        for _ in range(rng.randint(0, 45)):
            a, b = rng.sample(nodes, 2)
            ia, ib = LAYERS.index(a.kind), LAYERS.index(b.kind)
            if ia > ib or (ia == ib and a.created_at > b.created_at):
                a, b = b, a
            lin.link(a.id, b.id, "exported")
        lay = layout(lin)
        assert len(set(lay.pos.values())) == len(lay.pos), seed
        for edge, points in lay.paths:
            xs = [x for x, _ in points]
            assert all(b - a == 1 for a, b in zip(xs, xs[1:])), (seed, edge)
            for a, b in zip(points, points[1:]):
                for nid, p in lay.pos.items():
                    if p not in (a, b):
                        assert _distance(p, a, b) > MARKER_PX + 1, (seed, edge.src, edge.dst, nid)


def test_the_html_notebook_has_plural_headings_and_the_layered_graph(ws):
    import html as html_lib

    from cai_core.summaries.lineage import notebook_html
    from cai_core.store import open_store
    from tests.helpers import seed_evaluation

    store = open_store(ws)
    seed_evaluation(store, "ev-html")
    text = html_lib.unescape(notebook_html(store))
    assert "Revision batches (0)" in text and "Pair batches (1)" in text and "batchs" not in text
    assert "harmless: tuned first, 2 wins, 0 ties, 0 losses (n=2) - too few for a conclusion" in text


def test_the_notebook_page_reads_right_on_a_seeded_workspace(ws):
    """AppTest of pages/90_Notebook.py: plural counts, 'edited from' on the newer version, two judges that
    read alike listed apart, the graph drawn."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.store import now, open_store

    store = open_store(ws)

    def const(text):
        return Constitution(name="redteam", principles=[Principle(id="harm", name="Harm", critique_request=text,
                                                                  revision_request="Fix it.")])
    v1 = save_constitution(store, const("Harmful?"))
    v2 = save_constitution(store, const("Is it harmful?"), parent_version=v1)
    (cid,) = add_pairs(store, [{"id": "s", "prompt": "q", "response_a": "a", "response_b": "b"}], origin="sampled",
                       batch="pairs1")
    with store.tx() as conn:
        for k, key in enumerate((f"mc|m|{v2}|random|aaaa1111", f"mc|m|{v2}|random|bbbb2222")):
            conn.execute("INSERT INTO judges (judge_key, model, constitution_name, constitution_version, style, "
                         "spec_json, created_at) VALUES (?,?,?,?,?,?,?)", (key, "m", "redteam", v2, "mc", "{}", now() + k))
            conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                         "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                         (cid, key, "m", "harm", "mc", "AB", 0.7, "ok", now()))
    page = str(Path(__file__).resolve().parent.parent / "pages" / "90_Notebook.py")
    at = AppTest.from_file(page, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pair batches"] == "1" and metrics["Revision batches"] == "0" and metrics["Judges"] == "2"
    assert [e.label for e in at.expander][:3] == ["Constitutions (2)", "Revision batches (0)", "Pair batches (1)"]
    frames = {tuple(df.value.columns): df.value for df in at.dataframe}
    constitutions = next(f for cols, f in frames.items() if "version" in cols and "note" in cols)
    newer = constitutions[constitutions["version"] == v2].iloc[0]
    assert newer["from"] == f"edited from redteam@{v1[:8]}"
    judges = next(f for cols, f in frames.items() if "style" in cols)
    assert judges["item"].nunique() == 2 and all("settings" in item for item in judges["item"])
    assert all(f.startswith(f"judges with redteam@{v2[:8]}; judged pairs of pairs1") for f in judges["from"])
    assert at.get("plotly_chart")
