"""The numbered migrations (cai_core/migrations/NNNN_name.sql): one schema history for SQLite and
PostgreSQL. Each applies in its own transaction; a store that has a migration this code does not
know (a newer workbench wrote it) is refused with a clear CaiError rather than used."""
from __future__ import annotations

import sqlite3
import time
from importlib import resources

from cai_core.errors import CaiError

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
)
PG_MIGRATION_LOCK = 0x6361695F6D6967  # pg_advisory_xact_lock key: one process migrates at a time


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("cai_core.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


def known_version() -> int:
    """The newest schema version this code knows."""
    found = _migrations()
    return found[-1][0] if found else 0


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements (one execute each, inside the migration's transaction)."""
    statements, buf = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        if sqlite3.complete_statement("\n".join(buf)):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                statements.append(stmt)
            buf = []
    if "\n".join(buf).strip():
        raise RuntimeError("incomplete SQL statement at the end of a migration")
    return statements


def check_not_newer(applied: set[int], where: str) -> None:
    """Refuse a store whose schema has migrations this code does not know."""
    known = {v for v, _, _ in _migrations()}
    unknown = sorted(applied - known)
    if unknown:
        raise CaiError(
            f"the store {where} has schema version {max(applied)} (migrations {', '.join(f'{v:04d}' for v in unknown)} "
            f"are newer than this workbench knows, {max(known, default=0):04d}): update the workbench "
            f"(git pull; pip install -r requirements.txt) before using this store")


def migrate(conn, *, postgres: bool, where: str, upto: int | None = None) -> list[int]:
    """Apply pending migrations on a store connection (autocommit mode); the versions applied
    (`upto`: stop after that version, for tests of a store made by an older workbench)."""
    if postgres:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
            conn.execute_ddl(MIGRATIONS_TABLE)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    else:
        conn.execute(MIGRATIONS_TABLE)
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    check_not_newer(applied, where)
    done = []
    for version, name, sql in _migrations():
        if version in applied:
            continue
        if upto is not None and version > upto:
            break
        conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
        try:
            if postgres:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version=?", (version,)).fetchone():
                conn.execute("ROLLBACK")  # another process applied it meanwhile
                continue
            for statement in _split_sql(sql):
                if postgres:
                    conn.execute_ddl(statement)
                else:
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                         (version, name, time.time()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        done.append(version)
    return done

