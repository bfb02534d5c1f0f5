"""SQLite store adapter: WAL, foreign keys on, numbered migrations, one transaction per item.

Writes are committed per item so a crash or kill -9 loses at most the item in flight, and a
re-run of a batch skips what is already stored (unique keys on every work item).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from cai_core.errors import CaiError
from cai_core.workspace import Workspace

BUSY_TIMEOUT_MS = 30_000
_counter_lock = threading.Lock()  # Store.change_counter and its own-commit count


def now() -> float:
    return time.time()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text in (None, "") else json.loads(text)


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


class Store:
    """One per workspace and process; a connection per thread (sqlite3 objects are not shareable)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.path: Path = workspace.db_path
        self._local = threading.local()
        self.migrate()

    # -- connections -------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise CaiError(f"cannot open the store {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An immediate write transaction: all of it lands, or none of it."""
        conn = self.conn()
        if conn.in_transaction:  # nested use joins the outer transaction
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
            with _counter_lock:
                self._own_commits = getattr(self, "_own_commits", 0) + 1

    def change_counter(self) -> str:
        """A token that changes whenever committed data may have changed (for caches keyed by it).

        Equal tokens from one Store in one process mean no transaction committed in between, by this
        process or any other. On SQLite: `PRAGMA data_version` read on a dedicated connection that
        never writes (so every other connection's commit, in this process or another, moves it), the
        connection's generation (a reopened one restarts its count), and this process's own count
        of committed write transactions. Cheap (one pragma); not comparable across processes.
        """
        with _counter_lock:
            watch = getattr(self, "_watch", None)
            if watch is None:
                try:
                    watch = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                            check_same_thread=False)
                except sqlite3.Error as exc:
                    raise CaiError(f"cannot open the store {self.path}: {exc}") from exc
                self._watch = watch
                self._watch_gen = getattr(self, "_watch_gen", 0) + 1
            version = watch.execute("PRAGMA data_version").fetchone()[0]
            return f"{self._watch_gen}.{version}.{getattr(self, '_own_commits', 0)}"

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        return self.conn().execute(sql, params).fetchone()

    def scalar(self, sql: str, params: tuple | dict = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self.tx() as conn:
            return conn.execute(sql, params)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- migrations --------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") or 0)

    def migrate(self) -> list[int]:
        """Apply pending numbered migrations, each in its own transaction."""
        conn = self.conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        done = []
        for version, name, sql in _migrations():
            if version in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version=?", (version,)).fetchone():
                    conn.execute("ROLLBACK")  # another process applied it meanwhile
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?,?,?)", (version, name, now()))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            done.append(version)
        return done


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.execute runs one at a time, inside our transaction)."""
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


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def open_store(root: str | Path | None = None) -> Store:
    """The process-wide Store for a workspace (created and migrated on first use)."""
    ws = Workspace.open(root)
    with _stores_lock:
        store = _stores.get(ws.root)
        if store is None:
            store = _stores[ws.root] = Store(ws)
        return store
