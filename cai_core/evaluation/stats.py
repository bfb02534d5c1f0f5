"""Statistics for comparing policies: win/tie/loss rates with bootstrap CIs, Bradley-Terry
scores (Hunter's MM algorithm), Elo, and the paired bootstrap for differences; and the one
`bootstrap_ci` that every interval over items uses (the judge-reliability metrics too).

Pure Python + numpy (scipy is not a dependency). Every interval is a percentile bootstrap with
a fixed seed, so the same data always gives the same interval.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterable, Sequence

import numpy as np

ELO_BASE = 1000.0
ELO_SCALE = 400.0


# -- bootstrap ---------------------------------------------------------------------------------
BOOTSTRAP_RESAMPLES = 1000  # the CLIs' --n-boot default; win_tie_loss and paired_bootstrap_diff keep their 2000
_ROWS_PER_DRAW = 1 << 20    # resample indices are drawn in blocks of rows (same stream, bounded memory)


def bootstrap_ci(items: Sequence[Any], statistic: Callable[[list], float] | None = None, *,
                 n_boot: int = BOOTSTRAP_RESAMPLES, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of statistic(items), resampling items with replacement.

    `statistic` gets a list of resampled items; None means the mean of numeric items (vectorised).
    A statistic with a `batch` attribute, batch(items, idx) -> one value per row of the index
    matrix idx (resamples x n), is vectorised too: the same resamples, the same values, without a
    Python list per resample (the judge-reliability accuracy, kappa, alpha). One with a `prepare`
    attribute instead, prepare(items) -> f(idx), reads the items once for all blocks of resamples.
    Resamples where the statistic is undefined (None or NaN) are left out, and the interval is
    (nan, nan) when too few remain (fewer than max(10, n_boot // 10)), when there are no items, or
    when n_boot is 0. Seeded: the same items, statistic, n_boot and seed give the same interval.
    """
    return bootstrap_cis(items, [statistic], n_boot=n_boot, alpha=alpha, seed=seed)[0]


def bootstrap_cis(items: Sequence[Any], statistics: Sequence[Callable[[list], float] | None], *,
                  n_boot: int = BOOTSTRAP_RESAMPLES, alpha: float = 0.05,
                  seed: int = 0) -> list[tuple[float, float]]:
    """bootstrap_ci of several statistics of the same items and seed, drawing the resamples once:
    each interval equals bootstrap_ci(items, statistic, n_boot=n_boot, alpha=alpha, seed=seed)
    (the same seeded stream of resample indices), for the price of one draw."""
    items = list(items)
    n = len(items)
    if n == 0 or n_boot <= 0:
        return [(math.nan, math.nan) for _ in statistics]
    rng = np.random.default_rng(seed)
    funcs = []
    for statistic in statistics:
        prepare, batch = getattr(statistic, "prepare", None), getattr(statistic, "batch", None)
        if statistic is None:
            arr = np.asarray(items, dtype=float)
            funcs.append(lambda idx, arr=arr: arr[idx].mean(axis=1))
        elif prepare is not None:
            funcs.append(prepare(items))
        elif batch is not None:
            funcs.append(lambda idx, batch=batch: batch(items, idx))
        else:
            funcs.append(lambda idx, statistic=statistic: [statistic([items[i] for i in row]) for row in idx.tolist()])
    boots: list[list[float]] = [[] for _ in funcs]
    per_draw = max(1, _ROWS_PER_DRAW // n)
    for start in range(0, n_boot, per_draw):
        idx = rng.integers(0, n, size=(min(per_draw, n_boot - start), n))
        for statistic, f, out in zip(statistics, funcs, boots):
            values = f(idx)
            if statistic is None or hasattr(statistic, "prepare") or hasattr(statistic, "batch"):
                values = np.asarray(values, dtype=float).tolist()
            out += [float(v) for v in values if v is not None and not math.isnan(v)]
    cis = []
    for out in boots:
        if len(out) < max(10, n_boot // 10):
            cis.append((math.nan, math.nan))
            continue
        lo, hi = np.quantile(np.asarray(out), [alpha / 2, 1 - alpha / 2])
        cis.append((float(lo), float(hi)))
    return cis


# Below this many pairs no difference is called significant: even when every pair moves the same way,
# a two-sided sign test cannot reach p < 0.05 with 5 pairs (2 * 0.5**5 = 0.0625), while a percentile
# bootstrap of so few pairs gives a CI that excludes 0 (with 1 pair, a CI of width 0).
MIN_PAIRS_FOR_SIGNIFICANCE = 6


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                          seed: int = 0) -> dict:
    """Mean of a - b over paired items (same prompt, same seed) with a percentile bootstrap CI.

    Resamples items, keeping each pair together, so the variation shared by both arms (hard
    prompts) cancels. `p_le_0` is the share of bootstrap means <= 0 (a one-sided check that a > b).
    `significant`: the CI excludes 0 and there are at least MIN_PAIRS_FOR_SIGNIFICANCE pairs.
    """
    a_arr, b_arr = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples differ in length: {a_arr.size} vs {b_arr.size}")
    if a_arr.size == 0:
        raise ValueError("paired_bootstrap_diff needs at least one pair")
    d = a_arr - b_arr
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return {
        "n": int(d.size),
        "mean_a": float(a_arr.mean()),
        "mean_b": float(b_arr.mean()),
        "diff": float(d.mean()),
        "ci": [float(lo), float(hi)],
        "p_le_0": float((boots <= 0).mean()),
        "significant": bool((lo > 0 or hi < 0) and d.size >= MIN_PAIRS_FOR_SIGNIFICANCE),
        "too_few": bool(d.size < MIN_PAIRS_FOR_SIGNIFICANCE),
    }


# -- win / tie / loss --------------------------------------------------------------------------
def outcome_score(outcome) -> float:
    """A comparison outcome from the first policy's side: 1 win, 0.5 tie, 0 loss.

    Accepts "A"/"B"/"tie" (A = the first policy), "win"/"tie"/"loss", or a number in [0, 1].
    """
    if isinstance(outcome, str):
        key = outcome.strip().lower()
        table = {"a": 1.0, "win": 1.0, "b": 0.0, "loss": 0.0, "tie": 0.5, "t": 0.5}
        if key not in table:
            raise ValueError(f"unknown outcome {outcome!r}")
        return table[key]
    value = float(outcome)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"outcome {value} is outside [0, 1]")
    return value


def win_tie_loss(outcomes: Iterable, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Win, tie and loss rates (from the first policy's side) and the win rate with ties as half,
    each with a bootstrap CI over comparisons."""
    scores = [outcome_score(o) for o in outcomes]
    n = len(scores)
    if n == 0:
        return {"n": 0, "wins": 0, "ties": 0, "losses": 0, "win": None, "tie": None, "loss": None,
                "win_rate": None, "win_ci": [None, None], "tie_ci": [None, None], "loss_ci": [None, None],
                "win_rate_ci": [None, None]}
    wins = [1.0 if s == 1.0 else 0.0 for s in scores]
    ties = [1.0 if 0.0 < s < 1.0 else 0.0 for s in scores]
    losses = [1.0 if s == 0.0 else 0.0 for s in scores]
    out = {"n": n, "wins": int(sum(wins)), "ties": int(sum(ties)), "losses": int(sum(losses))}
    for name, arr in (("win", wins), ("tie", ties), ("loss", losses), ("win_rate", scores)):
        out[name] = sum(arr) / n
        out[f"{name}_ci"] = list(bootstrap_ci(arr, n_boot=n_boot, alpha=alpha, seed=seed))
    return out


# -- Bradley-Terry -----------------------------------------------------------------------------
Match = tuple[str, str, float]   # (player i, player j, score of i: 1 win, 0.5 tie, 0 loss)


def bradley_terry(matches: Sequence[Match], players: Sequence[str] | None = None, *, prior: float = 0.0,
                  max_iter: int = 10_000, tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry strengths by Hunter's (2004) MM algorithm; a tie counts half a win each side.

    P(i beats j) = p_i / (p_i + p_j). Without a prior, strengths are scaled to a geometric mean of
    1 (a player with no wins gets 0). `prior` adds that many virtual games (half won, half lost)
    between every player and a reference player of strength 1, which anchors the scale and keeps
    strengths finite when someone wins or loses everything.
    """
    names = list(players) if players is not None else sorted({m[0] for m in matches} | {m[1] for m in matches})
    index = {p: k for k, p in enumerate(names)}
    k = len(names)
    if k == 0:
        return {}
    wins = np.zeros(k)
    games = np.zeros((k, k))
    for i, j, s in matches:
        if i == j:
            continue
        a, b = index[i], index[j]
        s = outcome_score(s)
        wins[a] += s
        wins[b] += 1.0 - s
        games[a, b] += 1
        games[b, a] += 1
    p = np.ones(k)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        numer = wins.copy()
        if prior > 0:
            numer += prior / 2
            denom += prior / (p + 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(denom > 0, numer / denom, p)
        new = np.where(np.isfinite(new), new, p)
        positive = new > 0
        if prior <= 0 and positive.any():  # no reference player: fix the scale by the geometric mean
            new = new / math.exp(np.log(new[positive]).mean())
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return {name: float(p[index[name]]) for name in names}


def bt_to_elo(strengths: dict[str, float], base: float = ELO_BASE, scale: float = ELO_SCALE) -> dict[str, float]:
    """Bradley-Terry strengths on the Elo scale: 400 points = 10x the odds (0 strength -> -inf)."""
    out = {}
    for name, p in strengths.items():
        out[name] = base + scale * math.log10(p) if p > 0 else float("-inf")
    return out


def bradley_terry_ci(matches: Sequence[Match], players: Sequence[str] | None = None, *, prior: float = 1.0,
                     n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> dict[str, dict]:
    """BT scores on the Elo scale with bootstrap CIs (matches resampled)."""
    names = list(players) if players is not None else sorted({m[0] for m in matches} | {m[1] for m in matches})
    point = bt_to_elo(bradley_terry(matches, names, prior=prior))
    if not matches:
        return {n: {"score": point[n], "ci": [None, None]} for n in names}
    rng = random.Random(seed)
    boots: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(n_boot):
        sample = [matches[rng.randrange(len(matches))] for _ in matches]
        scores = bt_to_elo(bradley_terry(sample, names, prior=prior, max_iter=2000, tol=1e-8))
        for n in names:
            boots[n].append(scores[n])
    out = {}
    for n in names:
        lo, hi = np.quantile(np.asarray(boots[n]), [alpha / 2, 1 - alpha / 2])
        out[n] = {"score": point[n], "ci": [float(lo), float(hi)]}
    return out


# -- Elo ---------------------------------------------------------------------------------------
def elo_expected(r_i: float, r_j: float, scale: float = ELO_SCALE) -> float:
    return 1.0 / (1.0 + 10 ** ((r_j - r_i) / scale))


def elo(matches: Sequence[Match], players: Sequence[str] | None = None, *, k: float = 32.0,
        base: float = ELO_BASE, permutations: int = 1, seed: int = 0) -> dict[str, float]:
    """Sequential Elo ratings. Elo depends on match order, so with permutations > 1 the matches are
    replayed in that many seeded random orders and the ratings averaged (the first order is the given one)."""
    names = list(players) if players is not None else sorted({m[0] for m in matches} | {m[1] for m in matches})
    rng = random.Random(seed)
    totals = {n: 0.0 for n in names}
    order = list(matches)
    for perm in range(max(1, permutations)):
        if perm > 0:
            rng.shuffle(order)
        ratings = {n: base for n in names}
        for i, j, s in order:
            if i == j:
                continue
            s = outcome_score(s)
            e = elo_expected(ratings[i], ratings[j])
            ratings[i] += k * (s - e)
            ratings[j] -= k * (s - e)
        for n in names:
            totals[n] += ratings[n]
    return {n: totals[n] / max(1, permutations) for n in names}
