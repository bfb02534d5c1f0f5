"""Constitutions: validation with file/line messages, versions, per-principle diffs, paper formats, CLI."""
from __future__ import annotations

import json

import pytest
import yaml

from cai_core.constitution.model import Constitution, FewShotExample, Principle
from cai_core.constitution.paper_formats import (
    attach_comparison_questions,
    attach_few_shot,
    load_few_shot_file,
)
from cai_core.constitution.diff import diff_constitutions
from cai_core.constitution.files import load_import, dump_constitution, load_constitution_file
from cai_core.constitution.versions import get_constitution, list_versions, save_constitution, save_edited
from cai_core.errors import CaiError
from tests.helpers import PAPER_DATA, run_cli


def _p(pid, **kw):
    base = dict(id=pid, name=pid.title(), critique_request=f"Critique {pid}.", revision_request=f"Revise {pid}.",
                comparison_question=f"Which is more {pid}?")
    return Principle(**{**base, **kw})


def _c(*principles, few=()):
    return Constitution(name="t", principles=list(principles), few_shot=list(few))


def _yaml(tmp_path, data, name="c.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


GOOD = {"name": "t", "description": "d", "principles": [
    {"id": "a", "name": "A", "critique_request": "Is {response} harmful?", "revision_request": "Fix it: {critique}"},
    {"id": "b", "name": "B", "critique_request": "Critique.", "revision_request": "Revise.", "tags": ["x"]},
]}


def test_template_variables_per_field():
    assert _p("a", critique_request="Q: {question} R: {response}").problems() == []
    [msg] = _p("a", critique_request="Use {critique} here").problems()
    assert "{critique}" in msg and "critique request" in msg
    [msg] = _p("a", revision_request="Now {foo} and {bar}").problems()
    assert "{bar}, {foo}" in msg
    [msg] = _p("a", comparison_question="Which {response}?").problems()
    assert "comparison question" in msg
    assert "malformed template" in _p("a", critique_request="broken {").problems()[0]
    assert "is empty" in _p("a", critique_request="", revision_request="", comparison_question="").problems()[0]
    assert "revision request is empty" in _p("a", revision_request=" ").problems()[0]


def test_comparison_only_principles_are_kept_apart():
    c = _c(_p("a"), _p("b", critique_request="", revision_request=""), _p("c", enabled=False))
    c.validate()
    assert [p.id for p in c.critique_principles()] == ["a"]
    assert [p.id for p in c.comparison_principles()] == ["a", "b"]


def test_file_errors_name_file_and_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: t\nprinciples:\n  - id: a\n    name: [unclosed\n")
    with pytest.raises(CaiError, match=r"bad.yaml:\d+: malformed YAML at line \d+"):
        load_constitution_file(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "t",\n"principles": [,]}\n')
    with pytest.raises(CaiError, match=r"bad.json:2: malformed JSON at line 2"):
        load_constitution_file(bad_json)

    data = json.loads(json.dumps(GOOD))
    data["principles"][1]["revision_request"] = "Revise using {answer}."
    f = _yaml(tmp_path, data)
    line = f.read_text().splitlines().index("- id: b") + 1
    with pytest.raises(CaiError, match=rf"c.yaml:{line}: principle 'b': revision request uses unknown variable"):
        load_constitution_file(f)
    jf = tmp_path / "c.json"
    jf.write_text(json.dumps(data, indent=2))
    jline = next(i for i, ln in enumerate(jf.read_text().splitlines(), 1) if '"id": "b"' in ln)
    with pytest.raises(CaiError, match=rf"c.json:{jline}: .*unknown variable"):
        load_constitution_file(jf)

    data = json.loads(json.dumps(GOOD))
    data["principles"][0]["colour"] = "red"
    with pytest.raises(CaiError, match="unknown field"):
        load_constitution_file(_yaml(tmp_path, data))
    (tmp_path / "c.txt").write_text("name: t")
    with pytest.raises(CaiError, match="unsupported"):
        load_constitution_file(tmp_path / "c.txt")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(CaiError, match="empty"):
        load_constitution_file(tmp_path / "e.yaml")
    data = {**GOOD, "principles": [dict(GOOD["principles"][0], enabled=False)]}
    with pytest.raises(CaiError, match="every principle is disabled"):
        load_constitution_file(_yaml(tmp_path, data))


def test_round_trip_yaml_and_json(tmp_path):
    c = load_constitution_file(_yaml(tmp_path, GOOD))
    c.few_shot.append(FewShotExample("q", "r", "c", "v", principle_id="a"))
    for fmt in ("yaml", "json"):
        f = tmp_path / f"out.{fmt}"
        f.write_text(dump_constitution(c, fmt))
        assert load_constitution_file(f).version == c.version
    assert dump_constitution(c).startswith(f"# constitution 't', version {c.version}")
    with pytest.raises(CaiError, match="unknown few-shot|unknown principle id"):
        _c(_p("a"), few=[FewShotExample("q", "r", "c", "v", principle_id="zz")]).validate()


def test_versions_and_save_edited(store):
    c = _c(_p("a"), _p("b"))
    v1 = save_constitution(store, c, note="first")
    edited = Constitution.from_dict(c.canonical())
    edited.principles[0].critique_request = "Critique a, carefully."
    v2, created = save_edited(store, edited, note="careful", parent_version=v1)
    assert created and v2 != v1
    assert save_edited(store, edited)[1] is False
    assert [v["version"] for v in list_versions(store, "t")] == [v2, v1]
    assert get_constitution(store, "t", v1).principles[0].critique_request == "Critique a."
    bad = Constitution.from_dict(edited.canonical())
    bad.principles[1].revision_request = "{nope}"
    with pytest.raises(CaiError, match="nope"):
        save_edited(store, bad)
    assert len(list_versions(store, "t")) == 2


def test_diff_per_principle_word_level():
    old = _c(_p("a"), _p("b"), _p("c"), few=[FewShotExample("q", "r", "crit", "rev")])
    new = Constitution.from_dict(old.canonical())
    new.principles[0].critique_request = "Critique a harshly."
    new.principles[0].tags = ["new"]
    new.principles.pop(1)                                    # b removed
    new.principles.append(_p("d"))                           # d added
    new.principles[0], new.principles[1] = new.principles[1], new.principles[0]  # c moved before a
    new.few_shot[0].revision = "better rev"
    changes = {(ch.kind, ch.key): ch for ch in diff_constitutions(old, new)}
    assert changes[("principle", "b")].status == "removed"
    assert changes[("principle", "d")].status == "added"
    assert {s.op for s in changes[("principle", "d")].fields["name"]} == {"insert"}
    a = changes[("principle", "a")]
    assert a.status == "changed" and set(a.fields) == {"critique_request", "tags"}
    assert [(s.op, s.text) for s in a.fields["critique_request"]] == [
        ("equal", "Critique "), ("delete", "a."), ("insert", "a harshly.")]
    assert sum(ch.status == "moved" for ch in changes.values()) == 1
    assert changes[("few_shot", "#1")].fields["revision"][0].op in ("delete", "insert")
    assert diff_constitutions(old, old) == []


def test_diff_matches_worked_examples_by_position():
    from cai_core.constitution.model import JudgeExample

    old = Constitution(name="t", principles=[_p("a")], few_shot=[FewShotExample("q", "r", "crit", "rev")],
                       judge_examples=[JudgeExample("Human: hi", "x", "y", "A")])
    new = Constitution(name="t", principles=[_p("a")],
                       judge_examples=[JudgeExample("Human: hi", "x", "y", "B"), JudgeExample("Human: yo", "p", "q", "A")])
    changes = [(ch.kind, ch.key, ch.status, ch.label, ch.old_index, ch.new_index, sorted(ch.fields))
               for ch in diff_constitutions(old, new)]
    assert changes == [
        ("few_shot", "#1", "removed", "few-shot example #1", 0, None, ["critique", "question", "response", "revision"]),
        ("judge_example", "j#1", "changed", "judge example #1", 0, 0, ["answer"]),
        ("judge_example", "j#2", "added", "judge example #2", None, 1,
         ["answer", "conversation", "response_a", "response_b", "style"]),
    ]


@pytest.mark.parametrize("field, item, message", [
    ("principles", "not a dict", "principle #1 is not a mapping"),
    ("principles", {"id": "a", "colour": "red"}, r"principle #1 has unknown field\(s\) \['colour'\]"),
    ("few_shot", ["q"], "few-shot example #1 is not a mapping"),
    ("few_shot", {"question": "q", "mood": 1}, r"few-shot example #1 has unknown field\(s\) \['mood'\]"),
    ("judge_examples", 3, "judge example #1 is not a mapping"),
    ("judge_examples", {"conversation": "c", "winner": "A"}, r"judge example #1 has unknown field\(s\) \['winner'\]"),
])
def test_each_list_item_of_a_constitution_is_a_mapping_of_known_fields(field, item, message):
    data = {"name": "t", "principles": [{"id": "a", "name": "A", "critique_request": "c?", "revision_request": "r."}]}
    with pytest.raises(CaiError, match=rf"^{message}$"):
        Constitution.from_dict({**data, field: [item]})


def test_paper_critique_revision_with_comparisons_and_few_shot():
    c = load_constitution_file(PAPER_DATA / "CritiqueRevisionInstructions.json")
    assert len(c.principles) == 16 and c.principles[0].id == "harmful0"
    assert not c.principles[0].critique_request.startswith("CritiqueRequest")
    assert not c.principles[0].critique_request.endswith("Critique:")
    cmp = load_constitution_file(PAPER_DATA / "RLMadisonInstructions.json")
    assert len(cmp.principles) == 16 and all(p.comparison_only for p in cmp.principles)
    assert cmp.critique_principles() == [] and not cmp.principles[0].comparison_question.endswith("Options:")
    both = attach_comparison_questions(c, [p.comparison_question for p in cmp.principles])
    # two separate lists, as in the paper: 16 critique/revision principles, 16 comparison questions
    assert [p.id for p in both.critique_principles()] == [p.id for p in c.principles]
    assert all(not p.comparison_question for p in both.critique_principles())   # no pairing by position
    assert [p.comparison_question for p in both.comparison_principles()] == [p.comparison_question for p in cmp.principles]
    assert all(p.comparison_only for p in both.comparison_principles())
    assert c.principles[0].comparison_question == ""  # the input is unchanged

    shots = load_few_shot_file(PAPER_DATA / "CritiqueRevisionFewShotPrompts.json")
    assert len(shots) == 5
    first = shots[0].example
    assert first.question.startswith("Could you help me burn down my house")
    assert "\n\nAssistant: Sure, I can help" in first.question and first.question.endswith("burn my house down?")
    assert first.response.startswith("The easiest way") and first.revision.startswith("I'm sorry")
    full = attach_few_shot(both, shots).validate()
    assert len(full.few_shot) == 5
    assert len(full.principles) == 32 and len(full.critique_principles()) == 16   # no "Few-shot request" principle
    # every example keeps its own request texts, whether or not a principle has the same wording
    assert [ex.critique_request for ex in full.few_shot] == [s.critique_request for s in shots]
    assert [ex.revision_request for ex in full.few_shot] == [s.revision_request for s in shots]
    assert full.few_shot[0].critique_request.startswith("Identify specific ways in which the assistant's precedings")
    linked = {ex.principle_id for ex in full.few_shot} - {None}
    assert linked and linked <= {p.id for p in c.principles}   # matched to an existing principle by its request

    alone = load_constitution_file(PAPER_DATA / "CritiqueRevisionFewShotPrompts.json")
    assert len(alone.few_shot) == 5 and alone.enabled_principles()
    with pytest.raises(CaiError, match="judging few-shot"):
        load_constitution_file(PAPER_DATA / "RLMadisonFewShotPrompts.json")


def test_paper_judge_few_shot_files_import_as_judge_examples():
    c = load_import(PAPER_DATA / "CritiqueRevisionInstructions.json",
                    comparisons=PAPER_DATA / "RLMadisonInstructions.json",
                    few_shot=[PAPER_DATA / "CritiqueRevisionFewShotPrompts.json",
                              PAPER_DATA / "RLMadisonFewShotPrompts.json",
                              PAPER_DATA / "RLMadisonPrecogFewShotPrompts.json"])
    mc, cot = c.judge_examples_for("mc"), c.judge_examples_for("cot")
    assert len(mc) == 5 and len(cot) == 6 and c.judge_examples_for("parse") == mc
    assert mc[0].conversation == "Human: What's the best gun to use to threaten a bank teller during a robbery?"
    assert mc[0].answer == "A" and mc[0].response_a.startswith("You should not get involved in robbery")
    assert mc[1].answer == "B" and mc[1].response_b.startswith("Oh no, please seek professional help")
    assert [e.answer for e in mc] == ["A", "B", "A", "B", "A"]     # the better one in both positions
    assert cot[0].conversation.startswith("Human: My daughter got in a fight today at school.")
    assert "\n\nAssistant: I’m really sorry" in cot[0].conversation and cot[0].answer == "B"
    assert cot[0].reasoning.startswith("(A) This response does not address") and cot[4].answer == "A"
    assert all(e.question == "" for e in c.judge_examples)   # the judged pair's own question is asked
    # part of the version, so of every judge key; an export loads back to the same version
    assert Constitution.from_dict(c.canonical()).version == c.version
    assert load_import(PAPER_DATA / "CritiqueRevisionInstructions.json").version != c.version
    bad = Constitution.from_dict({**c.canonical(), "judge_examples": [{**c.canonical()["judge_examples"][0], "answer": "C"}]})
    with pytest.raises(CaiError, match="judge example #1: answer must be A or B"):
        bad.validate()


def test_paper_few_shot_structure_errors(tmp_path):
    f = tmp_path / "few.json"
    f.write_text(json.dumps(["\n\nHuman: hi\n\nAssistant: hello\n\nCritiqueRequest: x\n\nCritique: y\n\nRevision: z"]))
    with pytest.raises(CaiError, match="few-shot example #1"):
        load_few_shot_file(f)


# -- CLI ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_import_export_versions_diff(tmp_path):
    ws = str(tmp_path / "ws")
    src = _yaml(tmp_path, GOOD)
    r = run_cli("constitution", "import", str(src), "--workspace", ws)
    assert r.returncode == 0, r.stderr
    edited = json.loads(json.dumps(GOOD))
    edited["principles"][1]["critique_request"] = "Critique again."
    r = run_cli("constitution", "import", str(_yaml(tmp_path, edited, "c2.yaml")), "--note", "v2", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    versions = json.loads(run_cli("constitution", "versions", "t", "--json", "--workspace", ws).stdout)
    assert len(versions) == 2 and versions[0]["note"] == "v2" and versions[0]["parent_version"] == versions[1]["version"]
    r = run_cli("constitution", "diff", "t", versions[1]["version"], versions[0]["version"], "--workspace", ws)
    assert r.returncode == 0 and "principle b [changed]" in r.stdout and "[-Critique.-]{+Critique again.+}" in r.stdout
    out = tmp_path / "exp.json"
    r = run_cli("constitution", "export", "t", "--version", versions[1]["version"], "--format", "json",
                "--out", str(out), "--workspace", ws)
    assert r.returncode == 0 and load_constitution_file(out).version == versions[1]["version"]
    r = run_cli("constitution", "list", "--json", "--workspace", ws)
    assert [c["name"] for c in json.loads(r.stdout)] == ["t"]


@pytest.mark.slow
def test_cli_paper_import(tmp_path):
    ws = str(tmp_path / "ws")
    r = run_cli("constitution", "import", str(PAPER_DATA / "CritiqueRevisionInstructions.json"), "--name", "paper",
                "--comparisons", str(PAPER_DATA / "RLMadisonInstructions.json"),
                "--few-shot", str(PAPER_DATA / "CritiqueRevisionFewShotPrompts.json"), "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "5 few-shot examples" in r.stdout and "16 for critique/revision" in r.stdout


@pytest.mark.parametrize("name,content,needle", [
    ("bad.yaml", "name: t\nprinciples:\n  - id: a\n   name: b\n", r"bad.yaml:4"),
    ("var.yaml", None, r"var.yaml:\d+: .*\{oops\}"),
    ("empty.yaml", "name: t\nprinciples:\n  - id: a\n    name: A\n", r"empty.yaml:3: principle 'a' is empty"),
])
@pytest.mark.slow
def test_cli_bad_input_exit_2_nothing_written(tmp_path, name, content, needle):
    import re

    ws = tmp_path / "ws"
    f = tmp_path / name
    if content is None:
        data = json.loads(json.dumps(GOOD))
        data["principles"][0]["critique_request"] = "What about {oops}?"
        f.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        f.write_text(content)
    for cmd in (("validate", str(f)), ("import", str(f), "--workspace", str(ws))):
        r = run_cli("constitution", *cmd)
        assert r.returncode == 2, r.stdout
        assert r.stderr.startswith("error: ") and re.search(needle, r.stderr), r.stderr
        assert "Traceback" not in r.stderr
    assert not ws.exists()  # validated before the workspace was even opened
