"""Issue 22 item 3 in a real browser: start a judge job on the Preferences page, Stop it at k of N,
and the job card says "k of N judgments" and "stopped" - k being what the store holds of the job
(it read "stopped - 4/4 judgments" with a full bar after 16 of 112, counting pairs at the end)."""
from __future__ import annotations

import re
import time
from pathlib import Path

from ui.navigation import page_url

from tests.browser.helpers import click_tab, open_page, select_option, selected, settle, snap

ROOT = Path(__file__).resolve().parents[2]


def _assert_no_exception(page) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, "the page shows a Python exception:\n" + errors.first.inner_text()


PAIRS = 150  # x 2 orders: 300 judgments, far more than the tiny model judges before Stop


def _seed(store) -> None:
    from cai_core.rlaif.pairs import add_pairs

    pairs = [{"id": f"s{i}", "prompt": f"Question number {i}?", "response_a": f"Answer {i}.",
              "response_b": f"I will not answer {i}."} for i in range(PAIRS)]
    add_pairs(store, pairs, origin="imported", batch="stopme")


def _stored(store, job_id: int) -> int:
    return int(store.scalar("SELECT COUNT(*) FROM judgments WHERE job_id=?", (job_id,)))


def test_stop_a_judge_job_card_says_k_of_n_stopped(page, app_server, app_store):
    _seed(app_store)
    open_page(page, app_server, page_url(sorted((ROOT / "pages").glob("40_*.py"))[0]), "Preferences")
    click_tab(page, "Sample and judge")
    if selected(page, "Batch") != "stopme":
        select_option(page, "Batch", "stopme")
    page.get_by_role("button", name="Start judging").click()
    settle(page)
    deadline = time.time() + 240
    job_id = None
    while time.time() < deadline:  # until the job has stored some judgments, far from all
        row = app_store.one("SELECT id, status FROM jobs WHERE kind='judge' ORDER BY id DESC LIMIT 1")
        if row is not None:
            job_id = row["id"]
            assert row["status"] in ("queued", "running"), row["status"]
            if _stored(app_store, job_id) >= 8:
                break
        time.sleep(0.3)
    assert job_id is not None and _stored(app_store, job_id) >= 8, "the judge job stored nothing"
    stop = page.locator(f".st-key-pref_stop_{job_id}").get_by_role("button", name="Stop")
    stop.wait_for()  # the jobs panel polls every 2 s
    stop.click()
    settle(page, 500)
    status = app_store.scalar("SELECT status FROM jobs WHERE id=?", (job_id,))
    deadline = time.time() + 60
    while status not in ("stopped", "finished", "failed") and time.time() < deadline:
        time.sleep(0.3)
        status = app_store.scalar("SELECT status FROM jobs WHERE id=?", (job_id,))
    assert status == "stopped"
    k = _stored(app_store, job_id)
    assert 8 <= k < 2 * PAIRS
    expected = f"stopped - {k} of {2 * PAIRS} judgments"
    bar = page.locator("[data-testid='stProgress']").filter(has_text="judge stopme")
    deadline = time.time() + 30  # the jobs panel polls every 2 s
    while time.time() < deadline and expected not in " ".join(bar.all_inner_texts()):
        page.wait_for_timeout(500)
    text = " ".join(bar.all_inner_texts())
    assert expected in text, text
    assert not re.search(r"\b(\d+)/\1\b", text), text  # never "4/4" (pairs) after a stop
    # the bar is not full: its value is k of N
    value = bar.first.get_by_role("progressbar").get_attribute("aria-valuenow")
    assert value is not None and float(value) < 100, value
    _assert_no_exception(page)
    snap(page, "judge_stopped_k_of_n", doc=False)
