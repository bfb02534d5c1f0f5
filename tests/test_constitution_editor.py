"""Issue 22 item 1 under AppTest: one owner for the current constitution, drafts that belong to one
(name, version) and survive switching away and back (to another constitution, version or page)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT, render_page


@pytest.fixture
def samples(ws, monkeypatch):
    from cai_core.data.sample_data import ensure_samples
    from cai_core.settings import set_current
    from cai_core.store import open_store

    store = open_store(ws)
    ensure_samples(store)
    set_current(store, "constitution", "anti_evasive")
    monkeypatch.chdir(ROOT)
    return store


def _critique_box(at, principle_id: str):
    for ti in at.text_input:
        if ti.key and ti.key.endswith("_id") and ti.value == principle_id:
            return at.text_area(key=ti.key[: -len("_id")] + "_critique_request")
    raise AssertionError(f"no principle {principle_id} on the page")


def _app_on_constitution_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("pages/20_Constitution.py").run()
    assert not at.exception, at.exception
    return at


def _boxes(at) -> tuple[str, str]:
    return at.sidebar.selectbox(key="sb_current_constitution").value, at.selectbox(key="ce_name").value


def test_a_pick_on_the_page_is_sent_to_the_sidebar_box_and_back(samples):
    """The browser keeps a box's own value unless the server sends one (`index=` sends none for a box it
    already shows): every current-item box is given the store's value before it is drawn."""
    from cai_core.settings import get_current

    at = _app_on_constitution_page()
    assert _boxes(at) == ("anti_evasive", "anti_evasive")
    at.selectbox(key="ce_name").set_value("harmless_helpful").run()
    assert get_current(samples, "constitution") == "harmless_helpful"
    sidebar = at.sidebar.selectbox(key="sb_current_constitution")
    assert sidebar.value == "harmless_helpful"
    assert sidebar.proto.set_value, "the new value is sent to the browser's sidebar box"
    assert any("14 principles" in c.value for c in at.sidebar.caption)
    at.sidebar.selectbox(key="sb_current_constitution").set_value("anti_evasive").run()
    page_box = at.selectbox(key="ce_name")
    assert page_box.value == "anti_evasive" and page_box.proto.set_value
    assert get_current(samples, "constitution") == "anti_evasive"


def test_an_edit_survives_a_switch_and_is_never_applied_to_the_other(samples):
    from cai_core.constitution.versions import get_constitution, list_versions

    at = _app_on_constitution_page()
    at.selectbox(key="ce_name").set_value("harmless_helpful").run()
    _critique_box(at, "general_harm").input("Draft of harmless_helpful.").run()
    assert any("Unsaved edits: harmless\\_helpful @" in c.value for c in at.caption)
    at.sidebar.selectbox(key="sb_current_constitution").set_value("anti_evasive").run()
    assert _boxes(at) == ("anti_evasive", "anti_evasive")
    assert "Draft of harmless_helpful." not in [t.value for t in at.text_area], "not applied to anti_evasive"
    assert at.button(key="ce_save").disabled, "anti_evasive has nothing to save"
    at.selectbox(key="ce_name").set_value("harmless_helpful").run()
    assert _critique_box(at, "general_harm").value == "Draft of harmless_helpful."
    before = {n: list_versions(samples, n) for n in ("harmless_helpful", "anti_evasive")}
    at.button(key="ce_save").click().run()
    assert not at.exception
    assert get_constitution(samples, "harmless_helpful").principle("general_harm").critique_request == \
        "Draft of harmless_helpful."
    assert list_versions(samples, "harmless_helpful")[0]["parent_version"] == before["harmless_helpful"][0]["version"]
    assert list_versions(samples, "anti_evasive") == before["anti_evasive"]
    assert not any("Unsaved edits" in c.value for c in at.caption), "the saved draft is gone"


def test_an_edit_survives_another_page_and_back(samples):
    at = _app_on_constitution_page()
    _critique_box(at, "engage_not_evade").input("Kept while I look at another page.").run()
    at.switch_page("pages/30_Critique_and_Revise.py").run()
    at.switch_page("pages/20_Constitution.py").run()
    assert not at.exception, at.exception
    assert _critique_box(at, "engage_not_evade").value == "Kept while I look at another page."
    assert not at.button(key="ce_save").disabled


def test_drafts_belong_to_one_version(samples):
    from cai_core.constitution.versions import get_constitution, list_versions

    at = _app_on_constitution_page()
    _critique_box(at, "engage_not_evade").input("Second version text.").run()
    at.button(key="ce_save").click().run()
    versions = [v["version"] for v in list_versions(samples, "anti_evasive")]
    assert at.selectbox(key="ce_version").value == versions[0]
    _critique_box(at, "engage_not_evade").input("Draft on the newest version.").run()
    at.selectbox(key="ce_version").set_value(versions[1]).run()
    old_text = get_constitution(samples, "anti_evasive", versions[1]).principle("engage_not_evade").critique_request
    assert _critique_box(at, "engage_not_evade").value == old_text
    at.selectbox(key="ce_version").set_value(versions[0]).run()
    assert _critique_box(at, "engage_not_evade").value == "Draft on the newest version."
    at.button(key="ce_discard").click().run()
    assert _critique_box(at, "engage_not_evade").value == "Second version text."
    assert at.button(key="ce_save").disabled


def test_import_names_the_imported_constitution_and_version_everywhere(samples, tmp_path):
    """Both boxes after an Import: the imported name and its version (the old page showed the old name)."""
    from cai_core.constitution.versions import get_constitution

    at = _app_on_constitution_page()
    # AppTest has no file uploader: build_import + the page's own after-import steps through the store
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_imported
    from cai_core.settings import set_current

    c = Constitution(name="imported_one", principles=[Principle(id="p1", name="Only", critique_request="Harmful?",
                                                                revision_request="Fix it.")])
    save_imported(samples, c, note="imported")
    set_current(samples, "constitution", "imported_one")
    at.run()
    assert _boxes(at) == ("imported_one", "imported_one")
    assert at.selectbox(key="ce_version").value == get_constitution(samples, "imported_one").version
    assert [t.value for t in at.text_input if t.key and t.key.endswith("_id")] == ["p1"]


def test_a_local_pick_says_so_and_leaves_the_current_item(samples):
    """The A/B arms' boxes are local views: they start on the current item, say they are local, and
    picking there does not change the current item (nor the sidebar's box)."""
    from cai_core.settings import get_current

    at = render_page("70_Evaluate_and_Compare.py")
    box = at.selectbox(key="ab_c_B")
    assert box.value == "anti_evasive" and "local pick" in box.help
    box.set_value("seed").run()
    assert get_current(samples, "constitution") == "anti_evasive"
    assert at.selectbox(key="ab_c_B").value == "seed", "the local pick is kept"
    assert at.selectbox(key="ab_c_A").value == "anti_evasive"


def test_a_local_pick_follows_the_current_item_until_changed(samples):
    from cai_core.settings import set_current

    set_current(samples, "prompt_set", "red_team")
    at = render_page("40_Preferences.py")
    set_current(samples, "prompt_set", "helpfulness")
    at.run()
    assert at.selectbox(key="sample_prompt_set").value == "helpfulness"


def test_a_deleted_current_item_is_replaced_for_everybody(samples):
    from cai_core.settings import get_current, set_current

    set_current(samples, "constitution", "gone")
    at = render_page("20_Constitution.py")
    assert at.selectbox(key="ce_name").value == "harmless_helpful"  # the README's, not the alphabetically first
    assert get_current(samples, "constitution") == "harmless_helpful"


def test_the_active_model_is_read_from_the_store_each_run(samples):
    """No per-session copy: a model chosen elsewhere (another tab, `models use`) shows at the next rerun."""
    from cai_core.settings import set_setting

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    set_setting(samples, "active_model", "hf:someone/other-model")
    at.run()
    assert any("other-model" in t.value for t in at.sidebar.text)


def test_a_fresh_workspace_starts_on_the_readme_pair(ws):
    from cai_core.data.sample_data import ensure_samples
    from cai_core.settings import get_current, set_current
    from cai_core.store import open_store

    store = open_store(ws)
    ensure_samples(store)
    assert (get_current(store, "constitution"), get_current(store, "prompt_set")) == ("harmless_helpful", "red_team")
    set_current(store, "constitution", "seed")
    ensure_samples(store, force=True)
    assert get_current(store, "constitution") == "seed", "a choice already made is kept"
    at = render_page("30_Critique_and_Revise.py")
    assert at.selectbox(key="batch_set").value == "red_team"


def test_new_duplicate_and_rename_as_new_from_the_page(samples):
    """Each makes the first version of a new name, current in both boxes; the page shows the command that
    builds the same typed action."""
    from cai_core.constitution.versions import get_constitution, list_versions
    from cai_core.settings import get_current

    at = _app_on_constitution_page()
    at.text_input(key="ce_make_name").input("fresh one").run()
    assert any(c.value == "python -m cai_core constitution new 'fresh one' --workspace " + str(samples.workspace.root)
               for c in at.code)
    at.button(key="ce_make").click().run()
    assert not at.exception, at.exception
    assert get_current(samples, "constitution") == "fresh one"
    assert _boxes(at) == ("fresh one", "fresh one")
    assert [t.value for t in at.text_input if t.key and t.key.endswith("_id")] == ["general_harm"]

    at.selectbox(key="ce_name").set_value("anti_evasive").run()
    source = get_constitution(samples, "anti_evasive")
    at.radio(key="ce_make_how").set_value("Duplicate").run()
    at.text_input(key="ce_make_name").input("anti_copy").run()
    at.button(key="ce_make").click().run()
    copy = get_constitution(samples, "anti_copy")
    assert [p.critique_request for p in copy.principles] == [p.critique_request for p in source.principles]
    assert list_versions(samples, "anti_copy")[0]["note"] == f"duplicated from anti_evasive@{source.version}"
    assert _boxes(at) == ("anti_copy", "anti_copy")
    assert at.selectbox(key="ce_version").value == copy.version

    at.radio(key="ce_make_how").set_value("Rename as new").run()
    at.text_input(key="ce_make_name").input("anti_copy").run()  # taken: refused, nothing made
    at.button(key="ce_make").click().run()
    assert any("exists already" in e.value for e in at.error)
    at.text_input(key="ce_make_name").input("anti_v2").run()
    at.button(key="ce_make").click().run()
    assert list_versions(samples, "anti_v2")[0]["note"] == f"renamed from anti_copy@{copy.version}"
    assert "anti_copy" in at.selectbox(key="ce_name").options, "the old name's versions stay listed"
    assert _boxes(at) == ("anti_v2", "anti_v2")


@pytest.mark.parametrize("argv", [["constitution", "new", "x1", "--description", "d"],
                                  ["constitution", "duplicate", "anti_evasive", "x2"],
                                  ["constitution", "rename-as-new", "seed@abc123", "x3"]])
def test_the_command_builds_the_same_typed_action(argv):
    import argparse

    from cai_core.commands.constitution import register
    from cai_core.constitution.actions import ACTIONS

    def build_parser():  # the `constitution` group as cai_core.cli registers it
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers(dest="command"))
        return parser

    args = build_parser().parse_args(argv)
    action = ACTIONS[args.action_cls].from_args(args)
    assert action.to_argv() == argv
    assert ACTIONS[args.action_cls].from_args(build_parser().parse_args(action.to_argv())) == action


@pytest.mark.parametrize("bad, why", [("", "give the new constitution a name"), ("a@b", "no '@'"),
                                      ("x.yaml", "reads as a file path"), ("abcdef12", "reads as a version hash"),
                                      ("seed", "exists already")])
@pytest.mark.slow
def test_the_cli_refuses_a_bad_new_name(samples, bad, why):
    from tests.helpers import run_cli

    r = run_cli("constitution", "new", bad, "--workspace", str(samples.workspace.root))
    assert r.returncode != 0 and why in r.stderr, r.stderr


@pytest.mark.slow
def test_the_cli_duplicates_and_makes_it_current(samples):
    from cai_core.constitution.versions import get_constitution
    from cai_core.settings import get_current
    from tests.helpers import run_cli

    version = get_constitution(samples, "seed").version
    r = run_cli("constitution", "duplicate", f"seed@{version[:8]}", "seed_copy", "--workspace",
                str(samples.workspace.root))
    assert r.returncode == 0, r.stderr
    assert get_constitution(samples, "seed_copy").principles == get_constitution(samples, "seed").principles
    assert get_current(samples, "constitution") == "seed_copy"
    assert "now the current constitution" in r.stdout


def test_the_sidebar_engine_box_follows_the_store(samples, monkeypatch):
    """The engine box also reads the store before it is drawn: an engine chosen in another tab or session
    is sent to this browser's box instead of being overwritten by its stale value."""
    from cai_core.models.specs import ENGINE_ENV
    from cai_core.settings import set_setting

    monkeypatch.setenv(ENGINE_ENV, "transformers")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    assert at.sidebar.selectbox(key="sb_engine").value == "transformers"
    set_setting(samples, "engine", "ctranslate2")
    at.run()
    box = at.sidebar.selectbox(key="sb_engine")
    assert box.value == "ctranslate2" and box.proto.set_value


def test_the_diff_starts_on_newest_vs_previous_of_the_shown_constitution(samples):
    from cai_core.constitution.versions import list_versions

    at = _app_on_constitution_page()
    for text in ("First edit.", "Second edit."):
        _critique_box(at, "engage_not_evade").input(text).run()
        at.button(key="ce_save").click().run()
    versions = [v["version"] for v in list_versions(samples, "anti_evasive")]
    olds = [s for s in at.selectbox if s.label == "Old"]
    news = [s for s in at.selectbox if s.label == "New"]
    assert (olds[0].value, news[0].value) == (versions[1], versions[0])
    olds[0].set_value(versions[2]).run()
    at.selectbox(key="ce_name").set_value("harmless_helpful").run()
    assert not at.exception, at.exception
    assert not [s for s in at.selectbox if s.label == "Old"], "one version: nothing to compare"
    at.selectbox(key="ce_name").set_value("anti_evasive").run()
    assert not at.exception, at.exception


def test_an_empty_picker_draws_and_changes_nothing(ws):
    """No items at all: the box is empty, nothing is made current (and nothing raises)."""
    from streamlit.testing.v1 import AppTest

    from cai_core.settings import get_current
    from cai_core.store import open_store

    def script():
        import streamlit as st

        from ui.common import pick_current

        st.write(pick_current(st, "prompt_set", "Prompt set", [], key="empty_box"))

    at = AppTest.from_function(script, default_timeout=30).run()
    assert not at.exception, at.exception
    assert get_current(open_store(ws), "prompt_set") is None
