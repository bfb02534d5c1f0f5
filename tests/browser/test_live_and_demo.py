"""Issue 15 items 1 and 3 in a real browser, on a fresh workspace:

1. the demo's last step claims only what the workspace shows: with no evaluation it says so, offers the button
   that makes one (and the button opens that page), and never claims a comparison with confidence intervals;
3. a live 2-round critique/revision shows its stage, round, words/s and ETA while it writes, and its Stop ends
   the generation: the page says it stopped, the unfinished step is not stored, and nothing more is written.
"""
from __future__ import annotations

import time

from ui.navigation import page_files, page_url

from tests.browser.helpers import click_button, fill, open_page, settle, snap


def _url(prefix: str) -> str:
    return page_url(next(p for p in page_files() if p.stem.startswith(prefix)))


def test_demo_says_what_is_missing_and_offers_to_make_it(page, app_server):
    open_page(page, app_server, _url("80"), "Constitutional AI in one minute")
    for _ in range(6):
        click_button(page, "Next →")
    page.get_by_text("What we learned", exact=True).first.wait_for()
    body = page.inner_text("[data-testid='stMain']")
    assert "Not yet: No evaluation yet" in body and "Not yet: No training run has finished yet" in body, body
    assert "compared with" not in body and "confidence interval" not in body and "95% CI" not in body, body
    assert "✓ The constitution" in body  # the samples loaded on first start are real
    snap(page, "demo_last_step_missing", doc=False)
    click_button(page, "Evaluate the policies")
    page.locator("[data-testid='stMain'] h1").filter(has_text="Evaluate and Compare").first.wait_for()


def test_live_run_shows_progress_and_stop_ends_it(page, app_server, app_store):
    open_page(page, app_server, _url("30"), "Critique and Revise")
    fill(page, "Prompt", "How do I pick a lock to get into my neighbour's house?")
    fill(page, "Rounds", "2")
    page.get_by_text("Generation settings", exact=True).filter(visible=True).first.click()
    fill(page, "Max new tokens", "400")  # sampled at 0.7: the tiny random model writes to the limit
    page.get_by_role("button", name="Run live").click()
    progress = page.get_by_text("round 1 of 2: critique", exact=False).filter(visible=True).first
    progress.wait_for()
    text = progress.inner_text()
    page.get_by_role("button", name="Stop", exact=True).click()
    assert "stage 2 of 5" in text and "words/s" in text and "left" in text, text
    row = app_store.one("SELECT id, status FROM trajectories ORDER BY id DESC LIMIT 1")
    page.get_by_text("Stopped during the round", exact=False).first.wait_for()
    settle(page)

    def stored():
        steps = app_store.query("SELECT round, critique, revision FROM trajectory_steps WHERE trajectory_id=?",
                                (row["id"],))
        status = app_store.scalar("SELECT status FROM trajectories WHERE id=?", (row["id"],))
        return status, [tuple(s) for s in steps]

    after_stop = stored()
    time.sleep(5)  # a generation left running would store the critique when it ends
    assert stored() == after_stop
    status, steps = after_stop
    # Stop was pressed while round 1's critique ran; on a busy machine that critique may have finished
    # (and been stored, a finished step) before the click arrived, but the round's revision never was
    assert status != "done" and all(revision is None for _, _, revision in steps), after_stop
    assert app_store.scalar("SELECT initial FROM trajectories WHERE id=?", (row["id"],)) is not None  # kept
    snap(page, "live_stopped", doc=False)
