"""Principles and constitutions: named, versioned (content hash) lists of principles.

A principle holds the three texts CAI needs: a critique request and a revision request (the
supervised phase) and a comparison question (the judging phase). Templates may use
{question}, {response} and {critique}; anything else is rejected. Saving an edited constitution
adds a new version; old versions stay readable, and any two can be diffed per principle
(constitution.diff).

The paper keeps its two lists apart: 16 critique/revision principles (the supervised phase) and
16 comparison questions (the RL phase). Here a principle with only a comparison question is
"comparison-only" and forms the comparison list (`comparison_principles()`); the critique ->
revision phase uses `critique_principles()` and skips it. A constitution may hold both lists;
nothing pairs them by position.

Two kinds of worked examples travel with a constitution: `few_shot` (critique/revision examples,
each with its own request texts when it came with them) and `judge_examples` (the paper's
RLMadisonFewShotPrompts for the multiple-choice judge, RLMadisonPrecogFewShotPrompts with
step-by-step reasoning for the cot judge). Both are part of the version hash, so of every key
derived from it.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import asdict, dataclass, field

from cai_core.constitution.parse import located_at
from cai_core.errors import CaiError

ALLOWED_VARIABLES = {"question", "response", "critique"}


# What each template can be filled with: a critique is asked before any critique exists.
FIELD_VARIABLES = {
    "critique_request": {"question", "response"},
    "revision_request": {"question", "response", "critique"},
    "comparison_question": {"question"},
}


TEXT_FIELDS = ("critique_request", "revision_request", "comparison_question")


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def template_variables(text: str) -> set[str]:
    """The {variables} a template uses (str.format syntax)."""
    names = set()
    try:
        for _, name, _, _ in string.Formatter().parse(text or ""):
            if name is not None:
                names.add(name)
    except ValueError as exc:
        raise CaiError(f"malformed template ({exc}): {text[:60]!r}") from exc
    return names


@dataclass
class Principle:
    id: str
    name: str
    critique_request: str
    revision_request: str
    comparison_question: str = ""
    tags: list[str] = field(default_factory=list)
    enabled: bool = True

    @property
    def comparison_only(self) -> bool:
        """True when the principle only has a comparison question (no critique/revision)."""
        return not (self.critique_request or "").strip() and not (self.revision_request or "").strip() \
            and bool((self.comparison_question or "").strip())

    def problems(self) -> list[str]:
        """Validation messages (empty when the principle is usable)."""
        out = []
        if not _ID.match(self.id or ""):
            out.append(f"principle id {self.id!r} must be 1-64 letters, digits, '_', '-' or '.'")
        if not (self.name or "").strip():
            out.append(f"principle {self.id!r}: name is empty")
        texts = {f: getattr(self, f) or "" for f in TEXT_FIELDS}
        if not any(t.strip() for t in texts.values()):
            out.append(f"principle {self.id!r} is empty: write a critique and revision request "
                       "(or at least a comparison question)")
            return out
        for fld in TEXT_FIELDS:
            label = fld.replace("_", " ")
            text = texts[fld]
            if not isinstance(text, str):
                out.append(f"principle {self.id!r}: {label} must be text")
                continue
            if fld != "comparison_question" and not self.comparison_only and not text.strip():
                out.append(f"principle {self.id!r}: {label} is empty")
                continue
            try:
                used = template_variables(text)
            except CaiError as exc:
                out.append(f"principle {self.id!r}: {label}: {exc}")
                continue
            unknown = used - FIELD_VARIABLES[fld]
            if unknown:
                allowed = ", ".join("{" + v + "}" for v in sorted(FIELD_VARIABLES[fld]))
                out.append(
                    f"principle {self.id!r}: {label} uses unknown variable(s) "
                    f"{', '.join('{' + u + '}' for u in sorted(unknown))}; allowed here: {allowed}"
                )
        if not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags):
            out.append(f"principle {self.id!r}: tags must be a list of words")
        return out


@dataclass
class FewShotExample:
    """One worked critique/revision example shown before the task (optional).

    critique_request / revision_request: the example's own request texts (the paper's few-shot
    file carries them); empty = the requests of `principle_id` (or of the first principle)."""
    question: str
    response: str
    critique: str
    revision: str
    principle_id: str | None = None
    critique_request: str = ""
    revision_request: str = ""


JUDGE_EXAMPLE_STYLES = ("mc", "cot")


@dataclass
class JudgeExample:
    """One worked judging example shown to the feedback model before the pair it judges.

    conversation: the dialogue up to the judged assistant turn ("Human: ...", earlier turns kept);
    answer: "A" or "B", the better response; reasoning: the step-by-step text written before the
    answer (cot examples only); question: the comparison question it was asked with, empty = the
    question of the pair being judged (the paper's Precog file leaves a '{}' there); style: mc
    examples serve the mc and parse judges, cot examples the cot judge.
    """
    conversation: str
    response_a: str
    response_b: str
    answer: str
    reasoning: str = ""
    question: str = ""
    style: str = "mc"

    def problems(self, n: int) -> list[str]:
        out = []
        for label in ("conversation", "response_a", "response_b"):
            value = getattr(self, label)
            if not isinstance(value, str) or not value.strip():
                out.append(f"judge example #{n}: {label.replace('_', ' ')} is empty")
        if self.answer not in ("A", "B"):
            out.append(f"judge example #{n}: answer must be A or B (got {self.answer!r})")
        if self.style not in JUDGE_EXAMPLE_STYLES:
            out.append(f"judge example #{n}: style must be mc or cot (got {self.style!r})")
        elif self.style == "cot" and not (self.reasoning or "").strip():
            out.append(f"judge example #{n}: a cot example needs its reasoning")
        return out


@dataclass
class Constitution:
    name: str
    principles: list[Principle]
    description: str = ""
    few_shot: list[FewShotExample] = field(default_factory=list)
    judge_examples: list[JudgeExample] = field(default_factory=list)

    # -- identity ----------------------------------------------------------------------------
    def canonical(self) -> dict:
        """The content that makes the version. Fields added later are left out while empty, so
        a constitution that does not use them keeps the version it always had."""
        data = {
            "name": self.name,
            "description": self.description,
            "principles": [asdict(p) for p in self.principles],
            "few_shot": [_without_empty(asdict(f), ("critique_request", "revision_request")) for f in self.few_shot],
        }
        if self.judge_examples:
            data["judge_examples"] = [asdict(e) for e in self.judge_examples]
        return data

    @property
    def version(self) -> str:
        """Content hash: the same text always gives the same version."""
        blob = json.dumps(self.canonical(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def enabled_principles(self) -> list[Principle]:
        return [p for p in self.principles if p.enabled]

    def critique_principles(self) -> list[Principle]:
        """Enabled principles usable for critique -> revision (comparison-only ones left out)."""
        return [p for p in self.principles if p.enabled and not p.comparison_only]

    def comparison_principles(self) -> list[Principle]:
        """Enabled principles with a comparison question: the list a judge draws from."""
        return [p for p in self.principles if p.enabled and (p.comparison_question or "").strip()]

    def judge_examples_for(self, style: str) -> list[JudgeExample]:
        """The judge examples a judge of this style is shown (mc examples for mc and parse)."""
        want = "cot" if style == "cot" else "mc"
        return [e for e in self.judge_examples if e.style == want]

    def principle(self, pid: str) -> Principle:
        for p in self.principles:
            if p.id == pid:
                return p
        raise CaiError(f"constitution {self.name!r} has no principle {pid!r}")

    def problems(self) -> list[str]:
        out = []
        if not (self.name or "").strip():
            out.append("constitution name is empty")
        if not self.principles:
            out.append("a constitution needs at least one principle")
        seen = set()
        for p in self.principles:
            if p.id in seen:
                out.append(f"duplicate principle id {p.id!r}")
            seen.add(p.id)
            out.extend(p.problems())
        if self.principles and not self.enabled_principles():
            out.append("every principle is disabled; enable at least one")
        ids = {p.id for p in self.principles}
        for i, ex in enumerate(self.few_shot, start=1):
            for label in ("question", "response", "critique", "revision"):
                value = getattr(ex, label)
                if not isinstance(value, str) or not value.strip():
                    out.append(f"few-shot example #{i}: {label} is empty")
            if ex.principle_id and ex.principle_id not in ids:
                out.append(f"few-shot example #{i}: unknown principle id {ex.principle_id!r}")
            for label in ("critique_request", "revision_request"):
                value = getattr(ex, label)
                if not isinstance(value, str):
                    out.append(f"few-shot example #{i}: {label.replace('_', ' ')} must be text")
            if bool((ex.critique_request or "").strip()) != bool((ex.revision_request or "").strip()):
                out.append(f"few-shot example #{i}: give both its own critique and revision request, or neither")
        for i, ex in enumerate(self.judge_examples, start=1):
            out.extend(ex.problems(i))
        return out

    def validate(self, where: str | None = None) -> "Constitution":
        problems = self.problems()
        if problems:
            raise CaiError("; ".join(problems), where=where)
        return self

    @classmethod
    def from_dict(cls, data: dict, where: str | None = None, _lines: dict | None = None) -> "Constitution":
        """Build from a mapping (as in our YAML/JSON); structure problems name the principle."""
        if not isinstance(data, dict):
            raise CaiError("a constitution must be a mapping with 'name' and 'principles'", where=where)
        unknown_top = set(data) - {"name", "description", "principles", "few_shot", "judge_examples", "version"}
        if unknown_top:
            raise CaiError(f"unknown top-level field(s) {sorted(unknown_top)}; expected name, description, "
                           "principles, few_shot, judge_examples", where=where)
        raw_principles = data.get("principles") or []
        raw_few = data.get("few_shot") or []
        if not isinstance(raw_principles, list):
            raise CaiError("'principles' must be a list", where=where)
        if not isinstance(raw_few, list):
            raise CaiError("'few_shot' must be a list", where=where)
        raw_judge = data.get("judge_examples") or []
        if not isinstance(raw_judge, list):
            raise CaiError("'judge_examples' must be a list", where=where)
        principles = [_principle_from_dict(p, i, located_at(where, _lines, "principles", i))
                      for i, p in enumerate(raw_principles)]
        few = [few_shot_from_dict(f, i, located_at(where, _lines, "few_shot", i)) for i, f in enumerate(raw_few)]
        judge = [judge_example_from_dict(e, i, where) for i, e in enumerate(raw_judge)]
        return cls(name=_text(data.get("name")).strip(), description=_text(data.get("description")),
                   principles=principles, few_shot=few, judge_examples=judge)


def _without_empty(data: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in data.items() if not (k in keys and not v)}


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise TypeError("expected text")
    return str(value)


def _check_item(item, cls, label: str, where: str | None) -> None:
    """One list item of a constitution file (a principle or an example) is a mapping holding only
    `cls`'s fields; else a CaiError naming the item ("principle #2 ...")."""
    if not isinstance(item, dict):
        raise CaiError(f"{label} is not a mapping", where=where)
    unknown = set(item) - set(cls.__dataclass_fields__)
    if unknown:
        raise CaiError(f"{label} has unknown field(s) {sorted(unknown)}", where=where)


def _principle_from_dict(p, i: int, where: str | None) -> Principle:
    _check_item(p, Principle, f"principle #{i + 1}", where)
    tags = p.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list):
        raise CaiError(f"principle #{i + 1}: tags must be a list", where=where)
    enabled = p.get("enabled", True)
    if not isinstance(enabled, bool):
        raise CaiError(f"principle #{i + 1}: enabled must be true or false", where=where)
    try:
        return Principle(id=_text(p.get("id")).strip(), name=_text(p.get("name")).strip(),
                         critique_request=_text(p.get("critique_request")),
                         revision_request=_text(p.get("revision_request")),
                         comparison_question=_text(p.get("comparison_question")),
                         tags=[str(t) for t in tags], enabled=enabled)
    except TypeError:
        raise CaiError(f"principle #{i + 1}: id, name and requests must be text", where=where) from None


def few_shot_from_dict(f, i: int, where: str | None) -> FewShotExample:
    _check_item(f, FewShotExample, f"few-shot example #{i + 1}", where)
    try:
        return FewShotExample(question=_text(f.get("question")), response=_text(f.get("response")),
                              critique=_text(f.get("critique")), revision=_text(f.get("revision")),
                              principle_id=(_text(f.get("principle_id")).strip() or None),
                              critique_request=_text(f.get("critique_request")),
                              revision_request=_text(f.get("revision_request")))
    except TypeError:
        raise CaiError(f"few-shot example #{i + 1}: fields must be text", where=where) from None


def judge_example_from_dict(e, i: int, where: str | None) -> JudgeExample:
    _check_item(e, JudgeExample, f"judge example #{i + 1}", where)
    try:
        return JudgeExample(conversation=_text(e.get("conversation")), response_a=_text(e.get("response_a")),
                            response_b=_text(e.get("response_b")),
                            answer=_text(e.get("answer")).strip().strip("()").upper(),
                            reasoning=_text(e.get("reasoning")), question=_text(e.get("question")),
                            style=_text(e.get("style") or "mc").strip())
    except TypeError:
        raise CaiError(f"judge example #{i + 1}: fields must be text", where=where) from None
