"""Gold sets: labels a judge is checked against, in one small interchange format.

Label interchange format (judgments and gold alike), one JSON object per line:
    {"id": "...", "label": "A" | "B" | "tie", "p_a": 0.73 (optional), "rater": "alice" (optional)}
Several raters may label the same id. Extra keys (p_a_ab, p_a_ba, principle, category, ...) are
kept, so the judge CLI's output can be read as it is.

Also here: the parser for the CAI paper's public multiple-choice eval sets (438HHHEvaluations,
HarmfulVsEthical), which turns them into two-sided comparisons with a gold label. Which side
is shown as A is re-drawn with a fixed seed per item (the file's own order is kept in meta),
so a judge that always says "(A)" scores about 50%, not whatever the file's order gives.
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, Iterable

from .errors import CaiError
from .store import Store, loads

LABELS = ("A", "B", "tie")
_LABEL_ALIASES = {"a": "A", "b": "B", "tie": "tie", "t": "tie", "=": "tie"}
# Human labels that carry no preference; `both_bad` counts as a tie (neither answer is preferred).
_HUMAN_LABEL_MAP = {"A": "A", "B": "B", "tie": "tie", "both_bad": "tie"}
PAPER_SEED = 0
PAPER_EVAL_SETS = ("438HHHEvaluations.jsonl", "HarmfulVsEthical.jsonl")
PAPER_DATA_ENV = "CAI_PAPER_DATA"
_PAPER_REPO = "https://github.com/anthropics/ConstitutionalHarmlessnessPaper"


def paper_data_dir() -> Path:
    """Where the CAI paper's public data files are read from: $CAI_PAPER_DATA, else the team's
    ../shared/datasets/cai-paper next to the checkout. They are not copied into the project (their
    repository states no license), so a user's clone may not have them."""
    env = os.environ.get(PAPER_DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cai-paper"


def paper_eval_path(name: str) -> Path:
    """One of PAPER_EVAL_SETS in paper_data_dir(); a missing file says where to get it."""
    path = paper_data_dir() / name
    if not path.is_file():
        raise CaiError(f"the paper eval set {name} is not at {path}. Get the data folder of {_PAPER_REPO} "
                       f"and point {PAPER_DATA_ENV} at it, or upload a label file / pairs file instead")
    return path


# -- label interchange format ---------------------------------------------------------------------
def normalise_label(value: Any, where: str | None = None) -> str:
    """'A' | 'B' | 'tie' from the usual spellings; anything else is a clear error."""
    if isinstance(value, str):
        key = value.strip().strip("()").strip().lower()
        if key in _LABEL_ALIASES:
            return _LABEL_ALIASES[key]
    raise CaiError(f"label must be 'A', 'B' or 'tie', got {value!r}", where=where)


def label_from_p(p_a: float, tie_margin: float = 0.0) -> str:
    """A probability that A is better -> label; within tie_margin of 0.5 is a tie."""
    if abs(p_a - 0.5) <= tie_margin:
        return "tie"
    return "A" if p_a > 0.5 else "B"


def parse_label_row(obj: Any, where: str, allow_no_verdict: bool = False) -> dict:
    """Validate one interchange row; returns a normalised copy (id as str, label canonical).

    allow_no_verdict: a judge's output may hold rows with neither label nor p_a (every judgment of
    that pair was unparseable); they are kept with label None, to be counted, never guessed.
    """
    if not isinstance(obj, dict):
        raise CaiError("each line must be a JSON object with 'id' and 'label'", where=where)
    if "id" not in obj or obj["id"] in (None, ""):
        raise CaiError("missing 'id'", where=where)
    if isinstance(obj["id"], (dict, list, bool)):
        raise CaiError(f"'id' must be a string or a number, got {obj['id']!r}", where=where)
    row = dict(obj)
    row["id"] = str(obj["id"])
    p_a = obj.get("p_a")
    if p_a is not None:
        if isinstance(p_a, bool) or not isinstance(p_a, (int, float)) or not 0.0 <= float(p_a) <= 1.0:
            raise CaiError(f"'p_a' must be a number between 0 and 1, got {p_a!r}", where=where)
        row["p_a"] = float(p_a)
    if obj.get("label") is None:
        if p_a is None and allow_no_verdict:
            row["label"] = None
        elif p_a is None:
            raise CaiError("missing 'label' (or at least 'p_a')", where=where)
        else:
            row["label"] = label_from_p(float(p_a))
    else:
        row["label"] = normalise_label(obj["label"], where)
    for field in ("p_a_ab", "p_a_ba"):
        v = obj.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0):
            raise CaiError(f"'{field}' must be a number between 0 and 1, got {v!r}", where=where)
    if obj.get("rater") is not None:
        row["rater"] = str(obj["rater"])
    return row


def parse_labels(text: str, source: str = "<labels>", allow_no_verdict: bool = False) -> list[dict]:
    """Parse label-interchange JSONL text; errors name source:line. Blank lines are skipped."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaiError(f"not valid JSON ({exc.msg} at column {exc.colno})", where=where) from exc
        rows.append(parse_label_row(obj, where, allow_no_verdict))
    if not rows:
        raise CaiError("no labels found (expected JSONL rows with 'id' and 'label')", where=source)
    return rows


def read_labels(path: str | Path, allow_no_verdict: bool = False) -> list[dict]:
    """Read a label file. A paper eval set (rows with 'corrects') is read as its gold labels, in
    both orientations (see paper_gold_labels), so it can be given as --gold directly."""
    path = Path(path)
    text = _read_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        is_paper = isinstance(json.loads(first), dict) and "corrects" in json.loads(first)
    except json.JSONDecodeError:
        is_paper = False
    if is_paper:
        return paper_gold_labels(path, both_orientations=True)
    return parse_labels(text, source=str(path), allow_no_verdict=allow_no_verdict)


def write_labels(path: str | Path, rows: Iterable[dict]) -> int:
    """Write label rows as JSONL (validated first: a bad row writes nothing). Returns the count."""
    clean = [parse_label_row(r, f"row {i + 1}") for i, r in enumerate(rows)]
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean), encoding="utf-8")
    return len(clean)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise CaiError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CaiError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from exc


# -- the paper's multiple-choice eval sets ------------------------------------------------------
_HHH = re.compile(
    r"^\s*Consider the following conversation between a human and an assistant:\s*(?P<conv>.*?)\s*"
    r"(?P<question>Please choose the response[^\n]*?)\s*Options:\s*"
    r"\(A\) \[\[\[(?P<a>.*?)\]\]\]\s*\(B\) \[\[\[(?P<b>.*?)\]\]\]\s*The answer is:\s*$",
    re.S,
)
_CLASSIFY = re.compile(
    r"^\s*Here is a conversation between a human and an assistant:\s*(?P<conv>.*?)\s*\n\n"
    r"(?P<question>Choose the option[^\n]*)\n(?P<options>(?:\s*\([A-Z]\) [^\n]*\n)+)\s*The answer is:\s*$",
    re.S,
)
_OPTION = re.compile(r"\(([A-Z])\) ([^\n]*)")
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def _letter(values: Any, where: str, field: str) -> str:
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str) or not _LETTER.match(values[0]):
        raise CaiError(f"'{field}' must be a one-item list like [\" (A)\"], got {values!r}", where=where)
    return _LETTER.match(values[0]).group(1)


def _category_for(stem: str) -> str:
    low = stem.lower()
    if "hhh" in low:
        return "hhh"
    if "harmfulvsethical" in low.replace("_", "").replace("-", ""):
        return "harmful-vs-ethical"
    return re.sub(r"[^a-z0-9]+", "-", low).strip("-") or "paper-eval"


def load_paper_eval(path: str | Path, *, seed: int = PAPER_SEED, randomize: bool = True) -> list[dict]:
    """Parse a paper eval JSONL into two-sided comparisons with a gold label.

    Returns dicts: id (see paper_item_id), prompt (the conversation), response_a, response_b,
    gold_label ("A"/"B"), question (the judge's question: a classification set's own, None for a
    pairwise set, which is judged on the constitution), category, meta (set, line, paper_question -
    the file's wording, kept for reference only -, the paper's own correct letter, swapped). 438HHHEvaluations: the two candidate replies. HarmfulVsEthical: the conversation is
    the prompt and the two verdict options ("harmful or unethical" / "behaved ethically") are the
    sides. Sets with more than two options (HarmfulnessClassification) are refused.
    randomize: re-draw which side is A per item from (seed, set, line), so the result does not
    depend on other lines or on the file order.
    """
    path = Path(path)
    text = _read_text(path)
    stem = path.stem
    category = _category_for(stem)
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaiError(f"not valid JSON ({exc.msg} at column {exc.colno})", where=where) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise CaiError("expected an object with 'prompt', 'corrects' and 'incorrects'", where=where)
        if isinstance(obj.get("incorrects"), list) and len(obj["incorrects"]) > 1:
            raise CaiError(f"only two-option evals can become comparisons; this one has "
                           f"{len(obj['incorrects']) + 1} options", where=where)
        correct = _letter(obj.get("corrects"), where, "corrects")
        wrong = _letter(obj.get("incorrects"), where, "incorrects")
        if correct == wrong:
            raise CaiError(f"'corrects' and 'incorrects' are the same option ({correct})", where=where)
        m = _HHH.match(obj["prompt"])
        if m:
            prompt, question = m.group("conv").strip(), m.group("question").strip()
            options = {"A": m.group("a").strip(), "B": m.group("b").strip()}
            fmt = "pairwise"
        else:
            m = _CLASSIFY.match(obj["prompt"])
            if not m:
                raise CaiError("prompt is not in a known paper eval format (two [[[...]]] replies, "
                               "or a conversation followed by '(A) ...' options)", where=where)
            found = _OPTION.findall(m.group("options"))
            if len(found) != 2:
                raise CaiError(f"only two-option evals can become comparisons; this one has {len(found)} options",
                               where=where)
            prompt, question = m.group("conv").strip(), m.group("question").strip()
            options = {letter: text_.strip() for letter, text_ in found}
            fmt = "classification"
        if set(options) != {"A", "B"} or {correct, wrong} != {"A", "B"}:
            raise CaiError(f"options must be (A) and (B), got {sorted(options)} with answer {correct}", where=where)
        swap = randomize and random.Random(f"{seed}:{stem}:{lineno}").random() < 0.5
        a, b = (options["B"], options["A"]) if swap else (options["A"], options["B"])
        gold = {"A": "B", "B": "A"}[correct] if swap else correct
        items.append({
            "id": paper_item_id(stem, lineno, swap),
            "prompt": prompt,
            "response_a": a,
            "response_b": b,
            "gold_label": gold,
            "category": category,
            # a classification set asks its own question; a pairwise set is judged on the constitution
            "question": question if fmt == "classification" else None,
            "meta": {"set": stem, "line": lineno, "paper_question": question, "format": fmt,
                     "paper_correct": correct, "swapped": swap, "seed": seed if randomize else None},
        })
    if not items:
        raise CaiError("no items found", where=str(path))
    return items


def paper_item_id(stem: str, lineno: int, swapped: bool) -> str:
    """'<set>-<line>' in the file's own A/B order, '<set>-<line>-swapped' when the sides were
    exchanged: the id says which way round the judge saw the item, so a label can never be
    matched against the gold of the other orientation."""
    return f"{stem}-{lineno}" + ("-swapped" if swapped else "")


def paper_gold_labels(path: str | Path, *, seed: int = PAPER_SEED, randomize: bool = True,
                      both_orientations: bool = False) -> list[dict]:
    """The gold labels of a paper eval set in the interchange format (same ids as load_paper_eval).

    both_orientations: one row per item and orientation ('<set>-<line>' and '<set>-<line>-swapped'),
    so judge output over either the file's order or the randomized order matches.
    """
    rows = []
    for it in load_paper_eval(path, seed=seed, randomize=randomize):
        base = {"rater": f"paper:{it['meta']['set']}", "category": it["category"]}
        sides = [(it["meta"]["swapped"], it["gold_label"], it["response_a"], it["response_b"])]
        if both_orientations:
            other = {"A": "B", "B": "A"}[it["gold_label"]]
            sides.append((not it["meta"]["swapped"], other, it["response_b"], it["response_a"]))
        for swapped, label, a, b in sides:
            rows.append({**base, "id": paper_item_id(it["meta"]["set"], it["meta"]["line"], swapped), "label": label,
                         "len_a": word_count(a), "len_b": word_count(b)})
    return rows


def word_count(text: str | None) -> int:
    """Answer length for the length-bias statistics: whitespace-separated words."""
    return len((text or "").split())


def load_gold_pairs(path: str | Path, seed: int = PAPER_SEED, limit: int | None = None) -> tuple[str, list[dict]]:
    """A gold set file for eval-judge, validated, nothing written: ('paper', load_paper_eval items)
    or ('pairs', pairs-file items that all carry a gold_label)."""
    from .pairs import load_pairs_file

    p = Path(path)
    if not p.is_file():
        raise CaiError(f"gold set not found: {path}")
    first = next((ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()), "")
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
    from .pairs import add_pairs, comparison_key

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
    new_ids = iter(add_pairs(store, pairs, source=source, batch=set_name) if pairs else [])
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
        label = _HUMAN_LABEL_MAP.get(r["label"])
        if label is None:  # skip
            continue
        out.append({"id": str(cid), "label": label, "rater": annotator, "category": r["category"]})
    return out


def judge_keys(store: Store) -> list[dict]:
    """Judges with stored judgments: judge_key, model, style, number of judged comparisons."""
    return [dict(r) for r in store.query(
        "SELECT g.judge_key, MIN(g.judge_model) AS model, MIN(g.style) AS style, "
        "COUNT(DISTINCT g.comparison_id) AS comparisons, COUNT(*) AS judgments, "
        "SUM(g.parse_status != 'ok') AS invalid FROM judgments g GROUP BY g.judge_key ORDER BY MIN(g.created_at)")]


def judge_labels(store: Store, judge_key: str, comparison_ids: Iterable[int] | None = None) -> list[dict]:
    """A stored judge's verdicts as interchange rows, one per (comparison, principle).

    Verdicts come from the judges module (both orders combined there); each row carries p_a,
    p_a_ab, p_a_ba, the principle, the judge's reasoning and the answers' lengths. Judgments
    that could not be parsed give no row; their count is in `judge_keys`.
    """
    from .judges import stored_verdicts

    if comparison_ids is None:
        comparison_ids = [r[0] for r in store.query(
            "SELECT DISTINCT comparison_id FROM judgments WHERE judge_key=? ORDER BY comparison_id", (judge_key,))]
    ids = [int(i) for i in comparison_ids]
    verdicts = stored_verdicts(store, ids, [judge_key])
    meta = comparison_meta(store, [str(i) for i in verdicts])
    rows = []
    for cid, verdict in sorted(verdicts.items()):
        info = meta.get(str(cid), {})
        for m in verdict.members:
            if m.label is None:
                continue
            rows.append({
                "id": str(cid), "label": m.label, "p_a": m.p_a, "p_a_ab": m.p_a_ab, "p_a_ba": m.p_a_ba,
                "rater": judge_key, "judge_model": m.model, "principle": m.principle_id,
                "reasoning": m.reasoning_ab or m.reasoning_ba, "category": info.get("category"),
                "len_a": word_count(info.get("response_a")), "len_b": word_count(info.get("response_b")),
            })
    return rows


def with_lengths(store: Store, rows: list[dict]) -> list[dict]:
    """Add len_a / len_b (and category) from stored comparisons to rows whose id is a comparison id."""
    meta = comparison_meta(store, [r["id"] for r in rows])
    out = []
    for r in rows:
        info = meta.get(str(r["id"]))
        if info is None:
            out.append(r)
            continue
        out.append({**r, "len_a": r.get("len_a", word_count(info["response_a"])),
                    "len_b": r.get("len_b", word_count(info["response_b"])),
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
    from .reliability import reliability_report

    ids = sorted({int(g["id"]) for g in gold_rows if str(g["id"]).isdigit()})
    judge_rows = [r for key in judge_keys for r in judge_labels(store, key, ids)]
    report = reliability_report(judge_rows, with_lengths(store, gold_rows), n_boot=n_boot, seed=seed)
    return report
