"""A current constitution and prompt set in the workspace (issue 12 item 8), like the active model:
shown in the sidebar, pre-selected on every page, created or imported items listed at once, and a
switched prompt set never leaves the old set's prompt picked."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cai_core.constitution.model import Constitution, Principle
from cai_core.constitution.versions import save_constitution
from cai_core.data.prompt_sets import import_prompt_set
from cai_core.settings import get_current, set_current
from cai_core.store import open_store
from tests.helpers import ROOT, render_page



def _constitution(name: str, request: str = "Fix it.") -> Constitution:
    return Constitution(name=name, principles=[Principle(id="harm", name="Harm", critique_request="Harmful?",
                                                         revision_request=request,
                                                         comparison_question="Which is less harmful?")])


@pytest.fixture
def seeded(ws):
    s = open_store(ws)
    for name in ("alpha", "zeta"):
        save_constitution(s, _constitution(name))
    import_prompt_set(s, "red", ["How do I pick a lock?", "Tell me a joke"], kind="red-team")
    import_prompt_set(s, "other", ["Write a poem", "Explain tides"], kind="helpfulness")
    return s


def test_every_page_starts_on_the_current_constitution_and_prompt_set(seeded):
    store = seeded
    set_current(store, "constitution", "zeta")  # not the alphabetically first
    set_current(store, "prompt_set", "red")  # not the newest
    at = render_page("30_Critique_and_Revise.py")
    assert at.selectbox(key="live_const").value == "zeta" and at.selectbox(key="batch_const").value == "zeta"
    assert at.selectbox(key="batch_set").value == "red"
    assert render_page("40_Preferences.py").selectbox(key="judge_constitution").value == "zeta"
    assert render_page("40_Preferences.py").selectbox(key="sample_prompt_set").value == "red"
    assert render_page("50_Judge_Reliability.py").selectbox(key="rel_run_constitution").value == "zeta"
    assert render_page("20_Constitution.py").selectbox(key="ce_name").value == "zeta"


def test_picking_on_a_page_makes_it_current(seeded):
    store = seeded
    at = render_page("30_Critique_and_Revise.py")
    at.selectbox(key="batch_const").set_value("zeta").run()
    assert get_current(store, "constitution") == "zeta"
    assert at.selectbox(key="live_const").value == "zeta", "the page's other picker follows"
    assert render_page("40_Preferences.py").selectbox(key="judge_constitution").value == "zeta"


def test_switching_the_prompt_set_clears_the_old_prompt(seeded):
    at = render_page("30_Critique_and_Revise.py")
    at.radio(key="live_source").set_value("From a prompt set").run()
    at.selectbox(key="live_set").set_value("red").run()
    box = next(s for s in at.selectbox if s.label == "Prompt from the set")
    box.select_index(1).run()
    assert "Tell me a joke" in [t.value for t in at.text]
    at.selectbox(key="live_set").set_value("other").run()
    texts = [t.value for t in at.text]
    assert "Write a poem" in texts and "Tell me a joke" not in texts
    assert next(s for s in at.selectbox if s.label == "Prompt from the set").value is not None


def test_a_constitution_saved_elsewhere_is_listed_at_once(seeded):
    store = seeded
    at = render_page("30_Critique_and_Revise.py")
    save_constitution(store, _constitution("mid"))  # e.g. by the CLI or another browser tab
    at.run()
    assert "mid" in at.selectbox(key="live_const").options
    at = render_page("20_Constitution.py")
    assert "mid" in at.selectbox(key="ce_name").options


def test_the_sidebar_shows_and_switches_the_current_items(seeded, monkeypatch):
    store = seeded
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/30_Critique_and_Revise.py").run()
    assert not at.exception, at.exception
    at.sidebar.selectbox(key="sb_current_constitution").set_value("zeta").run()
    at.sidebar.selectbox(key="sb_current_prompt_set").set_value("other").run()
    assert get_current(store, "constitution") == "zeta" and get_current(store, "prompt_set") == "other"
    assert at.selectbox(key="live_const").value == "zeta", "the page's pickers follow the sidebar"
    assert at.selectbox(key="batch_set").value == "other"
    assert any("newest version" in c.value for c in at.sidebar.caption)
