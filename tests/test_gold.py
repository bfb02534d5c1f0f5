"""Gold sets: the label interchange format, the paper's eval sets, human labels as gold."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from cai_core.reliability import gold as G
from cai_core.reliability import labels as L
from cai_core.reliability import paper_evals as P
from cai_core.errors import CaiError
from tests.helpers import PAPER_DATA

HHH = PAPER_DATA / "438HHHEvaluations.jsonl"
HVE = PAPER_DATA / "HarmfulVsEthical.jsonl"


def test_parse_labels_normalises_and_keeps_extra_fields():
    text = "\n".join([
        json.dumps({"id": 1, "label": "a", "rater": "ann"}),
        "",
        json.dumps({"id": "x", "label": "(B)", "p_a": 0.2, "principle": "p1"}),
        json.dumps({"id": "y", "p_a": 0.5}),
        json.dumps({"id": "z", "label": "Tie"}),
    ])
    rows = L.parse_labels(text, source="labels.jsonl")
    assert [r["id"] for r in rows] == ["1", "x", "y", "z"]
    assert [r["label"] for r in rows] == ["A", "B", "tie", "tie"]   # p_a 0.5 without a label is a tie
    assert rows[1]["principle"] == "p1" and rows[0]["rater"] == "ann"


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"label": "A"}), "missing 'id'"),
    (json.dumps({"id": 1, "label": "C"}), "label must be"),
    (json.dumps({"id": 1}), "missing 'label'"),
    (json.dumps({"id": 1, "label": "A", "p_a": 1.5}), "'p_a' must be a number between 0 and 1"),
    (json.dumps({"id": 1, "label": "A", "p_a_ab": "high"}), "'p_a_ab' must be"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_bad_lines_name_file_and_line(line, message):
    text = json.dumps({"id": 0, "label": "A"}) + "\n" + line + "\n"
    with pytest.raises(CaiError) as exc:
        L.parse_labels(text, source="gold.jsonl")
    assert "gold.jsonl:2" in str(exc.value) and message in str(exc.value)


def test_read_write_roundtrip_and_bad_row_writes_nothing(tmp_path):
    path = tmp_path / "labels.jsonl"
    assert L.write_labels(path, [{"id": 3, "label": "B", "p_a": 0.1}, {"id": "4", "label": "tie"}]) == 2
    assert [(r["id"], r["label"]) for r in G.read_labels(path)] == [("3", "B"), ("4", "tie")]
    other = tmp_path / "other.jsonl"
    with pytest.raises(CaiError):
        L.write_labels(other, [{"id": 1, "label": "A"}, {"id": 2, "label": "maybe"}])
    assert not other.exists()
    with pytest.raises(CaiError, match="file not found"):
        G.read_labels(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CaiError, match="no labels"):
        G.read_labels(tmp_path / "empty.jsonl")


def test_judge_rows_without_verdict_are_kept_only_when_allowed():
    text = json.dumps({"id": "1", "label": None, "p_a": None, "invalid": 2})
    with pytest.raises(CaiError):
        L.parse_labels(text)
    assert L.parse_labels(text, allow_no_verdict=True)[0]["label"] is None


def test_load_438_hhh_matches_the_paper_file():
    items = P.load_paper_eval(HHH)
    assert len(items) == 438
    raw = [json.loads(line) for line in HHH.read_text(encoding="utf-8").splitlines()]
    for it, row in zip(items, raw):
        correct = it["response_a"] if it["gold_label"] == "A" else it["response_b"]
        wrong = it["response_b"] if it["gold_label"] == "A" else it["response_a"]
        # the paper's text_correct / text_incorrect end with the right / wrong reply
        assert row["text_correct"].rstrip().endswith(correct)
        assert row["text_incorrect"].rstrip().endswith(wrong)
        assert it["prompt"].startswith("Human:") and it["question"] is None and it["category"] == "hhh"
        assert it["meta"]["paper_correct"] == row["corrects"][0].strip(" ()")
    # randomised with a fixed seed: balanced, reproducible, and different from the file's own order
    gold = Counter(it["gold_label"] for it in items)
    assert 180 < gold["A"] < 260
    assert [it["id"] for it in items] == [it["id"] for it in P.load_paper_eval(HHH)]
    assert any(it["meta"]["swapped"] for it in items) and not all(it["meta"]["swapped"] for it in items)
    plain = P.load_paper_eval(HHH, randomize=False)
    assert all(it["gold_label"] == it["meta"]["paper_correct"] for it in plain)
    assert plain[0]["id"] == "438HHHEvaluations-1"


def test_load_harmful_vs_ethical_keeps_its_question():
    items = P.load_paper_eval(HVE)
    assert len(items) == 254
    for it in items:
        assert {it["response_a"], it["response_b"]} == {"The assistant was harmful or unethical.",
                                                        "The assistant behaved ethically."}
        assert it["question"].startswith("Choose the option")
        assert it["category"] == "harmful-vs-ethical"


def test_multi_option_and_malformed_paper_rows_are_refused(tmp_path):
    with pytest.raises(CaiError, match="only two-option evals"):
        P.load_paper_eval(PAPER_DATA / "HarmfulnessClassification.jsonl")
    bad = tmp_path / "bad.jsonl"
    first = HHH.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(first + "\n" + json.dumps({"prompt": "hello", "corrects": [" (A)"], "incorrects": [" (B)"]}) + "\n")
    with pytest.raises(CaiError) as exc:
        P.load_paper_eval(bad)
    assert "bad.jsonl:2" in str(exc.value) and "not in a known paper eval format" in str(exc.value)


def test_paper_gold_labels_cover_both_orientations():
    rows = G.read_labels(HHH)
    assert len(rows) == 2 * 438
    by_id = {r["id"]: r["label"] for r in rows}
    assert by_id["438HHHEvaluations-1"] == "B"                    # the file says (B) for line 1
    assert by_id["438HHHEvaluations-1-swapped"] == "A"
    assert all(r["len_a"] > 0 and r["len_b"] > 0 for r in rows)


def test_import_paper_eval_is_idempotent_and_reuses_mirrored_comparisons(store):
    from cai_core.rlaif.pairs import import_pairs_file

    first = G.import_paper_eval(store, HHH, limit=20)
    assert first["added"] == 20 and len(first["ids"]) == 20
    again = G.import_paper_eval(store, HHH, limit=20)
    assert again["added"] == 0 and again["ids"] == first["ids"]
    # the pairs importer parses paper files with the same function: no eval item is stored twice
    import_pairs_file(store, HHH)
    items = P.load_paper_eval(HHH)
    total = store.scalar("SELECT COUNT(*) FROM comparisons WHERE source='gold:438HHHEvaluations'")
    assert total == 438
    third = G.import_paper_eval(store, HHH)
    assert third["added"] == 0 and len(set(third["ids"])) == 438 and third["ids"][:20] == first["ids"]
    gold = {g["id"]: g["label"] for g in G.gold_from_comparisons(store, "gold:438HHHEvaluations")}
    for cid, it in zip(third["ids"], items):
        row = store.one("SELECT response_a, response_b, gold_label FROM comparisons WHERE id=?", (cid,))
        stored_correct = row["response_a"] if row["gold_label"] == "A" else row["response_b"]
        assert stored_correct == (it["response_a"] if it["gold_label"] == "A" else it["response_b"])
        assert gold[str(cid)] == row["gold_label"]
    assert G.gold_sets(store)[0]["name"] == "gold:438HHHEvaluations"


def test_gold_from_human_labels_newest_per_annotator(store):
    from cai_core.rlaif.preferences import add_label

    ids = G.import_paper_eval(store, HVE, limit=3)["ids"]
    add_label(store, ids[0], "A", "ann")
    add_label(store, ids[0], "B", "ann")            # newest of ann counts
    add_label(store, ids[0], "A", "bob")
    add_label(store, ids[1], "both_bad", "ann")      # no answer preferred -> tie
    add_label(store, ids[2], "skip", "ann")          # no preference -> not gold
    rows = G.gold_from_human_labels(store)
    got = {(r["id"], r["rater"]): r["label"] for r in rows}
    assert got == {(str(ids[0]), "ann"): "B", (str(ids[0]), "bob"): "A", (str(ids[1]), "ann"): "tie"}
    assert G.load_gold(store, "human-labels") == rows
    assert G.gold_sets(store)[0] == {"name": "human-labels", "kind": "human", "count": 2}
    with pytest.raises(CaiError, match="no gold set"):
        G.load_gold(store, "gold:nothing")
