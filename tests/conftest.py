"""Shared fixtures: a tiny random-weight model (built once per session) and fresh workspaces.

Shared helpers (ROOT, PAPER_DATA, run_cli, ...) live in tests/helpers.py: tests import them from
there, never from this file or from another test module."""
from __future__ import annotations

import os
import sys
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
