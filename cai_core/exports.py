"""Dataset exports: the SFT and preference datasets a training run reads, with their cards.

One place records and lists them (table `exports`), whatever produced them, so lineage reads the
same way everywhere: a run -> its export -> the card's constitution version, models, judges.
"""
from __future__ import annotations

import sqlite3

from cai_core.store import Store, dumps, loads, now

KINDS = ("sft", "preference")


def export_exists(store: Store, name: str) -> bool:
    return store.one("SELECT 1 FROM exports WHERE name=?", (name,)) is not None


def record_export(conn: sqlite3.Connection, name: str, kind: str, path: str, card: dict) -> None:
    """Record (or replace) an export inside the caller's transaction."""
    conn.execute("DELETE FROM exports WHERE name=?", (name,))
    conn.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?)",
                 (name, kind, path, dumps(card), now()))


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
