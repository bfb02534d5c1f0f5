"""Idempotent annotation in the real browser (issue 12 item 5): a burst of key presses while the
page reruns slowly stores one label per item shown, never a phantom second one.

The app server gets a `sitecustomize` that makes the annotation queue query slow (every rerun of
Preferences takes ~1.5 s), so the presses of a burst reach the server while it is still rerunning
after the first one, as on a loaded machine (docs/qa notes: an extra "A" stored ~5 s after a burst)."""
from __future__ import annotations

import os
import re

import pytest

from cai_core.rlaif.pairs import add_pairs
from tests.browser.helpers import ROOT, fill, open_page, settle, start_app
from ui.navigation import page_url

SLOW_QUEUE = '''
import os, time
import cai_core.rlaif.preferences as _prefs
_queue = _prefs.queue
def _slow_queue(*args, **kwargs):
    time.sleep(float(os.environ.get("CAI_TEST_SLOW_QUEUE_S", "0")))
    return _queue(*args, **kwargs)
_prefs.queue = _slow_queue
'''


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, tiny_model_dir):
    hook = tmp_path_factory.mktemp("slow-reruns")
    (hook / "sitecustomize.py").write_text(SLOW_QUEUE)
    server = start_app(tmp_path_factory, tiny_model_dir,
                       extra_env={"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "CAI_TEST_SLOW_QUEUE_S": "1.5"})
    yield server
    server.stop()


def test_a_burst_of_key_presses_stores_one_label_per_item_shown(page, app_server, app_store):
    add_pairs(app_store, [{"id": str(i), "prompt": f"question {i}", "response_a": f"yes {i}", "response_b": f"no {i}"}
                          for i in range(4)], origin="sampled", batch="burst")
    open_page(page, app_server, page_url(ROOT / "pages" / "40_Preferences.py"), "Preferences")
    fill(page, "Annotator", "burst-tester")
    meant = []
    for key, label, presses in (("a", "A", 4), ("b", "B", 3)):
        item = page.get_by_text(re.compile(r"^Item \d+ of \d+ - comparison \d+")).first.inner_text()
        page.locator("[data-testid='stMain'] h1").first.click()  # keys go to the shortcuts, not a text box
        for _ in range(presses):
            page.keyboard.press(key)
            page.wait_for_timeout(120)
        page.get_by_text(f"you said {label}", exact=False).first.wait_for()
        settle(page, 2500)  # every queued rerun has ended
        meant.append((int(item.split("comparison ")[1].split(" ")[0]), label))
    rows = [(r["comparison_id"], r["label"]) for r in app_store.query(
        "SELECT comparison_id, label FROM human_labels WHERE annotator='burst-tester' ORDER BY id")]
    assert rows == meant, f"{len(rows)} labels stored for {len(meant)} items shown: {rows}"
    assert app_store.scalar("SELECT COUNT(DISTINCT client_id) FROM human_labels WHERE annotator='burst-tester'") == 2
