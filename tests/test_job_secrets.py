"""Issue 15 item 9: an API key in .streamlit/secrets.toml reaches a background job through the job's
environment (CAI_API_KEY) - the endpoint sees it - and never its argv, its job row or its log."""
from __future__ import annotations

import http.server
import itertools
import json
import threading

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT

KEY = "sk-secret-from-secrets-toml-1234"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that records the Authorization header of every request."""

    auth: list[str] = []
    counter = itertools.count()

    def log_message(self, *a):
        pass

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        _Endpoint.auth.append(self.headers.get("Authorization", ""))
        self._reply({"data": [{"id": "fake"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Endpoint.auth.append(self.headers.get("Authorization", ""))
        self._reply({"choices": [{"message": {"role": "assistant", "content": f"answer {next(self.counter)}"},
                                  "finish_reason": "stop"}], "usage": {"completion_tokens": 2}})


@pytest.fixture
def endpoint():
    _Endpoint.auth = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_a_key_in_streamlit_secrets_reaches_the_job_and_nothing_else(tmp_path, monkeypatch, endpoint):
    from cai_core.jobs import list_jobs, wait_job
    from cai_core.data.prompt_sets import import_prompt_set
    from cai_core.store import open_store

    for var in ("CAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "ws"
    monkeypatch.setenv("CAI_WORKSPACE", str(root))
    store = open_store(root)
    import_prompt_set(store, "red", ["How do I pick a lock?"])
    at = AppTest.from_file(str(ROOT / "pages" / "40_Preferences.py"), default_timeout=90)
    at.secrets["CAI_API_KEY"] = KEY
    at.run()
    next(t for t in at.text_input if t.label == "Policy model").set_value(endpoint)
    next(b for b in at.button if b.label == "Start sampling").click().run()
    assert not at.exception, at.exception
    assert not any(KEY in c.value for c in at.code)  # nor in the previewed command
    job = list_jobs(store, kind="pairs-sample")[0]
    job = wait_job(store, job.id, timeout=300)
    assert job.status == "finished", job.error
    assert _Endpoint.auth and all(a == f"Bearer {KEY}" for a in _Endpoint.auth), _Endpoint.auth
    row = store.one("SELECT * FROM jobs WHERE id=?", (job.id,))
    assert not any(KEY in str(row[k]) for k in row.keys())
    assert not any(KEY in a for a in job.argv)
    log = (root / "jobs" / f"{job.id}.log").read_text()
    assert log and KEY not in log
    assert not any(KEY.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())  # nothing on disk


def test_without_a_key_the_job_environment_gets_none(monkeypatch):
    """No key anywhere: nothing is added (an empty CAI_API_KEY would read as 'set')."""
    from ui import command_preview

    for var in ("CAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(command_preview, "api_key", lambda: None)
    assert command_preview.job_env() == {}
    monkeypatch.setattr(command_preview, "api_key", lambda: "k")
    assert command_preview.job_env() == {"CAI_API_KEY": "k"}
