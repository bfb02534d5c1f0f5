"""Sample data loads and validates; the first-start bootstrap is idempotent; paper files import."""
from __future__ import annotations

import collections

import pytest

from cai_core.data.sample_data import SAMPLE_DIR, ensure_samples, sample_constitution_files
from cai_core.constitution.model import ALLOWED_VARIABLES, template_variables
from cai_core.constitution.versions import list_constitutions
from cai_core.constitution.files import load_constitution_file
from cai_core.data.prompt_sets import delete_prompt_set, get_prompts, list_prompt_sets, load_prompts_file
from tests.helpers import PAPER_DATA


def test_three_sample_constitutions_validate():
    files = {f.stem: load_constitution_file(f) for f in sample_constitution_files()}
    assert set(files) == {"seed", "harmless_helpful", "anti_evasive"}
    assert len(files["seed"].principles) == 4
    assert 12 <= len(files["harmless_helpful"].principles) <= 16
    assert len(files["anti_evasive"].principles) >= 3
    assert sum(len(c.few_shot) for c in files.values()) >= 2
    for c in files.values():
        assert c.name == [k for k, v in files.items() if v is c][0]
        for p in c.principles:
            assert p.critique_request and p.revision_request and p.comparison_question and p.tags
            used = template_variables(p.critique_request) | template_variables(p.revision_request)
            assert used <= ALLOWED_VARIABLES
        for ex in c.few_shot:
            assert ex.principle_id is None or c.principle(ex.principle_id)
    uses_vars = [p for c in files.values() for p in c.principles if template_variables(p.critique_request)]
    assert uses_vars, "some sample templates should quote {question}/{response}"


@pytest.mark.parametrize("name,low,high", [("red_team", 55, 65), ("helpfulness", 35, 45)])
def test_sample_prompts(name, low, high):
    items = load_prompts_file(SAMPLE_DIR / "prompts" / f"{name}.jsonl")
    assert low <= len(items) <= high
    assert all(i["category"] for i in items)
    assert len({i["text"] for i in items}) == len(items)
    cats = collections.Counter(i["category"] for i in items)
    assert len(cats) >= 6
    if name == "red_team":
        assert {"violence", "cybercrime", "self-harm", "fraud", "hate", "privacy", "drugs", "weapons"} <= set(cats)


def test_ensure_samples_first_start_and_idempotent(store):
    added = ensure_samples(store)
    assert sorted(added["constitutions"]) == ["anti_evasive", "harmless_helpful", "seed"]
    assert sorted(added["prompt_sets"]) == ["helpfulness", "red_team"]
    kinds = {s["name"]: s["kind"] for s in list_prompt_sets(store)}
    assert kinds == {"red_team": "red-team", "helpfulness": "helpfulness"}
    assert len(get_prompts(store, "red_team")) == 60

    again = ensure_samples(store)
    assert again["skipped"] and not again["constitutions"] and not again["prompt_sets"]
    assert len(list_constitutions(store)) == 3
    # a sample the user deleted is not brought back on the next start
    delete_prompt_set(store, "helpfulness")
    ensure_samples(store)
    assert [s["name"] for s in list_prompt_sets(store)] == ["red_team"]
    # force restores what is missing and leaves the rest alone
    forced = ensure_samples(store, force=True)
    assert forced["prompt_sets"] == ["helpfulness"] and forced["constitutions"] == []
    assert all(c["versions"] == 1 for c in list_constitutions(store))


@pytest.mark.parametrize("filename,principles,few_shot", [
    ("CritiqueRevisionInstructions.json", 16, 0),
    ("RLMadisonInstructions.json", 16, 0),
    ("CritiqueRevisionFewShotPrompts.json", None, 5),
])
def test_paper_files_import(filename, principles, few_shot):
    c = load_constitution_file(PAPER_DATA / filename)
    c.validate()
    if principles is not None:
        assert len(c.principles) == principles
    assert len(c.few_shot) == few_shot
    assert c.name == filename.rsplit(".", 1)[0]
