"""`python -m cai_core db copy --to URL`: a whole store into another database (SQLite <-> PostgreSQL).

The target is migrated to the same schema version and must hold no rows; every table is copied in
one transaction on the target (all of it lands, or none), parents before children, ids kept
(PostgreSQL's identity counters are moved past them). The copy is then checked table by table:
the same row count and the same multiset of rows (an order-free digest of every row's values,
numbers compared as numbers), so a row dropped, duplicated or changed on the way shows.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from cai_core.errors import CaiError
from cai_core.store.connection import Store, check_url, sqlite_path_of
from cai_core.store.dialects import is_postgres_url, redact_url

CHUNK = 1000
_MOD = 1 << 256


def target_url(to: str) -> str:
    """--to as a database URL: postgresql://..., sqlite:///path, or a plain file path (SQLite)."""
    to = str(to or "").strip()
    if not to:
        raise CaiError("db copy needs --to: a postgresql://user@host:port/db URL or a SQLite file path")
    if "://" not in to:
        return f"sqlite:///{Path(to).expanduser().resolve()}"
    check_url(to)
    return to


def foreign_parents(store: Store) -> dict[str, set[str]]:
    """table -> the other tables its foreign keys reference."""
    tables = store.tables()
    out: dict[str, set[str]] = {t: set() for t in tables}
    if store.postgres:
        for r in store.query(
                "SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()"):
            if r["child"] in out and r["parent"] != r["child"]:
                out[r["child"]].add(r["parent"])
    else:
        for t in tables:
            for r in store.query(f'PRAGMA foreign_key_list("{t}")'):
                if r["table"] != t:
                    out[t].add(r["table"])
    return out


def copy_order(store: Store) -> list[str]:
    """The tables, parents before children (schema_migrations excluded: the target migrates itself)."""
    parents = foreign_parents(store)
    order: list[str] = []
    seen: set[str] = set()

    def visit(t: str, path: tuple = ()) -> None:
        if t in seen or t in path:
            return
        for p in sorted(parents.get(t, ())):
            visit(p, (*path, t))
        seen.add(t)
        order.append(t)

    for t in sorted(parents):
        visit(t)
    return [t for t in order if t != "schema_migrations"]


def _columns(store: Store, table: str) -> list[str]:
    if store.postgres:
        rows = store.query("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                           "AND table_name = ? ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows]
    return [r["name"] for r in store.query(f'PRAGMA table_info("{table}")')]


def _norm(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def table_digest(store: Store, table: str, columns: list[str]) -> tuple[int, str]:
    """(rows, digest): an order-free digest of the table's rows (a sum of per-row hashes)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    total, n = 0, 0
    cur = store.conn().execute(f'SELECT {cols} FROM "{table}"')
    for row in cur.fetchall():
        h = hashlib.sha256(json.dumps([_norm(v) for v in row], ensure_ascii=False).encode()).digest()
        total = (total + int.from_bytes(h, "big")) % _MOD
        n += 1
    return n, f"{total:064x}"


def copy_store(source: Store, to: str, *, progress: Callable[[str], None] | None = None) -> dict:
    """Copy every row of `source` into the (empty) store at `to`; checked by counts and digests."""
    url = target_url(to)
    same = (source.postgres and source.url == url) or (
        not source.postgres and sqlite_path_of(url) is not None and sqlite_path_of(url).resolve() == Path(source.path).resolve())
    if same:
        raise CaiError("db copy: the target is the store being copied; name another database")
    target = Store(source.workspace, url)
    try:
        if target.schema_version() != source.schema_version():
            raise CaiError(f"db copy: the source store is at schema version {source.schema_version()} and the target "
                           f"at {target.schema_version()}; open the source with this workbench once (it migrates) and retry")
        tables = copy_order(source)
        missing = sorted(set(tables) - set(target.tables()))
        if missing:
            raise CaiError(f"db copy: the target lacks tables {', '.join(missing)}")
        busy = [t for t in tables if target.scalar(f'SELECT COUNT(*) FROM "{t}"')]
        if busy:
            raise CaiError(f"db copy: the target {target.where} already holds rows (tables {', '.join(busy)}); "
                           "copy into an empty database")
        started = time.time()
        counts: dict[str, int] = {}
        with target.tx() as tconn:
            for t in tables:
                cols = [c for c in _columns(source, t) if c in set(_columns(target, t))]
                col_sql = ", ".join(f'"{c}"' for c in cols)
                insert = f'INSERT INTO "{t}" ({col_sql}) VALUES ({", ".join("?" * len(cols))})'
                rows = source.conn().execute(f'SELECT {col_sql} FROM "{t}"').fetchall()
                for start in range(0, len(rows), CHUNK):
                    tconn.executemany(insert, [tuple(r) for r in rows[start:start + CHUNK]])
                counts[t] = len(rows)
                if progress:
                    progress(f"{t}: {len(rows)} rows")
            if target.postgres:
                for t in tables:
                    if "id" in _columns(target, t):
                        seq = tconn.execute("SELECT pg_get_serial_sequence(?, 'id')", (t,)).fetchone()[0]
                        if seq:
                            tconn.execute(f'SELECT setval(?, (SELECT COALESCE(MAX(id), 0) + 1 FROM "{t}"), false)', (seq,))
        if target.postgres:  # planner statistics for the bulk load (autovacuum would take them only later)
            target.conn().execute("ANALYZE")
        mismatched = []
        for t in tables:
            cols = [c for c in _columns(source, t) if c in set(_columns(target, t))]
            if table_digest(source, t, cols) != table_digest(target, t, cols):
                mismatched.append(t)
        if mismatched:
            raise CaiError(f"db copy: the copy differs from the source in tables {', '.join(mismatched)} "
                           f"(the rows are in {target.where}; empty it before trying again)")
        return {"from": source.where, "to": target.where, "schema_version": target.schema_version(),
                "tables": counts, "rows": sum(counts.values()), "seconds": round(time.time() - started, 2),
                "checked": "row counts and row digests match in every table"}
    finally:
        target.close()


def describe(url: str | None) -> str:
    return redact_url(url) if url and is_postgres_url(url) else str(url)
