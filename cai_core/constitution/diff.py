"""Per-principle word-level diffs between two constitution versions (added, removed, moved,
changed fields), as plain segments the UI renders as text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cai_core.constitution.model import Constitution
from cai_core.data.textdiff import Segment, word_diff

# -- diff --------------------------------------------------------------------------------------
DIFF_FIELDS = ("name", "critique_request", "revision_request", "comparison_question", "tags", "enabled")


FEW_SHOT_FIELDS = ("question", "response", "critique", "revision", "principle_id", "critique_request",
                   "revision_request")


JUDGE_EXAMPLE_FIELDS = ("style", "conversation", "question", "response_a", "response_b", "reasoning", "answer")


@dataclass
class Change:
    """One principle (or few-shot example, or the header) that differs between two versions."""
    kind: str                      # principle | few_shot | judge_example | constitution
    key: str                       # principle id, "#n" for examples, "name"/"description"
    status: str                    # added | removed | changed | moved
    label: str                     # what to show as a title
    old_index: int | None = None
    new_index: int | None = None
    fields: dict[str, list[Segment]] = field(default_factory=dict)


def _field_text(obj, name: str) -> str:
    value = getattr(obj, name)
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, bool):
        return "enabled" if value else "disabled"
    return value or ""


def _diff_fields(old, new, names) -> dict[str, list[Segment]]:
    out = {}
    for n in names:
        a = _field_text(old, n) if old is not None else ""
        b = _field_text(new, n) if new is not None else ""
        if a != b:
            out[n] = word_diff(a, b)
    return out


def diff_constitutions(old: Constitution, new: Constitution) -> list[Change]:
    """Per-principle, word-level differences from `old` to `new` (unchanged principles left out).

    Principles are matched by id; a principle whose only change is its position is "moved".
    """
    changes: list[Change] = []
    for attr in ("name", "description"):
        a, b = getattr(old, attr) or "", getattr(new, attr) or ""
        if a != b:
            changes.append(Change("constitution", attr, "changed", attr, fields={attr: word_diff(a, b)}))
    old_pos = {p.id: i for i, p in enumerate(old.principles)}
    new_pos = {p.id: i for i, p in enumerate(new.principles)}
    kept_old = [p.id for p in old.principles if p.id in new_pos]
    kept_new = [p.id for p in new.principles if p.id in old_pos]
    moved = _moved_ids(kept_old, kept_new)
    for i, p in enumerate(old.principles):
        if p.id not in new_pos:
            changes.append(Change("principle", p.id, "removed", p.name or p.id, old_index=i,
                                  fields=_diff_fields(p, None, DIFF_FIELDS)))
    for j, p in enumerate(new.principles):
        if p.id not in old_pos:
            changes.append(Change("principle", p.id, "added", p.name or p.id, new_index=j,
                                  fields=_diff_fields(None, p, DIFF_FIELDS)))
            continue
        before = old.principles[old_pos[p.id]]
        fields = _diff_fields(before, p, DIFF_FIELDS)
        if fields or p.id in moved:
            changes.append(Change("principle", p.id, "changed" if fields else "moved", p.name or p.id,
                                  old_index=old_pos[p.id], new_index=j, fields=fields))
    changes += _example_changes("few_shot", "#", "few-shot example", old.few_shot, new.few_shot, FEW_SHOT_FIELDS)
    changes += _example_changes("judge_example", "j#", "judge example", old.judge_examples, new.judge_examples,
                                JUDGE_EXAMPLE_FIELDS)
    return changes


def _example_changes(kind: str, key_prefix: str, label: str, old: list, new: list, names) -> list[Change]:
    """Worked examples have no ids: they are matched by position (example #k against example #k)."""
    changes = []
    for k in range(max(len(old), len(new))):
        a = old[k] if k < len(old) else None
        b = new[k] if k < len(new) else None
        fields = _diff_fields(a, b, names)
        if fields:
            status = "added" if a is None else "removed" if b is None else "changed"
            changes.append(Change(kind, f"{key_prefix}{k + 1}", status, f"{label} #{k + 1}",
                                  old_index=k if a else None, new_index=k if b else None, fields=fields))
    return changes


def _moved_ids(old_order: list[str], new_order: list[str]) -> set[str]:
    """Ids outside the longest common subsequence of the two orders: the ones that moved."""
    import difflib

    keep = set()
    for block in difflib.SequenceMatcher(a=old_order, b=new_order, autojunk=False).get_matching_blocks():
        keep.update(old_order[block.a:block.a + block.size])
    return set(new_order) - keep
