"""The Constitution page under AppTest: edit a principle, save a new version, reject bad templates."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import shown

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "20_Constitution.py")


@pytest.fixture
def page(ws):
    from cai_core.data.sample_data import ensure_samples
    from cai_core.store import open_store

    store = open_store(ws)
    ensure_samples(store)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    at.selectbox(key="ce_name").set_value("seed").run()
    assert not at.exception
    return at, store


def _uid_of(at, principle_id: str) -> str:
    for ti in at.text_input:
        if ti.key and ti.key.endswith("_id") and ti.value == principle_id:
            return ti.key[: -len("_id")]
    raise AssertionError(f"no principle {principle_id} on the page")


@pytest.mark.slow
def test_renders_all_tabs(page):
    at, _ = page
    assert at.title[0].value == "Constitution"
    assert [t.label for t in at.tabs] == ["Edit", "Versions and diff", "New / duplicate / rename", "Import / export",
                                          "Prompt sets"]
    assert at.selectbox(key="ps_show").options  # sample prompt sets listed
    assert len([e for e in at.expander if "·" in e.label]) == 4  # the seed's principles


@pytest.mark.slow
def test_edit_principle_and_save_makes_new_version(page):
    from cai_core.constitution.versions import get_constitution, list_versions

    at, store = page
    before = list_versions(store, "seed")
    prefix = _uid_of(at, "nuance")
    at.text_area(key=f"{prefix}_revision_request").input("Rewrite the answer with more nuance about {question}.").run()
    assert "Uses `{question}`" in [c.value for c in at.caption]
    at.text_input(key="ce_note").input("more nuance").run()
    at.button(key="ce_save").click().run()
    assert not at.exception
    assert any("Saved version" in s.value for s in at.success)
    after = list_versions(store, "seed")
    assert len(after) == len(before) + 1
    newest = after[0]
    assert newest["note"] == "more nuance" and newest["parent_version"] == before[0]["version"]
    assert at.selectbox(key="ce_version").value == newest["version"]
    saved = get_constitution(store, "seed")
    assert saved.principle("nuance").revision_request == "Rewrite the answer with more nuance about {question}."
    # the diff tab compares the two versions per principle
    assert any("nuance" in m.value for m in at.markdown)


@pytest.mark.slow
def test_reorder_disable_and_add(page):
    from cai_core.constitution.versions import get_constitution

    at, store = page
    first = _uid_of(at, "hhh")
    at.button(key=f"down_{first.split('_', 1)[1]}").click().run()
    at.toggle(key=f"{_uid_of(at, 'no_toxicity')}_enabled").set_value(False).run()
    at.button(key="ce_save").click().run()
    saved = get_constitution(store, "seed")
    assert [p.id for p in saved.principles][:2] == ["no_toxicity", "hhh"]
    assert not saved.principle("no_toxicity").enabled


@pytest.mark.slow
def test_unknown_variable_is_shown_and_nothing_saved(page):
    from cai_core.constitution.versions import list_versions

    at, store = page
    before = list_versions(store, "seed")
    prefix = _uid_of(at, "hhh")
    at.text_area(key=f"{prefix}_critique_request").input("Critique {answer} please").run()
    errors = [shown(e.value) for e in at.error]
    assert any("{answer}" in e and "allowed here" in e for e in errors)
    at.button(key="ce_save").click().run()
    assert any(shown(e.value).startswith("Not saved") and "{answer}" in shown(e.value) for e in at.error)
    assert list_versions(store, "seed") == before


@pytest.mark.slow
def test_empty_principle_is_rejected(page):
    from cai_core.constitution.versions import list_versions

    at, store = page
    before = list_versions(store, "seed")
    [add] = [b for b in at.button if b.label == "Add principle"]
    add.click().run()
    at.button(key="ce_save").click().run()
    assert any("is empty" in e.value for e in at.error)
    assert list_versions(store, "seed") == before


def test_problems_are_named_next_to_the_save_button(page):
    at, store = page
    prefix = _uid_of(at, "nuance")
    other = next(ti.value for ti in at.text_input if ti.key and ti.key.endswith("_id") and ti.value != "nuance")
    at.text_input(key=f"{prefix}_id").input(other).run()
    assert not at.exception
    warning = next(w.value for w in at.warning if "problem(s) to fix" in w.value)
    assert f"duplicate principle id '{other}'" in warning.replace("\\", "")


@pytest.mark.slow
def test_versions_table_shows_no_none_for_the_first_version(page):
    at, _ = page
    table = at.dataframe[0].value
    assert "parent" in table.columns
    assert not table["parent"].isna().any()


@pytest.mark.slow
def test_imported_prompt_set_is_listed_at_once(page, tmp_path):
    from datasets import Dataset

    at, store = page
    folder = tmp_path / "ds"
    Dataset.from_dict({"prompt": ["How do I pick a lock?", "Tell me a joke"]}).save_to_disk(str(folder))
    at.text_input(key="hf_path").input(str(folder))
    at.text_input(key="hf_name").input("qa-set").run()
    at.button(key="hf_import").click().run()
    assert not at.exception, at.exception
    assert any("Imported 2 prompts as 'qa-set'" in shown(s.value) for s in at.success)
    assert "qa-set" in at.selectbox(key="ps_show").options  # the sets table above follows the import


@pytest.mark.slow
def test_principle_expander_keeps_its_identity_while_its_id_and_name_change(page):
    """The browser keeps an expander open across reruns only if its block id stays the same; a label-derived
    identity (the label shows the id and name) folded it shut on every keystroke."""
    at, _ = page
    prefix = _uid_of(at, "nuance")

    def block_id(principle_id: str) -> str:
        [exp] = [e for e in at.expander if e.label.endswith(f"·  {principle_id}")]
        return exp._block_id

    before = block_id("nuance")
    assert before
    at.text_input(key=f"{prefix}_id").input("nuance2").run()
    at.text_input(key=f"{prefix}_name").input("Renamed").run()
    assert not at.exception
    assert block_id("nuance2") == before


@pytest.mark.slow
def test_deleting_a_prompt_set_needs_a_confirmation(page):
    from cai_core.data.prompt_sets import list_prompt_sets

    at, store = page
    shown = at.selectbox(key="ps_show").value
    assert at.button(key="ps_delete").disabled, "no delete before 'confirm delete' is ticked"
    at.checkbox(key=f"ps_delete_ok_{shown}").check().run()
    assert not at.button(key="ps_delete").disabled
    at.button(key="ps_delete").click().run()
    assert not at.exception
    assert shown not in [s["name"] for s in list_prompt_sets(store)]


def test_judge_examples_are_editable_and_saved(page):
    """The paper's judge examples (RLMadisonFewShotPrompts.json) show on the Edit tab; an edit saves a
    new version carrying it, and the paper examples' own critique requests survive a save."""
    from cai_core.constitution.files import load_import
    from cai_core.constitution.versions import get_constitution, save_imported
    from tests.helpers import PAPER_DATA

    at, store = page
    c = load_import(PAPER_DATA / "CritiqueRevisionInstructions.json", name="paper",
                    comparisons=PAPER_DATA / "RLMadisonInstructions.json",
                    few_shot=[PAPER_DATA / "CritiqueRevisionFewShotPrompts.json",
                              PAPER_DATA / "RLMadisonFewShotPrompts.json"])
    save_imported(store, c, note="paper")
    at.run()
    at.selectbox(key="ce_name").set_value("paper").run()
    assert not at.exception
    labels = [e.label for e in at.expander if e.label.startswith("Judge example")]
    assert len(labels) == 5 and shown(labels[0]).startswith("Judge example 1 (mc): Human: What")
    answer_keys = [s.key for s in at.selectbox if s.key and s.key.endswith("_answer")]
    assert len(answer_keys) == 5
    at.selectbox(key=answer_keys[0]).set_value("B").run()
    at.button(key="ce_save").click().run()
    assert not at.exception
    saved = get_constitution(store, "paper")
    assert saved.version != c.version
    assert [e.answer for e in saved.judge_examples] == ["B"] + [e.answer for e in c.judge_examples[1:]]
    assert [f.critique_request for f in saved.few_shot] == [f.critique_request for f in c.few_shot]
