"""The one owner of every headline figure: which number is shown, over which n (the denominator the
number was really computed over), with which 95% CI, how it is written, when n is too small to conclude
from, and the warnings that go with it.

The Judge Reliability page, the Demo, the Notebook and the HTML reports read their headline figures
from here, so the same data gives the same number, interval and warning everywhere (no page
recomputes a figure or keeps a threshold of its own). Pure functions over reports the services
already build (`reliability.metrics.reliability_report`, an evaluation's result), plus the two
store readers that pick what the Demo and the reports headline (`judge_headline`,
`evaluation_warnings`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cai_core.evaluation.evaluate import evaluation_contamination
from cai_core.evaluation.stats import BOOTSTRAP_RESAMPLES, MIN_PAIRS_FOR_SIGNIFICANCE
from cai_core.reliability.gold import best_gold_set, gold_coverage, judge_vs_gold, load_gold

# Below this many items (judged gold items, judged comparisons of a policy) a figure is flagged "too few
# for a conclusion": at n=30 the 95% CI of a share near 70% is still about +-16 points wide, enough to
# cover both chance and the MT-Bench levels.
MIN_ITEMS = 30

# Resamples behind every headline CI the app shows by default (the dashboard's default, the Demo, the
# reports): the same items and the same resamples give the same interval on every page.
HEADLINE_N_BOOT = BOOTSTRAP_RESAMPLES

TIE_RULE = "a tie counts as half a win"  # evaluation.stats.outcome_score / label_rule.outcome


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def too_few(n: int | None, minimum: int = MIN_ITEMS) -> bool:
    """The small-n rule: fewer than `minimum` items (MIN_ITEMS) is too few to conclude from."""
    return (n or 0) < minimum


def small_n_warning(n: int | None, what: str = "item(s)", minimum: int = MIN_ITEMS) -> str | None:
    """The sentence shown beside a figure that rests on too few items (None when n is enough)."""
    if not too_few(n, minimum):
        return None
    return (f"Too few items for a conclusion: n={n or 0} {what}, fewer than {minimum}; "
            "the 95% interval is wide.")


def pct(v: float | None, digits: int = 1) -> str:
    """A share as a percentage ("55.6%"), "-" when there is none."""
    return "-" if _missing(v) else f"{100 * float(v):.{digits}f}%"


def pct_range(ci, digits: int = 1) -> str:
    """A share's interval ("30.0-75.0%"), "-" when there is none."""
    if not ci or len(ci) < 2 or _missing(ci[0]) or _missing(ci[1]):
        return "-"
    return f"{100 * float(ci[0]):.{digits}f}-{100 * float(ci[1]):.{digits}f}%"


def num(v: float | None, digits: int = 3) -> str:
    return "-" if _missing(v) else f"{float(v):.{digits}f}"


def num_range(ci, digits: int = 2) -> str:
    if not ci or len(ci) < 2 or _missing(ci[0]) or _missing(ci[1]):
        return "-"
    return f"{float(ci[0]):.{digits}f} to {float(ci[1]):.{digits}f}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 win', '2 ties', '0 losses'."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


@dataclass(frozen=True)
class Headline:
    """One figure as shown: its value, 95% CI, the n it was computed over and what n counts."""
    label: str
    value: float | None
    ci: tuple[float | None, float | None] | None
    n: int
    n_what: str                  # what n counts ("judged gold items", "non-tie verdicts on unequal-length pairs")
    share: bool = True           # a share (written as %) or a plain number (ECE, kappa)
    help: str = ""
    minimum: int = MIN_ITEMS

    @property
    def too_few(self) -> bool:
        return too_few(self.n, self.minimum)

    @property
    def value_text(self) -> str:
        return pct(self.value) if self.share else num(self.value)

    @property
    def ci_text(self) -> str:
        if self.ci is None:
            return ""
        return pct_range(self.ci) if self.share else num_range(self.ci)

    @property
    def n_text(self) -> str:
        return f"n={self.n} {self.n_what}"

    @property
    def warning(self) -> str | None:
        return small_n_warning(self.n, self.n_what, self.minimum)

    def caption(self) -> str:
        """'95% CI 30.0-75.0% - n=20 judged gold items' (the CI part only where the figure has one)."""
        parts = [f"95% CI {self.ci_text}"] if self.ci is not None else []
        return " - ".join(parts + [self.n_text])

    def sentence(self) -> str:
        """'Accuracy vs gold 55.0% (95% CI 30.0-75.0%, n=20 judged gold items)'."""
        inside = ", ".join(([f"95% CI {self.ci_text}"] if self.ci is not None else []) + [self.n_text])
        return f"{self.label} {self.value_text} ({inside})"


# -- judge reliability -------------------------------------------------------------------------
def reliability_headlines(report: dict) -> dict[str, Headline]:
    """The dashboard's headline cards from a reliability report (`metrics.agreement` fields), each over
    the n its own number was computed from: accuracy and kappa over the judged gold items, the flip rate
    over the pairs judged in both orders, first-shown wins over the non-tie single-order verdicts, longer
    wins over the non-tie verdicts on unequal-length pairs, ECE over the items with P(A) and a gold A/B."""
    n = int(report.get("n") or 0)
    out = {
        "accuracy": Headline("Accuracy vs gold", report.get("accuracy"), tuple(report.get("accuracy_ci") or (None, None)),
                             n, "judged gold items",
                             help="MT-Bench GPT-4 vs human: 66% with ties, 85% without; chance 50%"),
        "accuracy_no_ties": Headline("Accuracy w/o ties", report.get("accuracy_no_ties"),
                                     tuple(report.get("accuracy_no_ties_ci") or (None, None)),
                                     int(report.get("n_no_ties") or 0), "items where neither judge nor gold says tie"),
        "flip_rate": Headline("Flip rate (A/B swap)", report.get("flip_rate"), None, int(report.get("n_swapped") or 0),
                              "pairs judged in both orders",
                              help="Share of pairs whose verdict changes when the two answers swap places."),
        "first_position": Headline("First-shown answer wins", report.get("first_position_win_rate"), None,
                                   int(report.get("n_first_decided") or 0), "non-tie single-order verdicts",
                                   help="50% = no position bias."),
        "longer": Headline("Longer answer wins", report.get("longer_win_rate"), None,
                           int(report.get("n_longer_decided") or 0), "non-tie verdicts on unequal-length pairs",
                           help="Share of the judge's non-tie verdicts on unequal-length pairs that chose the "
                                "longer answer."),
        "gold_longer": Headline("Gold picks the longer", report.get("gold_longer_win_rate"), None,
                                int(report.get("n_gold_longer_decided") or 0), "gold A/B labels on unequal-length pairs"),
        "ece": Headline("Calibration error (ECE)", report.get("ece"), None, int(report.get("n_calibrated") or 0),
                        "items with P(A) and a gold A/B", share=False,
                        help="Expected calibration error of P(A) against the gold labels (0 = perfectly calibrated)."),
        "kappa": Headline("Cohen's kappa", report.get("cohen_kappa"), tuple(report.get("cohen_kappa_ci") or (None, None)),
                          n, "judged gold items", share=False,
                          help="Agreement beyond chance (0 = chance, 1 = perfect)."),
    }
    return out


def judge_pick(store) -> tuple[str, str] | None:
    """(gold set, judge key) that a headline about "the judge" describes: the gold set the Judge
    Reliability dashboard opens on (`gold.best_gold_set`) and the judge that judged most of its items
    (the dashboard's first default judge). None when no judge has judged a gold item."""
    gold = best_gold_set(store)
    covered = gold_coverage(store).get(gold or "", {})
    if not gold or not covered:
        return None
    judge = sorted(covered, key=lambda k: (-covered[k], k))[0]
    return gold, judge


def judge_headline(store, n_boot: int = HEADLINE_N_BOOT) -> dict | None:
    """The judge's agreement with gold as every page headlines it: {gold, judge, report, accuracy:
    Headline}; the same report the dashboard shows for that gold set and judge at the default resamples."""
    pick = judge_pick(store)
    if pick is None:
        return None
    gold, judge = pick
    report = judge_vs_gold(store, [judge], load_gold(store, gold), n_boot=n_boot)
    return {"gold": gold, "judge": judge, "report": report, "accuracy": reliability_headlines(report)["accuracy"]}


# -- evaluations -------------------------------------------------------------------------------
def policy_record(result: dict, axis: str, policy: str) -> dict | None:
    """A policy's comparisons on one axis against every other policy: wins, ties, losses (counts), n,
    and its win rate with the tie rule of `stats.outcome_score` (a tie counts half) and its 95% CI."""
    row = (((result or {}).get("axes") or {}).get(axis) or {}).get("policies", {}).get(policy)
    if not row:
        return None
    n = int(row.get("n") or 0)

    def count(key: str, rate: str) -> int:
        if row.get(key) is not None:
            return int(row[key])
        return int(round((row.get(rate) or 0.0) * n))

    wins, ties, losses = count("wins", "win"), count("ties", "tie"), count("losses", "loss")
    rate = Headline(f"{policy} win rate vs the others", row.get("win_rate"),
                    tuple(row.get("win_rate_ci") or (None, None)), n, "judged comparisons", help=TIE_RULE)
    return {"policy": policy, "axis": axis, "wins": wins, "ties": ties, "losses": losses, "n": n, "win_rate": rate,
            "record": f"{plural(wins, 'win')}, {plural(ties, 'tie')}, {plural(losses, 'loss', 'losses')}",
            "bt": row.get("bt"), "bt_ci": tuple(row.get("bt_ci") or (None, None))}


def score_difference(result: dict, axis: str, policy: str, base: str) -> dict | None:
    """`policy`'s Bradley-Terry score (Elo scale) minus `base`'s on one axis, with both CIs, the n of
    judged comparisons it rests on and a caution when that n is too small (or the CIs overlap)."""
    a, b = policy_record(result, axis, policy), policy_record(result, axis, base)
    if a is None or b is None or _missing(a["bt"]) or _missing(b["bt"]):
        return None
    diff = float(a["bt"]) - float(b["bt"])
    n = a["n"]
    overlap = not any(_missing(v) for v in (*a["bt_ci"], *b["bt_ci"])) and \
        max(a["bt_ci"][0], b["bt_ci"][0]) <= min(a["bt_ci"][1], b["bt_ci"][1])
    cautions = []
    if too_few(n):
        cautions.append(f"only {n} judged comparison(s) (fewer than {MIN_ITEMS}): not a conclusion")
    if overlap:
        cautions.append("the two 95% CIs overlap")
    return {"diff": diff, "n": n, "policy_ci": a["bt_ci"], "base_ci": b["bt_ci"], "overlap": overlap,
            "caution": "; ".join(cautions) or None,
            "text": f"{diff:+.0f} vs {base}" + (f" (n={n}, {'; '.join(cautions)})" if cautions else f" (n={n})")}


def evaluation_warnings(store, evaluation: dict, contamination: dict | None = None) -> list[str]:
    """Every warning the Evaluate page shows beside an evaluation, in words: prompts that a training
    export holds (contamination), axes and policies judged on too few comparisons, invalid verdicts.
    The page and the HTML report both show exactly this list. `contamination`: the check, when the caller
    already has it (`evaluate.evaluation_contamination`)."""
    result = evaluation.get("result") or {}
    out = []
    check = evaluation_contamination(store, evaluation) if contamination is None else contamination
    if check.get("flagged"):
        out.append(f"Contamination: {check['flagged']} of {check['checked']} evaluation prompts also occur in "
                   f"training export(s) {', '.join(check['exports'])}; scores on them may be inflated.")
    for axis, ax in (result.get("axes") or {}).items():
        judged = int(ax.get("judged") or 0)
        thin = sorted(name for name, row in (ax.get("policies") or {}).items() if too_few(row.get("n")))
        if thin:
            ns = ", ".join(f"{name} n={int((ax['policies'][name] or {}).get('n') or 0)}" for name in thin)
            out.append(f"{axis.capitalize()}: too few judged comparisons for a conclusion ({ns}; fewer than "
                       f"{MIN_ITEMS} each, {judged} judged in all): the scores and win rates are not conclusions.")
        if ax.get("invalid"):
            out.append(f"{axis.capitalize()}: {ax['invalid']} comparison(s) without a valid verdict were left out.")
    return out


def experiment_warnings(result: dict) -> list[str]:
    """Every warning the Constitution A/B tab shows beside an experiment: too few prompts for a conclusion,
    and too few for any difference to be called significant. The tab and the HTML report show this list."""
    n = int(result.get("prompts") or 0)
    out = [w for w in [small_n_warning(n, "prompts")] if w]
    if n < MIN_PAIRS_FOR_SIGNIFICANCE:
        out.append(f"With fewer than {MIN_PAIRS_FOR_SIGNIFICANCE} prompts no difference is called significant: "
                   "the bootstrap interval of so few pairs is too narrow to trust.")
    return out


def evaluation_headline(result: dict) -> str | None:
    """An evaluation in one line per axis, as the Notebook lists it: the top policy by score, its record
    against the others (wins / ties / losses, n) and the small-n caution; None without a result."""
    parts = []
    for axis, ax in ((result or {}).get("axes") or {}).items():
        ranked = sorted(((row.get("bt") if row.get("bt") is not None else float("-inf"), name)
                         for name, row in (ax.get("policies") or {}).items()), reverse=True)
        if not ranked:
            continue
        rec = policy_record(result, axis, ranked[0][1])
        if rec is None:
            continue
        text = f"{axis}: {rec['policy']} first, {rec['record']} (n={rec['n']})"
        parts.append(text + (" - too few for a conclusion" if rec["win_rate"].too_few else ""))
    return "; ".join(parts) or None
