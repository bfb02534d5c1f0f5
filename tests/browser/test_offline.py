"""Offline and clean (issue 15 item 4): a walk over every page (and each of its tabs) sends no request
beyond the app's own 127.0.0.1 server, gets no 4xx/5xx answer, and shows no Deploy button."""
from __future__ import annotations

from ui.navigation import page_files, page_url

from tests.browser.helpers import open_page, settle


def test_a_full_page_walk_stays_on_127_0_0_1_without_errors(page, app_server):
    requests, bad = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: bad.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: bad.append(f"failed {r.url} ({r.failure})"))
    for path in page_files():
        open_page(page, app_server, "" if path.stem.startswith("00_") else page_url(path))
        tabs = page.locator("[data-testid='stMain'] [role='tab']").filter(visible=True)
        for name in [tabs.nth(i).inner_text().strip() for i in range(tabs.count())]:
            tab = page.get_by_role("tab", name=name, exact=True).filter(visible=True)
            if tab.count():  # a tab nested in another tab is hidden once a sibling of its parent is open
                tab.first.click()
                settle(page, 200)
        assert not page.get_by_role("button", name="Deploy").count(), f"Deploy button on {path.stem}"
    page.wait_for_timeout(1000)  # late requests (favicons, fonts) of the last page
    outside = sorted({u for u in requests if not u.startswith(app_server.url + "/") and not u.startswith("data:")
                      and u != app_server.url})
    assert requests and not outside, f"requests left 127.0.0.1: {outside}"
    assert not bad, f"failed requests in a clean page walk: {bad}"
