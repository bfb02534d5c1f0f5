"""Dataset exports: the SFT and preference datasets a training run reads, with their cards.

One place records and lists them (table `exports`), whatever produced them, so lineage reads the
same way everywhere: a run -> its export -> the card's constitution version, models, judges.
Each export also records the hashes of the prompts it holds (`export_prompts`), so an evaluation
can flag its prompts that a training dataset already contains (contamination check).
"""
from __future__ import annotations

import hashlib
from typing import Iterable

from cai_core.store import Store, dumps, loads, now

KINDS = ("sft", "preference")


def export_exists(store: Store, name: str) -> bool:
    return store.one("SELECT 1 FROM exports WHERE name=?", (name,)) is not None


def prompt_hash(prompt: str) -> str:
    """A prompt's identity for the contamination check: sha256 of its text, whitespace-normalised."""
    return hashlib.sha256(" ".join(str(prompt).split()).encode("utf-8")).hexdigest()[:32]


def record_export(conn, name: str, kind: str, path: str, card: dict,
                  prompts: Iterable[str] = ()) -> None:
    """Record (or replace) an export, with the hashes of the prompts it holds, inside the caller's transaction."""
    conn.execute("DELETE FROM exports WHERE name=?", (name,))
    export_id = conn.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?) RETURNING id",
                             (name, kind, path, dumps(card), now())).fetchall()[0][0]
    conn.executemany("INSERT INTO export_prompts (export_id, prompt_hash) VALUES (?,?) ON CONFLICT DO NOTHING",
                     [(export_id, h) for h in {prompt_hash(p) for p in prompts}])


def exports_containing(store: Store, hashes: Iterable[str]) -> dict[str, list[str]]:
    """For each prompt hash found in a training export: the names of those exports."""
    hashes = sorted(set(hashes))
    found: dict[str, set[str]] = {}
    for start in range(0, len(hashes), 500):
        chunk = hashes[start:start + 500]
        for r in store.query(f"SELECT p.prompt_hash, e.name FROM export_prompts p JOIN exports e ON e.id=p.export_id "
                             f"WHERE e.kind IN ({','.join('?' * len(KINDS))}) "
                             f"AND p.prompt_hash IN ({','.join('?' * len(chunk))})", list(KINDS) + chunk):
            found.setdefault(r["prompt_hash"], set()).add(r["name"])
    return {h: sorted(names) for h, names in found.items()}


def _row(r) -> dict:
    card = loads(r["card_json"], {}) or {}
    counts = card.get("counts", {})
    return {"id": r["id"], "name": r["name"], "kind": r["kind"], "path": r["path"], "created_at": r["created_at"],
            "rows": counts.get("total", counts.get("exported")), "card": card}


def get_export(store: Store, ref: int | str) -> dict | None:
    """An export by id or name (None when there is none)."""
    col = "id" if isinstance(ref, int) else "name"
    r = store.one(f"SELECT * FROM exports WHERE {col}=?", (ref,))
    return None if r is None else _row(r)


def list_exports(store: Store, kind: str | None = None) -> list[dict]:
    """Newest first; each with id, name, kind, path, created_at, rows and the card."""
    sql = "SELECT * FROM exports" + (" WHERE kind=?" if kind else "") + " ORDER BY created_at DESC, id DESC"
    return [_row(r) for r in store.query(sql, (kind,) if kind else ())]
