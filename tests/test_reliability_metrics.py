"""Reliability metrics against values worked out by hand or published with a worked example."""
from __future__ import annotations

import math
import random

import pytest

from cai_core.evaluation.stats import bootstrap_ci
from cai_core.reliability import metrics as R

N = None


def test_accuracy_with_and_without_ties():
    pred = ["A", "B", "tie", "A", "B"]
    gold = ["A", "A", "tie", "tie", "B"]
    assert R.accuracy(pred, gold) == pytest.approx(3 / 5)          # A=A, tie=tie, B=B
    # without ties: items 3 (both tie) and 4 (gold tie) go; A/A, B/A, B/B remain
    assert R.accuracy_no_ties(pred, gold) == pytest.approx(2 / 3)
    assert math.isnan(R.accuracy([], []))
    with pytest.raises(ValueError):
        R.accuracy(["A"], ["A", "B"])


def test_cohen_kappa_hand_computed():
    # p_o = 4/5; judge A:3 B:2, gold A:2 B:3 -> p_e = (3*2 + 2*3)/25 = 0.48; kappa = 0.32/0.52
    assert R.cohen_kappa(list("AABBA"), list("ABBBA")) == pytest.approx(0.32 / 0.52)
    # textbook 2x2: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["A"] * 25 + ["B"] * 25
    b = ["A"] * 20 + ["B"] * 5 + ["A"] * 10 + ["B"] * 15
    assert R.cohen_kappa(a, b) == pytest.approx(0.4)
    assert R.cohen_kappa(list("AB"), list("AB")) == pytest.approx(1.0)
    assert math.isnan(R.cohen_kappa(list("AAA"), list("AAA")))  # chance agreement 1: undefined


def test_fleiss_kappa_wikipedia_example():
    # Fleiss (1971) style example on Wikipedia: 10 subjects, 14 raters, 5 categories -> P=0.378, Pe=0.213, kappa=0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert R.fleiss_kappa(counts) == pytest.approx(0.2099, abs=5e-4)
    with pytest.raises(ValueError):
        R.fleiss_kappa([[1, 1], [3, 0]])


def test_fleiss_small_hand_example():
    # 3 items x 3 raters: AAA, AAB, BBB. p_A = 5/9, p_B = 4/9; P_i = 1, 1/3, 1 -> P = 7/9
    # P_e = 25/81 + 16/81 = 41/81; kappa = (7/9 - 41/81) / (1 - 41/81) = (22/81) / (40/81) = 0.55
    assert R.fleiss_from_labels([list("AAA"), list("AAB"), list("BBB")]) == pytest.approx(0.55)


def test_krippendorff_alpha_worked_examples():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values,
    # nominal alpha = 0.743
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3]
    c = [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]
    assert R.krippendorff_alpha(list(zip(a, b, c, d))) == pytest.approx(0.743, abs=5e-4)
    # the same paper's binary example, two observers, ten units: alpha = 0.095
    o1 = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    o2 = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert R.krippendorff_alpha(list(zip(o1, o2))) == pytest.approx(0.095, abs=5e-4)
    assert R.krippendorff_alpha([["A", "A"], ["B", "B"]]) == pytest.approx(1.0)


def test_bootstrap_ci_matches_normal_approximation_and_is_seeded():
    rng = random.Random(1)
    items = [{"label": "A", "gold": "A" if rng.random() < 0.7 else "B"} for _ in range(400)]
    acc = R.accuracy([i["label"] for i in items], [i["gold"] for i in items])
    lo, hi = bootstrap_ci(items, R._acc, n_boot=2000, seed=3)
    half = 1.96 * math.sqrt(acc * (1 - acc) / len(items))
    assert lo == pytest.approx(acc - half, abs=0.012)
    assert hi == pytest.approx(acc + half, abs=0.012)
    assert bootstrap_ci(items, R._acc, n_boot=200, seed=5) == bootstrap_ci(items, R._acc, n_boot=200, seed=5)
    perfect = [{"label": "A", "gold": "A"}] * 20
    assert bootstrap_ci(perfect, R._acc, n_boot=100) == (1.0, 1.0)


def test_position_bias_hand_computed():
    pairs = [(0.8, 0.3), (0.7, 0.6), (0.4, 0.45), (0.9, 0.8)]
    out = R.position_bias(pairs)
    assert out["flip_rate"] == pytest.approx(1 / 4)               # only the first pair changes its verdict
    # A/B order: first shown (A) wins 3 of 4; B/A order: first shown (B) wins in pairs 1 and 3 -> 5 of 8
    assert out["first_position_win_rate"] == pytest.approx(5 / 8)
    assert out["mean_p_first"] == pytest.approx((0.8 + 0.7 + 0.4 + 0.9 + 0.7 + 0.4 + 0.55 + 0.2) / 8)


def test_length_bias_hand_computed():
    items = [
        {"len_a": 10, "len_b": 5, "label": "A", "gold": "A"},
        {"len_a": 3, "len_b": 9, "label": "B", "gold": "A"},
        {"len_a": 4, "len_b": 4, "label": "A", "gold": "A"},
        {"len_a": 7, "len_b": 2, "label": "B", "gold": "B"},
        {"len_a": 1, "len_b": 8, "label": "tie", "gold": "B"},
    ]
    out = R.length_bias(items)
    assert out["longer_win_rate"] == pytest.approx(2 / 3)
    assert out["gold_longer_win_rate"] == pytest.approx(2 / 4)
    # diffs 5,-6,0,5,-7 (mean -0.6), prefs 1,-1,1,-1,0: sxy = 6.0, sxx = 133.2, syy = 4
    assert out["length_corr"] == pytest.approx(6.0 / math.sqrt(133.2 * 4))


def test_calibration_ece_and_brier_hand_computed():
    p = [0.95, 0.85, 0.15, 0.55, 0.45]
    gold = ["A", "B", "B", "A", "tie"]                          # the gold tie is left out
    cal = R.calibration(p, gold, n_bins=10)
    assert cal["n_calibrated"] == 4
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.15 + 0.45) / 4)
    assert cal["brier"] == pytest.approx((0.0025 + 0.7225 + 0.0225 + 0.2025) / 4)
    # two bins: [0.15] -> |0.15 - 0|; [0.95, 0.85, 0.55] -> |2.35/3 - 2/3|
    assert R.expected_calibration_error(p, gold, n_bins=2) == pytest.approx(0.15 / 4 + 3 / 4 * abs(2.35 / 3 - 2 / 3))
    assert sum(b["n"] for b in cal["bins"]) == 4


def test_self_consistency_and_confusion():
    sc = R.self_consistency([list("AAA"), list("ABA"), list("BBB"), ["A", "B", "tie"]])
    assert sc["mean_pairwise_agreement"] == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert sc["unanimous_rate"] == pytest.approx(0.5)
    cm = R.confusion_matrix(["A", "B", "A", "tie"], ["A", "A", "B", "B"])
    assert cm["matrix"] == [[1, 1, 0], [1, 0, 1], [0, 0, 0]]      # rows gold, columns judge


def test_match_resolves_several_gold_raters_and_collapses_principles():
    gold = [{"id": "1", "label": "A", "rater": "x"}, {"id": "1", "label": "A", "rater": "y"},
            {"id": "1", "label": "B", "rater": "z"}, {"id": "2", "label": "A", "rater": "x"},
            {"id": "2", "label": "B", "rater": "y"}]
    judge = [{"id": "1", "label": "A", "p_a": 0.9, "rater": "j", "principle": "p1"},
             {"id": "1", "label": "B", "p_a": 0.3, "rater": "j", "principle": "p2"},
             {"id": "2", "label": "B", "p_a": 0.2, "rater": "j"},
             {"id": "3", "label": "A", "rater": "j"}]
    items = {i["id"]: i for i in R.match(judge, gold)}
    assert set(items) == {"1", "2"}                              # id 3 has no gold
    assert items["1"]["gold"] == "A" and items["2"]["gold"] == "tie"  # majority; a split vote is a tie
    assert items["1"]["p_a"] == pytest.approx(0.6) and items["1"]["label"] == "A"  # mean P(A) over principles


def test_reliability_report_counts_invalid_and_breaks_down():
    gold = [{"id": str(i), "label": "A" if i % 2 else "B", "category": "x" if i < 5 else "y"} for i in range(10)]
    judge = [{"id": str(i), "label": "A", "p_a": 0.7, "rater": "j1", "principle": "p"} for i in range(10)]
    judge += [{"id": "0", "label": None, "rater": "j2"}] + [
        {"id": str(i), "label": g["label"], "p_a": 0.9 if g["label"] == "A" else 0.1, "rater": "j2"}
        for i, g in enumerate(gold) if i]
    rep = R.reliability_report(judge, gold, n_boot=50)
    assert rep["n_invalid"] == 1
    by = {j["rater"]: j for j in rep["judges"]}
    assert by["j1"]["accuracy"] == pytest.approx(0.5) and by["j2"]["accuracy"] == pytest.approx(1.0)
    assert {(r["rater"], r["category"]) for r in rep["by_category"]} == {("j1", "x"), ("j1", "y"), ("j2", "x"), ("j2", "y")}
    assert rep["inter_judge"]["n_items"] == 10 - 1 + 0           # j2 has no verdict on id 0
    assert len([d for d in rep["disagreements"] if d["rater"] == "j1"]) == 5


def test_judge_differences_pair_the_items_both_judges_labelled():
    """j2 is right on the 9 ids it judged, j1 on the 5 odd ones of those: +4/9 for j2 over j1,
    counted only where both gave a verdict, with a CI that excludes 0; the CLI prints it."""
    from cai_core.commands.reliability import format_table

    gold = [{"id": str(i), "label": "A" if i % 2 else "B"} for i in range(10)]
    judge = [{"id": str(i), "label": "A", "rater": "j1"} for i in range(10)]
    judge += [{"id": str(i), "label": g["label"], "rater": "j2"} for i, g in enumerate(gold) if i]
    rep = R.reliability_report(judge, gold, n_boot=200)
    [d] = rep["judge_differences"]
    assert (d["a"], d["b"], d["n"]) == ("j1", "j2", 9)
    assert d["diff"] == pytest.approx(5 / 9 - 1.0)
    assert (d["both_right"], d["only_a_right"], d["only_b_right"], d["both_wrong"]) == (5, 0, 4, 0)
    assert d["ci"][1] < 0 and d["significant"]
    assert "accuracy j1 minus j2: -0.444" in format_table(rep)
    assert R.reliability_report([r for r in judge if r["rater"] == "j1"], gold, n_boot=10)["judge_differences"] == []


def test_stratified_sample_covers_strata_and_is_seeded():
    items = ([{"id": f"a{i}", "label": "A", "p_a": 0.95} for i in range(80)]
             + [{"id": f"b{i}", "label": "B", "p_a": 0.45} for i in range(15)]
             + [{"id": f"t{i}", "label": "tie", "p_a": 0.5} for i in range(5)])
    sample = R.stratified_sample(items, 10, seed=1)
    assert len(sample) == 10 and len({s["id"] for s in sample}) == 10
    labels = [s["label"] for s in sample]
    assert labels.count("tie") >= 1 and labels.count("B") >= 1 and labels.count("A") >= 7
    assert [s["id"] for s in sample] == [s["id"] for s in R.stratified_sample(items, 10, seed=1)]
    assert len(R.stratified_sample(items, 500)) == 100
