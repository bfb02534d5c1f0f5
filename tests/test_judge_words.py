"""Judge keys in words and the reliability views' default gold set (issue 15 item 2)."""
from __future__ import annotations

from cai_core.constitution.model import Constitution, Principle
from cai_core.constitution.versions import save_constitution
from cai_core.reliability.gold import best_gold_set, gold_coverage
from cai_core.rlaif.preferences import add_label
from cai_core.store import now
from ui.reliability import judge_words


def _judge(store, cid: int, key: str, status: str = "ok") -> None:
    for order in ("AB", "BA"):
        store.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, "
                      "p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                      (cid, key, key.split("|")[1], "harm", key.split("|")[0], order, 0.7, status, now()))


def _comparison(store, key: str, source: str, gold: str | None) -> int:
    return store.execute("INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
                         "VALUES (?,?,?,?,?,?,?)", (key, source, "p", "a", "b", gold, now())).lastrowid


def test_judge_key_in_words_names_the_constitution(store):
    c = Constitution(name="harmless_helpful", principles=[
        Principle(id="harm", name="Harm", critique_request="c", revision_request="r")])
    save_constitution(store, c)
    assert judge_words(store, f"mc|default|{c.version}|random|0f1e1a66") == \
        f"default · multiple choice (log-probs) · one random principle per pair · harmless_helpful@{c.version}"
    assert judge_words(store, "cot|/m/x|-|3ids|12345678") == "/m/x · chain of thought · 3 chosen principle(s) · no constitution"
    assert judge_words(store, "parse|m|deadbeef0000|all|1") == "m · parsed verdict · every principle · constitution deadbeef0000"
    assert judge_words(store, "not-a-key") == "not-a-key"


def test_default_gold_set_is_the_one_the_most_judged_items_cover(store):
    """3 human labels sorted first must not hide 4 judged paper items (the issue's 33% with CI 0-100%)."""
    paper = [_comparison(store, f"g{i}", "gold:paper", "A") for i in range(5)]
    sampled = [_comparison(store, f"s{i}", "sampled", None) for i in range(3)]
    for cid in sampled:
        add_label(store, cid, "A", "ann")
        _judge(store, cid, "mc|m|-|random|1")
    for cid in paper[:4]:
        _judge(store, cid, "mc|m|-|random|1")
    _judge(store, paper[4], "mc|m|-|random|1", status="invalid")  # not a judged item
    assert gold_coverage(store) == {"gold:paper": {"mc|m|-|random|1": 4}, "human-labels": {"mc|m|-|random|1": 3}}
    assert best_gold_set(store) == "gold:paper"
    assert best_gold_set(store.__class__(store.workspace.__class__.open(store.workspace.root / "other"))) is None


def test_a_built_in_judge_question_is_named_in_words_not_by_its_hash(tmp_path):
    """Issue 22 item 8: the Demo named an evaluation constitution '02dce4bca312' that the Constitution page does
    not list; the built-in evaluation / eval-judge questions are not stored constitutions."""
    from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    store = Store(Workspace.open(tmp_path / "ws"))
    for c in (HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE):
        words = judge_words(store, f"mc|m|{c.version}|all|1")
        assert words == f"m · multiple choice (log-probs) · every principle · built-in {c.name} question"
