"""cai_core.summaries.headlines: one owner for every headline figure, its n (the real denominator), its CI, its
words and the small-n rule (issue 22, items 7-9)."""
from __future__ import annotations

from cai_core.summaries.headlines import (
    HEADLINE_N_BOOT,
    MIN_ITEMS,
    evaluation_warnings,
    judge_headline,
    pct,
    pct_range,
    policy_record,
    reliability_headlines,
    score_difference,
    small_n_warning,
    too_few,
)
from cai_core.reliability.metrics import agreement
from cai_core.store import now, open_store
from tests.helpers import seed_evaluation


def _items():
    """20 judged gold items: 9 non-tie verdicts on unequal-length pairs (5 pick the longer), 6 ties,
    5 equal-length pairs."""
    items = []
    for k in range(20):
        if k < 9:   # unequal, judge decided: the first 5 pick the longer (A is longer, judge says A)
            la, lb, label = 10 + k, 5, "A" if k < 5 else "B"
        elif k < 15:  # unequal, judge says tie
            la, lb, label = 10, 3, "tie"
        else:        # equal lengths
            la, lb, label = 7, 7, "A"
        items.append({"id": str(k), "rater": "j", "label": label, "gold": "A" if k % 2 else "B",
                      "len_a": la, "len_b": lb, "p_a_ab": 0.7 if label == "A" else 0.3, "p_a_ba": 0.6})
    return items


def test_longer_answer_wins_is_over_its_own_denominator_not_over_every_item():
    report = agreement(_items(), n_boot=50)
    h = reliability_headlines(report)
    assert report["n"] == 20 and report["n_length"] == 20
    longer = h["longer"]
    assert longer.n == 9 and abs(longer.value - 5 / 9) < 1e-12   # 55.6% of 9, not "n=20"
    assert longer.value_text == "55.6%" and "n=9 " in longer.caption()
    assert round(longer.value * longer.n) == 5  # a share of n is a whole count
    first = h["first_position"]
    assert first.n == report["n_first_decided"] and first.n > 0
    assert round(first.value * first.n, 9) == round(first.value * first.n)


def test_small_n_rule_is_one_rule_with_its_words():
    assert too_few(MIN_ITEMS - 1) and not too_few(MIN_ITEMS) and too_few(None)
    assert small_n_warning(MIN_ITEMS) is None
    text = small_n_warning(3, "judged comparisons")
    assert "n=3 judged comparisons" in text and str(MIN_ITEMS) in text
    h = reliability_headlines(agreement(_items(), n_boot=50))
    assert h["accuracy"].too_few and "n=20 judged gold items" in h["accuracy"].warning
    assert pct(0.556) == "55.6%" and pct(None) == "-" and pct(float("nan")) == "-"
    assert pct_range([0.3, 0.75]) == "30.0-75.0%" and pct_range([None, None]) == "-"


def test_wins_ties_losses_and_a_score_difference_at_small_n_carry_their_caution(ws):
    store = open_store(ws)
    eid = seed_evaluation(store, "ev-small")
    result = store.one("SELECT result_json FROM evaluations WHERE id=?", (eid,))["result_json"]
    import json

    result = json.loads(result)
    result["axes"]["harmless"]["policies"]["tuned"].update(n=3, wins=1, ties=2, losses=0, win=1 / 3, tie=2 / 3,
                                                           loss=0.0, win_rate=2 / 3)
    rec = policy_record(result, "harmless", "tuned")
    assert rec["record"] == "1 win, 2 ties, 0 losses" and rec["n"] == 3
    assert rec["win_rate"].value_text == "66.7%" and "half" in rec["win_rate"].help
    diff = score_difference(result, "harmless", "tuned", "base")
    assert diff["diff"] == 200 and diff["n"] == 3
    assert diff["caution"] and "only 3 judged comparison(s)" in diff["caution"]
    assert diff["text"].startswith("+200 vs base (n=3, only 3")


def test_evaluation_warnings_name_contamination_and_small_n(ws):
    from cai_core.evaluation.evaluate import get_evaluation
    from cai_core.exports import record_export

    store = open_store(ws)
    eid = seed_evaluation(store, "ev-w")
    ev = get_evaluation(store, eid)
    warnings = evaluation_warnings(store, ev)
    assert any("Harmless: too few judged comparisons" in w and "base n=2" in w for w in warnings)
    assert not any(w.startswith("Contamination") for w in warnings)
    prompt = store.scalar("SELECT prompt FROM comparisons WHERE source='evaluation:ev-w' ORDER BY id LIMIT 1")
    with store.tx() as conn:
        record_export(conn, "sl-leak", "sft", "/x", {}, [prompt])
    warnings = evaluation_warnings(store, ev)
    assert any(w.startswith("Contamination: 1 of 2 evaluation prompts") and "sl-leak" in w for w in warnings)


def test_judge_headline_is_the_dashboards_default_pick_at_the_default_resamples(ws):
    from cai_core.reliability.gold import best_gold_set, judge_vs_gold, load_gold

    store = open_store(ws)
    with store.tx() as conn:
        for source, n, judge in (("gold:small", 2, "mc|a"), ("gold:big", 5, "mc|b"), ("gold:big", 3, "mc|c")):
            for k in range(n):
                cid = conn.execute(
                    "INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
                    "VALUES (?,?,?,?,?,?,?)", (f"{source}{judge}{k}", source, "p", "a a", "b", "AB"[k % 2], now())).lastrowid
                for order, p in (("AB", 0.8), ("BA", 0.7)):
                    conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                                 "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                 (cid, judge, "j", "harmless", "mc", order, p, "ok", now()))
    head = judge_headline(store)
    assert head["gold"] == best_gold_set(store) == "gold:big" and head["judge"] == "mc|b"
    same = judge_vs_gold(store, ["mc|b"], load_gold(store, "gold:big"), n_boot=HEADLINE_N_BOOT)
    assert head["report"]["accuracy_ci"] == same["accuracy_ci"] and head["accuracy"].n == same["n"] == 5


def test_the_notebook_lists_an_evaluation_with_the_owners_headline(ws):
    from cai_core.summaries.lineage import notebook_rows, workspace_lineage

    store = open_store(ws)
    seed_evaluation(store, "ev-nb")
    (row,) = notebook_rows(workspace_lineage(store), "evaluation")
    assert row["headline"] == "harmless: tuned first, 2 wins, 0 ties, 0 losses (n=2) - too few for a conclusion"


def test_vectorised_inter_rater_intervals_equal_the_per_resample_statistics():
    """Krippendorff's alpha and Fleiss' kappa CIs (the dashboard's slowest figures at the default 1000
    resamples) through their batch form: the same resamples give the same interval."""
    import random

    import numpy as np

    from cai_core.evaluation.stats import bootstrap_ci
    from cai_core.reliability.metrics import (
        _fleiss_stat,
        _krippendorff_stat,
        fleiss_from_labels,
        krippendorff_alpha,
    )

    for seed in range(6):
        rng = random.Random(seed)
        raters = rng.randint(2, 4)
        units = [[rng.choice(["A", "B", "tie", None]) for _ in range(raters)] for _ in range(rng.randint(3, 60))]
        units = [u for u in units if sum(v is not None for v in u) >= 2] or [["A", "B"]]
        full = [u for u in units if None not in u] or [["A"] * raters]
        idx = np.random.default_rng(seed).integers(0, len(units), size=(50, len(units)))
        fast = _krippendorff_stat.batch(units, idx)
        slow = np.asarray([krippendorff_alpha([units[i] for i in row]) for row in idx.tolist()], dtype=float)
        assert np.allclose(fast, slow, equal_nan=True, atol=1e-12), seed
        a = bootstrap_ci(units, _krippendorff_stat, n_boot=200, seed=seed)
        b = bootstrap_ci(units, krippendorff_alpha, n_boot=200, seed=seed)
        assert np.allclose(a, b, equal_nan=True, atol=1e-12)
        idx = np.random.default_rng(seed).integers(0, len(full), size=(50, len(full)))
        fast = _fleiss_stat.batch(full, idx)
        slow = np.asarray([fleiss_from_labels([full[i] for i in row]) for row in idx.tolist()], dtype=float)
        assert np.allclose(fast, slow, equal_nan=True, atol=1e-12), seed
