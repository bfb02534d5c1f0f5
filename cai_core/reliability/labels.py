"""Gold sets: labels a judge is checked against, in one small interchange format.

Label interchange format (judgments and gold alike), one JSON object per line:
    {"id": "...", "label": "A" | "B" | "tie", "p_a": 0.73 (optional), "rater": "alice" (optional)}
Several raters may label the same id. Extra keys (p_a_ab, p_a_ba, principle, category, ...) are
kept, so the judge CLI's output can be read as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from cai_core.errors import CaiError
from cai_core.jsonl import jsonl_rows, write_jsonl
from cai_core.label_rule import label_from_p
from cai_core.data.uploads import read_user_file

LABELS = ("A", "B", "tie")


_LABEL_ALIASES = {"a": "A", "b": "B", "tie": "tie", "t": "tie", "=": "tie"}


# Human labels that carry no preference; `both_bad` counts as a tie (neither answer is preferred).
HUMAN_LABEL_MAP = {"A": "A", "B": "B", "tie": "tie", "both_bad": "tie"}


# -- label interchange format ---------------------------------------------------------------------
def normalise_label(value: Any, where: str | None = None) -> str:
    """'A' | 'B' | 'tie' from the usual spellings; anything else is a clear error."""
    if isinstance(value, str):
        key = value.strip().strip("()").strip().lower()
        if key in _LABEL_ALIASES:
            return _LABEL_ALIASES[key]
    raise CaiError(f"label must be 'A', 'B' or 'tie', got {value!r}", where=where)


def parse_label_row(obj: Any, where: str, allow_no_verdict: bool = False) -> dict:
    """Validate one interchange row; returns a normalised copy (id as str, label canonical).

    allow_no_verdict: a judge's output may hold rows with neither label nor p_a (every judgment of
    that pair was unparseable); they are kept with label None, to be counted, never guessed.
    """
    if not isinstance(obj, dict):
        raise CaiError("each line must be a JSON object with 'id' and 'label'", where=where)
    if "id" not in obj or obj["id"] in (None, ""):
        raise CaiError("missing 'id'", where=where)
    if isinstance(obj["id"], (dict, list, bool)):
        raise CaiError(f"'id' must be a string or a number, got {obj['id']!r}", where=where)
    row = dict(obj)
    row["id"] = str(obj["id"])
    p_a = obj.get("p_a")
    if p_a is not None:
        if isinstance(p_a, bool) or not isinstance(p_a, (int, float)) or not 0.0 <= float(p_a) <= 1.0:
            raise CaiError(f"'p_a' must be a number between 0 and 1, got {p_a!r}", where=where)
        row["p_a"] = float(p_a)
    if obj.get("label") is None:
        if p_a is None and allow_no_verdict:
            row["label"] = None
        elif p_a is None:
            raise CaiError("missing 'label' (or at least 'p_a')", where=where)
        else:
            row["label"] = label_from_p(float(p_a))
    else:
        row["label"] = normalise_label(obj["label"], where)
    for field in ("p_a_ab", "p_a_ba"):
        v = obj.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0):
            raise CaiError(f"'{field}' must be a number between 0 and 1, got {v!r}", where=where)
    if obj.get("rater") is not None:
        row["rater"] = str(obj["rater"])
    return row


def parse_labels(text: str, source: str = "<labels>", allow_no_verdict: bool = False) -> list[dict]:
    """Parse label-interchange JSONL text; errors name source:line. Blank lines are skipped."""
    rows = [parse_label_row(obj, where, allow_no_verdict) for _, where, obj in jsonl_rows(text, source)]
    if not rows:
        raise CaiError("no labels found (expected JSONL rows with 'id' and 'label')", where=source)
    return rows




def write_labels(path: str | Path, rows: Iterable[dict]) -> int:
    """Write label rows as JSONL (validated first: a bad row writes nothing). Returns the count."""
    clean = [parse_label_row(r, f"row {i + 1}") for i, r in enumerate(rows)]
    return write_jsonl(path, clean)


def read_text_file(path: Path) -> str:
    return read_user_file(path, encoding="utf-8")


def word_count(text: str | None) -> int:
    """Answer length for the length-bias statistics: whitespace-separated words."""
    return len((text or "").split())
