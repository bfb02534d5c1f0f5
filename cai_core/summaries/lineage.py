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
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cai_core.evaluation.reports import Report
from cai_core.summaries.headlines import evaluation_headline, experiment_warnings
from cai_core.store import Store, loads

# Columns of the graph, left to right: the order in which CAI work feeds the next step.
LAYERS = ("constitution", "revision batch", "pair batch", "judge", "export", "run", "evaluation")
COLOURS = {"constitution": "#8250df", "revision batch": "#1a7f37", "pair batch": "#0969da", "judge": "#bf8700",
           "export": "#cf222e", "run": "#953800", "evaluation": "#116329"}
MAX_GRAPH_NODES = 400  # beyond this the picture is unreadable; the tables still list everything
PLURALS = {"revision batch": "revision batches", "pair batch": "pair batches"}

# Each link read both ways: (label) src -> dst. In an item's "fed" column a link reads from the source
# ("edited into v2"), in its "from" column from the result ("edited from v1"), so neither reads backwards.
EDGE_WORDS = {
    "edited into": ("edited into", "edited from"),
    "revised": ("revised batch", "revised with"),
    "judges with": ("principles of judge", "judges with"),
    "judged by": ("judged by", "judged pairs of"),
    "exported": ("exported to", "exported from"),
    "labels from": ("labels in", "labels from"),
    "trained on": ("trained", "trained on"),
    "started from": ("started", "started from"),
    "rewarded by": ("rewarded", "rewarded by"),
    "evaluated": ("evaluated in", "evaluated"),
    "arm A": ("arm A of", "arm A:"),
    "arm B": ("arm B of", "arm B:"),
}


def kind_title(kind: str, n: int | None = None) -> str:
    """'Revision batches', 'Runs', 'Pair batch' (n=1): the heading of a kind, correctly plural."""
    word = kind if n == 1 else PLURALS.get(kind, kind + "s")
    return word[0].upper() + word[1:]


def fed_words(label: str) -> str:
    """A link as its source's "fed" column says it."""
    return EDGE_WORDS.get(label, (label, label))[0]


def from_words(label: str) -> str:
    """A link as its result's "from" column says it."""
    return EDGE_WORDS.get(label, (label, "from " + label))[1]


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
            "SUM(CASE WHEN status='done' THEN 1 ELSE 0 END) AS done, MIN(created_at) AS t FROM trajectories "
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
        # pairs -> judge: the judge's verdicts are made from the pairs (and feed the exports after it)
        lin.link(f"pairs:{r['batch'] or '(no batch)'}", f"judge:{r['judge_key']}", "judged by")

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
        runs_by_dir[str(store.workspace.resolve(r["run_dir"]))] = nid
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
        detail = {"name": r["name"], "kind": r["kind"], "finished": bool(result)}
        if result and r["kind"] == "policies":  # the owner's headline, with its n and small-n caution
            detail["headline"] = evaluation_headline(result)
        elif result and r["kind"] == "ab-experiment":
            detail["headline"] = "; ".join(experiment_warnings(result)) or f"{result.get('prompts')} prompts"
        nid = lin.add(Node(f"evaluation:{r['id']}", "evaluation", f"{r['name']} ({r['kind']})", detail,
                           r["created_at"] or 0))
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
    _distinct_labels(lin)
    return lin


def _distinct_labels(lin: Lineage) -> None:
    """Two items never share a label: judges that read the same in words (style, model, constitution) get
    the parts of their keys that differ (principles, settings hash); anything else still alike a number."""
    by_label: dict[tuple[str, str], list[Node]] = defaultdict(list)
    for n in lin.nodes.values():
        by_label[(n.kind, n.label)].append(n)
    for (kind, _), group in by_label.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda n: (n.created_at, n.id))
        if kind == "judge":  # key: style|model|constitution version|principles|settings hash
            keys = [str(n.detail.get("key") or n.id).split("|") for n in group]
            parts = {"principles": -2, "settings": -1}
            differ = [(word, i) for word, i in parts.items()
                      if all(len(k) >= 5 for k in keys) and len({k[i] for k in keys}) > 1]
            for n, k in zip(group, keys):
                extra = ", ".join(f"{word} {k[i][:10]}" for word, i in differ)
                if extra:
                    n.label = f"{n.label} · {extra}"
    seen = Counter((n.kind, n.label) for n in lin.nodes.values())
    count: Counter = Counter()
    for n in sorted(lin.nodes.values(), key=lambda n: (n.created_at, n.id)):
        key = (n.kind, n.label)
        if seen[key] > 1:
            count[key] += 1
            n.label = f"{n.label} (#{count[key]})"


def ancestors(lin: Lineage, node_ids) -> list[Node]:
    """Every item the given items came from, directly or not (nearest first)."""
    seen: dict[str, Node] = {}
    todo = list(node_ids)
    while todo:
        nid = todo.pop(0)
        for p, _ in lin.parents(nid):
            if p.id not in seen:
                seen[p.id] = p
                todo.append(p.id)
    return list(seen.values())


def work_origin(store: Store, lin: Lineage | None = None) -> dict:
    """The constitution, model and runs that PRODUCED the workspace's work (the Demo describes these, not
    the newest-created constitution, which may be unused):

    - runs: the trained runs of the newest finished policy evaluation, else the newest finished runs;
    - constitution: the stored version that revised the most finished trajectories among what those runs
      came from (their exports' revision batches), else among all trajectories (A/B arms and the demo's
      own live run last), else the stored constitution of a judge whose labels were used; None when
      nothing was produced yet. Always a stored name@version (one the Constitution page lists);
    - model: the model that wrote those trajectories, else the runs' base model.

    {"constitution": {"name", "version"} | None, "model", "runs", "evaluation", "batches",
     "trajectories", "basis": how it was chosen, in words}."""
    lin = lin or workspace_lineage(store)
    evaluation, runs = None, []
    for ev in reversed([n for n in lin.of_kind("evaluation")
                        if n.detail.get("kind") == "policies" and n.detail.get("finished")]):
        runs = [p for p, _ in lin.parents(ev.id) if p.kind == "run"]
        if runs:
            evaluation = ev
            break
    if not runs:
        runs = [n for n in lin.of_kind("run") if n.detail.get("status") == "finished"][-3:]
    up = ancestors(lin, [r.id for r in runs])
    batches = [n.detail["batch"] for n in up if n.kind == "revision batch"]
    stored = {(r["name"], r["version"]) for r in store.query("SELECT name, version FROM constitutions")}

    def most_used(batch_filter: list[str] | None) -> dict | None:
        sql = ("SELECT constitution_name AS name, constitution_version AS version, model, batch, COUNT(*) AS n "
               "FROM trajectories WHERE status='done'")
        params: list = []
        if batch_filter is not None:
            if not batch_filter:
                return None
            sql += f" AND batch IN ({','.join('?' * len(batch_filter))})"
            params += batch_filter
        tally: Counter = Counter()
        models: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for r in store.query(sql + " GROUP BY constitution_name, constitution_version, model, batch", params):
            if (r["name"], r["version"]) not in stored:
                continue
            batch = str(r["batch"] or "")
            # a plain batch outweighs an A/B experiment's arms and the demo's own live run
            demoted = batch_filter is None and (batch.startswith("ab-") or batch == "demo")
            weight = int(r["n"]) * (1e-6 if demoted else 1.0)
            tally[(r["name"], r["version"])] += weight
            models[(r["name"], r["version"])][r["model"]] += int(r["n"])
        if not tally:
            return None
        (name, version), _ = max(tally.items(), key=lambda kv: (kv[1], kv[0][1]))
        count = sum(models[(name, version)].values())
        return {"name": name, "version": version, "model": models[(name, version)].most_common(1)[0][0], "n": count}

    found = most_used(batches) if runs else None
    basis = ""
    if found:
        basis = (f"revised {found['n']} answer(s) that the run(s) {', '.join(r.detail['name'] for r in runs)} "
                 "learned from")
    else:
        found = most_used(None)
        if found:
            basis = f"revised {found['n']} of the workspace's critiqued and revised answers (the most)"
    if not found:
        used = [n for n in (up or lin.of_kind("judge")) if n.kind == "judge"]
        for judge in reversed(used):
            for p, label in lin.parents(judge.id):
                if p.kind == "constitution" and (p.detail["name"], p.detail["version"]) in stored:
                    found = {"name": p.detail["name"], "version": p.detail["version"], "model": judge.detail.get("model"),
                             "n": 0}
                    basis = "the principles the AI judge compared pairs with"
                    break
            if found:
                break
    model = (found or {}).get("model") or next((r.detail.get("model") for r in runs if r.detail.get("model")), None)
    return {"constitution": {"name": found["name"], "version": found["version"]} if found else None,
            "model": model, "runs": [r.detail["name"] for r in runs],
            "evaluation": evaluation.detail.get("name") if evaluation else None, "batches": batches,
            "trajectories": (found or {}).get("n", 0), "basis": basis}


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


@dataclass
class Layout:
    """A layered drawing of the graph (Sugiyama style): every item at (rank, -slot); a link that spans
    several ranks passes through its own waypoints, one free slot per rank between its ends, so no line
    is drawn through an item (every segment joins two neighbouring ranks, and items sit only on ranks)."""
    pos: dict[str, tuple[float, float]]            # item id -> (x, y)
    paths: list[tuple[Edge, list[tuple[float, float]]]]  # each link: its points, source first
    rank_kinds: list[list[str]]                    # the kinds of the items on each rank (for the axis)


def _ranks(lin: Lineage, ids: set[str]) -> dict[str, int]:
    """Ranks left to right: kinds in LAYERS order, each kind on its own ranks after the earlier kinds; a
    link between two items of one kind (a version edited into the next, a run started from another)
    moves its result one rank right. Every link then runs from a lower rank to a higher one."""
    same: dict[str, list[str]] = defaultdict(list)
    for e in lin.edges:
        if e.src in ids and e.dst in ids and lin.nodes[e.src].kind == lin.nodes[e.dst].kind:
            same[e.dst].append(e.src)
    depth: dict[str, int] = {}

    def depth_of(nid: str, stack: frozenset = frozenset()) -> int:  # longest same-kind chain; a cycle is cut
        if nid not in depth:
            parents = [p for p in same.get(nid, []) if p not in stack]
            depth[nid] = 1 + max((depth_of(p, stack | {nid}) for p in parents), default=-1)
        return depth[nid]

    ranks: dict[str, int] = {}
    start = 0
    for kind in LAYERS:
        group = [n for n in lin.of_kind(kind) if n.id in ids]
        if not group:
            continue
        for n in group:
            ranks[n.id] = start + depth_of(n.id)
        start = max(ranks[n.id] for n in group) + 1
    return ranks


def _crossings(upper: list[str], lower: list[str], segments: list[tuple[str, str]]) -> int:
    """How many of the segments between two neighbouring ranks cross (a Fenwick-tree inversion count)."""
    pu, pl = {v: i for i, v in enumerate(upper)}, {v: i for i, v in enumerate(lower)}
    pairs = sorted((pu[a], pl[b]) for a, b in segments if a in pu and b in pl)
    tree = [0] * (len(lower) + 1)
    seen = crossings = 0
    k = 0
    while k < len(pairs):
        group = [b for a, b in pairs[k:] if a == pairs[k][0]]
        for b in group:  # earlier segments (smaller upper slot) that end below this one cross it
            i, not_below = b + 1, 0
            while i > 0:
                not_below += tree[i]
                i -= i & -i
            crossings += seen - not_below
        for b in group:
            i = b + 1
            while i <= len(lower):
                tree[i] += 1
                i += i & -i
        seen += len(group)
        k += len(group)
    return crossings


def layout(lin: Lineage, ids: set[str] | None = None, sweeps: int = 8) -> Layout:
    """Layered layout of the items `ids` (all by default): ranks (`_ranks`), a waypoint per rank crossed
    by a long link, then the order within each rank by barycentre sweeps (down and up, keeping the order
    with the fewest crossings), starting from creation order."""
    ids = set(lin.nodes) if ids is None else set(ids)
    rank = _ranks(lin, ids)
    edges = [e for e in lin.edges if e.src in ids and e.dst in ids]
    layers: dict[int, list[str]] = defaultdict(list)
    for n in sorted((lin.nodes[i] for i in ids), key=lambda n: (LAYERS.index(n.kind), n.created_at, n.id)):
        layers[rank[n.id]].append(n.id)
    chains: list[tuple[Edge, list[str]]] = []
    segments: list[tuple[str, str]] = []  # (upper rank vertex, next rank vertex)
    for k, e in enumerate(edges):
        a, b = (e.src, e.dst) if rank[e.src] < rank[e.dst] else (e.dst, e.src)
        chain = [a]
        for r in range(rank[a] + 1, rank[b]):
            way = f"~{k}:{r}"
            rank[way] = r
            layers[r].append(way)
            chain.append(way)
        chain.append(b)
        segments += list(zip(chain, chain[1:]))
        chains.append((e, chain if a == e.src else chain[::-1]))
    top = max(layers, default=-1)
    order = [list(layers.get(r, [])) for r in range(top + 1)]
    up: dict[str, list[str]] = defaultdict(list)
    down: dict[str, list[str]] = defaultdict(list)
    for a, b in segments:
        down[a].append(b)
        up[b].append(a)

    by_rank: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for a, b in segments:
        by_rank[rank[a]].append((a, b))

    def total(o: list[list[str]]) -> int:
        return sum(_crossings(o[r], o[r + 1], by_rank.get(r, [])) for r in range(len(o) - 1))

    best, best_cost = [list(x) for x in order], total(order)
    for sweep in range(sweeps):
        ranks_seq = range(1, len(order)) if sweep % 2 == 0 else range(len(order) - 2, -1, -1)
        for r in ranks_seq:
            ref = order[r - 1] if sweep % 2 == 0 else order[r + 1]
            where = {v: i for i, v in enumerate(ref)}
            near = up if sweep % 2 == 0 else down
            current = {v: i for i, v in enumerate(order[r])}

            def key(v: str) -> tuple[float, int]:
                ns = [where[u] for u in near.get(v, []) if u in where]
                return (sum(ns) / len(ns) if ns else current[v], current[v])

            order[r] = sorted(order[r], key=key)
        cost = total(order)
        if cost < best_cost:
            best, best_cost = [list(x) for x in order], cost
    ys = _coordinates(best, up, down, ids)
    coords = {v: (float(r), ys[v]) for r, vs in enumerate(best) for v in vs}
    pos = {v: xy for v, xy in coords.items() if v in ids}
    paths = [(e, [coords[v] for v in chain]) for e, chain in chains]
    rank_kinds = [sorted({lin.nodes[v].kind for v in vs if v in ids}, key=LAYERS.index) for vs in best]
    return Layout(pos, paths, rank_kinds)


# Vertical room between neighbours on one rank, in slots: two items (their labels sit below them), an item
# and a waypoint (a line passes at least half a slot from an item), two waypoints.
SEP_ITEMS, SEP_ITEM_WAY, SEP_WAYS = 1.0, 0.5, 0.25


def _pool(targets: list[float], seps: list[float]) -> list[float]:
    """The y's closest (least squares) to `targets` that keep their order top to bottom with at least
    seps[i] between item i and i+1 (pool-adjacent-violators on y + the separations above it)."""
    offsets = [0.0]
    for sep in seps:
        offsets.append(offsets[-1] + sep)
    z = [t + o for t, o in zip(targets, offsets)]  # constraint: z non-increasing
    blocks: list[list[float]] = []  # [mean, weight]
    for value in z:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for mean, weight in blocks:
        out += [mean] * int(weight)
    return [v - o for v, o in zip(out, offsets)]


def _coordinates(order: list[list[str]], up: dict, down: dict, ids: set[str], rounds: int = 6) -> dict[str, float]:
    """y of every vertex: start stacked top-down, then pull each towards the mean y of its neighbours
    (alternately the rank before and after), keeping the rank's order and separations (`_pool`)."""
    y = {v: -float(i) for vs in order for i, v in enumerate(vs)}

    def seps(vs: list[str]) -> list[float]:
        return [SEP_ITEMS if (a in ids and b in ids) else SEP_WAYS if (a not in ids and b not in ids) else SEP_ITEM_WAY
                for a, b in zip(vs, vs[1:])]

    for k in range(rounds):
        near = up if k % 2 == 0 else down
        for vs in (order if k % 2 == 0 else order[::-1]):
            if not vs:
                continue
            targets = []
            for v in vs:
                ns = [y[u] for u in near.get(v, [])] or [y[u] for u in (down if k % 2 == 0 else up).get(v, [])]
                targets.append(sum(ns) / len(ns) if ns else y[v])
            for v, value in zip(vs, _pool(targets, seps(vs))):
                y[v] = value
    top = max(y.values(), default=0.0)
    return {v: value - top for v, value in y.items()}


def positions(lin: Lineage) -> dict[str, tuple[float, float]]:
    """Where each item is drawn (`layout`)."""
    return layout(lin).pos


def wrap_label(text: str, width: int = 18, lines: int = 3) -> list[str]:
    """A label in lines of at most `width` characters (long words broken), at most `lines` lines; what
    does not fit ends in an ellipsis, so a name is shortened at its end, never cut off at the plot edge."""
    out = textwrap.wrap(str(text), width=width, break_long_words=True, break_on_hyphens=True) or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][:max(1, width - 1)].rstrip() + "…"
    return out


def lineage_figure(lin: Lineage):
    """The lineage graph (plotly): items in layered columns (`layout`), each link a line from source to
    result through its waypoints with an arrowhead at the result; labels wrapped to fit their column and
    hover shows the full name, the details and where the item came from."""
    import plotly.graph_objects as go

    nodes = sorted(lin.nodes.values(), key=lambda n: (LAYERS.index(n.kind), n.created_at))[:MAX_GRAPH_NODES]
    lay = layout(lin, {n.id for n in nodes})
    pos = lay.pos
    n_ranks = max(1, len(lay.rank_kinds))
    width = max(10, min(22, 160 // n_ranks))  # characters per label line: narrower columns, narrower lines
    fig = go.Figure()
    ex, ey = [], []
    for e, points in lay.paths:
        ex += [x for x, _ in points] + [None]
        ey += [y for _, y in points] + [None]
        (x0, y0), (x1, y1) = points[-2], points[-1]
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1, arrowcolor="#8c959f",
                           standoff=8, startstandoff=0)
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#afb8c1", "width": 1}, hoverinfo="skip",
                             showlegend=False))
    for kind in LAYERS:
        group = [n for n in nodes if n.kind == kind]
        if not group:
            continue
        hover = []
        for n in group:
            lines = [f"{kind}: {n.label}"] + [f"{k}: {v}" for k, v in n.detail.items() if v not in (None, "", [])]
            lines += [f"← {from_words(label)} {p.label}" for p, label in lin.parents(n.id)]
            hover.append("<br>".join(_plain(s) for s in lines))
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in group], y=[pos[n.id][1] for n in group], mode="markers+text", name=kind,
            text=["<br>".join(_plain(line) for line in wrap_label(n.label, width)) for n in group],
            textposition="bottom center", textfont={"size": 10}, hovertext=hover, hoverinfo="text",
            marker={"size": 14, "color": COLOURS[kind], "line": {"width": 1, "color": "white"}}))
    depth = max((-y for _, y in pos.values()), default=0)
    ticks = [" / ".join(kinds) for kinds in lay.rank_kinds]
    fig.update_layout(
        height=int(max(320, 110 * (depth + 1) + 120)), margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"tickvals": list(range(len(ticks))), "ticktext": ticks, "side": "top", "showgrid": False,
               "zeroline": False, "range": [-0.6, len(ticks) - 0.4]},
        yaxis={"visible": False, "range": [-depth - 0.9, 0.5]},
        legend={"orientation": "h", "y": -0.02}, hovermode="closest")
    return fig


def notebook_rows(lin: Lineage, kind: str) -> list[dict]:
    """One table row per item of a kind, with where it came from and what it fed."""
    rows = []
    for n in lin.of_kind(kind):
        row = {"item": n.label, **{k: (", ".join(map(str, v)) if isinstance(v, list) else v)
                                   for k, v in n.detail.items()}}
        row["from"] = "; ".join(f"{from_words(label)} {p.label}" for p, label in lin.parents(n.id)) or "-"
        row["fed"] = "; ".join(f"{fed_words(label)} {c.label}" for c, label in lin.children(n.id)) or "-"
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
        report.heading(f"{kind_title(kind)} ({len(rows)})")
        report.table(rows)
    return report.html()
