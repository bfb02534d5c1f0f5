"""Pairs: sampling k responses per prompt, imports of every supported format, bad lines."""
from __future__ import annotations

import json

import pytest

from tests.helpers import PAPER_DATA
from cai_core.errors import CaiError
from cai_core.rlaif.pairs import add_pairs, comparisons_for, import_pairs_file, load_pairs_file, sample_pairs


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_sample_k_forms_every_distinct_pair_and_resumes(tiny_backend, store):
    prompts = [{"text": f"Question number {i}?", "category": "test"} for i in range(3)]
    res = sample_pairs(store, tiny_backend, "tiny", prompts, batch="s1", k=3, max_new_tokens=6, seed=1)
    assert res["pairs_added"] + res["identical_skipped"] == 9  # C(3,2) per prompt
    rows = store.query("SELECT * FROM comparisons WHERE batch='s1'")
    assert len(rows) == res["pairs_added"] > 0
    assert all(r["source"] == "sampled" and r["policy_a"] == "tiny" and r["category"] == "test" for r in rows)
    again = sample_pairs(store, tiny_backend, "tiny", prompts, batch="s1", k=3, max_new_tokens=6, seed=1)
    assert again["prompts_already_done"] == 3 and again["pairs_added"] == 0
    with pytest.raises(CaiError):
        sample_pairs(store, tiny_backend, "tiny", prompts, batch="s2", k=1)
    with pytest.raises(CaiError):
        sample_pairs(store, tiny_backend, "tiny", prompts, batch="../x", k=2)


def test_samples_from_other_numerics_are_labelled_and_kept_apart(tiny_backend, store):
    """Text from int8 (the ctranslate2-int8 engine) is recorded as "<model> [int8]" on both sides of
    each pair, under its own sample keys: it never counts as the float32 run's samples."""
    import copy

    from cai_core.models.backends.base import Completion

    int8 = copy.copy(tiny_backend)
    int8.generation_numerics = lambda: "int8"  # what the ctranslate2-int8 engine reports
    int8.generate = lambda convs, params: [[Completion(c.text + " (int8)", c.tokens) for c in row]
                                           for row in tiny_backend.generate(convs, params)]  # its own text
    prompts = [{"text": "Question number 1?"}]
    plain = sample_pairs(store, tiny_backend, "tiny", prompts, batch="s", k=3, max_new_tokens=6, seed=1)
    res = sample_pairs(store, int8, "tiny", prompts, batch="s", k=3, max_new_tokens=6, seed=1)
    assert res["model"] == "tiny [int8]" and res["prompts_already_done"] == 0 and res["pairs_added"] > 0
    rows = store.query("SELECT policy_a, policy_b FROM comparisons WHERE batch='s' ORDER BY id")
    assert [r["policy_a"] for r in rows] == ["tiny"] * plain["pairs_added"] + ["tiny [int8]"] * res["pairs_added"]
    assert all(r["policy_a"] == r["policy_b"] for r in rows)


def test_import_pair_and_chosen_rejected_formats(tmp_path, store):
    f = write(tmp_path / "p.jsonl", [
        {"id": "x1", "prompt": "hi", "response_a": "a", "response_b": "b"},
        *[{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)],
        {"prompt": [{"role": "user", "content": "conv"}], "chosen": [{"role": "assistant", "content": "yes"}],
         "rejected": [{"role": "assistant", "content": "no"}]},
    ])
    pairs = load_pairs_file(f, seed=0)
    assert pairs[0]["id"] == "x1" and pairs[0]["gold_label"] is None
    cr = pairs[1:21]
    golds = {p["gold_label"] for p in cr}
    assert golds == {"A", "B"}  # the chosen side is randomised, not always A
    for p in cr:
        chosen = p["response_a"] if p["gold_label"] == "A" else p["response_b"]
        assert chosen.startswith("good")
    assert [p["gold_label"] for p in load_pairs_file(f, seed=0)] == [p["gold_label"] for p in pairs]  # seeded
    conv = pairs[-1]
    assert conv["prompt"] == "conv" and {conv["response_a"], conv["response_b"]} == {"yes", "no"}
    res = import_pairs_file(store, f)
    assert res["added"] == 22 and res["source"] == "imported"
    assert import_pairs_file(store, f)["added"] == 0  # idempotent by content key


def test_import_paper_files(store):
    hhh = load_pairs_file(PAPER_DATA / "438HHHEvaluations.jsonl")
    assert len(hhh) == 438
    assert {p["gold_label"] for p in hhh} == {"A", "B"}
    first = hhh[0]
    assert first["prompt"].startswith("Human: I want to see if my wife")
    # the paper marks the second reply correct; which side shows it is drawn per item (seeded)
    correct = first["response_a"] if first["gold_label"] == "A" else first["response_b"]
    assert correct.startswith("If you want to track your wife")
    assert first["id"].startswith("438HHHEvaluations-1")
    assert 0.3 < sum(p["gold_label"] == "A" for p in hhh) / len(hhh) < 0.7  # gold is not always one side
    hve = load_pairs_file(PAPER_DATA / "HarmfulVsEthical.jsonl")
    assert len(hve) == 254 and all(p["question"] for p in hve)
    assert "The assistant was harmful or unethical." in (hve[0]["response_a"], hve[0]["response_b"])
    res = import_pairs_file(store, PAPER_DATA / "HarmfulVsEthical.jsonl")
    assert res["source"] == "gold:HarmfulVsEthical" and res["with_gold"] == 254
    pairs = comparisons_for(store, source="gold:HarmfulVsEthical")
    assert len(pairs) == 254 and pairs[0]["question"].startswith("Choose the option")


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed JSON"),
    ('{"prompt": "p", "chosen": "c"}', "missing 'rejected'"),
    ('{"foo": 1}', "unknown row format"),
    ('{"prompt": "p", "response_a": "", "response_b": "b"}', "empty response"),
    ('{"prompt": "p", "chosen": 5, "rejected": "r"}', "'chosen' must be"),
    ('{"prompt": "x", "corrects": [" (C)"], "incorrects": [" (A)"]}', "unknown row format"),  # paper rows only as a whole file
    ('[1, 2]', "JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path, store, line, message):
    f = write(tmp_path / "bad.jsonl", [{"id": "ok", "prompt": "p", "response_a": "a", "response_b": "b"}, line])
    with pytest.raises(CaiError, match=message) as err:
        import_pairs_file(store, f)
    assert f"{f}:2" in str(err.value)
    assert store.scalar("SELECT COUNT(*) FROM comparisons") == 0  # nothing written


def test_duplicate_ids_and_empty_file(tmp_path):
    f = write(tmp_path / "d.jsonl", [{"id": "a", "prompt": "p", "response_a": "a", "response_b": "b"}] * 2)
    with pytest.raises(CaiError, match="duplicate id"):
        load_pairs_file(f)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(CaiError, match="empty"):
        load_pairs_file(tmp_path / "e.jsonl")


def test_add_pairs_sets_comparison_ids(store):
    pairs = [{"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}]
    [cid] = add_pairs(store, pairs, origin="imported")
    assert pairs[0]["comparison_id"] == cid
    assert add_pairs(store, [dict(pairs[0])], origin="imported") == [cid]
