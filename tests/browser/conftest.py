"""Browser test fixtures: the real app per test module (`app_server`, `app_store`) and a fresh chromium page per
test, driven through Playwright with Debian's chromium (never a downloaded browser). Every test under
tests/browser/ gets the `browser` and `slow` markers, and is skipped with a message when chromium is missing.
The helpers (AppServer, open_page, click_button, snap, ...) are in tests/browser/helpers.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, SKIP_MESSAGE, TIMEOUT_MS, start_app


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
            if not CHROMIUM.exists():
                item.add_marker(pytest.mark.skip(reason=SKIP_MESSAGE))


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, tiny_model_dir):
    """The real app with a fresh workspace per test module; yields the AppServer (`.url`, `.workspace`)."""
    server = start_app(tmp_path_factory, tiny_model_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_store(app_server):
    """A store on the app's workspace, for seeding data and checking what the UI wrote."""
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    s = Store(Workspace.open(app_server.workspace))
    yield s
    s.close()


@pytest.fixture(scope="session")
def _playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(_playwright):
    b = _playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def page(browser, request):
    """A fresh 1280x900 page that records JS dialogs (an alert() firing is an XSS) and page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog):
        pg.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:  # what the browser showed when it failed
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - a failed screenshot must not hide the real failure
            pass
    context.close()
