"""The Store: SQLite in the workspace (the embedded default) or PostgreSQL (CAI_DATABASE_URL /
--database-url / the app's secrets), with one transaction per item.

SQLite: WAL, foreign keys on, a connection per thread. PostgreSQL: psycopg 3 through the thin
dialect layer (dialects.py), a connection per thread in autocommit mode with explicit
transactions, claims by row locks (`Store.for_update`). Writes are committed per item so a crash
or kill -9 loses at most the item in flight, and a re-run of a batch skips what is already stored
(unique keys on every work item). Credentials come only from the URL (the environment, the
command line or the app's secrets): they are never written to the store, and every message that
names the database shows the URL with its password replaced by ***.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from cai_core.errors import CaiError
from cai_core.store.dialects import PgConnection, is_postgres_url, redact_url
from cai_core.store.migrations import migrate as _migrate
from cai_core.workspace import Workspace

BUSY_TIMEOUT_MS = 30_000
DATABASE_URL_ENV = "CAI_DATABASE_URL"
_counter_lock = threading.Lock()  # Store.change_counter and its own-commit count


def now() -> float:
    return time.time()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text in (None, "") else json.loads(text)


def database_url(url: str | None = None) -> str | None:
    """The database URL in force: the one given, else $CAI_DATABASE_URL, else None (SQLite in the workspace)."""
    url = (url or os.environ.get(DATABASE_URL_ENV) or "").strip()
    return url or None


def sqlite_path_of(url: str) -> Path | None:
    """The file of a `sqlite:///path` URL (None for any other URL)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return None
    path = unquote(parts.path)
    if parts.netloc:  # sqlite://relative/path
        path = parts.netloc + path
    if not path or path == "/":
        raise CaiError(f"the SQLite URL {url!r} names no file: use sqlite:///absolute/path/cai.sqlite3")
    return Path(path).expanduser()


def check_url(url: str) -> None:
    if is_postgres_url(url) or sqlite_path_of(url) is not None:
        return
    raise CaiError(f"unsupported database URL {redact_url(url)!r}: use postgresql://user@host:port/dbname "
                   f"(or sqlite:///path/to/cai.sqlite3); unset {DATABASE_URL_ENV} for the workspace's SQLite file")


class Store:
    """One per workspace and process; a connection per thread (neither sqlite3 nor a psycopg
    connection's transaction is shareable between threads)."""

    def __init__(self, workspace: Workspace, url: str | None = None):
        self.workspace = workspace
        self.url = database_url(url)
        if self.url is not None:
            check_url(self.url)
        self.postgres = self.url is not None and is_postgres_url(self.url)
        self.dialect = "postgresql" if self.postgres else "sqlite"
        self.path: Path | None = None
        if not self.postgres:
            self.path = (sqlite_path_of(self.url) if self.url else None) or workspace.db_path
        self.where = redact_url(self.url) if self.postgres else str(self.path)
        self._local = threading.local()
        self._conns: dict[int | None, tuple[threading.Thread, Any]] = {}  # thread -> its connection
        self._idle: list = []  # connections of ended threads, for the next new thread
        self._conns_lock = threading.Lock()
        self.migrate()

    # -- connections -------------------------------------------------------------------------
    def conn(self):
        """This thread's connection: a sqlite3.Connection, or a PgConnection that takes the same SQL.

        Threads come and go (Streamlit runs every rerun of a page in a new thread): the connection of
        a thread that has ended is handed to the next new thread rather than left open, so a long
        app session holds about as many connections as it has live threads (a PostgreSQL server
        refuses clients past max_connections)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.postgres and conn.broken:  # the server restarted or dropped us: reconnect
            conn = None
        if conn is None:
            conn = self._reuse_or_connect()
            self._local.conn = conn
        return conn

    def _reuse_or_connect(self):
        if not self.postgres:  # a sqlite3 connection belongs to its thread; it closes when the thread's local goes
            return self._connect()
        me = threading.current_thread()
        with self._conns_lock:
            for ident, (thread, old) in list(self._conns.items()):
                if not thread.is_alive():
                    del self._conns[ident]
                    if old.in_transaction or len(self._idle) >= 4:
                        _close_quietly(old)
                    else:
                        self._idle.append(old)
            while self._idle and self._idle[-1].broken:
                _close_quietly(self._idle.pop())
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        with self._conns_lock:
            self._conns[me.ident] = (me, conn)
        return conn

    def _connect(self):
        if self.postgres:
            return PgConnection(self.url)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise CaiError(f"cannot open the store {self.path}: {exc}") from exc
        return conn

    def child_env(self) -> dict[str, str]:
        """What a job this process starts needs in its environment to open the same store: the
        database URL (given on the command line or in the app's secrets), never in its argv."""
        return {DATABASE_URL_ENV: self.url} if self.url else {}

    def for_update(self) -> str:
        """The clause that row-locks what a SELECT inside tx() read, for claims: `FOR UPDATE SKIP
        LOCKED` on PostgreSQL (a row another transaction holds is skipped: read as taken); empty on
        SQLite, whose write transactions (BEGIN IMMEDIATE) already run one at a time."""
        return " FOR UPDATE SKIP LOCKED" if self.postgres else ""

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """A write transaction: all of it lands, or none of it."""
        conn = self.conn()
        if conn.in_transaction:  # nested use joins the outer transaction
            yield conn
            return
        conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
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
        of committed write transactions. On PostgreSQL: the current snapshot (xmin:xmax:in-progress
        ids) on a dedicated connection: a transaction that writes takes an id (xmax moves) and leaves
        the in-progress list exactly when its commit becomes visible; reads move nothing. A write
        transaction that rolls back, or one in another database of the cluster, also moves it (a
        false "changed", which the contract allows).
        Cheap (one round trip); not comparable across processes.
        """
        with _counter_lock:
            watch = getattr(self, "_watch", None)
            if watch is None:
                if self.postgres:
                    watch = PgConnection(self.url)
                else:
                    try:
                        watch = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                                check_same_thread=False)
                    except sqlite3.Error as exc:
                        raise CaiError(f"cannot open the store {self.path}: {exc}") from exc
                self._watch = watch
                self._watch_gen = getattr(self, "_watch_gen", 0) + 1
            if self.postgres:
                try:
                    version = watch.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
                except sqlite3.Error as exc:
                    raise CaiError(f"cannot read the store {self.where}: {exc}") from exc
            else:
                version = watch.execute("PRAGMA data_version").fetchone()[0]
            return f"{self._watch_gen}.{version}.{getattr(self, '_own_commits', 0)}"

    def query(self, sql: str, params: tuple | dict = ()) -> list:
        return self.conn().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()):
        return self.conn().execute(sql, params).fetchone()

    def scalar(self, sql: str, params: tuple | dict = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def execute(self, sql: str, params: tuple | dict = ()):
        """One statement in its own transaction (joining an open one). With RETURNING the rows are
        read before the commit (SQLite cannot commit under a statement that still has rows)."""
        with self.tx() as conn:
            cur = conn.execute(sql, params)
            if not self.postgres and "RETURNING" in sql.upper():
                return _Rows(cur.fetchall(), cur)
            return cur

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._conns_lock:
            self._conns.pop(threading.current_thread().ident, None)
            for ident, (thread, other) in list(self._conns.items()):
                if not thread.is_alive():
                    del self._conns[ident]
                    _close_quietly(other)
            while self._idle:
                _close_quietly(self._idle.pop())
        with _counter_lock:
            watch = getattr(self, "_watch", None)
            if watch is not None:
                watch.close()
                self._watch = None

    # -- migrations --------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") or 0)

    def migrate(self) -> list[int]:
        """Apply pending numbered migrations, each in its own transaction; refuse a newer schema."""
        return _migrate(self.conn(), postgres=self.postgres, where=self.where)

    def tables(self) -> list[str]:
        """The store's tables (both databases), sorted."""
        if self.postgres:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%'"
        return sorted(r[0] for r in self.query(sql))


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a connection that cannot close cleanly is gone anyway
        pass


class _Rows:
    """A finished statement's rows, read like a cursor (fetchone/fetchall/iteration, rowcount)."""

    def __init__(self, rows: list, cur):
        self._rows = list(rows)
        self.rowcount = cur.rowcount
        self.lastrowid = getattr(cur, "lastrowid", None)

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


_stores: dict[tuple[Path, str | None], Store] = {}
_stores_lock = threading.Lock()


def open_store(root: str | Path | None = None, url: str | None = None) -> Store:
    """The process-wide Store for a workspace (created and migrated on first use); `url` (or
    $CAI_DATABASE_URL) puts it in PostgreSQL, else SQLite in the workspace."""
    ws = Workspace.open(root)
    key = (ws.root, database_url(url))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(ws, key[1])
        return store
