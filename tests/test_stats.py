"""Statistics against hand-computed values."""
import math

import pytest

from cai_core.evaluation.stats import (
    bootstrap_ci,
    bradley_terry,
    bradley_terry_ci,
    bt_to_elo,
    elo,
    elo_expected,
    outcome_score,
    paired_bootstrap_diff,
    win_tie_loss,
)


def test_win_tie_loss_counts_and_rates():
    r = win_tie_loss(["A", "A", "B", "tie", "A"], n_boot=500)
    assert (r["n"], r["wins"], r["ties"], r["losses"]) == (5, 3, 1, 1)
    assert r["win"] == pytest.approx(0.6) and r["tie"] == pytest.approx(0.2) and r["loss"] == pytest.approx(0.2)
    assert r["win_rate"] == pytest.approx(3.5 / 5)  # ties count half
    lo, hi = r["win_rate_ci"]
    assert 0.0 <= lo <= 0.7 <= hi <= 1.0
    assert win_tie_loss([])["win_rate"] is None


def test_outcome_score_rejects_bad_values():
    assert outcome_score("win") == 1.0 and outcome_score(0.25) == 0.25
    with pytest.raises(ValueError):
        outcome_score("maybe")
    with pytest.raises(ValueError):
        outcome_score(1.5)


def test_bootstrap_ci_constant_and_width():
    assert bootstrap_ci([1, 1, 1], n_boot=2000) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0, 1] * 50, n_boot=2000, seed=1)
    # the mean of 100 fair coin flips: the standard error is 0.05, the 95% interval about +-0.1
    assert 0.38 < lo < 0.45 and 0.55 < hi < 0.62
    assert bootstrap_ci([0, 1] * 50, n_boot=2000, seed=1) == (lo, hi)  # seeded


def test_bootstrap_ci_one_rule_for_means_and_statistics(monkeypatch):
    """The one bootstrap_ci (evaluation and judge reliability): a statistic over resampled items gives
    the mean's interval, undefined resamples are left out, and no items or no resamples give NaN."""
    from cai_core.evaluation import stats

    values = [0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0]
    mean_ci = bootstrap_ci(values, n_boot=300, seed=2)
    assert bootstrap_ci(values, lambda s: sum(s) / len(s), n_boot=300, seed=2) == pytest.approx(mean_ci, abs=1e-12)
    assert all(math.isnan(x) for x in bootstrap_ci([], n_boot=300))
    assert all(math.isnan(x) for x in bootstrap_ci(values, n_boot=0))
    # a statistic undefined on most resamples (any 0 in it): too few left -> NaN, not a narrow lie
    assert all(math.isnan(x) for x in bootstrap_ci([0.0, 0.0, 1.0, 1.0], lambda s: None if 0.0 in s else 1.0,
                                                   n_boot=300))
    assert bootstrap_ci([0.0, 1.0], lambda s: None if s == [0.0, 0.0] else s.count(1.0), n_boot=300) == (1.0, 2.0)
    # resample indices drawn in blocks give the same stream as one draw
    monkeypatch.setattr(stats, "_ROWS_PER_DRAW", 20)
    assert bootstrap_ci(values, n_boot=300, seed=2) == mean_ci


def test_paired_bootstrap_diff():
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    r = paired_bootstrap_diff(a, b)
    assert r["diff"] == pytest.approx(1.0) and r["ci"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert r["significant"] and r["p_le_0"] == 0.0 and not r["too_few"]
    # the same shift on 1 or 5 pairs: the CI excludes 0, but so few pairs are not called significant
    for n in (1, 5):
        r = paired_bootstrap_diff(a[:n], b[:n])
        assert r["ci"][0] > 0 and r["too_few"] and not r["significant"]
    r = paired_bootstrap_diff([1, 0, 1, 0], [0, 1, 0, 1])
    assert r["diff"] == 0.0 and r["ci"][0] < 0 < r["ci"][1] and not r["significant"]
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1], [1, 2])


def test_bradley_terry_two_players_matches_win_share():
    # A beats B 3 times out of 4: the MLE gives P(A beats B) = 3/4, so pA/pB = 3.
    matches = [("A", "B", 1)] * 3 + [("A", "B", 0)]
    s = bradley_terry(matches)
    assert s["A"] / s["B"] == pytest.approx(3.0, rel=1e-6)
    assert math.sqrt(s["A"] * s["B"]) == pytest.approx(1.0)  # geometric mean 1


def test_bradley_terry_chain_hand_computed():
    # A beats B 2 of 3, B beats C 2 of 3, A and C never meet: pA:pB:pC = 4:2:1.
    matches = [("A", "B", 1), ("A", "B", 1), ("A", "B", 0), ("B", "C", 1), ("B", "C", 1), ("B", "C", 0)]
    s = bradley_terry(matches)
    assert s["A"] / s["B"] == pytest.approx(2.0, rel=1e-6)
    assert s["B"] / s["C"] == pytest.approx(2.0, rel=1e-6)
    elo_scale = bt_to_elo(s)
    assert elo_scale["A"] - elo_scale["C"] == pytest.approx(400 * math.log10(4), rel=1e-6)


def test_bradley_terry_ties_count_half_and_mle_condition():
    matches = [("A", "B", 0.5), ("A", "B", 1), ("B", "C", 1), ("C", "A", 1), ("A", "C", 1), ("B", "C", 0.5)]
    s = bradley_terry(matches)
    # at the MLE, each player's expected wins equal its actual wins
    wins = {"A": 0.5 + 1 + 1, "B": 0.5 + 1 + 0.5, "C": 1 + 0.5}
    expected = {n: 0.0 for n in s}
    for i, j, _ in matches:
        expected[i] += s[i] / (s[i] + s[j])
        expected[j] += s[j] / (s[i] + s[j])
    for n in s:
        assert expected[n] == pytest.approx(wins[n], rel=1e-6)


def test_bradley_terry_prior_keeps_unbeaten_finite():
    s = bradley_terry([("A", "B", 1)] * 5, prior=1.0)
    assert 0 < s["B"] < 1 < s["A"] < math.inf
    ci = bradley_terry_ci([("A", "B", 1)] * 5 + [("A", "B", 0)], n_boot=50)
    assert ci["A"]["score"] > ci["B"]["score"]
    assert ci["A"]["ci"][0] <= ci["A"]["score"] <= ci["A"]["ci"][1] + 1e-9


def test_elo_hand_computed():
    assert elo_expected(1000, 1000) == 0.5
    r = elo([("A", "B", 1)], k=32)
    assert r == {"A": 1016.0, "B": 984.0}
    # second game: A (1016) loses to B (984); expected for A = 1/(1+10^(-32/400))
    e = 1 / (1 + 10 ** (-32 / 400))
    r = elo([("A", "B", 1), ("A", "B", 0)], k=32)
    assert r["A"] == pytest.approx(1016 - 32 * e)
    assert r["A"] + r["B"] == pytest.approx(2000)  # zero sum
    avg = elo([("A", "B", 1), ("A", "B", 0)] * 3, permutations=5, seed=3)
    assert avg["A"] + avg["B"] == pytest.approx(2000)
