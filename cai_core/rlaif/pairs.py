"""Response pairs (comparisons): the one writer of `comparisons`, and the one filter over them.

Every comparison is stored here (`add_pairs`), whoever makes it: pair sampling, file imports, gold
sets, evaluations and A/B experiments. Each records its origin (sampled | imported | gold:<set> |
evaluation:<name> | experiment:<name>) and a split (train | eval | gold; from the origin unless
given), so held-out data never reaches a training export by default. A comparison's key is a
content hash of origin + prompt + both responses (+ the caller's key parts, e.g. an evaluation's
axis and policy names), so importing or sampling twice stores nothing twice.

Sampling draws k responses per prompt from any model spec (the base model or an SFT run's
folder) and pairs them. Imports read JSONL rows {"id","prompt","response_a","response_b"},
{"prompt","chosen","rejected"} (strings or TRL conversational lists), and the CAI paper's
multiple-choice evals (438HHHEvaluations.jsonl, HarmfulVsEthical.jsonl), keeping the gold
label where the file says which answer is right.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Callable, Iterable

from cai_core.errors import CaiError
from cai_core.jsonl import jsonl_rows
from cai_core.models.backends.base import Backend, GenerationParams
from cai_core.models.dispatch import Request, run_chains
from cai_core.models.specs import recorded_model
from cai_core.provenance import check_origin, check_split, split_of
from cai_core.reliability.paper_evals import load_paper_eval
from cai_core.store import Store, dumps, loads, now
from cai_core.data.uploads import read_user_file
from cai_core.workspace import safe_name

Progress = Callable[[int, int, str], None]

def comparison_filter(*, alias: str = "", batch: str | None = None, source: str | None = None,
                      ids: Iterable[int] | None = None, splits: Iterable[str] | None = None) -> tuple[str, list]:
    """The one SQL filter over comparisons: ' AND ...' clauses and their parameters.

    source matches the origin (sampled, imported, gold:<set>, evaluation:<name>, experiment:<name>);
    splits (None = any) keeps only those splits."""
    col = f"{alias}." if alias else ""
    sql, params = "", []
    if batch:
        sql += f" AND {col}batch=?"
        params.append(batch)
    if source:
        sql += f" AND {col}origin=?"
        params.append(source)
    if ids is not None:
        ids = [int(i) for i in ids]
        sql += f" AND {col}id IN ({','.join('?' * len(ids)) or 'NULL'})"
        params += ids
    if splits is not None:
        splits = list(splits)
        sql += f" AND {col}split IN ({','.join('?' * len(splits)) or 'NULL'})"
        params += splits
    return sql, params


def comparison_key(prompt: str, response_a: str, response_b: str, source: str = "", key_parts: list | None = None) -> str:
    """Content key: origin + prompt + both responses (+ the caller's key parts, when the same texts
    may be compared twice for different reasons, e.g. an evaluation's axis and policy pair)."""
    blob = json.dumps([source, prompt, response_a, response_b] + list(key_parts or []), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


# -- parsing files -----------------------------------------------------------------------------
def _text_of(value, where: str, field: str) -> str:
    """A response given as a string or as TRL conversational messages (the assistant turns)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        turns = [m for m in value if m.get("role", "assistant") == "assistant"] or value
        return "\n\n".join(str(m["content"]) for m in turns)
    raise CaiError(f"'{field}' must be a string or a list of {{role, content}} messages", where=where)


def _prompt_of(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        if len(value) == 1 and value[0].get("role", "user") == "user":
            return str(value[0]["content"])
        names = {"user": "Human", "assistant": "Assistant", "system": "System"}
        return "\n\n".join(f"{names.get(m.get('role', 'user'), 'Human')}: {m['content']}" for m in value)
    raise CaiError("'prompt' must be a string or a list of {role, content} messages", where=where)


def parse_pair_row(row: dict, where: str, default_id: str, seed: int = 0) -> dict:
    """One file row -> {id, prompt, response_a, response_b, gold_label, question, category, meta, source_format}."""
    if not isinstance(row, dict):
        raise CaiError("each line must be a JSON object", where=where)
    pid = str(row.get("id", default_id))
    category = row.get("category")
    category = None if category is None else str(category)
    if "response_a" in row or "response_b" in row:
        for f in ("prompt", "response_a", "response_b"):
            if f not in row:
                raise CaiError(f"missing '{f}'", where=where)
        gold = row.get("gold_label") or row.get("label")
        if gold is not None and gold not in ("A", "B", "tie"):
            raise CaiError(f"label must be A, B or tie, not {gold!r}", where=where)
        out = {"prompt": _prompt_of(row["prompt"], where), "response_a": _text_of(row["response_a"], where, "response_a"),
               "response_b": _text_of(row["response_b"], where, "response_b"), "gold_label": gold,
               "source_format": "pair"}
    elif "chosen" in row or "rejected" in row:
        for f in ("prompt", "chosen", "rejected"):
            if f not in row:
                raise CaiError(f"missing '{f}'", where=where)
        prompt = _prompt_of(row["prompt"], where)
        chosen = _text_of(row["chosen"], where, "chosen")
        rejected = _text_of(row["rejected"], where, "rejected")
        # which side is A follows a seeded hash of the content, so gold is not always A
        flip = random.Random(f"{seed}:{comparison_key(prompt, chosen, rejected)}").random() < 0.5
        a, b = (rejected, chosen) if flip else (chosen, rejected)
        out = {"prompt": prompt, "response_a": a, "response_b": b, "gold_label": "B" if flip else "A",
               "source_format": "chosen_rejected"}
    else:
        raise CaiError("unknown row format: expected id/prompt/response_a/response_b, prompt/chosen/rejected, "
                       "or the paper's prompt/corrects/incorrects (whole file)", where=where)
    if not out["prompt"].strip():
        raise CaiError("empty prompt", where=where)
    if not out["response_a"].strip() or not out["response_b"].strip():
        raise CaiError("empty response", where=where)
    out.update(id=pid, category=category)
    out.setdefault("meta", {})
    out.setdefault("question", None)
    return out


def load_pairs_file(path: str | Path, seed: int = 0) -> list[dict]:
    """Read a pairs file (.jsonl, or .json holding a list); bad rows raise CaiError with file:line."""
    path = Path(path)
    text = read_user_file(path)
    rows: list[tuple[int, object]] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CaiError(f"malformed JSON: {exc.msg}", where=f"{path}:{exc.lineno}") from exc
        rows = [(i + 1, r) for i, r in enumerate(data)]
    else:
        rows = [(lineno, row) for lineno, _, row in jsonl_rows(text, str(path), "malformed JSON: {msg} (column {col})")]
    if not rows:
        raise CaiError("no pairs found (the file is empty)", where=str(path))
    if isinstance(rows[0][1], dict) and "corrects" in rows[0][1]:
        # The paper's multiple-choice evals: one parser for pairs and gold sets (side A drawn per item).
        return [{**item, "source_format": f"paper_{item['meta']['format']}"} for item in load_paper_eval(path)]
    pairs, seen = [], set()
    for lineno, row in rows:
        pair = parse_pair_row(row, f"{path}:{lineno}", default_id=f"{path.stem}-{lineno}", seed=seed)
        if pair["id"] in seen:
            raise CaiError(f"duplicate id {pair['id']!r}", where=f"{path}:{lineno}")
        seen.add(pair["id"])
        pairs.append(pair)
    return pairs


# -- store -------------------------------------------------------------------------------------
def add_pairs(store: Store, pairs: list[dict], *, origin: str, batch: str | None = None,
              split: str | None = None) -> list[int]:
    """Store pairs (idempotent by content key); sets and returns each pair's comparison_id.

    origin: sampled | imported | gold:<set> | evaluation:<name> | experiment:<name>; split: train |
    eval | gold (default from the origin). A pair may carry "key_parts" (see comparison_key)."""
    check_origin(origin)
    split = check_split(split or split_of(origin))
    ids = []
    with store.tx() as conn:
        for pair in pairs:
            key = comparison_key(pair["prompt"], pair["response_a"], pair["response_b"], origin, pair.get("key_parts"))
            meta = dict(pair.get("meta") or {})
            meta.setdefault("external_id", pair.get("id"))
            if pair.get("question"):
                meta["question"] = pair["question"]
            conn.execute(
                "INSERT INTO comparisons (key, source, origin, split, batch, prompt, response_a, response_b, "
                "category, gold_label, policy_a, policy_b, meta_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                (key, origin, origin, split, batch, pair["prompt"], pair["response_a"], pair["response_b"],
                 pair.get("category"), pair.get("gold_label"), pair.get("policy_a"), pair.get("policy_b"),
                 dumps(meta), now()),
            )
            cid = int(conn.execute("SELECT id FROM comparisons WHERE key=?", (key,)).fetchone()[0])
            pair["comparison_id"] = cid
            pair["key"] = key  # the judges draw a pair's random principle from this stable key
            ids.append(cid)
    return ids


def file_origin(path: str | Path, pairs: list[dict]) -> str:
    """A pairs file's origin: the paper's evals are gold sets (gold:<file stem>), others "imported"."""
    paper = all(p["source_format"].startswith("paper") for p in pairs)
    return f"gold:{Path(path).stem}" if paper else "imported"


def import_pairs_file(store: Store, path: str | Path, *, batch: str | None = None, seed: int = 0,
                      split: str | None = None) -> dict:
    """Import a pairs file: paper evals become origin gold:<file stem> (split gold), others "imported"
    (split train unless given)."""
    path = Path(path)
    pairs = load_pairs_file(path, seed=seed)
    source = file_origin(path, pairs)
    batch = batch or path.stem
    before = store.scalar("SELECT COUNT(*) FROM comparisons")
    ids = add_pairs(store, pairs, origin=source, batch=batch, split=split)
    added = store.scalar("SELECT COUNT(*) FROM comparisons") - before
    return {"file": str(path), "source": source, "split": split or split_of(source), "batch": batch,
            "pairs": len(ids), "added": added,
            "with_gold": sum(1 for p in pairs if p.get("gold_label")), "comparison_ids": ids}


def comparison_pair(row) -> dict:
    """A stored comparison as a judge's pair dict (id = comparison id). A pair's own question (meta
    "question") replaces the constitution; a pairwise paper eval has none, even where a workspace
    imported before that was fixed stored the file's wording under that key."""
    meta = loads(row["meta_json"], {}) or {}
    question = None if meta.get("format") == "pairwise" else meta.get("question")
    return {"id": str(row["id"]), "comparison_id": row["id"], "key": row["key"], "prompt": row["prompt"],
            "response_a": row["response_a"], "response_b": row["response_b"], "question": question}


def get_comparison(store: Store, comparison_id: int) -> dict:
    row = store.one("SELECT * FROM comparisons WHERE id=?", (comparison_id,))
    if row is None:
        raise CaiError(f"no comparison {comparison_id}")
    out = dict(row)
    out["meta"] = loads(row["meta_json"], {}) or {}
    return out


def comparisons_for(store: Store, *, batch: str | None = None, source: str | None = None,
                    ids: list[int] | None = None, splits: Iterable[str] | None = None) -> list[dict]:
    """Judge-ready pairs for a batch, an origin, a split or explicit comparison ids."""
    where, params = comparison_filter(batch=batch, source=source, ids=ids or None, splits=splits)
    return [comparison_pair(r) for r in store.query(f"SELECT * FROM comparisons WHERE 1=1{where} ORDER BY id", params)]


def list_batches(store: Store) -> list[dict]:
    """Batches of comparisons with their origin and split, newest first."""
    return [dict(r) for r in store.query(
        "SELECT batch, origin AS source, origin, split, COUNT(*) AS comparisons, MAX(created_at) AS updated "
        "FROM comparisons GROUP BY batch, origin, split ORDER BY updated DESC")]


# -- sampling ----------------------------------------------------------------------------------
def _sample_key(prompt: str, model: str, k: int, params: GenerationParams) -> str:
    blob = json.dumps([prompt, model, k, params.temperature, params.top_p, params.max_new_tokens, params.seed]).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def sample_pairs(
    store: Store,
    backend: Backend,
    model: str,
    prompts: list[dict],
    *,
    batch: str,
    k: int = 2,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int | None = None,
) -> dict:
    """Sample k responses per prompt and store every pair of distinct responses (source "sampled").

    A prompt whose sample key (prompt, model, k, params) is already in the batch is skipped, so
    a killed run resumes where it stopped (a prompt whose samples were all identical is redone,
    deterministically, since nothing was stored for it).
    """

    safe_name(batch, "batch name")
    if k < 2:
        raise CaiError("k must be at least 2 to form a pair")
    if temperature <= 0:
        raise CaiError("sampling pairs needs temperature > 0 (greedy decoding gives k identical answers)")
    if not prompts:
        raise CaiError("no prompts to sample from")
    model = recorded_model(model, backend)  # "default [int8]" for int8 text: its own sample keys and policy label
    done_keys = {(loads(r["meta_json"], {}) or {}).get("sample_key")
                 for r in store.query("SELECT meta_json FROM comparisons WHERE batch=? AND origin='sampled'", (batch,))}
    made, identical, skipped, failed, finished = 0, 0, 0, 0, 0
    errors: list[str] = []

    def plan(i: int, prompt: dict):
        # a per-prompt seed keeps a resumed run identical to an uninterrupted one, and makes each
        # prompt's samples independent of what else is in flight
        pseed = (seed * 1_000_003 + int(hashlib.sha256(prompt["text"].encode()).hexdigest()[:8], 16)) % (2**31)
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=pseed, n=k)
        skey = _sample_key(prompt["text"], model, k, params)
        if skey in done_keys:
            return "skipped"
        outs = yield Request("generate", [{"role": "user", "content": prompt["text"]}], params)
        texts = [o.text for o in outs]
        pairs, same = [], 0
        for a, b in itertools.combinations(range(len(texts)), 2):
            if texts[a].strip() == texts[b].strip() or not texts[a].strip() or not texts[b].strip():
                same += 1
                continue
            pairs.append({"id": f"{i}-{a}-{b}", "prompt": prompt["text"], "response_a": texts[a],
                          "response_b": texts[b], "category": prompt.get("category"),
                          "policy_a": model, "policy_b": model,
                          "meta": {"sample_key": skey, "prompt_id": prompt.get("prompt_id"),
                                   "samples": [a, b], "params": params.to_dict()}})
        add_pairs(store, pairs, origin="sampled", batch=batch)
        return len(pairs), same

    def ended(i: int, outcome) -> None:
        nonlocal made, identical, skipped, finished
        finished += 1
        if outcome == "skipped":
            skipped += 1
        else:
            made, identical = made + outcome[0], identical + outcome[1]
        tick()

    def fail(i: int, exc: BaseException) -> None:
        nonlocal failed, finished
        failed, finished = failed + 1, finished + 1
        if len(errors) < 5:
            errors.append(f"prompt {i + 1}: {exc}")
        tick()

    def tick() -> None:
        if progress:
            progress(finished, len(prompts), f"prompt {finished}/{len(prompts)}: {made} pairs so far"
                     + (f", {failed} failed" if failed else ""))

    # in flight (models/dispatch.py): as many samples outstanding as the backend serves (batch_size
    # overrides; a prompt's k samples count k); each prompt is one generate call of k samples, as before, so its
    # samples are the same whatever else runs; a prompt whose request still fails is counted and
    # left for a re-run (nothing was stored for it)
    run_chains(backend, ((i, plan(i, p)) for i, p in enumerate(prompts)),
               in_flight=batch_size, should_stop=should_stop, on_done=ended, on_error=fail, together=store.tx)
    total = store.scalar("SELECT COUNT(*) FROM comparisons WHERE batch=? AND origin='sampled'", (batch,))
    return {"batch": batch, "model": model, "prompts": len(prompts), "pairs_added": made,
            "identical_skipped": identical, "prompts_already_done": skipped, "pairs_in_batch": total,
            "counts": {"total": len(prompts), "done": finished - skipped - failed, "failed": failed,
                       "skipped": skipped},
            "errors": errors}
