"""A local llama.cpp OpenAI-compatible server: the fast CPU path (~6x transformers on the default model).

`start()` runs `python -m llama_cpp.server --model <gguf> --host 127.0.0.1 --port P` as a detached
process (own session, survives the app), records pid/port in workspace/models/llama-server.json and
returns at once; `status()` says whether it is alive and answering; `stop()` ends it. The model spec
for the rest of the workbench is `spec(state)` ("http://127.0.0.1:P/v1"). It binds 127.0.0.1 unless
told otherwise, and refuses any other address without an API key (docs/models.md: exposing it).
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cai_core.errors import CaiError
from cai_core.jobs.supervisor import alive as pid_alive, log_tail
from cai_core.models.specs import embedded_gguf, unload
from cai_core.workspace import Workspace

STATE_FILE = "llama-server.json"
LOG_FILE = "llama-server.log"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
INSTALL_HINT = "llama-cpp-python[server] is not installed: run `make install-server` (compiles once, ~10 min)"


def is_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in SERVER_MODULES)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _state_path(ws: Workspace) -> Path:
    return ws.models_dir / STATE_FILE


def read_state(ws: Workspace) -> dict | None:
    path = _state_path(ws)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def spec(state: dict) -> str:
    """The model spec other parts of the workbench use to talk to this server."""
    host = state["host"] if state["host"] not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{state['port']}/v1"


def _answers(state: dict, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(spec(state) + "/models", timeout=timeout) as resp:  # noqa: S310 - our server
            return resp.status == 200
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


def status(ws: Workspace) -> dict:
    """{running, ready, pid, port, host, model, spec, log_tail} of the recorded server (running False if none)."""
    state = read_state(ws)
    if not state:
        return {"running": False, "ready": False}
    alive = pid_alive(state.get("pid"))
    out = {**state, "running": alive, "ready": alive and _answers(state), "spec": spec(state)}
    if not alive:
        out["log_tail"] = log_tail(state.get("log"), 15)
    return out


def start(ws: Workspace, model: str | Path | None = None, *, port: int | None = None, host: str = "127.0.0.1",
          threads: int | None = None, n_ctx: int = 4096, wait: float = 0.0) -> dict:
    """Start the server in the background (validates everything first); wait>0 blocks until it answers."""

    if not is_installed():
        raise CaiError(INSTALL_HINT)
    current = status(ws)
    if current["running"]:
        raise CaiError(f"a llama.cpp server is already running (pid {current['pid']}, {current['spec']}); stop it first")
    gguf = Path(model).expanduser().resolve() if model else embedded_gguf()
    if not gguf.is_file():
        raise CaiError(f"model file {gguf} does not exist")
    if gguf.suffix != ".gguf":
        raise CaiError(f"{gguf} is not a .gguf file; the llama.cpp server only loads GGUF models")
    with open(gguf, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise CaiError(f"{gguf} is not a valid GGUF file (bad header)")
    api_key = os.environ.get("CAI_API_KEY")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        raise CaiError(f"refusing to bind {host} without an API key: set CAI_API_KEY (clients send it as a "
                       "Bearer token), or keep 127.0.0.1 and use an SSH tunnel; see docs/models.md")
    port = port or free_port("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    threads = threads or max(1, (os.cpu_count() or 2))
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", host, "--port", str(port),
            "--n_threads", str(threads), "--n_ctx", str(n_ctx)]
    env = {**os.environ}
    env.pop("API_KEY", None)
    if api_key and host not in ("127.0.0.1", "localhost", "::1"):
        env["API_KEY"] = api_key  # read by llama_cpp.server's settings; kept off the command line (ps)
    log_path = ws.models_dir / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    state = {"pid": proc.pid, "port": port, "host": host, "model": str(gguf), "log": str(log_path),
             "started_at": time.time(), "threads": threads}
    _state_path(ws).write_text(json.dumps(state, indent=2))
    if wait > 0:
        wait_ready(ws, wait)
    return status(ws)


def wait_ready(ws: Workspace, timeout: float = 60.0) -> dict:
    """Block until the server answers /v1/models; a server that dies meanwhile raises with its log."""
    deadline = time.time() + timeout
    while True:
        st = status(ws)
        if st.get("ready"):
            return st
        if not st["running"]:
            tail = st.get("log_tail") or "(no log)"
            raise CaiError(f"the llama.cpp server exited while starting; last log lines:\n{tail}")
        if time.time() > deadline:
            raise CaiError(f"the llama.cpp server did not answer within {timeout:.0f} s (log: {st['log']})")
        time.sleep(0.3)


def stop(ws: Workspace, timeout: float = 10.0) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL); returns False when none was running."""
    state = read_state(ws)
    if not state:
        return False
    pid = state.get("pid")
    was_running = pid_alive(pid)
    if was_running:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while pid_alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:  # reap it when it is our own child (started in this process)
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass
    _state_path(ws).unlink(missing_ok=True)

    unload(spec(state))
    return was_running
