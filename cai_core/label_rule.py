"""The one rule from a judge's probabilities to a label, used by judges, exports, evaluation,
reliability and the pages (nothing else turns a P(A) into A/B/tie).

- `label_from_p`: P(A better) -> "A" | "B" | "tie"; within the tie margin of 0.5 is a tie. The
  margin is never below `TIE_MARGIN` (floating-point noise), and one setting may widen it.
- `is_flipped`: the preferred answer changed with the order the pair was shown in (AB vs BA).
- `counted_label`: what a verdict counts as when outcomes are counted (evaluation win rates, the
  A/B experiments' judge preference): a flipped verdict is a tie, otherwise `label_from_p`.
- `outcome`: a counted label as policy A's score (1 win, 0.5 tie, 0 loss).
- `export_exclusion`: why an AI verdict is left out of a preference export: it flipped with the
  order (unless keep_flipped), it sits within the tie margin, or its confidence max(P, 1-P) is
  below min_confidence.

Reliability measures a judge against gold labels with `label_from_p` of its debiased (both-order
mean) P(A) and reports flips separately (flip rate), so it sees what the judge said; everything
that *uses* a verdict as a preference (evaluation, exports) goes through `counted_label` or
`export_exclusion`, so a flipped verdict never becomes a hard preference silently.
"""
from __future__ import annotations

TIE_MARGIN = 1e-9
LABELS = ("A", "B", "tie")
EXCLUSION_REASONS = ("flipped", "within_margin", "low_confidence")


def label_from_p(p_a: float | None, tie_margin: float = TIE_MARGIN) -> str | None:
    """P(A better) -> A | B | tie (None for None); |P(A) - 0.5| <= margin is a tie."""
    if p_a is None:
        return None
    if abs(float(p_a) - 0.5) <= max(float(tie_margin or 0.0), TIE_MARGIN):
        return "tie"
    return "A" if p_a > 0.5 else "B"


def is_flipped(p_a_ab: float | None, p_a_ba: float | None, tie_margin: float = TIE_MARGIN) -> bool:
    """Both orders judged and they prefer different answers (P(A) already mapped back to the original A)."""
    if p_a_ab is None or p_a_ba is None:
        return False
    return label_from_p(p_a_ab, tie_margin) != label_from_p(p_a_ba, tie_margin)


def counted_label(label: str | None, *, flipped: bool = False) -> str | None:
    """A verdict as counted: a flipped verdict is a tie; no label stays None."""
    if label is None:
        return None
    return "tie" if flipped else label


def outcome(label: str | None) -> float | None:
    """Policy A's score for a counted label: 1 win, 0.5 tie, 0 loss (None: no valid verdict)."""
    return {"A": 1.0, "B": 0.0, "tie": 0.5}.get(label) if label is not None else None


def confidence(p_a: float | None) -> float | None:
    """How sure a probability is of its side: max(P, 1 - P) (0.5 = no preference)."""
    return None if p_a is None else max(float(p_a), 1.0 - float(p_a))


def export_exclusion(label: str | None, p_a: float | None, flipped: bool, *, keep_flipped: bool = False,
                     min_confidence: float | None = None) -> str | None:
    """Why an AI verdict must not become a chosen/rejected row (None: it may)."""
    if label is None:
        return None
    if flipped and not keep_flipped:
        return "flipped"
    if label == "tie":
        return "within_margin"
    if min_confidence is not None and p_a is not None and confidence(p_a) < float(min_confidence):
        return "low_confidence"
    return None
