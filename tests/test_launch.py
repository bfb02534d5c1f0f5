"""`python -m ui.launch` carries its own safe defaults (issue 15): it binds 127.0.0.1 without being told,
hides Deploy, sends no usage statistics, and its index.html names the server so a deep link does not probe
/<page>/_stcore/* (two 404s per page load) first."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from ui.launch import DEFAULTS, with_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_only_what_the_caller_left_open():
    assert with_defaults([], {}) == ["--server.address", "127.0.0.1", "--client.toolbarMode", "minimal",
                                     "--browser.gatherUsageStats", "false", "--server.maxUploadSize", "20",
                                     "--server.fileWatcherType", "none"]
    args = with_defaults(["--server.address=0.0.0.0", "--server.port", "9"], {})
    assert "127.0.0.1" not in args and args[-3:] == ["--server.address=0.0.0.0", "--server.port", "9"]
    assert "--server.address" not in with_defaults([], {"STREAMLIT_SERVER_ADDRESS": "10.0.0.1"})
    assert "--client.toolbarMode" not in with_defaults([], {"STREAMLIT_CLIENT_TOOLBAR_MODE": "auto"})


def test_config_toml_says_the_same_as_the_launcher():
    """`streamlit run app.py` from the repository root gets the launcher's defaults from the config file."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    flat = {f"{section}.{key}": str(value).lower() for section, values in config.items() for key, value in values.items()}
    assert {k: flat[k] for k in DEFAULTS} == DEFAULTS


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on a TCP port."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_launcher_binds_loopback_and_pins_the_base_url(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CAI_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("STREAMLIT_")}
    proc = subprocess.Popen([sys.executable, "-m", "ui.launch", "--server.port", str(port), "--server.headless", "true",
                             "--server.fileWatcherType", "none"], cwd=str(tmp_path), env=env,  # not the repo: no config.toml
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not _listening_addresses(port):
            assert proc.poll() is None and time.time() < deadline, "the app did not start"
            time.sleep(0.3)
        assert _listening_addresses(port) == {"0100007F"}, _listening_addresses(port)  # 127.0.0.1 only
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/training", timeout=30) as r:
            html = r.read().decode()
        assert "window.__streamlit = {BACKEND_BASE_URL: window.location.origin + \"/\"}" in html
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
