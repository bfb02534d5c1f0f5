"""Human annotation, overrides, the annotation queue, and the preference-dataset export.

Human labels are append-only: two people annotating at once both land, nothing is updated in
place. A label may carry its client's id (comparison, annotator, client id: the Annotate page makes
one per shown item); the store refuses the same id twice (DuplicateLabel), so one key press
stores at most one label however often it reaches the server. A human label that differs from the AI verdict is flagged as an override (with who,
when and why). The resolved label of a comparison is its newest human label that is not a
skip, else its gold label (paper evals), else the AI verdict. Exports turn resolved labels
into a TRL conversational preference dataset (prompt/chosen/rejected) with a card.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

from cai_core.errors import CaiError
from cai_core.exports import export_exists, record_export
from cai_core.jsonl import write_jsonl
from cai_core.label_rule import TIE_MARGIN, confidence, export_exclusion, label_from_p
from cai_core.provenance import parse_splits
from cai_core.rlaif.judges import COMBINES, stored_verdicts
from cai_core.rlaif.pairs import comparison_filter
from cai_core.store import IntegrityError, Store, loads, now
from cai_core.workspace import safe_name

LABELS = ("A", "B", "tie", "skip", "both_bad")
# Why a comparison is left out of a preference export, in the card's words (left_out_by_origin).
LEFT_OUT_WORDS = {"tie": "tie", "both_bad": "both bad", "invalid": "no valid AI verdict",
                  "unjudged": "no label and no judgment",
                  "other_judges": "judged only by judges not used for AI labels",
                  "ai_flipped": "AI verdict flipped with the order", "ai_within_margin": "AI verdict within the tie margin",
                  "ai_low_confidence": "AI verdict below the minimum confidence"}
ORDERS = ("uncertain", "flips", "disagreement", "random", "newest", "oldest")
STATUSES = ("unlabelled", "labelled", "all", "invalid", "overrides")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):\s?", re.S)


# -- labels ------------------------------------------------------------------------------------
def ai_verdict(store: Store, comparison_id: int, judge_keys: list[str] | None = None, combine: str = "mean"):
    """The combined AI verdict of one comparison (None when it has no judgment)."""
    return stored_verdicts(store, [comparison_id], judge_keys, combine).get(comparison_id)


class DuplicateLabel(CaiError):
    """This client id already stored a label for this comparison and annotator (a repeated press)."""


def _check_annotator(annotator: str) -> str:
    annotator = (annotator or "").strip()
    if not annotator:
        raise CaiError("an annotator name is required")
    if len(annotator) > 64:
        raise CaiError("annotator name is longer than 64 characters")
    return annotator


def add_label(store: Store, comparison_id: int, label: str, annotator: str, *, reason: str | None = None,
              blind: bool = False, judge_keys: list[str] | None = None, combine: str = "mean",
              client_id: str | None = None) -> dict:
    """Append one human label. It is an override when the AI verdict exists and says otherwise.

    client_id: the client's id for this one answer; a second label with the same comparison,
    annotator and client_id is refused with DuplicateLabel (nothing is stored)."""
    if label not in LABELS:
        raise CaiError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    annotator = _check_annotator(annotator)
    if store.one("SELECT 1 FROM comparisons WHERE id=?", (comparison_id,)) is None:
        raise CaiError(f"no comparison {comparison_id}")
    verdict = ai_verdict(store, comparison_id, judge_keys, combine)
    ai_label = verdict.label if verdict else None
    is_override = label != "skip" and ai_label is not None and label != ai_label
    reason = (reason or "").strip() or None
    client_id = (client_id or "").strip() or None
    if client_id is not None and len(client_id) > 128:
        raise CaiError("client id is longer than 128 characters")
    try:
        with store.tx() as conn:
            cur = conn.execute(
                "INSERT INTO human_labels (comparison_id, annotator, label, reason, is_override, blind, client_id, "
                "created_at) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (comparison_id, annotator, label, reason, int(is_override), int(bool(blind)), client_id, now()),
            )
            label_id = int(cur.fetchall()[0][0])  # fetchall: the statement is finished before the commit
    except IntegrityError as exc:
        if client_id is None or "client_id" not in str(exc):
            raise
        raise DuplicateLabel(f"comparison {comparison_id} already has the label of client id {client_id!r} "
                             f"from {annotator}; a repeated answer is not stored twice") from exc
    return {"client_id": client_id, "id": label_id, "comparison_id": comparison_id, "label": label, "annotator": annotator,
            "reason": reason, "is_override": is_override, "ai_label": ai_label,
            "ai_p_a": verdict.p_a if verdict else None, "blind": bool(blind)}


def override_label(store: Store, comparison_id: int, label: str, annotator: str, reason: str, **kwargs) -> dict:
    """A deliberate override of the AI verdict: needs a verdict to override, a different label and a reason."""
    if not (reason or "").strip():
        raise CaiError("an override needs a reason")
    verdict = ai_verdict(store, comparison_id, kwargs.get("judge_keys"), kwargs.get("combine", "mean"))
    if verdict is None or verdict.label is None:
        raise CaiError(f"comparison {comparison_id} has no valid AI verdict to override")
    if label == verdict.label or label == "skip":
        raise CaiError(f"the AI verdict is already {verdict.label!r}; an override must choose another label")
    return add_label(store, comparison_id, label, annotator, reason=reason, **kwargs)


def label_history(store: Store, comparison_id: int) -> list[dict]:
    """Every human label of a comparison, oldest first (append-only history)."""
    return [dict(r) for r in store.query(
        "SELECT id, annotator, label, reason, is_override, blind, created_at FROM human_labels "
        "WHERE comparison_id=? ORDER BY id", (comparison_id,))]


def resolve(human_labels: list[dict], gold_label: str | None, ai_label: str | None) -> tuple[str | None, str]:
    """(label, source): newest non-skip human label, else gold, else AI; source human|gold|ai|none."""
    for row in sorted(human_labels, key=lambda r: r["id"], reverse=True):
        if row["label"] != "skip":
            return row["label"], "human"
    if gold_label:
        return gold_label, "gold"
    if ai_label:
        return ai_label, "ai"
    return None, "none"


def resolved_label(store: Store, comparison_id: int, judge_keys: list[str] | None = None,
                   combine: str = "mean") -> dict:
    row = store.one("SELECT gold_label FROM comparisons WHERE id=?", (comparison_id,))
    if row is None:
        raise CaiError(f"no comparison {comparison_id}")
    verdict = ai_verdict(store, comparison_id, judge_keys, combine)
    label, source = resolve(label_history(store, comparison_id), row["gold_label"], verdict.label if verdict else None)
    return {"label": label, "source": source, "ai_label": verdict.label if verdict else None,
            "ai_p_a": verdict.p_a if verdict else None}


# -- queue -------------------------------------------------------------------------------------
def _judge_filter(judge_keys: list[str] | None) -> tuple[str, list]:
    if not judge_keys:
        return "", []
    return f" WHERE judge_key IN ({','.join('?' * len(judge_keys))})", list(judge_keys)


def _verdict_cte(judge_keys: list[str] | None) -> tuple[str, list, str]:
    """SQL for per-comparison AI p (mean of members), flip and disagreement, matching judges.aggregate (mean)."""
    where, params = _judge_filter(judge_keys)
    # label_rule.label_from_p in SQL (the same margin), so the queue sorts by what the rule says
    sign = f"(CASE WHEN ABS({{x}}-0.5)<={TIE_MARGIN!r} THEN 0 WHEN {{x}}>0.5 THEN 1 ELSE -1 END)"
    cte = f"""
    WITH m AS (
        SELECT comparison_id, judge_key, principle_id,
               AVG(CASE WHEN order_shown='AB' AND parse_status='ok' THEN p_a END) AS pab,
               AVG(CASE WHEN order_shown='BA' AND parse_status='ok' THEN p_a END) AS pba,
               SUM(CASE WHEN parse_status!='ok' THEN 1 ELSE 0 END) AS invalid
        FROM judgments{where} GROUP BY comparison_id, judge_key, principle_id
    ), mp AS (
        SELECT *, CASE WHEN pab IS NULL THEN pba WHEN pba IS NULL THEN pab ELSE (pab+pba)/2 END AS p FROM m
    ), v AS (
        SELECT comparison_id, AVG(p) AS p, AVG(CASE WHEN p IS NOT NULL THEN pab END) AS pab,
               AVG(CASE WHEN p IS NOT NULL THEN pba END) AS pba, SUM(invalid) AS invalid,
               CASE WHEN COUNT(DISTINCT CASE WHEN p IS NOT NULL THEN {sign.format(x='p')} END) > 1 THEN 1 ELSE 0 END AS disagreement
        FROM mp GROUP BY comparison_id
    ), lab AS (
        SELECT h.comparison_id, h.label, h.annotator, h.is_override, h.created_at FROM human_labels h
        WHERE h.id = (SELECT MAX(id) FROM human_labels h2 WHERE h2.comparison_id = h.comparison_id)
    )"""
    flipped = f"(v.pab IS NOT NULL AND v.pba IS NOT NULL AND {sign.format(x='v.pab')} != {sign.format(x='v.pba')})"
    return cte, params, flipped


def queue(store: Store, *, order: str = "uncertain", status: str = "unlabelled", batch: str | None = None,
          source: str | None = None, judge_keys: list[str] | None = None, limit: int = 20, offset: int = 0,
          seed: int = 0) -> dict:
    """One page of the annotation queue: {"rows": [...], "total": N}. Fast on 10k+ comparisons.

    order: uncertain (P(A) nearest 0.5 first), flips (judge flips first), disagreement (ensemble
    disagreements first), random (seeded), newest, oldest. status: unlabelled | labelled | all |
    invalid (has an invalid judgment or no valid one) | overrides.
    """
    if order not in ORDERS:
        raise CaiError(f"unknown queue order {order!r}: use one of {', '.join(ORDERS)}")
    if status not in STATUSES:
        raise CaiError(f"unknown queue status {status!r}: use one of {', '.join(STATUSES)}")
    if limit < 1 or offset < 0:
        raise CaiError("limit must be >= 1 and offset >= 0")
    cte, params, flipped = _verdict_cte(judge_keys)
    cond, wparams = comparison_filter(alias="c", batch=batch, source=source)
    where = ["1=1" + cond]
    if status == "unlabelled":
        where.append("lab.label IS NULL")
    elif status == "labelled":
        where.append("lab.label IS NOT NULL")
    elif status == "invalid":
        where.append("(v.invalid > 0 OR (v.comparison_id IS NOT NULL AND v.p IS NULL))")
    elif status == "overrides":
        where.append("EXISTS (SELECT 1 FROM human_labels o WHERE o.comparison_id=c.id AND o.is_override=1)")
    uncertainty = "(CASE WHEN v.p IS NULL THEN 1 ELSE 0 END), ABS(v.p-0.5)"
    order_sql = {
        "uncertain": f"{uncertainty}, c.id",
        "flips": f"{flipped} DESC, {uncertainty}, c.id",
        "disagreement": f"COALESCE(v.disagreement, 0) DESC, {uncertainty}, c.id",
        "random": f"((c.id * 2654435761 + {int(seed) * 40503 + 1}) % 4294967291), c.id",
        "newest": "c.id DESC",
        "oldest": "c.id",
    }[order]
    base = f"FROM comparisons c LEFT JOIN v ON v.comparison_id=c.id LEFT JOIN lab ON lab.comparison_id=c.id WHERE {' AND '.join(where)}"
    # One pass over the verdicts: the page's narrow rows and the total (a window count), then the texts
    # of just this page's comparisons. Only past the end (no row to carry the count) is it counted alone.
    picked = store.query(
        f"{cte} SELECT c.id, v.p AS ai_p_a, v.pab AS ai_p_a_ab, v.pba AS ai_p_a_ba, COALESCE(v.invalid, 0) AS invalid, "
        f"COALESCE(v.disagreement, 0) AS disagreement, {flipped} AS flipped, lab.label AS human_label, "
        f"lab.annotator AS human_annotator, lab.is_override AS human_is_override, COUNT(*) OVER () AS total_rows "
        f"{base} ORDER BY {order_sql} LIMIT ? OFFSET ?",
        params + wparams + [int(limit), int(offset)],
    )
    if picked:
        total = picked[0]["total_rows"]
    else:
        total = 0 if offset == 0 else store.scalar(f"{cte} SELECT COUNT(*) {base}", params + wparams)
    texts = {}
    if picked:
        ids = [r["id"] for r in picked]
        texts = {r["id"]: dict(r) for r in store.query(
            "SELECT id, batch, source, origin, split, prompt, response_a, response_b, category, gold_label, meta_json "
            f"FROM comparisons WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))}
    rows = []
    for r in picked:
        d = dict(r)
        d.pop("total_rows")
        rows.append({**texts[d["id"]], **d})
    out = []
    for r in rows:
        d = dict(r)
        d["meta"] = loads(d.pop("meta_json"), {}) or {}
        d["ai_label"] = label_from_p(d["ai_p_a"])
        d["flipped"] = bool(d["flipped"])
        d["disagreement"] = bool(d["disagreement"])
        out.append(d)
    return {"rows": out, "total": int(total or 0)}


def stats(store: Store, *, batch: str | None = None, source: str | None = None) -> dict:
    """Counts for the page header: comparisons, judged, invalid bucket, human labels, overrides."""
    where, params = comparison_filter(alias="c", batch=batch, source=source)
    cond = "1=1" + where
    one = lambda sql: int(store.scalar(sql, params) or 0)  # noqa: E731
    return {
        "comparisons": one(f"SELECT COUNT(*) FROM comparisons c WHERE {cond}"),
        "judged": one(f"SELECT COUNT(DISTINCT j.comparison_id) FROM judgments j JOIN comparisons c ON c.id=j.comparison_id WHERE {cond}"),
        "judgments": one(f"SELECT COUNT(*) FROM judgments j JOIN comparisons c ON c.id=j.comparison_id WHERE {cond}"),
        "invalid_judgments": one(f"SELECT COUNT(*) FROM judgments j JOIN comparisons c ON c.id=j.comparison_id WHERE {cond} AND j.parse_status!='ok'"),
        "human_labelled": one(f"SELECT COUNT(DISTINCT h.comparison_id) FROM human_labels h JOIN comparisons c ON c.id=h.comparison_id WHERE {cond}"),
        "human_labels": one(f"SELECT COUNT(*) FROM human_labels h JOIN comparisons c ON c.id=h.comparison_id WHERE {cond}"),
        "overrides": one(f"SELECT COUNT(*) FROM human_labels h JOIN comparisons c ON c.id=h.comparison_id WHERE {cond} AND h.is_override=1"),
    }


# -- export ------------------------------------------------------------------------------------
def prompt_messages(prompt: str) -> list[dict]:
    """A prompt as chat messages: a 'Human: ... Assistant: ...' transcript becomes turns, else one user turn."""
    text = prompt.strip()
    if not text.startswith("Human:"):
        return [{"role": "user", "content": text}]
    parts = _TURN.split(text)
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if not msgs or msgs[-1]["role"] != "user":
        return [{"role": "user", "content": text}]
    return msgs


def _atomic_dir(target: Path) -> Path:
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


ALL_JUDGES = "all"  # --judges all: every judge combined (the export's default before issue 22)


def judge_completeness(store: Store, comps: list) -> list[dict]:
    """Every judge with judgments on these comparisons (rows with id and batch), newest first:
    {judge_key, newest (time of its newest judgment), comparisons (judged), expected (comparisons of
    the batches it judged), complete, why (None when complete)}.

    A judge is complete when it judged every comparison of each batch it touched, each as often as
    the others (every order and principle), and the newest job that wrote its judgments finished
    (not stopped, failed or still running)."""
    batch_of = {int(c["id"]): c["batch"] for c in comps}
    per: dict[str, dict] = {}
    ids = list(batch_of)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for r in store.query(
                "SELECT judge_key, comparison_id, COUNT(*) AS n, MAX(job_id) AS job, MAX(created_at) AS newest "
                f"FROM judgments WHERE comparison_id IN ({','.join('?' * len(chunk))}) "
                "GROUP BY judge_key, comparison_id", chunk):
            d = per.setdefault(r["judge_key"], {"counts": {}, "jobs": set(), "newest": 0.0})
            d["counts"][int(r["comparison_id"])] = int(r["n"])
            if r["job"] is not None:
                d["jobs"].add(int(r["job"]))
            d["newest"] = max(d["newest"], float(r["newest"] or 0.0))
    job_ids = sorted({j for d in per.values() for j in d["jobs"]})
    status = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start:start + 500]
        status.update({int(r["id"]): r["status"] for r in store.query(
            f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)})
    out = []
    for key, d in per.items():
        counts = d["counts"]
        batches = {batch_of[cid] for cid in counts}
        expected = sum(1 for b in batch_of.values() if b in batches)
        why = None
        last_job = max(d["jobs"]) if d["jobs"] else None
        if last_job is not None and status.get(last_job, "finished") != "finished":
            why = f"its job {last_job} is {status[last_job]}"
        elif len(counts) < expected:
            why = f"judged {len(counts)} of the {expected} comparisons of its batch(es)"
        elif min(counts.values()) < max(counts.values()):
            short = sum(1 for n in counts.values() if n < max(counts.values()))
            why = f"{short} comparison(s) lack some of its judgments (orders or principles)"
        out.append({"judge_key": key, "newest": d["newest"], "comparisons": len(counts), "expected": expected,
                    "job": last_job, "complete": why is None, "why": why})
    out.sort(key=lambda j: (-j["newest"], j["judge_key"]))
    return out


def default_judge(store: Store, comps: list) -> tuple[str | None, list[dict]]:
    """The AI label source when none is picked: the newest complete judge (judge_completeness) of
    these comparisons, never a partial or stopped job's; (None, ...) when there is none."""
    judges = judge_completeness(store, comps)
    return next((j["judge_key"] for j in judges if j["complete"]), None), judges


def export_judges(store: Store, *, batch: str | None = None, source: str | None = None,
                  include_splits: str | list[str] | tuple | None = None) -> dict:
    """What an export with these filters would take its AI labels from when no judge is picked:
    {"default": judge key or None, "judges": judge_completeness rows} (the export form shows it)."""
    where, params = comparison_filter(batch=batch, source=source, splits=parse_splits(include_splits))
    comps = store.query(f"SELECT id, batch FROM comparisons WHERE 1=1{where}", params)
    chosen, judges = default_judge(store, comps)
    return {"default": chosen, "judges": judges}


def _origin_kind(origin: str | None) -> str:
    return (origin or "unknown").split(":", 1)[0]


def export_preferences(
    store: Store,
    name: str,
    *,
    batch: str | None = None,
    source: str | None = None,
    judge_keys: list[str] | None = None,
    combine: str = "mean",
    soft_labels: bool = False,
    margin: bool = False,
    include_splits: str | list[str] | tuple | None = None,
    keep_flipped: bool = False,
    min_confidence: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Write workspace/exports/NAME/ (data.jsonl, hf/, lineage.jsonl, card.json, README.md); returns the card.

    Rows are TRL conversational preference rows: prompt (user turns), chosen and rejected
    (one assistant turn each). soft_labels adds p_chosen (the probability that chosen is better:
    1.0 for human and gold labels, the AI P for AI labels); margin adds 2*p_chosen-1 (TRL
    RewardTrainer's optional margin).

    Only train-split comparisons are read unless include_splits adds eval and/or gold (held-out
    data never reaches a training set by default). AI verdicts that flipped with the order, sit
    within the tie margin, or (with min_confidence) are less sure than max(P, 1-P) >= min_confidence
    are left out (label_rule.export_exclusion); keep_flipped keeps flipped ones by their mean P(A).
    Ties, both_bad and comparisons without a valid label are left out too; the card counts rows by
    origin and split, and everything left out and why, by origin kind (left_out_by_origin).

    AI labels come from ONE judge by default: the newest complete one (default_judge: never a
    judge whose newest job stopped, failed or runs, nor one that judged only part of its batches);
    judge_keys picks judges (any, partial ones included); ["all"] combines every judge.
    """

    safe_name(name, "export name")
    if combine not in COMBINES:
        raise CaiError(f"unknown combine {combine!r}: use mean or vote")
    splits = parse_splits(include_splits)
    if min_confidence is not None and not 0.5 <= float(min_confidence) <= 1.0:
        raise CaiError(f"--min-confidence must be between 0.5 and 1 (max(P, 1-P) of the AI verdict), not {min_confidence}")
    target = store.workspace.child_path("exports", name)
    if (export_exists(store, name) or target.exists()) and not overwrite:
        raise CaiError(f"export {name!r} already exists; choose another name or overwrite")
    where, params = comparison_filter(batch=batch, source=source)
    matching = store.query(f"SELECT split, origin, COUNT(*) AS n FROM comparisons WHERE 1=1{where} GROUP BY split, origin",
                           params)
    excluded_split: Counter = Counter()
    left_out: dict[str, Counter] = {}  # origin kind -> reason -> comparisons
    for r in matching:
        if r["split"] not in splits:
            excluded_split[r["split"] or "none"] += int(r["n"])
            left_out.setdefault(_origin_kind(r["origin"]), Counter())[f"held-out split {r['split'] or 'none'}"] += int(r["n"])
    excluded_split = dict(excluded_split)
    where, params = comparison_filter(batch=batch, source=source, splits=splits)
    comps = store.query("SELECT id, prompt, response_a, response_b, gold_label, source, origin, split, batch "
                        f"FROM comparisons WHERE 1=1{where} ORDER BY id", params)
    if not comps:
        held = f"; left out as held-out splits: {excluded_split} (add --include-split eval,gold to include them)" \
            if excluded_split else ""
        raise CaiError(f"no comparisons match (check the batch / source filter){held}")
    ids = [c["id"] for c in comps]
    picked = bool(judge_keys)
    judges_seen = judge_completeness(store, comps)
    if judge_keys and list(judge_keys) == [ALL_JUDGES]:
        judge_keys = [j["judge_key"] for j in judges_seen]
    elif judge_keys:
        known = {j["judge_key"] for j in judges_seen}
        unknown = [k for k in judge_keys if k not in known]
        if unknown:
            raise CaiError(f"judge(s) {', '.join(map(repr, unknown))} judged none of these comparisons; judges that "
                           f"did: {', '.join(sorted(known)) or 'none'}")
    else:
        chosen = next((j["judge_key"] for j in judges_seen if j["complete"]), None)
        judge_keys = [chosen] if chosen else []
    judged_by_any = set()
    if judges_seen:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            judged_by_any.update(int(r[0]) for r in store.query(
                f"SELECT DISTINCT comparison_id FROM judgments WHERE comparison_id IN ({','.join('?' * len(chunk))})", chunk))
    verdicts = stored_verdicts(store, ids, judge_keys, combine) if judge_keys else {}
    labels: dict[int, list[dict]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for r in store.query(f"SELECT id, comparison_id, annotator, label, reason, is_override, created_at FROM human_labels "
                             f"WHERE comparison_id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk):
            labels.setdefault(r["comparison_id"], []).append(dict(r))
    rows, lineage, prompts = [], [], []
    counts: Counter = Counter()
    by_origin: Counter = Counter()
    by_split: Counter = Counter()
    for i, c in enumerate(comps):
        v = verdicts.get(c["id"])
        ai_label = v.label if v else None
        history = labels.get(c["id"], [])
        label, src = resolve(history, c["gold_label"], ai_label)
        counts[f"source_{src}"] += 1
        why = None
        if src == "ai":
            reason = export_exclusion(label, v.p_a, v.flipped, keep_flipped=keep_flipped,
                                      min_confidence=min_confidence)
            if reason is not None:
                why = f"ai_{reason}"
        if why is None and label in ("tie", "both_bad"):
            why = label
        if why is None and label is None:
            why = ("invalid" if v is not None and v.invalid else
                   "other_judges" if c["id"] in judged_by_any else "unjudged")
        if why is not None:
            counts[f"excluded_{why}"] += 1
            left_out.setdefault(_origin_kind(c["origin"]), Counter())[LEFT_OUT_WORDS[why]] += 1
            continue
        newest = next((h for h in reversed(history) if h["label"] != "skip"), None)
        is_override = bool(src == "human" and ai_label is not None and label != ai_label)
        counts["overrides"] += int(is_override)
        chosen, rejected = (c["response_a"], c["response_b"]) if label == "A" else (c["response_b"], c["response_a"])
        p_chosen = 1.0 if src in ("human", "gold") else (v.p_a if label == "A" else 1.0 - v.p_a)
        row = {"prompt": prompt_messages(c["prompt"]),
               "chosen": [{"role": "assistant", "content": chosen}],
               "rejected": [{"role": "assistant", "content": rejected}]}
        if soft_labels:
            row["p_chosen"] = float(p_chosen)
        if margin:
            row["margin"] = float(2 * p_chosen - 1)
        rows.append(row)
        prompts.append(c["prompt"])
        by_origin[c["origin"] or "unknown"] += 1
        by_split[c["split"] or "unknown"] += 1
        lineage.append({"row": len(rows) - 1, "comparison_id": c["id"], "batch": c["batch"], "source": c["source"],
                        "origin": c["origin"], "split": c["split"],
                        "label": label, "label_source": src, "is_override": is_override,
                        "annotator": newest["annotator"] if src == "human" else None,
                        "override_reason": newest["reason"] if is_override else None,
                        "ai_label": ai_label, "ai_p_a": v.p_a if v else None,
                        "ai_confidence": confidence(v.p_a) if v else None,
                        "ai_flipped": v.flipped if v else None})
        if progress and i % 200 == 0:
            progress(i, len(comps), f"resolved {i}/{len(comps)}")
    if not rows:
        no_judge = ("" if picked or judge_keys else
                    "; no complete judge (" + "; ".join(f"{j['judge_key']}: {j['why']}" for j in judges_seen) +
                    "): pick one with --judges to use its verdicts" if judges_seen else "")
        raise CaiError(f"nothing to export: of {len(comps)} comparisons none has a usable A/B label "
                       f"({dict(counts)}; flipped or low-confidence AI verdicts are left out unless "
                       f"--keep-flipped / a lower --min-confidence){no_judge}")
    used_keys = sorted({m.judge_key for v in verdicts.values() for m in v.members})
    judges = [dict(r) for r in store.query(
        f"SELECT judge_key, model, style, constitution_name, constitution_version FROM judges "
        f"WHERE judge_key IN ({','.join('?' * len(used_keys))})", used_keys)] if used_keys else []
    card = {
        "name": name, "kind": "preference", "format": "trl-conversational-preference",
        "columns": list(rows[0].keys()), "created_at": now(),
        "ai_labels": {
            "judge_keys": list(judge_keys), "picked": picked,
            "how": ("picked" if picked else "the newest complete judge" if judge_keys else
                    "none: no complete judge (pick one to use a partial judge's verdicts)"),
            "passed_over": [{"judge_key": j["judge_key"], "why": j["why"] or "not the newest complete judge"}
                            for j in judges_seen if j["judge_key"] not in judge_keys],
        },
        "left_out_by_origin": {kind: dict(sorted(c.items())) for kind, c in sorted(left_out.items())},
        "filters": {"batch": batch, "source": source, "judge_keys": judge_keys, "combine": combine,
                    "include_splits": list(splits), "keep_flipped": bool(keep_flipped),
                    "min_confidence": min_confidence},
        "splits": list(splits),
        "constitution_versions": sorted({j["constitution_version"] for j in judges if j["constitution_version"]}),
        "judges": judges,
        "rows_by_origin": dict(sorted(by_origin.items())),
        "rows_by_split": dict(sorted(by_split.items())),
        "counts": {
            "comparisons": len(comps), "exported": len(rows),
            "from_human": sum(1 for r in lineage if r["label_source"] == "human"),
            "from_gold": sum(1 for r in lineage if r["label_source"] == "gold"),
            "from_ai": sum(1 for r in lineage if r["label_source"] == "ai"),
            "human_overrides": counts["overrides"],
            "excluded_tie": counts["excluded_tie"], "excluded_both_bad": counts["excluded_both_bad"],
            "excluded_invalid": counts["excluded_invalid"], "excluded_unjudged": counts["excluded_unjudged"],
            "excluded_other_judges": counts["excluded_other_judges"],
            "excluded_ai_flipped": counts["excluded_ai_flipped"],
            "excluded_ai_within_margin": counts["excluded_ai_within_margin"],
            "excluded_ai_low_confidence": counts["excluded_ai_low_confidence"],
            "excluded_split": sum(excluded_split.values()),
        },
        "excluded_by_split": dict(sorted(excluded_split.items())),
        "share_human_overrides": counts["overrides"] / len(rows),
        "resolution": "newest non-skip human label, else gold label, else AI verdict (label_rule: flipped or "
                      "within-margin AI verdicts left out" + (", flipped kept" if keep_flipped else "") +
                      (f", AI confidence below {min_confidence} left out" if min_confidence is not None else "") + ")",
    }
    from datasets import Dataset

    tmp = _atomic_dir(target)
    write_jsonl(tmp / "data.jsonl", rows)
    write_jsonl(tmp / "lineage.jsonl", lineage)
    Dataset.from_list(rows).save_to_disk(str(tmp / "hf"))
    (tmp / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))
    (tmp / "README.md").write_text(_readme(card))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    with store.tx() as conn:
        record_export(conn, name, "preference", store.workspace.store_path(target), card, prompts=prompts)
    card["path"] = str(target)
    return card


def _readme(card: dict) -> str:
    c = card["counts"]
    judges = "\n".join(f"- `{j['judge_key']}` ({j['model']}, style {j['style']}, constitution "
                       f"{j['constitution_name']} @ {j['constitution_version']})" for j in card["judges"]) or "- none"
    return (
        f"# Preference dataset `{card['name']}`\n\n"
        f"TRL conversational preference format (prompt / chosen / rejected); columns: {', '.join(card['columns'])}.\n"
        f"Load with `datasets.load_from_disk('hf')` or read `data.jsonl`; `lineage.jsonl` links each row to its "
        f"comparison, label source and override.\n\n"
        f"- constitution version(s): {', '.join(card['constitution_versions']) or 'none'}\n"
        f"- rows: {c['exported']} of {c['comparisons']} comparisons (human {c['from_human']}, gold {c['from_gold']}, "
        f"AI {c['from_ai']})\n"
        f"- human overrides: {c['human_overrides']} ({card['share_human_overrides']:.1%} of rows)\n"
        f"- splits read: {', '.join(card.get('splits', ['train']))}; rows by split: "
        f"{json.dumps(card.get('rows_by_split', {}))}; rows by origin: {json.dumps(card.get('rows_by_origin', {}))}\n"
        f"- excluded: tie {c['excluded_tie']}, both bad {c['excluded_both_bad']}, invalid {c['excluded_invalid']}, "
        f"unjudged {c['excluded_unjudged']}; AI verdicts flipped with the order {c.get('excluded_ai_flipped', 0)}, "
        f"within the tie margin {c.get('excluded_ai_within_margin', 0)}, below the minimum confidence "
        f"{c.get('excluded_ai_low_confidence', 0)}; held-out splits {json.dumps(card.get('excluded_by_split', {}))}\n"
        f"- left out by origin: {json.dumps(card.get('left_out_by_origin', {}))}\n"
        f"- AI labels: {card.get('ai_labels', {}).get('how', '-')}\n"
        f"- label resolution: {card['resolution']}\n\n## Judges\n\n{judges}\n"
    )
