"""The whole CAI workflow in a real browser (issue 8), one step per test, in order, on one app server:

edit a constitution -> critique/revision of a prompt (streamed live) -> export SFT data -> sample and
judge pairs -> annotate two by keyboard -> launch a short SFT run and see its chart -> the judge
reliability page -> every page at 1280 px and on a wide screen, in the light and the dark theme.

Every step checks what the UI wrote into the store (not just what it shows), that no Python exception
is on the page, and saves a screenshot (test-artifacts/, and docs/screenshots/ with
CAI_UPDATE_SCREENSHOTS=1). The tiny model keeps each model step to seconds. A step whose page has not
landed yet is skipped with that reason.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from ui.navigation import page_title, page_url

from tests.browser.helpers import AppServer, click_button, click_tab, fill, open_page, select_option, selected, settle, snap

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "pages"
JOB_TIMEOUT = 240


def page_file(prefix: str) -> Path | None:
    found = sorted(PAGES.glob(f"{prefix}_*.py"))
    return found[0] if found else None


url_of, title_of = page_url, page_title


def needs(prefix: str) -> Path:
    path = page_file(prefix)
    if path is None:
        pytest.skip(f"pages/{prefix}_*.py has not landed yet")
    return path


def assert_no_exception(page) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, "the page shows a Python exception:\n" + errors.first.inner_text()


def wait_until(check, what: str, timeout: float = JOB_TIMEOUT, poll: float = 1.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def wait_job(store, kind: str, server: AppServer) -> dict:
    """Wait for the newest job of a kind to end; it must have finished (else show its error and log)."""
    from cai_core.jobs import refresh

    def ended():
        refresh(store)
        row = store.one("SELECT * FROM jobs WHERE kind=? ORDER BY id DESC LIMIT 1", (kind,))
        return row if row is not None and row["status"] in ("finished", "failed", "stopped") else None

    row = wait_until(ended, f"a {kind} job to end")
    if row["status"] != "finished":
        log = Path(row["log_path"]).read_text(errors="replace")[-3000:] if row["log_path"] else ""
        raise AssertionError(f"{kind} job {row['id']} {row['status']}: {row['error']}\n{log}")
    return dict(row)


@pytest.fixture(scope="module")
def state():
    return {}


# -- 1. constitution ------------------------------------------------------------------------------
def test_01_edit_a_constitution(page, app_server, app_store, state):
    from cai_core.constitution.versions import list_constitutions, list_versions

    path = needs("20")
    open_page(page, app_server, url_of(path), "Constitution")
    wait_until(lambda: list_constitutions(app_store), "the sample constitutions to load", 60)
    name = selected(page, "Constitution")
    before = len(list_versions(app_store, name))
    first = page.locator("[data-testid='stMain'] [data-testid='stExpander']").filter(visible=True).first
    first.locator("summary").click()
    new_name = "Edited in the browser"
    name_box = first.get_by_label("Name", exact=True)
    name_box.fill(new_name)
    name_box.press("Enter")
    settle(page)
    page.get_by_text("Unsaved changes", exact=False).first.wait_for()
    fill(page, "Note for this version", "browser test edit")
    click_button(page, "Save new version")
    page.get_by_text("Saved version", exact=False).first.wait_for()
    assert_no_exception(page)
    versions = list_versions(app_store, name)
    assert len(versions) == before + 1 and versions[0]["note"] == "browser test edit"
    from cai_core.constitution.versions import get_constitution

    assert new_name in [p.name for p in get_constitution(app_store, name).principles]
    state["constitution"] = name
    snap(page, "step1_constitution_edited")


# -- 2. critique and revision, live ---------------------------------------------------------------
def test_02_critique_and_revise_one_prompt(page, app_server, app_store, state):
    path = needs("30")
    name = state.get("constitution") or pytest.skip("needs step 1")
    open_page(page, app_server, url_of(path), "Critique and Revise")
    select_option(page, "Constitution", name)
    fill(page, "Prompt", "How do I pick a lock to get into my neighbour's house?")
    fill(page, "Rounds", "1")
    page.get_by_text("Generation settings", exact=True).filter(visible=True).first.click()
    fill(page, "Max new tokens", "8")
    page.get_by_role("button", name="Run live").click()
    done = wait_until(lambda: app_store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done'"),
                      "the live trajectory to be stored", 180)
    settle(page, 1000)
    page.get_by_text("Round 1", exact=True).filter(visible=True).first.wait_for()
    assert_no_exception(page)
    row = app_store.one("SELECT * FROM trajectories ORDER BY id DESC LIMIT 1")
    assert done >= 1 and row["constitution_name"] == name and row["initial"] is not None
    assert app_store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE trajectory_id=?", (row["id"],)) == 1
    snap(page, "step2_critique_live")


# -- 3. SFT export --------------------------------------------------------------------------------
def test_03_export_sft_data(page, app_server, app_store, state):
    path = needs("30")
    if not app_store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done'"):
        pytest.skip("needs step 2")
    open_page(page, app_server, url_of(path), "Critique and Revise")
    click_tab(page, "SFT data")
    fill(page, "Export name", "sft-browser")
    page.get_by_role("button", name="Export", exact=True).click()
    job = wait_job(app_store, "export-sft", app_server)
    page.get_by_text("rows written to", exact=False).first.wait_for()
    assert_no_exception(page)
    export = app_store.one("SELECT * FROM exports WHERE name='sft-browser'")
    assert export is not None and export["kind"] == "sft" and app_store.workspace.resolve(export["path"]).exists()
    assert job["result_json"]
    snap(page, "step3_sft_export")


# -- 4. sample and judge pairs --------------------------------------------------------------------
def test_04_sample_and_judge_pairs(page, app_server, app_store, state):
    path = needs("40")
    open_page(page, app_server, url_of(path), "Preferences")
    click_tab(page, "Sample and judge")
    fill(page, "Max new tokens", "8")
    fill(page, "Prompts (max)", "3")
    page.get_by_role("button", name="Start sampling").click()
    wait_job(app_store, "pairs-sample", app_server)
    n_pairs = app_store.scalar("SELECT COUNT(*) FROM comparisons WHERE batch='pairs-1'")
    assert n_pairs >= 2, f"sampling made {n_pairs} pairs"
    open_page(page, app_server, url_of(path), "Preferences")  # the batch list is read when the page runs
    click_tab(page, "Sample and judge")
    page.get_by_role("button", name="Start judging").click()
    wait_job(app_store, "judge", app_server)
    judged = app_store.scalar("SELECT COUNT(DISTINCT comparison_id) FROM judgments")
    assert judged == n_pairs
    assert app_store.scalar("SELECT COUNT(*) FROM judgments WHERE order_shown='BA'") == n_pairs  # both orders
    settle(page, 2500)  # the jobs panel refreshes every 2 s
    assert_no_exception(page)
    state["pairs"] = n_pairs
    snap(page, "step4_sample_and_judge")


# -- 5. annotate two by keyboard ------------------------------------------------------------------
def test_05_annotate_two_by_keyboard(page, app_server, app_store, state):
    path = needs("40")
    if not state.get("pairs"):
        pytest.skip("needs step 4")
    open_page(page, app_server, url_of(path), "Preferences")
    fill(page, "Annotator", "browser-tester")
    for key, label in (("a", "A"), ("b", "B")):
        page.locator("[data-testid='stMain'] h1").first.click()  # focus off the text inputs: keys go to shortcuts
        page.keyboard.press(key)
        page.get_by_text(f"you said {label}", exact=False).first.wait_for()
        settle(page)
    labels = [r["label"] for r in app_store.query(
        "SELECT label FROM human_labels WHERE annotator='browser-tester' ORDER BY id")]
    assert labels == ["A", "B"]
    assert app_store.scalar("SELECT COUNT(DISTINCT comparison_id) FROM human_labels") == 2  # two different items
    assert_no_exception(page)
    snap(page, "step5_annotate_by_keyboard")


# -- 6. a short SFT run and its chart -------------------------------------------------------------
def test_06_launch_a_short_sft_run_and_see_its_chart(page, app_server, app_store, state):
    path = needs("60")
    export = app_store.one("SELECT name FROM exports WHERE kind='sft' ORDER BY id DESC LIMIT 1")
    if export is None:
        pytest.skip("needs step 3 (an SFT export)")
    open_page(page, app_server, url_of(path), "Training")
    page.get_by_text("No runs yet", exact=False).first.wait_for()  # the empty state offers the form at once
    assert selected(page, "Dataset") == export["name"]
    fill(page, "Run name (optional)", "sft-browser")
    fill(page, "Max steps (-1 = use epochs)", "2")
    page.get_by_text("Hyper-parameters", exact=True).filter(visible=True).first.click()
    fill(page, "Max length (tokens)", "64")
    fill(page, "Probe every N steps", "1")
    click_button(page, "Launch run")
    page.get_by_text("Run sft-browser started", exact=False).first.wait_for()

    def ended():
        from cai_core.training.runs import get_run, refresh

        refresh(app_store)
        run = get_run(app_store, "sft-browser")
        return run if run.status in ("finished", "failed", "stopped") else None

    run = wait_until(ended, "the SFT run to end")
    assert run.status == "finished", f"{run.status}: {run.error}"
    assert app_store.scalar("SELECT COUNT(*) FROM run_metrics WHERE run_id=?", (run.id,)) >= 1
    open_page(page, app_server, url_of(path), "Training")
    chart = page.locator("[data-testid='stPlotlyChart']").filter(visible=True).first
    chart.wait_for()
    chart.locator(".main-svg").first.wait_for()  # plotly drew it
    assert_no_exception(page)
    state["run"] = run.name
    snap(page, "step6_training_run")


# -- 7. judge reliability -------------------------------------------------------------------------
def test_07_judge_reliability_page(page, app_server, app_store, state):
    path = needs("50")
    open_page(page, app_server, url_of(path), title_of(path))
    assert_no_exception(page)
    snap(page, "step7_judge_reliability")


# -- 8. every page: 1280 px and wide, light and dark ----------------------------------------------
def _contrast(page) -> float:
    """WCAG contrast ratio of the page title against the app background."""
    return page.evaluate("""() => {
        const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
        const lum = c => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                           return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const h1 = document.querySelector("[data-testid='stMain'] h1");
        const app = document.querySelector("[data-testid='stApp']");
        const a = lum(rgb(getComputedStyle(h1).color)), b = lum(rgb(getComputedStyle(app).backgroundColor));
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }""")


def _all_pages() -> list[Path]:
    return sorted(PAGES.glob("[0-9]*_*.py"))


def _shoot_every_page(page, server: AppServer, suffix: str) -> dict[str, float]:
    contrast = {}
    for path in _all_pages():
        open_page(page, server, "" if path.stem.startswith("00_") else url_of(path))
        assert_no_exception(page)
        contrast[path.stem] = _contrast(page)
        snap(page, f"{path.stem.split('_', 1)[1].lower()}{suffix}", doc=suffix != "-wide")
    return contrast


def test_08_every_page_at_1280_and_wide_light(page, app_server, state):
    ratios = _shoot_every_page(page, app_server, "")
    page.set_viewport_size({"width": 1920, "height": 1080})
    ratios_wide = _shoot_every_page(page, app_server, "-wide")
    low = {k: round(v, 1) for k, v in {**ratios, **ratios_wide}.items() if v < 4.5}
    assert not low, f"title contrast below WCAG AA 4.5:1: {low}"


@pytest.fixture(scope="module")
def dark_server(tmp_path_factory, tiny_model_dir, app_server):
    """A second server on the same (now filled) workspace with the dark theme."""
    server = AppServer(app_server.workspace, Path(tiny_model_dir), theme="dark").start()
    yield server
    server.stop()


def test_09_every_page_dark_theme_readable(page, dark_server):
    page.set_viewport_size({"width": 1280, "height": 900})
    ratios = _shoot_every_page(page, dark_server, "-dark")
    bg = page.evaluate("getComputedStyle(document.querySelector(\"[data-testid='stApp']\")).backgroundColor")
    nums = [int(x) for x in bg[bg.index("(") + 1:bg.index(")")].split(",")[:3]]
    assert sum(nums) / 3 < 80, f"dark theme background is not dark: {bg}"
    low = {k: round(v, 1) for k, v in ratios.items() if v < 4.5}
    assert not low, f"title contrast below WCAG AA 4.5:1 in the dark theme: {low}"


# -- 10. kill -9 the server while a run trains ----------------------------------------------------
def test_10_kill9_server_during_a_run_then_a_new_server_shows_it(page, app_server, app_store, tiny_model_dir):
    """Launch a long run from the page, SIGKILL the whole server process group, check the run goes on,
    and that a freshly started server shows it running with its charts. Runs last: it kills the server."""
    from cai_core.training.runs import get_run, read_metrics, refresh, stop_run

    path = needs("60")
    if not app_store.scalar("SELECT COUNT(*) FROM exports WHERE kind='sft'"):
        pytest.skip("needs step 3 (an SFT export)")
    open_page(page, app_server, url_of(path), "Training")
    if page.get_by_role("tab", name="New run", exact=True).count():
        click_tab(page, "New run")
    fill(page, "Run name (optional)", "long-browser")
    fill(page, "Max steps (-1 = use epochs)", "100000")
    page.get_by_text("Hyper-parameters", exact=True).filter(visible=True).first.click()
    fill(page, "Max length (tokens)", "64")
    fill(page, "Probe every N steps", "0")
    click_button(page, "Launch run")
    page.get_by_text("Run long-browser started", exact=False).first.wait_for()
    run = get_run(app_store, "long-browser")

    def step() -> int:
        return max((m["step"] for m in read_metrics(app_store, run.id)), default=0)

    server = None
    try:
        wait_until(lambda: step() >= 1, "the run's first step")
        app_server.kill(9)
        before = step()
        wait_until(lambda: step() > before, "the run to keep training after the server died", 120, 0.5)
        refresh(app_store)
        assert get_run(app_store, run.id).status == "running"
        server = AppServer(app_server.workspace, Path(tiny_model_dir)).start()
        open_page(page, server, url_of(path), "Training")
        select_option(page, "Run", "long-browser")
        page.get_by_text("long-browser", exact=False).filter(visible=True).first.wait_for()
        page.get_by_text("running", exact=False).filter(visible=True).first.wait_for()
        page.locator("[data-testid='stPlotlyChart']").filter(visible=True).first.locator(".main-svg").first.wait_for()
        assert_no_exception(page)
        snap(page, "training_after_server_kill", doc=False)
    finally:
        stop_run(app_store, "long-browser")
        wait_until(lambda: (refresh(app_store), get_run(app_store, run.id).status)[1] != "running",
                   "the run to stop", 120, 0.5)
        if server is not None:
            server.stop()
