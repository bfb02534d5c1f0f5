"""`db ...`: where the store is (SQLite in the workspace, or PostgreSQL), and moving it.

`db info` names the database (its URL with the password hidden), the schema version and each
table's rows; `db copy --to URL` copies the whole store into an empty PostgreSQL database or
SQLite file (checked by row counts and row digests). The store copied is the one this command
opens: --workspace's SQLite file, or $CAI_DATABASE_URL / --database-url."""
from __future__ import annotations

import json
import sys

from cai_core.commands._common import add_command, add_group
from cai_core.store import known_version, open_store
from cai_core.store.copy import copy_store


def register(sub) -> None:
    actions = add_group(sub, "db", "the store's database: info, copy to PostgreSQL or to a SQLite file",
                        "The store: SQLite in the workspace by default; PostgreSQL when CAI_DATABASE_URL or "
                        "--database-url names one (a team or a cluster sharing one store).")

    p = add_command(actions, "info", "which database holds the store, its schema version and row counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = add_command(actions, "copy", "copy the whole store into an empty database (checked by counts and digests)")
    p.add_argument("--to", required=True,
                   help="postgresql://user@host:port/dbname, sqlite:///path/cai.sqlite3, or a SQLite file path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_copy)


def cmd_info(args) -> int:
    store = open_store(args.workspace)
    out = {"database": store.dialect, "where": store.where, "workspace": str(store.workspace.root),
           "schema_version": store.schema_version(), "known_version": known_version(),
           "tables": {t: int(store.scalar(f'SELECT COUNT(*) FROM "{t}"')) for t in store.tables()}}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['database']}: {out['where']} (schema {out['schema_version']}, this workbench knows {out['known_version']})")
    print(f"files: {out['workspace']}")
    for t, n in out["tables"].items():
        print(f"  {t:24} {n}")
    return 0


def cmd_copy(args) -> int:
    store = open_store(args.workspace)
    result = copy_store(store, args.to, progress=None if args.json else lambda m: print(f"  {m}", file=sys.stderr))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"copied {result['rows']} rows in {len(result['tables'])} tables from {result['from']} to {result['to']} "
              f"in {result['seconds']} s; {result['checked']}")
    return 0
