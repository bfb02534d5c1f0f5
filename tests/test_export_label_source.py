"""Issue 22 item 4: the preference export's AI labels come from ONE named judge by default - the
newest complete one - never a partial or stopped job's judge unless picked; the card counts the rows
left out by origin (gold, evaluation, experiment) and why."""
from __future__ import annotations

import json

import pytest

from cai_core.errors import CaiError
from cai_core.rlaif.pairs import add_pairs
from cai_core.rlaif.preferences import default_judge, export_preferences, judge_completeness
from cai_core.store import now
from tests.helpers import run_cli

OLD, NEW = "mc|old|v|random|1", "mc|new|v|random|2"


def _pairs(store, n, origin="sampled", batch="b"):
    return add_pairs(store, [{"id": f"{origin}{i}", "prompt": f"q {origin} {i}", "response_a": f"a{i}",
                              "response_b": f"b{i}"} for i in range(n)], origin=origin, batch=batch)


def _job(store, status) -> int:
    return int(store.execute("INSERT INTO jobs (kind, status, argv_json, created_at) VALUES ('judge',?,'[]',?)",
                             (status, now())).lastrowid)


def _judge(store, key, cids, p_a, *, job=None, at=None):
    with store.tx() as conn:
        for cid in cids:
            for order in ("AB", "BA"):
                conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                             "order_shown, p_a, parse_status, job_id, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (cid, key, key.split("|")[1], "harm", "mc", order, p_a, "ok", job, at or now()))


def _labels(store, name):
    lines = (store.workspace.exports_dir / name / "lineage.jsonl").read_text().splitlines()
    return {json.loads(x)["comparison_id"]: json.loads(x)["label"] for x in lines}


def test_the_default_is_the_newest_complete_judge_not_a_stopped_partial_one(store):
    ids = _pairs(store, 6)
    _judge(store, OLD, ids, 0.9, job=_job(store, "finished"), at=100.0)         # complete, says A
    _judge(store, NEW, ids[:2], 0.1, job=_job(store, "stopped"), at=200.0)      # newer, stopped at 2 of 6, says B
    assert default_judge(store, store.query("SELECT id, batch FROM comparisons"))[0] == OLD
    card = export_preferences(store, "default")
    assert card["ai_labels"]["judge_keys"] == [OLD] and not card["ai_labels"]["picked"]
    assert card["ai_labels"]["how"] == "the newest complete judge"
    [passed] = card["ai_labels"]["passed_over"]
    assert passed["judge_key"] == NEW and "stopped" in passed["why"]
    assert set(_labels(store, "default").values()) == {"A"}                     # nothing of the stopped judge
    # picked by name, the partial judge is used (and only it: 2 rows, the others judged by another judge)
    card = export_preferences(store, "picked", judge_keys=[NEW])
    assert card["ai_labels"]["picked"] and card["counts"]["exported"] == 2
    assert set(_labels(store, "picked").values()) == {"B"}
    assert card["counts"]["excluded_other_judges"] == 4
    assert card["left_out_by_origin"] == {"sampled": {"judged only by judges not used for AI labels": 4}}
    # all: every judge combined, as the export did by default before
    card = export_preferences(store, "all", judge_keys=["all"])
    assert sorted(card["ai_labels"]["judge_keys"]) == sorted([OLD, NEW])
    with pytest.raises(CaiError, match="judged none of these comparisons"):
        export_preferences(store, "nope", judge_keys=["mc|nobody"])


def test_a_stopped_job_that_covered_everything_is_still_not_the_default(store):
    ids = _pairs(store, 3)
    _judge(store, OLD, ids, 0.9, job=_job(store, "finished"), at=100.0)
    _judge(store, NEW, ids, 0.1, job=_job(store, "stopped"), at=200.0)
    judges = {j["judge_key"]: j for j in judge_completeness(store, store.query("SELECT id, batch FROM comparisons"))}
    assert judges[OLD]["complete"] and not judges[NEW]["complete"]
    assert judges[NEW]["why"].endswith("is stopped")
    # once a later job of that judge finished (a resumed job), it is complete and the newest
    resumed = _job(store, "finished")
    store.execute("UPDATE judgments SET job_id=? WHERE judge_key=? AND comparison_id=?", (resumed, NEW, ids[0]))
    assert export_preferences(store, "resumed")["ai_labels"]["judge_keys"] == [NEW]


def test_a_judge_missing_orders_or_comparisons_is_partial(store):
    ids = _pairs(store, 4)
    _judge(store, OLD, ids[:3], 0.9, at=100.0)                                  # no job (a CLI run), 3 of 4
    judges = judge_completeness(store, store.query("SELECT id, batch FROM comparisons"))
    assert judges[0]["why"] == "judged 3 of the 4 comparisons of its batch(es)"
    _judge(store, OLD, ids[3:], 0.9, at=100.0)
    store.execute("DELETE FROM judgments WHERE comparison_id=? AND order_shown='BA'", (ids[0],))
    judges = judge_completeness(store, store.query("SELECT id, batch FROM comparisons"))
    assert "lack some of its judgments" in judges[0]["why"]
    # no complete judge: no AI labels by default, and the error says how to use a partial one
    with pytest.raises(CaiError, match="no complete judge .*pick one with --judges"):
        export_preferences(store, "none")


def test_the_card_counts_rows_left_out_by_origin_and_why(store):
    train = _pairs(store, 3)
    gold = _pairs(store, 2, origin="gold:hhh", batch="g")
    ev = _pairs(store, 4, origin="evaluation:e1", batch="e")
    ex = _pairs(store, 1, origin="experiment:x1", batch="x")
    _judge(store, OLD, train + gold + ev + ex, 0.9, job=_job(store, "finished"))
    store.execute("UPDATE judgments SET p_a=0.5 WHERE comparison_id=?", (train[0],))  # a tie: left out
    card = export_preferences(store, "origins")
    assert card["counts"]["exported"] == 2
    assert card["left_out_by_origin"] == {
        "evaluation": {"held-out split eval": 4}, "experiment": {"held-out split eval": 1},
        "gold": {"held-out split gold": 2}, "sampled": {"AI verdict within the tie margin": 1}}
    readme = (store.workspace.exports_dir / "origins" / "README.md").read_text()
    assert '"evaluation": {"held-out split eval": 4}' in readme and "the newest complete judge" in readme
    card = export_preferences(store, "with-eval", include_splits="eval")
    assert card["left_out_by_origin"]["gold"] == {"held-out split gold": 2}
    assert "evaluation" not in card["left_out_by_origin"] and card["counts"]["exported"] == 7


def test_cli_judges_all_and_default(store, workspace):
    ids = _pairs(store, 2)
    _judge(store, OLD, ids, 0.9, job=_job(store, "finished"), at=100.0)
    _judge(store, NEW, ids[:1], 0.1, job=_job(store, "stopped"), at=200.0)
    out = run_cli("export-prefs", "--name", "cli", "--workspace", str(workspace.root), timeout=300)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["ai_labels"]["judge_keys"] == [OLD]
    out = run_cli("export-prefs", "--name", "cli-all", "--judges", "all", "--workspace", str(workspace.root), timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["ai_labels"]["judge_keys"]) == sorted([OLD, NEW])


@pytest.mark.slow
def test_the_export_form_names_the_judge_and_the_card_the_left_out(ws):
    """The Preferences page's Export tab says which judge an unpicked export uses, which it passes
    over and why; an export's card shows its AI label source and what was left out by origin."""
    from streamlit.testing.v1 import AppTest

    from cai_core.store import open_store
    from tests.helpers import ROOT

    store = open_store(ws)
    ids = _pairs(store, 3)
    _pairs(store, 2, origin="evaluation:e1", batch="e")
    _judge(store, OLD, ids, 0.9, job=_job(store, "finished"), at=100.0)
    stopped = _job(store, "stopped")
    _judge(store, NEW, ids[:1], 0.1, job=stopped, at=200.0)
    export_preferences(store, "shown")
    at = AppTest.from_file(str(ROOT / "pages" / "40_Preferences.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "AI labels from:" in captions and "(the newest complete judge)" in captions
    assert f"its job {stopped} is stopped" in captions
    texts = " ".join(t.value for t in at.text)
    assert "AI labels: the newest complete judge (mc|old|v|random|1)" in texts
    assert "left out by origin: evaluation: held-out split eval 2" in texts
