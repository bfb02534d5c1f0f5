"""The workspace store: SQLite in the workspace by default, PostgreSQL when a team or a cluster
shares it (CAI_DATABASE_URL / --database-url / the app's secrets).

  connection.py  the Store (connections, transactions, change_counter), open_store, dumps/loads/now
  dialects.py    what differs between SQLite and PostgreSQL, written once (SQL, types, rows, errors)
  migrations.py  the numbered migrations, one history for both; a newer schema is refused
  copy.py        `python -m cai_core db copy`: a whole store to another database, checked

`IntegrityError` / `DatabaseError` catch a constraint violation / any database error from either
database (PostgreSQL's are raised as subclasses of the DB-API classes of sqlite3).
"""
from __future__ import annotations

import sqlite3

from cai_core.store.connection import (BUSY_TIMEOUT_MS, DATABASE_URL_ENV, Store, check_url, database_url, dumps,
                                       loads, now, open_store)
from cai_core.store.dialects import redact, redact_url
from cai_core.store.migrations import _migrations, _split_sql, known_version

IntegrityError = sqlite3.IntegrityError
DatabaseError = sqlite3.DatabaseError

__all__ = ["BUSY_TIMEOUT_MS", "DATABASE_URL_ENV", "DatabaseError", "IntegrityError", "Store", "_migrations",
           "_split_sql", "check_url", "database_url", "dumps", "known_version", "loads", "now", "open_store", "redact",
           "redact_url"]
