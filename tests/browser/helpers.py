"""What the browser tests share: the REAL app (`python -m ui.launch`, as `make run`) on 127.0.0.1 with a
fresh workspace and the tiny model (AppServer), and the Playwright steps on Streamlit's DOM (open a page,
wait for a rerun, click, pick, fill, screenshot). Fixtures that use them are in conftest.py.

Screenshots go to test-artifacts/ (gitignored); with CAI_UPDATE_SCREENSHOTS=1 they are also copied to
docs/screenshots/<name>.png, which the README links.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import ROOT

CHROMIUM = Path(os.environ.get("CAI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
DOC_SHOTS = ROOT / "docs" / "screenshots"
SKIP_MESSAGE = "chromium not found: run `make browser` (needs root + apt) to enable browser tests"
# Streamlit cold-starts pages and loads the model on first use; on a busy 2-core box that takes a while.
TIMEOUT_MS = int(os.environ.get("CAI_BROWSER_TIMEOUT_MS", "90000"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """One app server process (`python -m ui.launch`) with its own workspace; `stop()` kills its process group."""

    def __init__(self, workspace: Path, model_dir: Path, *, theme: str | None = None, extra_env: dict | None = None):
        self.workspace = workspace
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workspace.parent / f"streamlit-{self.port}.log"
        self.theme = theme
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "AppServer":
        from cai_core.settings import set_setting
        from cai_core.store import Store
        from cai_core.workspace import Workspace

        store = Store(Workspace.open(self.workspace))
        if not store.scalar("SELECT value_json FROM settings WHERE key='active_model'"):
            set_setting(store, "active_model", str(self.model_dir))
        store.close()
        env = {**os.environ, "CAI_WORKSPACE": str(self.workspace), "CAI_MODEL": str(self.model_dir),
               "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **self.extra_env}
        cmd = [sys.executable, "-m", "ui.launch", "--server.address", "127.0.0.1",
               "--server.port", str(self.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        if self.theme:
            cmd += ["--theme.base", self.theme]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"streamlit not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self, sig: int = 9) -> None:
        """Kill the server's process group (only the process this fixture started)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill(15)


def start_app(tmp_path_factory, tiny_model_dir, **kw) -> AppServer:
    ws = tmp_path_factory.mktemp("browser") / "ws"
    ws.mkdir(parents=True)
    return AppServer(ws, Path(tiny_model_dir), **kw).start()


def wait_for_app(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until Streamlit finished the script run (no 'Running...' status widget, no skeleton)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const app = document.querySelector("[data-testid='stApp']");
            if (!app) return false;
            const running = document.querySelector("[data-testid='stStatusWidget'] [data-testid='stStatusWidgetRunningIcon']")
                || document.querySelector("[data-testid='stStatusWidget'] button");  // 'Stop' while running
            const skeleton = document.querySelector("[data-testid='stSkeleton']");
            return app.getAttribute('data-test-script-state') !== 'running' && !running && !skeleton;
        }""",
        timeout=timeout_ms,
    )


def open_page(page, server: AppServer, url_path: str = "", title: str | None = None) -> None:
    """Open a page by its url path and wait for its title (first h1) and the end of the script run."""
    page.goto(f"{server.url}/{url_path}")
    page.locator("[data-testid='stMain'] h1").first.wait_for()
    wait_for_app(page)
    # ui.launch starts the server in st.navigation mode: no "Page not found" on a fresh server's first deep link
    not_found = page.locator("[role='dialog']").filter(has_text="Page not found")
    assert not not_found.count(), f"'Page not found' dialog on /{url_path}"
    heading = page.locator("[data-testid='stMain'] h1")
    if title:
        heading = heading.filter(has_text=title)
    heading.first.wait_for()
    wait_for_app(page)


def settle(page, ms: int = 400) -> None:
    """After an action: give Streamlit a moment to start the rerun, then wait for it to end."""
    page.wait_for_timeout(ms)
    wait_for_app(page)


def click_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    settle(page, 200)


def click_button(page, name: str, exact: bool = True) -> None:
    page.get_by_role("button", name=name, exact=exact).last.click()
    settle(page)


def select_option(page, label: str, option: str) -> None:
    """Pick `option` (text contained in it) in the st.selectbox labelled `label` (visible one)."""
    box = page.get_by_role("combobox", name=label, exact=True).filter(visible=True).first
    box.click()
    page.get_by_role("option").filter(has_text=option).first.click()
    settle(page)


def selected(page, label: str) -> str:
    """The current value of the visible st.selectbox labelled `label`."""
    return page.get_by_role("combobox", name=label, exact=True).filter(visible=True).first.input_value()


def fill(page, label: str, value: str) -> None:
    """Type into the visible st.text_input / st.text_area / st.number_input labelled `label` and commit it
    (inside an st.form the value is sent with the form's submit button)."""
    box = page.get_by_role("textbox", name=label, exact=True).or_(
        page.get_by_role("spinbutton", name=label, exact=True)).filter(visible=True).first
    box.fill(value)
    box.press("Tab")  # blur commits the value; Enter would also submit an enclosing st.form
    settle(page)


def snap(page, name: str, *, full_page: bool = True, doc: bool = True) -> Path:
    """Screenshot to test-artifacts/<name>.png; also to docs/screenshots/ when CAI_UPDATE_SCREENSHOTS=1
    (unless doc=False: test-only views stay out of the docs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=full_page)
    if doc and os.environ.get("CAI_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, DOC_SHOTS / f"{name}.png")
    return out
