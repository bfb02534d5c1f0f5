"""Word-level diffs between two texts (consecutive revisions, constitution versions).

Returned as plain segments so the UI can render them safely (as data, never as HTML from the model).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class Segment:
    op: str      # equal | insert | delete
    text: str


def word_diff(old: str, new: str) -> list[Segment]:
    """Diff by words (whitespace kept), merging neighbours of the same kind."""
    a = _TOKEN.findall(old or "")
    b = _TOKEN.findall(new or "")
    out: list[Segment] = []

    def add(op: str, text: str) -> None:
        if not text:
            return
        if out and out[-1].op == op:
            out[-1] = Segment(op, out[-1].text + text)
        else:
            out.append(Segment(op, text))

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            add("equal", "".join(a[i1:i2]))
        else:
            add("delete", "".join(a[i1:i2]))
            add("insert", "".join(b[j1:j2]))
    return out


def edit_distance_words(old: str, new: str) -> int:
    """Number of words inserted plus deleted (a simple, readable edit size)."""
    return sum(len(s.text.split()) for s in word_diff(old, new) if s.op != "equal")


def change_ratio(old: str, new: str) -> float:
    """0 = identical, 1 = nothing in common (by words)."""
    a, b = (old or "").split(), (new or "").split()
    if not a and not b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
