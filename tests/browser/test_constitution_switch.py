"""Issue 22 item 1 replayed in the real app: switching constitutions never loses or misplaces an edit.

On the Constitution page, pick a constitution in the page's box (or in the sidebar), open principle 1,
edit its critique request, press Tab, save: the new version belongs to the picked constitution and holds
the edit, the sidebar and the page name the same constitution all along, and the other constitution is
untouched. Before the fix the sidebar kept the old name, the Tab rerun switched the page back and the edit
was gone (Save had nothing to save). Also: an unsaved edit survives switching away and back, and an Import
shows the imported name in both boxes.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.helpers import click_button, click_tab, open_page, selected, settle, snap

SIDEBAR_BOX = "Current constitution"
PAGE_BOX = "Constitution"


def _state(store, name: str) -> list[str]:
    from cai_core.constitution.versions import list_versions

    return [v["version"] for v in list_versions(store, name)]


def _open_principle_1(page, name: str) -> None:
    """Open the expander of principle 1 of `name` (its label: '1. <principle name>  ·  <id>')."""
    from cai_core.constitution.files import load_constitution_file
    from cai_core.data.sample_data import SAMPLE_DIR

    first = load_constitution_file(SAMPLE_DIR / "constitutions" / f"{name}.yaml").principles[0]
    details = page.locator("[data-testid='stMain'] [data-testid='stExpander'] details").filter(
        has=page.locator("summary").filter(has_text=re.compile(r"(^|[^0-9])1\. " + re.escape(first.name)))).first
    if details.get_attribute("open") is None:  # an expander keeps its open state across reruns: open it once
        details.locator("summary").first.click()
        settle(page)


def _edit_first_critique(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Critique request", exact=True).filter(visible=True).first
    box.fill(text)
    box.press("Tab")  # the blur commits the value: a rerun, the moment the old app switched back
    settle(page)


def _pick(page, label: str, option: str, *, sidebar: bool) -> None:
    """Open the box and click the option; a rerun still drawing the page can close a just-opened list,
    so the opening is retried (the pick itself happens once)."""
    scope = page.locator("[data-testid='stSidebar']") if sidebar else page.locator("[data-testid='stMain']")
    choice = page.get_by_role("option").filter(has_text=re.compile(r"^" + re.escape(option) + r"\b")).first
    for attempt in range(4):
        settle(page, 200)
        scope.get_by_role("combobox", name=label, exact=True).first.click()
        try:
            choice.wait_for(state="visible", timeout=5000)
            break
        except Exception:  # noqa: BLE001 - the list closed under a rerun: open it again
            page.keyboard.press("Escape")
            if attempt == 3:
                raise
    choice.click()
    settle(page)


def _expect_boxes(page, name: str, why: str = "") -> None:
    """Both boxes name `name`, waiting out a rerun still in flight (st.rerun() leaves a moment between runs
    in which the app reads as idle); the old app never got there."""
    from playwright.sync_api import expect

    try:
        for scope, label in (("stSidebar", SIDEBAR_BOX), ("stMain", PAGE_BOX)):
            expect(page.locator(f"[data-testid='{scope}']").get_by_role("combobox", name=label, exact=True).first
                   ).to_have_value(name, timeout=15000)
    except AssertionError as exc:
        raise AssertionError(f"{why or 'both boxes'}: (sidebar, page) = {_boxes(page)}, expected {name!r}") from exc


def _boxes(page) -> tuple[str, str]:
    sidebar = page.locator("[data-testid='stSidebar']").get_by_role("combobox", name=SIDEBAR_BOX, exact=True)
    main = page.locator("[data-testid='stMain']").get_by_role("combobox", name=PAGE_BOX, exact=True)
    return sidebar.first.input_value(), main.first.input_value()


def _replay(page, app_server, app_store, *, start: str, target: str, sidebar: bool, edit: str) -> None:
    from cai_core.constitution.versions import get_constitution, list_versions
    from cai_core.data.sample_data import ensure_samples
    from cai_core.settings import set_current

    ensure_samples(app_store)  # what the app's first start does; here before the first page is opened
    set_current(app_store, "constitution", start)
    other_before = _state(app_store, start)
    target_before = _state(app_store, target)
    open_page(page, app_server, "constitution", "Constitution")
    _expect_boxes(page, start)

    _pick(page, SIDEBAR_BOX if sidebar else PAGE_BOX, target, sidebar=sidebar)
    _expect_boxes(page, target, "the sidebar and the page name the same current constitution")
    _open_principle_1(page, target)
    _edit_first_critique(page, edit)
    _expect_boxes(page, target, "the Tab rerun must not switch back")
    box = page.get_by_role("textbox", name="Critique request", exact=True).filter(visible=True).first
    assert box.input_value() == edit, "the edit is still in the box"
    save = page.get_by_role("button", name="Save new version", exact=True)
    assert save.is_enabled(), "there is an unsaved change to save"
    click_button(page, "Save new version")
    snap(page, f"constitution-switch-{'sidebar' if sidebar else 'page'}", doc=False)

    after = list_versions(app_store, target)
    assert len(after) == len(target_before) + 1, "a new version of the picked constitution"
    assert after[0]["parent_version"] == target_before[0]
    saved = get_constitution(app_store, target)
    assert saved.principles[0].critique_request == edit
    assert _state(app_store, start) == other_before, "the other constitution is untouched"
    assert edit not in get_constitution(app_store, start).principles[0].critique_request
    _expect_boxes(page, target)


@pytest.mark.browser
def test_pick_on_the_page_edit_and_save(page, app_server, app_store):
    _replay(page, app_server, app_store, start="anti_evasive", target="harmless_helpful", sidebar=False,
            edit="Edited on the page after picking harmless_helpful there.")


@pytest.mark.browser
def test_pick_in_the_sidebar_edit_and_save(page, app_server, app_store):
    _replay(page, app_server, app_store, start="harmless_helpful", target="anti_evasive", sidebar=True,
            edit="Edited after picking anti_evasive in the sidebar.")


@pytest.mark.browser
def test_an_unsaved_edit_survives_switching_away_and_back(page, app_server, app_store):
    from cai_core.settings import set_current

    set_current(app_store, "constitution", "harmless_helpful")
    before = {n: _state(app_store, n) for n in ("harmless_helpful", "anti_evasive")}
    open_page(page, app_server, "constitution", "Constitution")
    _open_principle_1(page, "harmless_helpful")
    _edit_first_critique(page, "A draft of harmless_helpful, not saved.")
    _pick(page, SIDEBAR_BOX, "anti_evasive", sidebar=True)
    _expect_boxes(page, "anti_evasive")
    _open_principle_1(page, "anti_evasive")
    box = page.get_by_role("textbox", name="Critique request", exact=True).filter(visible=True).first
    assert "harmless_helpful" not in box.input_value(), "a draft is never applied to another constitution"
    _pick(page, PAGE_BOX, "harmless_helpful", sidebar=False)
    _open_principle_1(page, "harmless_helpful")
    box = page.get_by_role("textbox", name="Critique request", exact=True).filter(visible=True).first
    assert box.input_value() == "A draft of harmless_helpful, not saved."
    assert page.get_by_role("button", name="Save new version", exact=True).is_enabled()
    assert {n: _state(app_store, n) for n in before} == before, "nothing saved by switching"


@pytest.mark.browser
def test_import_shows_the_imported_name_in_both_boxes(page, app_server, app_store, tmp_path):
    from cai_core.constitution.versions import get_constitution
    from cai_core.settings import set_current

    set_current(app_store, "constitution", "anti_evasive")
    path = tmp_path / "imported_one.yaml"
    path.write_text("name: imported_one\nprinciples:\n  - id: p1\n    name: Only\n"
                    "    critique_request: Is it harmful?\n    revision_request: Make it harmless.\n",
                    encoding="utf-8")
    open_page(page, app_server, "constitution", "Constitution")
    click_tab(page, "Import / export")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(path))
    settle(page)
    click_button(page, "Import")
    version = get_constitution(app_store, "imported_one").version
    _expect_boxes(page, "imported_one")
    assert selected(page, "Version").startswith(version)


@pytest.mark.browser
def test_duplicate_from_the_page_then_edit_and_save(page, app_server, app_store):
    """Item 2 in the browser: Duplicate makes the copy current in both boxes, and an edit saved there is the
    copy's new version, the source untouched."""
    from cai_core.constitution.versions import get_constitution, list_versions
    from cai_core.data.sample_data import ensure_samples
    from cai_core.settings import set_current

    ensure_samples(app_store)
    set_current(app_store, "constitution", "anti_evasive")
    source = _state(app_store, "anti_evasive")
    open_page(page, app_server, "constitution", "Constitution")
    click_tab(page, "New / duplicate / rename")
    page.get_by_text("Duplicate", exact=True).first.click()
    settle(page)
    box = page.get_by_role("textbox", name="New name", exact=True)
    box.fill("anti_dup")
    box.press("Tab")
    settle(page)
    click_button(page, "Create")
    _expect_boxes(page, "anti_dup")
    assert len(_state(app_store, "anti_dup")) == 1
    click_tab(page, "Edit")
    _open_principle_1(page, "anti_evasive")  # the copy's principle 1 has the source's name
    _edit_first_critique(page, "Edited in the copy.")
    click_button(page, "Save new version")
    assert get_constitution(app_store, "anti_dup").principles[0].critique_request == "Edited in the copy."
    assert len(list_versions(app_store, "anti_dup")) == 2
    assert _state(app_store, "anti_evasive") == source
