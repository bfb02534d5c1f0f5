"""How far can an AI judge's labels be trusted? Agreement, bias and calibration statistics.

Pure functions over plain lists and dicts (no store): labels are "A", "B" or "tie".
Conventions, stated once so every number means the same thing everywhere:
- Ties are a third class. `accuracy` counts exact matches over all items (a tie matches only a
  tie); `accuracy_no_ties` drops every item where the judge OR the gold says tie (as MT-Bench's
  "without ties" agreement does).
- Confidence intervals are percentile bootstrap intervals over items (the one `bootstrap_ci` of
  evaluation/stats.py: seeded, 1000 resamples by default), so they reflect the size of the gold
  set, which is the usual limiting factor.
- A "matched item" is a dict: id, rater (the judge), label, gold, and optionally p_a, p_a_ab,
  p_a_ba (P(original A better) from the A/B and B/A orders), len_a, len_b, principle, category.
"""
from __future__ import annotations

import copy
import math
import random
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from cai_core.evaluation.stats import bootstrap_ci, bootstrap_cis, paired_bootstrap_diff

from cai_core.label_rule import label_from_p

LABELS = ("A", "B", "tie")
NAN = float("nan")

# Published reference figures (MT-Bench, Zheng et al. 2023, Table 2 setup S1/S2, second-turn averages).
MT_BENCH_REFERENCE = {
    "gpt4_human_with_ties": 0.66,
    "gpt4_human_without_ties": 0.85,
    "human_human_without_ties": 0.81,
}


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


# -- agreement between two label lists ---------------------------------------------------------
def accuracy(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Share of exact matches (ties are a class of their own)."""
    _same_length(pred, gold)
    if not pred:
        return NAN
    return sum(p == g for p, g in zip(pred, gold)) / len(pred)


def drop_ties(pred: Sequence[str], gold: Sequence[str]) -> tuple[list[str], list[str]]:
    """Keep only the items where neither side says tie."""
    kept = [(p, g) for p, g in zip(pred, gold) if p != "tie" and g != "tie"]
    return [p for p, _ in kept], [g for _, g in kept]


def accuracy_no_ties(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Accuracy over the items where neither the judge nor the gold says tie."""
    return accuracy(*drop_ties(pred, gold))


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa for two raters over the same items: (p_o - p_e) / (1 - p_e).

    NaN when chance agreement is 1 (both raters always give the same single label): kappa is
    undefined there, and saying 0 or 1 would be a made-up number.
    """
    _same_length(a, b)
    n = len(a)
    if n == 0:
        return NAN
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if p_e >= 1.0:
        return NAN
    return (p_o - p_e) / (1.0 - p_e)


def confusion_matrix(pred: Sequence[str], gold: Sequence[str], labels: Sequence[str] = LABELS) -> dict:
    """Counts with gold labels as rows and the judge's labels as columns."""
    _same_length(pred, gold)
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p, g in zip(pred, gold):
        if p in index and g in index:
            matrix[index[g]][index[p]] += 1
    return {"labels": list(labels), "matrix": matrix}


# -- several raters ----------------------------------------------------------------------------
def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts (same number of raters per item)."""
    rows = [list(map(int, r)) for r in counts if sum(r) > 0]
    if not rows:
        return NAN
    n = sum(rows[0])
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per item")
    if any(sum(r) != n for r in rows):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every item (use Krippendorff's alpha)")
    big_n = len(rows)
    k = len(rows[0])
    p_j = [sum(r[j] for r in rows) / (big_n * n) for j in range(k)]
    p_i = [(sum(c * c for c in r) - n) / (n * (n - 1)) for r in rows]
    p_bar = sum(p_i) / big_n
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return NAN
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_from_labels(units: Sequence[Sequence[str]], labels: Sequence[str] = LABELS) -> float:
    """Fleiss' kappa from per-item label lists (each item rated by the same number of raters)."""
    return fleiss_kappa([[Counter(u)[lab] for lab in labels] for u in units])


def krippendorff_alpha(units: Sequence[Sequence[Any]]) -> float:
    """Krippendorff's alpha, nominal level; one list of values per unit, None = missing.

    Units with fewer than two values are not pairable and are skipped (Krippendorff 2011).
    alpha = 1 - D_o / D_e computed from the coincidence matrix.
    """
    coincidence: dict[tuple[Any, Any], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None and not _isnan(v)]
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c in counts:
            for k in counts:
                pairs = counts[c] * (counts[k] - (1 if c == k else 0))
                if pairs:
                    coincidence[(c, k)] += pairs / (m - 1)
    n_c: dict[Any, float] = defaultdict(float)
    for (c, _k), v in coincidence.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n <= 1:
        return NAN
    d_o = sum(v for (c, k), v in coincidence.items() if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n * (n - 1))
    if d_e == 0:
        return NAN
    return 1.0 - d_o / d_e


def mean_pairwise_agreement(units: Sequence[Sequence[Any]]) -> float:
    """Average over items of the share of rater pairs that agree (items with >= 2 ratings)."""
    shares = []
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        agree = sum(c * (c - 1) for c in Counter(values).values())
        shares.append(agree / (m * (m - 1)))
    return sum(shares) / len(shares) if shares else NAN


def self_consistency(units: Sequence[Sequence[str]]) -> dict:
    """Agreement of one judge with itself across principles or samples (one label list per item)."""
    rated = [[v for v in u if v is not None] for u in units]
    rated = [u for u in rated if len(u) >= 2]
    sizes = {len(u) for u in rated}
    return {
        "n": len(rated),
        "mean_pairwise_agreement": mean_pairwise_agreement(rated),
        "unanimous_rate": (sum(len(set(u)) == 1 for u in rated) / len(rated)) if rated else NAN,
        "fleiss_kappa": fleiss_from_labels(rated) if rated and len(sizes) == 1 else NAN,
        "krippendorff_alpha": krippendorff_alpha(rated),
    }


# -- biases ------------------------------------------------------------------------------------
def position_bias(pairs: Iterable[tuple[float | None, float | None]], tie_margin: float = 0.0) -> dict:
    """Position bias from (p_a_ab, p_a_ba): P(original A better) when A was shown first / second.

    flip_rate: share of items whose verdict changes when the order is swapped.
    first_position_win_rate: over all single-order verdicts that are not ties (n_first_decided of
    them), how often the answer shown first won (0.5 = no position bias).
    """
    flips = both = first_wins = decided = 0
    first_p = []
    for p_ab, p_ba in pairs:
        if p_ab is not None:
            lab = label_from_p(p_ab, tie_margin)
            first_p.append(p_ab)
            if lab != "tie":
                decided += 1
                first_wins += lab == "A"
        if p_ba is not None:
            lab = label_from_p(p_ba, tie_margin)
            first_p.append(1.0 - p_ba)
            if lab != "tie":
                decided += 1
                first_wins += lab == "B"
        if p_ab is not None and p_ba is not None:
            both += 1
            flips += label_from_p(p_ab, tie_margin) != label_from_p(p_ba, tie_margin)
    return {
        "n_swapped": both,
        "n_first_decided": decided,  # the denominator of first_position_win_rate
        "flip_rate": flips / both if both else NAN,
        "first_position_win_rate": first_wins / decided if decided else NAN,
        "mean_p_first": sum(first_p) / len(first_p) if first_p else NAN,
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side has no variance."""
    _same_length(x, y)
    n = len(x)
    if n < 2:
        return NAN
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return NAN
    return sxy / math.sqrt(sxx * syy)


def label_score(label: str) -> float:
    return {"A": 1.0, "B": -1.0}.get(label, 0.0)


def length_bias(items: Iterable[dict]) -> dict:
    """Does the judge prefer longer answers? Items need len_a, len_b and label (p_a optional).

    length_corr: Pearson correlation of (len_a - len_b) with the judge's preference for A
    (p_a - 0.5 where known, else +1 / -1 / 0 from the label).
    longer_win_rate: share of non-tie verdicts on unequal-length pairs that picked the longer
    (over n_longer_decided such verdicts, not over every item).
    gold_longer_win_rate: the same for the gold labels, as the baseline to compare against
    (over n_gold_longer_decided).
    """
    diffs, prefs = [], []
    longer = decided = g_longer = g_decided = 0
    for it in items:
        la, lb = it.get("len_a"), it.get("len_b")
        if la is None or lb is None:
            continue
        p_a = it.get("p_a")
        diffs.append(float(la) - float(lb))
        prefs.append(p_a - 0.5 if p_a is not None else label_score(it["label"]))
        if la != lb:
            if it["label"] != "tie":
                decided += 1
                longer += (it["label"] == "A") == (la > lb)
            gold = it.get("gold")
            if gold in ("A", "B"):
                g_decided += 1
                g_longer += (gold == "A") == (la > lb)
    return {
        "n_length": len(diffs),                # the n of length_corr
        "n_longer_decided": decided,           # the denominator of longer_win_rate
        "n_gold_longer_decided": g_decided,    # the denominator of gold_longer_win_rate
        "length_corr": pearson(diffs, prefs),
        "longer_win_rate": longer / decided if decided else NAN,
        "gold_longer_win_rate": g_longer / g_decided if g_decided else NAN,
    }


# -- calibration -------------------------------------------------------------------------------
def calibration(p_a: Sequence[float], gold: Sequence[str], n_bins: int = 10) -> dict:
    """Reliability diagram, expected calibration error and Brier score of P(A) against gold.

    Gold ties are left out (P(A) is a probability that A is better, a tie has no 0/1 outcome).
    Bins are equal width on [0, 1]; ECE = sum over bins of (bin share) * |mean P(A) - share A|.
    """
    _same_length(p_a, gold)
    pairs = [(float(p), 1.0 if g == "A" else 0.0) for p, g in zip(p_a, gold) if g in ("A", "B") and p is not None]
    bins = [{"lo": i / n_bins, "hi": (i + 1) / n_bins, "n": 0, "sum_p": 0.0, "sum_y": 0.0} for i in range(n_bins)]
    for p, y in pairs:
        b = bins[min(int(p * n_bins), n_bins - 1)]
        b["n"] += 1
        b["sum_p"] += p
        b["sum_y"] += y
    n = len(pairs)
    out_bins, ece = [], 0.0
    for b in bins:
        mean_p = b["sum_p"] / b["n"] if b["n"] else None
        frac_a = b["sum_y"] / b["n"] if b["n"] else None
        if b["n"]:
            ece += b["n"] / n * abs(mean_p - frac_a)
        out_bins.append({"lo": b["lo"], "hi": b["hi"], "n": b["n"], "mean_p": mean_p, "frac_a": frac_a})
    return {
        "n_calibrated": n,
        "ece": ece if n else NAN,
        "brier": sum((p - y) ** 2 for p, y in pairs) / n if n else NAN,
        "bins": out_bins,
    }


def expected_calibration_error(p_a: Sequence[float], gold: Sequence[str], n_bins: int = 10) -> float:
    return calibration(p_a, gold, n_bins)["ece"]


def brier_score(p_a: Sequence[float], gold: Sequence[str]) -> float:
    return calibration(p_a, gold, 1)["brier"]


# -- matching judge labels to gold -------------------------------------------------------------
def resolve_labels(labels: Sequence[str]) -> str:
    """One label from several raters' labels: the most common; a tie for first place is 'tie'."""
    if len(labels) == 1:  # one rater (most gold sets): no counting
        return labels[0]
    counts = Counter(labels).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def collapse(rows: Iterable[dict], keys: Sequence[str] = ("rater", "id")) -> list[dict]:
    """Merge rows that share the given keys: P(A)s are averaged, labels follow the mean P(A)
    where every row has one, else the majority label. Other fields come from the first row."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for rs in groups.values():
        if len(rs) == 1:
            out.append(dict(rs[0]))
            continue
        merged = dict(rs[0])
        ps = [r["p_a"] for r in rs if r.get("p_a") is not None]
        for field in ("p_a", "p_a_ab", "p_a_ba"):
            merged[field] = _mean([r[field] for r in rs if r.get(field) is not None])
        merged["label"] = label_from_p(merged["p_a"]) if len(ps) == len(rs) else resolve_labels([r["label"] for r in rs])
        merged["n_merged"] = len(rs)
        out.append(merged)
    return out


def match(judge_rows: Iterable[dict], gold_rows: Iterable[dict], keys: Sequence[str] = ("rater", "id")) -> list[dict]:
    """Matched items: each (collapsed) judge row with the gold label of its id.

    Gold from several raters is resolved by majority (split votes = tie); the individual gold
    labels are kept in `gold_labels`. Judge rows without a gold label are left out.
    """
    gold_by_id: dict[str, list[dict]] = defaultdict(list)
    for g in gold_rows:
        gold_by_id[str(g["id"])].append(g)
    items = []
    for r in collapse(judge_rows, keys):
        gs = gold_by_id.get(str(r["id"]))
        if not gs:
            continue
        item = dict(r)
        item["id"] = str(r["id"])
        item["rater"] = r.get("rater") or "judge"
        item["gold"] = resolve_labels([g["label"] for g in gs])
        item["gold_labels"] = [g["label"] for g in gs]
        for field in ("len_a", "len_b", "category", "principle"):
            if item.get(field) is None:
                item[field] = next((g.get(field) for g in gs if g.get(field) is not None), None)
        items.append(item)
    return items


# -- reports -----------------------------------------------------------------------------------
def _acc(items: list[dict]) -> float:
    return accuracy([i["label"] for i in items], [i["gold"] for i in items])


def _acc_no_ties(items: list[dict]) -> float:
    return accuracy_no_ties([i["label"] for i in items], [i["gold"] for i in items])


def _kappa(items: list[dict]) -> float:
    return cohen_kappa([i["label"] for i in items], [i["gold"] for i in items])


def _acc_batch(items: Sequence[dict]):
    """_acc of every resample (row of idx) at once: the same values (count / n, exact counts)."""
    same = np.fromiter((i["label"] == i["gold"] for i in items), dtype=bool, count=len(items))
    return lambda idx: same[idx].sum(axis=1) / idx.shape[1]


def _kappa_batch(items: Sequence[dict]):
    """_kappa of every resample at once, with cohen_kappa's arithmetic (integer counts, then the
    same divisions), so each value equals the per-resample one; NaN where chance agreement is 1.
    One joint code per item (judge label x gold label): one gather and one count per resample."""
    codes: dict = {}
    for i in items:
        codes.setdefault(i["label"], len(codes))
        codes.setdefault(i["gold"], len(codes))
    k = len(codes)
    joint = np.fromiter((codes[i["label"]] * k + codes[i["gold"]] for i in items), dtype=np.int64, count=len(items))

    def kappas(idx: np.ndarray) -> np.ndarray:
        rows, n = idx.shape
        cells = joint[idx]
        cells += (np.arange(rows, dtype=np.int64) * (k * k))[:, None]
        table = np.bincount(cells.ravel(), minlength=rows * k * k).reshape(rows, k, k)  # [resample, judge, gold]
        p_o = np.trace(table, axis1=1, axis2=2) / n
        p_e = (table.sum(axis=2) * table.sum(axis=1)).sum(axis=1) / (n * n)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (p_o - p_e) / (1.0 - p_e)
        return np.where(p_e >= 1.0, np.nan, out)
    return kappas


_acc.prepare = _acc_batch  # type: ignore[attr-defined]  # bootstrap_ci's vectorised path (items read once)
_kappa.prepare = _kappa_batch  # type: ignore[attr-defined]


def agreement(items: Sequence[dict], *, n_boot: int = 1000, seed: int = 0, n_bins: int = 10) -> dict:
    """Everything about one judge against gold: accuracy (with / without ties), Cohen's kappa, each
    with a bootstrap CI; tie rates; confusion matrix; calibration, position and length bias where
    the items carry p_a, both orders, or lengths."""
    items = list(items)
    pred = [i["label"] for i in items]
    gold = [i["gold"] for i in items]
    no_ties = [i for i in items if i["label"] != "tie" and i["gold"] != "tie"]
    accuracy_ci, kappa_ci = bootstrap_cis(items, [_acc, _kappa], n_boot=n_boot, seed=seed)  # one draw, both
    report: dict[str, Any] = {
        "n": len(items),
        "accuracy": accuracy(pred, gold),
        "accuracy_ci": list(accuracy_ci),
        "n_no_ties": len(no_ties),
        "accuracy_no_ties": _acc_no_ties(items),
        "accuracy_no_ties_ci": list(bootstrap_ci(no_ties, _acc, n_boot=n_boot, seed=seed)),
        "cohen_kappa": cohen_kappa(pred, gold),
        "cohen_kappa_ci": list(kappa_ci),
        "judge_tie_rate": pred.count("tie") / len(pred) if pred else NAN,
        "gold_tie_rate": gold.count("tie") / len(gold) if gold else NAN,
        "chance": 0.5,
        "confusion": confusion_matrix(pred, gold),
    }
    with_p = [i for i in items if i.get("p_a") is not None]
    if with_p:
        cal = calibration([i["p_a"] for i in with_p], [i["gold"] for i in with_p], n_bins)
        report.update(ece=cal["ece"], brier=cal["brier"], n_calibrated=cal["n_calibrated"], calibration_bins=cal["bins"])
    if any(i.get("p_a_ab") is not None or i.get("p_a_ba") is not None for i in items):
        report.update(position_bias([(i.get("p_a_ab"), i.get("p_a_ba")) for i in items]))
    if any(i.get("len_a") is not None and i.get("len_b") is not None for i in items):
        report.update(length_bias(items))
    return report


def breakdown(items: Sequence[dict], by: str | Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """agreement() per value of one field, or per combination of fields (rater / principle /
    category / judge_model ...). Each row holds the grouping fields plus the agreement report."""
    fields = (by,) if isinstance(by, str) else tuple(by)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for i in items:
        groups[tuple(str(i.get(f)) if i.get(f) is not None else "(none)" for f in fields)].append(i)
    out = []
    for name in sorted(groups):
        rep = agreement(groups[name], n_boot=n_boot, seed=seed)
        out.append({**dict(zip(fields, name)), **rep})
    return out


def inter_rater(rows: Iterable[dict]) -> dict:
    """Agreement among several raters (judges and/or humans) labelling the same ids.

    Krippendorff's alpha uses every id with at least two labels (missing values allowed);
    Fleiss' kappa uses only the ids labelled by every rater. One label per (rater, id): a
    rater's repeated labels are merged first.
    """
    merged = collapse(rows, ("rater", "id"))
    raters = sorted({str(r.get("rater") or "rater") for r in merged})
    by_id: dict[str, dict[str, str]] = defaultdict(dict)
    for r in merged:
        by_id[str(r["id"])][str(r.get("rater") or "rater")] = r["label"]
    units = [[labs.get(rt) for rt in raters] for labs in by_id.values()]
    full = [u for u in units if all(v is not None for v in u)]
    alpha_units = [u for u in units if sum(v is not None for v in u) >= 2]
    return {
        "raters": raters,
        "n_items": len(alpha_units),
        "n_complete": len(full),
        "fleiss_kappa": fleiss_from_labels(full) if full and len(raters) >= 2 else NAN,
        "krippendorff_alpha": krippendorff_alpha(alpha_units),
        "mean_pairwise_agreement": mean_pairwise_agreement(alpha_units),
    }


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n items occurs in each resample (rows of idx): a (rows x n) count matrix."""
    rows = idx.shape[0]
    cells = idx + (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount(cells.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def _unit_codes(units: Sequence[Sequence[Any]], values: Sequence[Any] | None = None) -> np.ndarray:
    """(units x categories) counts of each unit's values (None / NaN left out)."""
    codes: dict = {v: k for k, v in enumerate(values)} if values is not None else {}
    rows = []
    for u in units:
        row: dict[int, int] = defaultdict(int)
        for v in u:
            if v is None or _isnan(v):
                continue
            if v not in codes:
                if values is not None:
                    continue
                codes[v] = len(codes)
            row[codes[v]] += 1
        rows.append(row)
    out = np.zeros((len(units), max(1, len(codes))), dtype=float)
    for i, row in enumerate(rows):
        for k, c in row.items():
            out[i, k] = c
    return out


def _krippendorff_batch(units: Sequence[Sequence[Any]], idx: np.ndarray) -> np.ndarray:
    """krippendorff_alpha of every resample of units at once: each unit's coincidence matrix
    (c c^T - diag c) / (m - 1) is summed with the unit's weight in the resample (NaN where undefined)."""
    counts = _unit_codes(units)
    m = counts.sum(axis=1)
    k = counts.shape[1]
    pairable = m >= 2
    per_unit = np.einsum("ui,uj->uij", counts, counts) - np.einsum("ui,ij->uij", counts, np.eye(k))
    per_unit[pairable] /= (m[pairable] - 1)[:, None, None]
    per_unit[~pairable] = 0.0
    coincidence = _resample_counts(idx, len(units)) @ per_unit.reshape(len(units), k * k)
    coincidence = coincidence.reshape(-1, k, k)
    n_c = coincidence.sum(axis=2)
    n = n_c.sum(axis=1)
    d_o_num = coincidence.sum(axis=(1, 2)) - np.trace(coincidence, axis1=1, axis2=2)
    d_e_num = n * n - (n_c * n_c).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_o = d_o_num / n
        d_e = d_e_num / (n * (n - 1))
        alpha = 1.0 - d_o / d_e
    return np.where((n <= 1) | (d_e == 0), np.nan, alpha)


def _fleiss_batch(units: Sequence[Sequence[str]], idx: np.ndarray) -> np.ndarray:
    """fleiss_from_labels of every resample at once (the same rater count on every unit, as
    fleiss_kappa requires; otherwise each resample through fleiss_from_labels itself)."""
    counts = _unit_codes(units, LABELS)
    raters = counts.sum(axis=1)
    if not len(units) or raters.min() != raters.max() or raters[0] < 2:
        return np.asarray([fleiss_from_labels([units[i] for i in row]) for row in idx.tolist()], dtype=float)
    r = raters[0]
    weights = _resample_counts(idx, len(units))
    big_n = weights.sum(axis=1)
    p_j = (weights @ counts) / (big_n * r)[:, None]
    p_i = ((counts * counts).sum(axis=1) - r) / (r * (r - 1))
    p_bar = (weights @ p_i) / big_n
    p_e = (p_j * p_j).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (p_bar - p_e) / (1.0 - p_e)
    return np.where(p_e >= 1.0, np.nan, kappa)


def _krippendorff_stat(units: list) -> float:
    return krippendorff_alpha(units)


def _fleiss_stat(units: list) -> float:
    return fleiss_from_labels(units)


_krippendorff_stat.batch = _krippendorff_batch  # type: ignore[attr-defined]  # bootstrap_ci's vectorised path
_fleiss_stat.batch = _fleiss_batch  # type: ignore[attr-defined]


def inter_rater_with_ci(rows: Iterable[dict], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """inter_rater() plus bootstrap CIs (resampling ids) for Fleiss' kappa and Krippendorff's alpha."""
    rows = list(rows)
    report = inter_rater(rows)
    raters = report["raters"]
    merged = collapse(rows, ("rater", "id"))
    by_id: dict[str, dict[str, str]] = defaultdict(dict)
    for r in merged:
        by_id[str(r["id"])][str(r.get("rater") or "rater")] = r["label"]
    units = [[labs.get(rt) for rt in raters] for labs in by_id.values()]
    units = [u for u in units if sum(v is not None for v in u) >= 2]
    full = [u for u in units if all(v is not None for v in u)]
    report["krippendorff_alpha_ci"] = list(bootstrap_ci(units, _krippendorff_stat, n_boot=n_boot, seed=seed))
    report["fleiss_kappa_ci"] = (list(bootstrap_ci(full, _fleiss_stat, n_boot=n_boot, seed=seed))
                                 if full and len(raters) >= 2 else [NAN, NAN])
    return report


def judge_differences(per_judge: Sequence[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Is one judge more accurate than another on the same items? For each pair of raters, the
    accuracy difference (a - b) over the ids both labelled, with a paired percentile bootstrap CI
    (ids resampled with both judges' verdicts kept together, so item difficulty cancels), and the
    2x2 counts of right/wrong. Two CIs that overlap say little; this one answers the question.
    per_judge: matched items (`match(..., ("rater", "id"))`)."""
    right: dict[str, dict[str, float]] = defaultdict(dict)
    for i in per_judge:
        right[i["rater"]][i["id"]] = 1.0 if i["label"] == i["gold"] else 0.0
    raters = sorted(right)
    out = []
    for k, a in enumerate(raters):
        for b in raters[k + 1:]:
            ids = sorted(set(right[a]) & set(right[b]))
            if not ids:
                continue
            xa, xb = [right[a][i] for i in ids], [right[b][i] for i in ids]
            diff = paired_bootstrap_diff(xa, xb, n_boot=n_boot, seed=seed)
            pairs = list(zip(xa, xb))
            out.append({"a": a, "b": b, "n": diff["n"], "accuracy_a": diff["mean_a"], "accuracy_b": diff["mean_b"],
                        "diff": diff["diff"], "ci": diff["ci"], "significant": diff["significant"],
                        "both_right": pairs.count((1.0, 1.0)), "only_a_right": pairs.count((1.0, 0.0)),
                        "only_b_right": pairs.count((0.0, 1.0)), "both_wrong": pairs.count((0.0, 0.0))})
    return out


def disagreements(items: Sequence[dict]) -> list[dict]:
    """The matched items where the judge and the gold differ."""
    return [i for i in items if i["label"] != i["gold"]]


def reliability_report(judge_rows: Sequence[dict], gold_rows: Sequence[dict], *, n_boot: int = 1000,
                       seed: int = 0) -> dict:
    """The whole dashboard in one dict: the combined verdict against gold (top-level keys), one
    agreement row per judge, breakdowns per principle and per category, agreement among judges,
    among gold raters, each judge's self-consistency across principles, and the disagreements.

    judge_rows: interchange rows (rater = judge; several principles per id allowed); rows whose
    label is None (no valid judgment) are counted in n_invalid and left out.
    """
    judge_rows = [dict(r, rater=r.get("rater") or "judge") for r in judge_rows]
    valid = [r for r in judge_rows if r.get("label") is not None]
    gold_rows = list(gold_rows)
    gold_ids = {str(g["id"]) for g in gold_rows}
    per_judge = match(valid, gold_rows, ("rater", "id"))
    one_judge = len({i["rater"] for i in per_judge}) == 1
    # One judge: the combined verdicts are its own (the same groups in the same order; agreement() reads no
    # rater), so its match and agreement are reused. Nothing merged per (rater, id): the per-principle
    # groups are the same singletons, so is its match.
    combined = per_judge if one_judge else match([dict(r, rater="combined") for r in valid], gold_rows, ("rater", "id"))
    per_principle = (per_judge if not any("n_merged" in i for i in per_judge)
                     else match(valid, gold_rows, ("rater", "id", "principle")))
    report: dict[str, Any] = agreement(combined, n_boot=n_boot, seed=seed)
    raters = sorted({r["rater"] for r in valid})
    judges = ([{"rater": str(per_judge[0]["rater"]), **copy.deepcopy(report)}] if one_judge
              else breakdown(per_judge, "rater", n_boot=n_boot, seed=seed))
    report.update({
        "n_judge_rows": len(judge_rows),
        "n_invalid": len(judge_rows) - len(valid),
        "n_unmatched": len({str(r["id"]) for r in valid} - gold_ids),
        "raters": raters,
        "judges": judges,
        "by_principle": (breakdown(per_principle, ("rater", "principle"), n_boot=n_boot, seed=seed)
                         if any(i.get("principle") is not None for i in per_principle) else []),
        "by_category": (breakdown(per_judge, ("rater", "category"), n_boot=n_boot, seed=seed)
                        if any(i.get("category") is not None for i in per_judge) else []),
        "inter_judge": inter_rater_with_ci(valid, n_boot=n_boot, seed=seed) if len(raters) > 1 else None,
        "judge_differences": judge_differences(per_judge, n_boot=n_boot, seed=seed) if len(raters) > 1 else [],
        "gold_inter_rater": (inter_rater_with_ci(gold_rows, n_boot=n_boot, seed=seed)
                             if len({g.get("rater") for g in gold_rows}) > 1 else None),
        "self_consistency": {},
        "reference": MT_BENCH_REFERENCE,
    })
    for rater in raters:
        units: dict[str, list[str]] = defaultdict(list)
        for r in collapse([r for r in valid if r["rater"] == rater], ("id", "principle")):
            units[str(r["id"])].append(r["label"])
        report["self_consistency"][rater] = self_consistency(list(units.values()))
    report["disagreements"] = [
        {k: i.get(k) for k in ("id", "rater", "principle", "label", "gold", "gold_labels", "p_a", "p_a_ab", "p_a_ba",
                               "reasoning", "category")}
        for i in disagreements(per_principle)  # the same match as by_principle's
    ]
    return report


# -- spot check sampling -----------------------------------------------------------------------
def confidence_bucket(p_a: float | None) -> str:
    """low / medium / high confidence from |P(A) - 0.5| (unknown without a probability)."""
    if p_a is None:
        return "unknown"
    margin = abs(p_a - 0.5)
    return "low" if margin < 0.1 else "medium" if margin < 0.3 else "high"


def stratified_sample(items: Sequence[dict], n: int, *, seed: int = 0) -> list[dict]:
    """n items drawn without replacement, stratified by (judge label, confidence bucket).

    Allocation is proportional to stratum size (largest remainder), with at least one item from
    every stratum when n allows, so rare strata (ties, low confidence) are always looked at.
    """
    items = list(items)
    if n >= len(items):
        out = items[:]
        random.Random(seed).shuffle(out)
        return out
    strata: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for it in items:
        strata[(it["label"], confidence_bucket(it.get("p_a")))].append(it)
    names = sorted(strata)
    rng = random.Random(seed)
    alloc = {s: 0 for s in names}
    if n >= len(names):
        for s in names:
            alloc[s] = 1
    remaining = n - sum(alloc.values())
    total = len(items)
    shares = {s: len(strata[s]) / total * remaining for s in names}
    for s in names:
        alloc[s] += min(int(shares[s]), len(strata[s]) - alloc[s])
    order = sorted(names, key=lambda s: (-(shares[s] - int(shares[s])), s))
    while sum(alloc.values()) < n:
        progressed = False
        for s in order:
            if sum(alloc.values()) >= n:
                break
            if alloc[s] < len(strata[s]):
                alloc[s] += 1
                progressed = True
        if not progressed:
            break
    if n < len(names):  # fewer slots than strata: a random subset of strata, one each
        chosen = rng.sample(names, n)
        alloc = {s: (1 if s in chosen else 0) for s in names}
    sample = []
    for s in names:
        sample.extend(rng.sample(strata[s], alloc[s]))
    rng.shuffle(sample)
    return sample


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length ({len(a)} vs {len(b)})")


def json_safe(obj: Any) -> Any:
    """NaN -> None recursively, so reports are valid JSON."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
