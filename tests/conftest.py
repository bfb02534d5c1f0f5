"""Shared fixtures: a tiny random-weight model (built once per session) and fresh workspaces."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = ROOT.parent / "shared"
PAPER_DATA = SHARED / "datasets" / "cai-paper"  # what cai_core.reliability.paper_evals.paper_data_dir() finds without $CAI_PAPER_DATA


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
def tiny_backend(tiny_model_dir):
    from cai_core.models.backends.local import LocalBackend

    return LocalBackend(tiny_model_dir)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600):
    """Run `python -m cai_core ...` in a subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cai_core", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=full_env, timeout=timeout)


def in_fresh_thread(fn, *args, **kwargs):
    """Run fn in a new thread and return its result (re-raising its exception).

    Playwright's sync API refuses to start where an asyncio loop is running, and some libraries
    (Streamlit's AppTest among them) leave one behind in the main thread of a long pytest run."""
    import threading

    box: dict = {}

    def work():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def shown(markdown: str) -> str:
    """What a markdown element built with ui.markdown.md_escape shows: the text without its escapes
    (AppTest's .value is the markdown source)."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown or "").replace("  \n", "\n")
