"""Model text and stored text are data: HTML/markdown tricks show literally in the browser and never run.

Each test seeds the store directly (deterministic, no model run), opens the page that shows the text
in the real app, and checks three things: the literal text is visible, no JS dialog fired, and no
element was injected (no <script>/<img onerror> from the payload, no javascript: link, no <strong>
made from the payload's **bold**).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ui.navigation import page_url

from tests.browser.helpers import click_tab, open_page, snap

PAYLOAD = ("<script>alert(1)</script> **bold** <img src=x onerror=alert(1)> "
           "[link](javascript:alert(1)) <b>tag</b>")
PAGES = Path(__file__).resolve().parents[2] / "pages"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "constitutions"


def page_path(prefix: str) -> str | None:
    """The url path of pages/NN_*.py (as app.py names it), or None while that page has not landed."""
    found = sorted(PAGES.glob(f"{prefix}_*.py"))
    if not found:
        return None
    return page_url(found[0])


def assert_inert(page, marker: str = "alert(1)") -> None:
    """The payload shows as text, nothing of it became markup, and no dialog fired."""
    page.wait_for_timeout(500)  # give an injected onerror handler a chance to fire
    assert page.dialogs == [], f"a JS dialog fired: {page.dialogs}"
    injected = page.evaluate(
        """() => ({
            scripts: [...document.querySelectorAll('script')].filter(s => s.textContent.includes('alert(1)')).length,
            imgs: [...document.querySelectorAll('img')].filter(i => (i.getAttribute('src') || '') === 'x'
                    || i.hasAttribute('onerror')).length,
            jsLinks: [...document.querySelectorAll('a')].filter(a => (a.getAttribute('href') || '')
                    .toLowerCase().startsWith('javascript:')).length,
            bTags: [...document.querySelectorAll('b')].filter(b => b.textContent === 'tag').length,
            strongs: [...document.querySelectorAll('strong')].filter(s => s.textContent === 'bold').length,
        })"""
    )
    assert injected == {"scripts": 0, "imgs": 0, "jsLinks": 0, "bTags": 0, "strongs": 0}, injected
    body = page.inner_text("[data-testid='stApp']")
    for piece in ("<script>alert(1)</script>", "**bold**", "<img src=x onerror=alert(1)>",
                  "[link](javascript:alert(1))"):
        assert piece in body, f"{piece!r} is not shown literally"


def test_active_model_name_shown_literally(page, app_server, app_store):
    """The sidebar shows the stored active-model spec; a hostile spec string stays text."""
    from cai_core.settings import get_setting, set_setting

    before = get_setting(app_store, "active_model")
    set_setting(app_store, "active_model", PAYLOAD)
    try:
        open_page(page, app_server)
        page.get_by_text("<script>alert(1)</script>", exact=False).filter(visible=True).first.wait_for()
        assert_inert(page)
        snap(page, "escaping_sidebar", doc=False)
    finally:
        set_setting(app_store, "active_model", before)


def _seed_constitution(store) -> None:
    """The Critique and Revise page needs a constitution before it shows anything."""
    from cai_core.constitution.files import load_constitution_file
    from cai_core.constitution.versions import save_constitution

    save_constitution(store, load_constitution_file(SAMPLES / "seed.yaml"))


def _seed_trajectory(store, text: str) -> int:
    _seed_constitution(store)
    now = time.time()
    with store.tx() as conn:
        cur = conn.execute(
            "INSERT INTO trajectories (key, batch, prompt, constitution_name, constitution_version, model, params_json,"
            " seed, initial, final, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (f"xss-{now}", "xss-batch", "XSS prompt " + text, "xss", "v0", "tiny", json.dumps({}), 0,
             "initial " + text, "final " + text, "done", now, now),
        )
        tid = int(cur.lastrowid)
        conn.execute(
            "INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, critique_reasoning, violation,"
            " revision, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (tid, 1, "harm", "critique " + text, "reasoning " + text, 1, "revision " + text, now),
        )
    return tid


def _seed_comparison(store, text: str) -> int:
    now = time.time()
    with store.tx() as conn:
        cur = conn.execute(
            "INSERT INTO comparisons (key, source, batch, prompt, response_a, response_b, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (f"xss-{now}", "sampled", "xss-batch", "XSS prompt " + text, "A says " + text, "B says " + text, now),
        )
        return int(cur.lastrowid)


@pytest.mark.skipif(page_path("30") is None, reason="the Critique and Revise page has not landed yet")
def test_trajectory_text_shown_literally(page, app_server, app_store):
    _seed_trajectory(app_store, PAYLOAD)
    open_page(page, app_server, page_path("30"), "Critique and Revise")
    click_tab(page, "Results")  # newest trajectory first, opened below the table
    page.get_by_text("<script>alert(1)</script>", exact=False).filter(visible=True).first.wait_for()
    assert_inert(page)
    snap(page, "escaping_trajectory", doc=False)


@pytest.mark.skipif(page_path("40") is None, reason="the Preferences page has not landed yet")
def test_comparison_text_shown_literally(page, app_server, app_store):
    _seed_comparison(app_store, PAYLOAD)
    open_page(page, app_server, page_path("40"), "Preferences")
    for label in ("Annotate", "Queue", "Browse", "Comparisons"):
        tab = page.get_by_role("tab", name=label)
        if tab.count():
            click_tab(page, label)
            break
    page.get_by_text("<script>alert(1)</script>", exact=False).filter(visible=True).first.wait_for()
    assert_inert(page)
    snap(page, "escaping_comparison", doc=False)


def test_detector_catches_rendered_markup(page):
    """The checks above can fail: the same payload rendered as HTML trips them."""
    page.set_content(f"<div data-testid='stApp'>{PAYLOAD} <strong>bold</strong></div>")
    with pytest.raises(AssertionError):
        assert_inert(page)
