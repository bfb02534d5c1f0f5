"""Every page with hostile names (issue 15 item 6): a constitution, principle, judge, gold set, batch, policy
and annotator named with Streamlit markdown (colour, LaTeX, bold, a javascript: link) show that text literally
on every page and tab - no coloured span, no KaTeX, no bold, no link, no dialog."""
from __future__ import annotations

import json
import time

import pytest

from ui.navigation import page_files, page_url

from tests.browser.helpers import click_button, click_tab, open_page, settle, snap

# the string, with tokens no page shows on its own
HOSTILE = r":red[Xq7] $$\LaTeX$$ **Bq7** [lq7](javascript:alert(1))"
LITERAL = ("**Bq7**", ":red[Xq7]", "[lq7](javascript:alert(1))")


@pytest.fixture(scope="module")
def hostile(app_server, app_store):
    """Seed the app's workspace with HOSTILE in every user-named thing the pages show."""
    from cai_core.constitution.model import Constitution, FewShotExample, Principle
    from cai_core.constitution.versions import save_constitution
    from cai_core.rlaif.preferences import add_label
    from cai_core.store import now
    from tests.helpers import seed_evaluation

    c = Constitution(name=HOSTILE, description=HOSTILE, principles=[
        Principle(id="p1", name=HOSTILE, critique_request="Critique: " + HOSTILE, revision_request="Revise it.")],
        few_shot=[FewShotExample(question=HOSTILE, response="r", critique="c", revision="v", principle_id="p1")])
    save_constitution(app_store, c)
    from cai_core.settings import set_current

    set_current(app_store, "constitution", HOSTILE)  # a fresh workspace starts on harmless_helpful (issue 22)
    t = time.time()
    with app_store.tx() as conn:
        tid = conn.execute(
            "INSERT INTO trajectories (key, batch, prompt, constitution_name, constitution_version, model, params_json,"
            " seed, initial, final, status, rounds, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ("hostile", HOSTILE, "prompt " + HOSTILE, HOSTILE, c.version, HOSTILE, "{}", 0, "initial", "final",
             "done", 1, t, t)).lastrowid
        conn.execute("INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, revision,"
                     " created_at) VALUES (?,?,?,?,?,?,?)", (tid, 1, "p1", "critique", 1, "final", t))
        cid = conn.execute(
            "INSERT INTO comparisons (key, source, batch, prompt, response_a, response_b, gold_label, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)", ("hostile", HOSTILE, HOSTILE, "p " + HOSTILE, "a", "b", "A", now())).lastrowid
        for order, p in (("AB", 0.7), ("BA", 0.4)):
            conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, constitution_version, principle_id,"
                         " style, order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (cid, f"mc|{HOSTILE}|{c.version}|random|abcd1234", HOSTILE, c.version, "p1", "mc", order, p,
                          "ok", now()))
    add_label(app_store, cid, "A", HOSTILE)
    eid = seed_evaluation(app_store, "hostile-eval")
    result = app_store.scalar("SELECT result_json FROM evaluations WHERE id=?", (eid,))
    app_store.execute("UPDATE evaluations SET result_json=? WHERE id=?",
                      (result.replace('"tuned"', json.dumps(HOSTILE)), eid))
    app_store.execute("UPDATE comparisons SET policy_b=? WHERE policy_b='tuned'", (HOSTILE,))
    return c


def assert_literal(page, where: str, *, shown: bool) -> None:
    page.wait_for_timeout(300)
    assert page.dialogs == [], f"{where}: a JS dialog fired: {page.dialogs}"
    rendered = page.evaluate("""() => {
        const app = document.querySelector("[data-testid='stApp']");
        const all = [...app.querySelectorAll('*')];
        return {
            colour: all.filter(e => e.children.length === 0 && e.textContent.trim() === 'Xq7').length,
            katex: app.querySelectorAll('.katex, math').length,
            // markup made FROM the name holds just its token; a bold title around the whole literal name is ours
            bold: all.filter(e => ['STRONG', 'B'].includes(e.tagName) && e.textContent.trim() === 'Bq7').length,
            links: [...app.querySelectorAll('a')].filter(a => a.textContent.trim() === 'lq7'
                     || (a.getAttribute('href') || '').toLowerCase().startsWith('javascript:')).length,
        };
    }""")
    assert rendered == {"colour": 0, "katex": 0, "bold": 0, "links": 0}, f"{where}: markup from a name: {rendered}"
    if shown:
        body = page.inner_text("[data-testid='stApp']")
        missing = [piece for piece in LITERAL if piece not in body]
        assert not missing, f"{where}: {missing} not shown literally"


def _visible_tabs(page) -> list[str]:
    tabs = page.locator("[data-testid='stMain'] [role='tab']").filter(visible=True)
    return [tabs.nth(i).inner_text().strip() for i in range(tabs.count())]


# pages that show the seeded names on their first view (the others must still not render them)
SHOWN_FIRST = {"20_Constitution", "50_Judge_Reliability"}


def test_every_page_and_tab_shows_hostile_names_literally(page, app_server, hostile):
    for path in page_files():
        if path.stem.startswith("80_"):
            continue  # walked step by step below
        open_page(page, app_server, "" if path.stem.startswith("00_") else page_url(path))
        assert_literal(page, path.stem, shown=path.stem in SHOWN_FIRST)
        if path.stem.startswith("20_"):  # the principle's expander label and the few-shot example's
            labels = page.locator("[data-testid='stMain'] [data-testid='stExpander'] summary").filter(has_text="**Bq7**")
            assert labels.count() == 2, labels.count()
        for name in _visible_tabs(page):
            tab = page.get_by_role("tab", name=name, exact=True).filter(visible=True)
            if tab.count():  # a tab nested in another tab is hidden once a sibling of its parent is open
                tab.first.click()
                settle(page, 200)
                assert_literal(page, f"{path.stem} / {name}", shown=False)
        if path.stem.startswith("30_"):
            click_tab(page, "Results")
            assert_literal(page, "Critique and Revise / Results", shown=True)  # the trajectory caption
            snap(page, "hostile_results", doc=False)
    snap(page, "hostile_last_page", doc=False)


def test_the_demo_shows_hostile_names_literally(page, app_server, hostile):
    open_page(page, app_server, "demo", "Constitutional AI in one minute")
    for step in range(7):
        # stored trajectory, reliability (gold set and judge), evaluation (policy) and the findings name it
        assert_literal(page, f"demo step {step + 1}", shown=step in (2, 4, 5, 6))
        if step < 6:
            click_button(page, "Next →")
            settle(page)
    snap(page, "hostile_demo_end", doc=False)


def test_detector_catches_names_rendered_as_markdown(page):
    """The check above can fail: what Streamlit makes of the name as markdown trips every part of it."""
    page.set_content("<div data-testid='stApp'><span style='color:red'>Xq7</span> <span class='katex'>LaTeX</span> "
                     "<strong>Bq7</strong> <a href='javascript:alert(1)'>lq7</a></div>")
    with pytest.raises(AssertionError, match="'colour': 1, 'katex': 1, 'bold': 1, 'links': 1"):
        assert_literal(page, "control", shown=False)
