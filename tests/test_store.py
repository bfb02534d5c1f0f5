import sqlite3
import subprocess
import sys
import textwrap

import pytest

from cai_core.errors import CaiError
from cai_core.store import Store, _split_sql
from cai_core.workspace import Workspace


def test_migrations_apply_once_and_wal(workspace):
    s = Store(workspace)
    v = s.schema_version()
    assert v >= 1
    assert s.migrate() == []  # idempotent
    assert s.scalar("PRAGMA journal_mode") == "wal"
    assert s.scalar("PRAGMA foreign_keys") == 1
    tables = {r[0] for r in s.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"constitutions", "trajectories", "comparisons", "judgments", "human_labels", "runs", "jobs"} <= tables


def test_transaction_rolls_back_whole(store):
    with pytest.raises(RuntimeError):
        with store.tx() as conn:
            conn.execute("INSERT INTO settings VALUES ('a', '1')")
            raise RuntimeError("boom")
    assert store.scalar("SELECT COUNT(*) FROM settings") == 0


def test_foreign_keys_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.execute("INSERT INTO prompts (set_id, idx, text) VALUES (999, 0, 'x')")


def test_kill_mid_write_keeps_committed_items(workspace):
    """A process killed while writing loses at most the item in flight."""
    Store(workspace).close()
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parent.parent)!r})
        from cai_core.store import Store
        from cai_core.workspace import Workspace
        s = Store(Workspace.open({str(workspace.root)!r}))
        for i in range(5):
            s.execute("INSERT INTO settings VALUES (?, '1')", (f"k{{i}}",))
        conn = s.conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO settings VALUES ('half', '1')")
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    s = Store(workspace)
    keys = {r[0] for r in s.query("SELECT key FROM settings")}
    assert keys == {f"k{i}" for i in range(5)}


def test_split_sql_handles_comments_and_semicolons():
    parts = _split_sql("-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\nCREATE TABLE b (y);\n")
    assert len(parts) == 2


def test_read_only_workspace_gives_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.geteuid() == 0:
            pytest.skip("root can write to read-only folders; covered by the unwritable-path case")
        with pytest.raises(CaiError, match="not writable"):
            Workspace.open(ro / "ws")
    finally:
        ro.chmod(0o700)


def test_unwritable_workspace_path_gives_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CaiError, match="not writable"):
        Workspace.open(blocker / "ws")


def test_child_path_refuses_escape(workspace):
    for bad in ("../x", "a/b", "..", "", "/etc", ".hidden"):
        with pytest.raises(CaiError):
            workspace.child_path("runs", bad)
    assert workspace.child_path("runs", "ok-run_1").parent == workspace.runs_dir.resolve()


def test_processes_opening_one_workspace_at_once_do_not_race(tmp_path):
    """Each process checks writability with its own probe file (a shared name raced: one process
    deleted it under another, which then reported the workspace as not writable)."""
    root = tmp_path / "shared-ws"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parent.parent)!r})
        from cai_core.workspace import Workspace
        for _ in range(200):
            Workspace.open({str(root)!r})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert not list(root.glob(".write-probe*"))
