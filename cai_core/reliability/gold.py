"""Gold sets in the workspace: the paper's eval sets imported as comparisons, human labels,
and the judge labels to check against them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from cai_core.errors import CaiError
from cai_core.reliability.labels import (
    HUMAN_LABEL_MAP,
    normalise_label,
    parse_labels,
    read_text_file,
    word_count,
)
from cai_core.reliability.metrics import reliability_report
from cai_core.reliability.paper_evals import (
    PAPER_SEED,
    load_paper_eval,
    paper_gold_labels,
)
from cai_core.rlaif.judges import stored_members
from cai_core.rlaif.pairs import add_pairs, comparison_key, load_pairs_file
from cai_core.store import Store, loads


def read_labels(path: str | Path, allow_no_verdict: bool = False) -> list[dict]:
    """Read a label file. A paper eval set (rows with 'corrects') is read as its gold labels, in
    both orientations (see paper_gold_labels), so it can be given as --gold directly."""
    path = Path(path)
    text = read_text_file(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        is_paper = isinstance(json.loads(first), dict) and "corrects" in json.loads(first)
    except json.JSONDecodeError:
        is_paper = False
    if is_paper:
        return paper_gold_labels(path, both_orientations=True)
    return parse_labels(text, source=str(path), allow_no_verdict=allow_no_verdict)


def load_gold_pairs(path: str | Path, seed: int = PAPER_SEED, limit: int | None = None) -> tuple[str, list[dict]]:
    """A gold set file for eval-judge, validated, nothing written: ('paper', load_paper_eval items)
    or ('pairs', pairs-file items that all carry a gold_label)."""

    p = Path(path)
    if not p.is_file():
        raise CaiError(f"gold set not found: {path}")
    first = next((ln for ln in read_text_file(p).splitlines() if ln.strip()), "")
    try:
        is_paper = "corrects" in json.loads(first)
    except (json.JSONDecodeError, TypeError):
        is_paper = False
    if is_paper:
        items = load_paper_eval(p, seed=seed)
        kind = "paper"
    else:
        items = load_pairs_file(p, seed=seed)
        missing = [it["id"] for it in items if it.get("gold_label") not in ("A", "B", "tie")]
        if missing:
            raise CaiError(f"{len(missing)} pairs have no gold_label (first: {missing[0]!r}); "
                           "a gold set needs the right answer for every pair", where=str(p))
        kind = "pairs"
    if limit is not None:
        if limit < 1:
            raise CaiError("--limit must be at least 1")
        items = items[:limit]
    return kind, items


# -- gold sets in the store ---------------------------------------------------------------------
def import_paper_eval(store: Store, path: str | Path, *, seed: int = PAPER_SEED, limit: int | None = None) -> dict:
    """Import a paper eval set as comparisons with gold_label (source 'gold:<set>'); re-runs skip.

    Everything is parsed before anything is written. A comparison already stored with the two
    sides the other way round (e.g. by the pairs importer, which keeps the file's order) is
    reused, so one eval item is never stored twice. Returns {set, source, ids, added, reused}.
    """

    items = load_paper_eval(path, seed=seed)
    if limit is not None:
        items = items[: max(0, int(limit))]
    set_name = Path(path).stem
    source = f"gold:{set_name}"
    ids: list[int | None] = []
    fresh = []
    for it in items:
        found = None
        for a, b in ((it["response_a"], it["response_b"]), (it["response_b"], it["response_a"])):
            found = store.scalar("SELECT id FROM comparisons WHERE key=?", (comparison_key(it["prompt"], a, b, source),))
            if found is not None:
                break
        ids.append(None if found is None else int(found))
        if found is None:
            fresh.append(it)
    before = int(store.scalar("SELECT COUNT(*) FROM comparisons") or 0)
    pairs = [{**it, "meta": {**it["meta"], "gold_id": it["id"]}} for it in fresh]
    new_ids = iter(add_pairs(store, pairs, origin=source, batch=set_name) if pairs else [])
    ids = [i if i is not None else next(new_ids) for i in ids]
    added = int(store.scalar("SELECT COUNT(*) FROM comparisons") or 0) - before
    return {"set": set_name, "source": source, "ids": ids, "added": added, "reused": len(items) - len(fresh)}


def gold_sets(store: Store) -> list[dict]:
    """The gold sets the store holds: comparison sources with gold labels, and human labels."""
    out = [{"name": r["source"], "kind": "comparisons", "count": r["n"]}
           for r in store.query("SELECT source, COUNT(*) AS n FROM comparisons WHERE gold_label IS NOT NULL"
                                " GROUP BY source ORDER BY source")]
    n_human = store.scalar("SELECT COUNT(DISTINCT comparison_id) FROM human_labels WHERE label IN ('A','B','tie','both_bad')")
    if n_human:
        out.insert(0, {"name": "human-labels", "kind": "human", "count": int(n_human)})
    return out


def gold_coverage(store: Store) -> dict[str, dict[str, int]]:
    """For each gold set (as gold_sets names it): judge_key -> how many of its items that judge judged
    with a valid verdict. The reliability views open on the gold set the most judged items cover (the
    paper's 438 HHH items judged outweigh three human labels)."""
    out: dict[str, dict[str, int]] = {}
    # Both read the (few) gold items first and look their judgments up by comparison id: SQLite otherwise
    # scans every judgment and looks up its comparison (0.14 s at 200k judgments, with no gold item at all).
    # CROSS JOIN fixes SQLite's join order; PostgreSQL plans it as any inner join.
    for r in store.query(
            "SELECT c.source, g.judge_key, COUNT(DISTINCT g.comparison_id) AS n FROM comparisons c CROSS JOIN "
            "judgments g WHERE g.comparison_id=c.id AND c.gold_label IS NOT NULL AND g.parse_status='ok' "
            "GROUP BY c.source, g.judge_key"):
        out.setdefault(r["source"], {})[r["judge_key"]] = int(r["n"])
    for r in store.query(
            "SELECT g.judge_key, COUNT(DISTINCT g.comparison_id) AS n FROM judgments g WHERE g.parse_status='ok' "
            "AND g.comparison_id IN (SELECT h.comparison_id FROM human_labels h "
            "WHERE h.label IN ('A','B','tie','both_bad')) GROUP BY g.judge_key"):
        out.setdefault("human-labels", {})[r["judge_key"]] = int(r["n"])
    return out


def best_gold_set(store: Store) -> str | None:
    """The gold set with the most items judged by one judge (ties: the larger set), or None when no judge
    has judged any gold item."""
    return best_covered(gold_coverage(store), gold_sets(store))


def best_covered(coverage: dict[str, dict[str, int]], sets: list[dict]) -> str | None:
    """best_gold_set from what the caller already read: gold_coverage() and gold_sets()."""
    sizes = {g["name"]: g["count"] for g in sets}
    ranked = sorted(((max(judges.values()), sizes.get(name, 0), name) for name, judges in coverage.items()
                     if judges and name in sizes), reverse=True)
    return ranked[0][2] if ranked else None


def gold_from_comparisons(store: Store, source: str | None = None) -> list[dict]:
    """gold_label of stored comparisons as interchange rows (id = comparison id)."""
    sql = "SELECT id, gold_label, source, category FROM comparisons WHERE gold_label IS NOT NULL"
    params: tuple = ()
    if source:
        sql += " AND source=?"
        params = (source,)
    return [{"id": str(r["id"]), "label": normalise_label(r["gold_label"], f"comparison {r['id']}"),
             "rater": r["source"], "category": r["category"]} for r in store.query(sql + " ORDER BY id", params)]


def gold_from_human_labels(store: Store, *, blind_only: bool = False, include_overrides: bool = True) -> list[dict]:
    """Human labels from the Preferences page as a gold set: one row per (comparison, annotator).

    The table is append-only, so each annotator's newest label counts. 'skip' carries no
    preference and is dropped; 'both_bad' counts as a tie. Several annotators give several rows.
    """
    where = ["label IN ('A','B','tie','both_bad','skip')"]
    if blind_only:
        where.append("blind=1")
    if not include_overrides:
        where.append("is_override=0")
    rows = store.query(
        "SELECT h.comparison_id, h.annotator, h.label, h.created_at, h.id, c.category FROM human_labels h "
        "JOIN comparisons c ON c.id=h.comparison_id WHERE " + " AND ".join(where) + " ORDER BY h.created_at, h.id"
    )
    newest: dict[tuple[int, str], Any] = {}
    for r in rows:
        newest[(r["comparison_id"], r["annotator"])] = r
    out = []
    for (cid, annotator), r in sorted(newest.items()):
        label = HUMAN_LABEL_MAP.get(r["label"])
        if label is None:  # skip
            continue
        out.append({"id": str(cid), "label": label, "rater": annotator, "category": r["category"]})
    return out


def judge_keys(store: Store) -> list[dict]:
    """Judges with stored judgments: judge_key, model, style, number of judged comparisons."""
    return [dict(r) for r in store.query(
        "SELECT g.judge_key, MIN(g.judge_model) AS model, MIN(g.style) AS style, "
        "COUNT(DISTINCT g.comparison_id) AS comparisons, COUNT(*) AS judgments, "
        "SUM(CASE WHEN g.parse_status != 'ok' THEN 1 ELSE 0 END) AS invalid FROM judgments g GROUP BY g.judge_key ORDER BY MIN(g.created_at)")]


def judge_labels(store: Store, judge_key: str, comparison_ids: Iterable[int] | None = None, *,
                 meta: dict[str, dict] | None = None) -> list[dict]:
    """A stored judge's verdicts as interchange rows, one per (comparison, principle).

    Verdicts come from the judges module (both orders combined there); each row carries p_a,
    p_a_ab, p_a_ba, the principle, the judge's reasoning and the answers' lengths. Judgments
    that could not be parsed give no row; their count is in `judge_keys`. `meta`: comparison_meta of
    (at least) these comparisons, when the caller already read it.
    """

    if comparison_ids is None:
        comparison_ids = [r[0] for r in store.query(
            "SELECT DISTINCT comparison_id FROM judgments WHERE judge_key=? ORDER BY comparison_id", (judge_key,))]
    ids = [int(i) for i in comparison_ids]
    members = stored_members(store, ids, [judge_key])  # the verdicts' members (a row each), not combined
    if meta is None:
        meta = comparison_meta(store, [str(i) for i in members])
    rows = []
    for cid, ms in sorted(members.items()):
        info = meta.get(str(cid), {})
        len_a, len_b = _lengths(info)
        for m in ms:
            if m.label is None:
                continue
            rows.append({
                "id": str(cid), "label": m.label, "p_a": m.p_a, "p_a_ab": m.p_a_ab, "p_a_ba": m.p_a_ba,
                "rater": judge_key, "judge_model": m.model, "principle": m.principle_id,
                "reasoning": m.reasoning_ab or m.reasoning_ba, "category": info.get("category"),
                "len_a": len_a, "len_b": len_b,
            })
    return rows


def _lengths(info: dict) -> tuple[int, int]:
    """word_count of a comparison_meta entry's two answers, counted once per entry (judge_vs_gold reads
    them for every judge's rows and the gold rows)."""
    if "_lengths" not in info:
        info["_lengths"] = (word_count(info.get("response_a")), word_count(info.get("response_b")))
    return info["_lengths"]


def with_lengths(store: Store, rows: list[dict], *, meta: dict[str, dict] | None = None) -> list[dict]:
    """Add len_a / len_b (and category) from stored comparisons to rows whose id is a comparison id."""
    if meta is None:
        meta = comparison_meta(store, [r["id"] for r in rows])
    out = []
    for r in rows:
        info = meta.get(str(r["id"]))
        if info is None:
            out.append(r)
            continue
        len_a, len_b = _lengths(info)
        out.append({**r, "len_a": r.get("len_a", len_a), "len_b": r.get("len_b", len_b),
                    "category": r.get("category") or info["category"]})
    return out


def comparison_meta(store: Store, ids: Iterable[str]) -> dict[str, dict]:
    """Prompt, both responses, category and source of stored comparisons, by id (str)."""
    wanted = [int(i) for i in ids if str(i).isdigit()]
    out: dict[str, dict] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        for r in store.query(
            f"SELECT id, prompt, response_a, response_b, category, source, gold_label, meta_json FROM comparisons"
            f" WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk)
        ):
            out[str(r["id"])] = {"prompt": r["prompt"], "response_a": r["response_a"], "response_b": r["response_b"],
                                 "category": r["category"], "source": r["source"], "gold_label": r["gold_label"],
                                 "meta": loads(r["meta_json"], {})}
    return out


def load_gold(store: Store, name: str) -> list[dict]:
    """A stored gold set by name: 'human-labels', or a comparison source such as 'gold:438HHHEvaluations'."""
    if name == "human-labels":
        return gold_from_human_labels(store)
    rows = gold_from_comparisons(store, source=name)
    if not rows:
        raise CaiError(f"no gold set {name!r} in this workspace (known: "
                       f"{', '.join(g['name'] for g in gold_sets(store)) or 'none'})")
    return rows


def judge_vs_gold(store: Store, judge_keys: list[str], gold_rows: list[dict], *, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """reliability_report of stored judges against gold rows whose ids are comparison ids."""

    ids = sorted({int(g["id"]) for g in gold_rows if str(g["id"]).isdigit()})
    meta = comparison_meta(store, [str(i) for i in ids])  # read once: the judges' rows and the gold rows share it
    judge_rows = [r for key in judge_keys for r in judge_labels(store, key, ids, meta=meta)]
    report = reliability_report(judge_rows, with_lengths(store, gold_rows, meta=meta), n_boot=n_boot, seed=seed)
    return report
