"""Shared fixtures: a tiny random-weight model (built once per session) and fresh workspaces.

Shared helpers (ROOT, PAPER_DATA, run_cli, ...) live in tests/helpers.py: tests import them from
there, never from this file or from another test module."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: cai_core, ui, tests.helpers
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite was written against the transformers engine (exact texts and probabilities of the tiny
# model); the CTranslate2 engine and the auto choice have their own tests (test_backend_ct2.py),
# which name the engine they test. Subprocesses (CLI, jobs, the app) inherit this.
os.environ.setdefault("CAI_ENGINE", "transformers")


def pytest_collection_modifyitems(config, items):
    """Tests on the real llama.cpp server (the `server` fixture of test_backend_http) are `server` and `slow`."""
    for item in items:
        if "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)
            item.add_marker(pytest.mark.slow)


def _postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed version), or initdb on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def pg_server():
    """A throw-away PostgreSQL cluster for the session (initdb in a temporary folder, run as the
    `postgres` user when the tests run as root, on a free loopback port), like the llama.cpp server
    fixture; its admin URL. $CAI_TEST_DATABASE_URL (an admin URL of a server of your own) is used
    instead when set. Skips with a message where PostgreSQL or psycopg is missing."""
    own = os.environ.get("CAI_TEST_DATABASE_URL")
    if own:
        yield own
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -r requirements.txt): PostgreSQL store tests skipped")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/ensure_postgres.sh installs Debian's package as root; "
                    "or set CAI_TEST_DATABASE_URL): PostgreSQL store tests skipped")
    base = Path(tempfile.mkdtemp(prefix="cai-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            shutil.chown(base, "postgres", "postgres")
        except (LookupError, OSError) as exc:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip(f"running as root without a `postgres` user to run PostgreSQL as ({exc}): "
                        "PostgreSQL store tests skipped")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off "
            f"-c full_page_writes=off -c max_connections=200")
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "cai", "--auth=trust", "-E", "UTF8",
                        "--no-locale"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                        "start"], check=True, capture_output=True, timeout=90)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL from {bindir}: {exc} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql://cai@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database on the session's server (dropped afterwards); its URL."""
    import psycopg

    name = f"cai_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from cai_core.store import connection as _connection  # lazy: forget stores opened on the dropped database

    for key in [k for k in _connection._stores if k[1] == url]:
        _connection._stores.pop(key).close()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """Both databases, one after the other: None (SQLite in the workspace) or a fresh PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture(autouse=True)
def _store_on_postgres(request, monkeypatch):
    """CAI_TEST_STORE=postgresql runs every test on a fresh PostgreSQL database (CAI_DATABASE_URL)."""
    if os.environ.get("CAI_TEST_STORE", "").lower() in ("postgresql", "postgres", "pg"):
        monkeypatch.setenv("CAI_DATABASE_URL", request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from cai_core.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def workspace(tmp_path):
    from cai_core.workspace import Workspace

    return Workspace.open(tmp_path / "ws")


@pytest.fixture
def store(workspace):
    from cai_core.store import Store

    s = Store(workspace)
    yield s
    s.close()


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A fresh, migrated workspace folder (tmp_path/ws, the same one `workspace` opens) that pages under
    AppTest find through CAI_WORKSPACE; migrated up front, so a failing command has nothing to create."""
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    root = tmp_path / "ws"
    Store(Workspace.open(root)).close()
    monkeypatch.setenv("CAI_WORKSPACE", str(root))
    return root


@pytest.fixture
def tiny_backend(tiny_model_dir):
    from cai_core.models.backends.local import LocalBackend

    return LocalBackend(tiny_model_dir)
