"""Principles and constitutions: named, versioned (content hash) lists of principles.

A principle holds the three texts CAI needs: a critique request and a revision request (the
supervised phase) and a comparison question (the judging phase). Templates may use
{question}, {response} and {critique}; anything else is rejected. Saving an edited constitution
adds a new version; old versions stay readable, and any two can be diffed per principle
(constitution.diff).

A principle with only a comparison question (the paper's RLMadisonInstructions imported on their
own) is "comparison-only": judges use it, the critique -> revision phase skips it.
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
    """One worked critique/revision example shown before the task (optional)."""
    question: str
    response: str
    critique: str
    revision: str
    principle_id: str | None = None


@dataclass
class Constitution:
    name: str
    principles: list[Principle]
    description: str = ""
    few_shot: list[FewShotExample] = field(default_factory=list)

    # -- identity ----------------------------------------------------------------------------
    def canonical(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "principles": [asdict(p) for p in self.principles],
            "few_shot": [asdict(f) for f in self.few_shot],
        }

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
        """Enabled principles with a comparison question (for the judging phase)."""
        return [p for p in self.principles if p.enabled and (p.comparison_question or "").strip()]

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
        unknown_top = set(data) - {"name", "description", "principles", "few_shot", "version"}
        if unknown_top:
            raise CaiError(f"unknown top-level field(s) {sorted(unknown_top)}; expected name, description, "
                           "principles, few_shot", where=where)
        raw_principles = data.get("principles") or []
        raw_few = data.get("few_shot") or []
        if not isinstance(raw_principles, list):
            raise CaiError("'principles' must be a list", where=where)
        if not isinstance(raw_few, list):
            raise CaiError("'few_shot' must be a list", where=where)
        principles = [_principle_from_dict(p, i, located_at(where, _lines, "principles", i))
                      for i, p in enumerate(raw_principles)]
        few = [few_shot_from_dict(f, i, located_at(where, _lines, "few_shot", i)) for i, f in enumerate(raw_few)]
        return cls(name=_text(data.get("name")).strip(), description=_text(data.get("description")),
                   principles=principles, few_shot=few)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise TypeError("expected text")
    return str(value)


def _principle_from_dict(p, i: int, where: str | None) -> Principle:
    if not isinstance(p, dict):
        raise CaiError(f"principle #{i + 1} is not a mapping", where=where)
    unknown = set(p) - set(Principle.__dataclass_fields__)
    if unknown:
        raise CaiError(f"principle #{i + 1} has unknown field(s) {sorted(unknown)}", where=where)
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
    if not isinstance(f, dict):
        raise CaiError(f"few-shot example #{i + 1} is not a mapping", where=where)
    unknown = set(f) - set(FewShotExample.__dataclass_fields__)
    if unknown:
        raise CaiError(f"few-shot example #{i + 1} has unknown field(s) {sorted(unknown)}", where=where)
    try:
        return FewShotExample(question=_text(f.get("question")), response=_text(f.get("response")),
                              critique=_text(f.get("critique")), revision=_text(f.get("revision")),
                              principle_id=(_text(f.get("principle_id")).strip() or None))
    except TypeError:
        raise CaiError(f"few-shot example #{i + 1}: fields must be text", where=where) from None
