"""Principles and constitutions: named, versioned (content hash) lists of principles.

A principle holds the three texts CAI needs: a critique request and a revision request (the
supervised phase) and a comparison question (the judging phase). Templates may use
{question}, {response} and {critique}; anything else is rejected. Saving an edited constitution
adds a new version; old versions stay readable.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import CaiError
from .store import Store, dumps, loads, now

ALLOWED_VARIABLES = {"question", "response", "critique"}
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

    def problems(self) -> list[str]:
        """Validation messages (empty when the principle is usable)."""
        out = []
        if not _ID.match(self.id or ""):
            out.append(f"principle id {self.id!r} must be 1-64 letters, digits, '_', '-' or '.'")
        if not (self.name or "").strip():
            out.append(f"principle {self.id!r}: name is empty")
        for label, text, required in (
            ("critique request", self.critique_request, True),
            ("revision request", self.revision_request, True),
            ("comparison question", self.comparison_question, False),
        ):
            if required and not (text or "").strip():
                out.append(f"principle {self.id!r}: {label} is empty")
                continue
            try:
                unknown = template_variables(text) - ALLOWED_VARIABLES
            except CaiError as exc:
                out.append(f"principle {self.id!r}: {label}: {exc}")
                continue
            if unknown:
                out.append(
                    f"principle {self.id!r}: {label} uses unknown variable(s) "
                    f"{', '.join('{' + u + '}' for u in sorted(unknown))}; allowed: {{question}}, {{response}}, {{critique}}"
                )
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
        return out

    def validate(self, where: str | None = None) -> "Constitution":
        problems = self.problems()
        if problems:
            raise CaiError("; ".join(problems), where=where)
        return self

    @classmethod
    def from_dict(cls, data: dict, where: str | None = None) -> "Constitution":
        if not isinstance(data, dict):
            raise CaiError("a constitution must be a mapping with 'name' and 'principles'", where=where)
        try:
            principles = []
            for i, p in enumerate(data.get("principles") or []):
                if not isinstance(p, dict):
                    raise CaiError(f"principle #{i + 1} is not a mapping", where=where)
                unknown = set(p) - set(Principle.__dataclass_fields__)
                if unknown:
                    raise CaiError(f"principle #{i + 1} has unknown field(s) {sorted(unknown)}", where=where)
                principles.append(Principle(**{**p, "tags": list(p.get("tags") or [])}))
            few = [FewShotExample(**f) for f in (data.get("few_shot") or [])]
        except TypeError as exc:
            raise CaiError(f"bad constitution structure: {exc}", where=where) from exc
        return cls(name=str(data.get("name") or ""), description=str(data.get("description") or ""),
                   principles=principles, few_shot=few)


# -- store -------------------------------------------------------------------------------------
def save_constitution(store: Store, constitution: Constitution, note: str | None = None,
                      parent_version: str | None = None) -> str:
    """Validate and store a version (no-op when this exact content exists). Returns the version."""
    constitution.validate()
    version = constitution.version
    with store.tx() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO constitutions (name, version, parent_version, content_json, note, created_at) VALUES (?,?,?,?,?,?)",
            (constitution.name, version, parent_version, dumps(constitution.canonical()), note, now()),
        )
    return version


def get_constitution(store: Store, name: str, version: str | None = None) -> Constitution:
    """The named constitution at a version (default: the newest saved)."""
    if version:
        row = store.one("SELECT content_json FROM constitutions WHERE name=? AND version=?", (name, version))
    else:
        row = store.one("SELECT content_json FROM constitutions WHERE name=? ORDER BY created_at DESC, id DESC LIMIT 1", (name,))
    if row is None:
        raise CaiError(f"no constitution {name!r}" + (f" at version {version}" if version else ""))
    return Constitution.from_dict(loads(row["content_json"]))


def get_by_version(store: Store, version: str) -> Constitution:
    row = store.one("SELECT content_json FROM constitutions WHERE version=? LIMIT 1", (version,))
    if row is None:
        raise CaiError(f"no constitution version {version}")
    return Constitution.from_dict(loads(row["content_json"]))


def list_constitutions(store: Store) -> list[dict]:
    """One row per name: newest version, number of versions, principle count."""
    rows = store.query(
        "SELECT name, COUNT(*) AS versions, MAX(created_at) AS updated FROM constitutions GROUP BY name ORDER BY name"
    )
    out = []
    for r in rows:
        c = get_constitution(store, r["name"])
        out.append({"name": r["name"], "version": c.version, "versions": r["versions"],
                    "principles": len(c.principles), "updated": r["updated"]})
    return out


def list_versions(store: Store, name: str) -> list[dict]:
    return [dict(r) for r in store.query(
        "SELECT version, parent_version, note, created_at FROM constitutions WHERE name=? ORDER BY created_at DESC, id DESC",
        (name,))]


# -- files -------------------------------------------------------------------------------------
def load_constitution_file(path: str | Path) -> Constitution:
    """Load a constitution from this project's YAML/JSON, or the paper's
    CritiqueRevisionInstructions.json format (key -> {prompt: [critique], edit_request})."""
    path = Path(path)
    if not path.exists():
        raise CaiError("file not found", where=str(path))
    text = path.read_text(encoding="utf-8")
    data = _parse_mapping(text, path)
    if isinstance(data, dict) and "principles" not in data and data and all(
        isinstance(v, dict) and "prompt" in v and "edit_request" in v for v in data.values()
    ):
        return from_paper_critique_revision(data, name=path.stem).validate(where=str(path))
    return Constitution.from_dict(data, where=str(path)).validate(where=str(path))


def _parse_mapping(text: str, path: Path):
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise CaiError(f"malformed YAML{line}: {getattr(exc, 'problem', exc)}", where=str(path)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaiError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", where=str(path)) from exc


def _strip_paper_markers(text: str, marker: str) -> str:
    """'\n\nCritiqueRequest: ... \n\nCritique:' -> '...'"""
    text = text.strip()
    for prefix in ("CritiqueRequest:", "RevisionRequest:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.strip()
    if text.endswith(marker):
        text = text[: -len(marker)]
    return text.strip()


def from_paper_critique_revision(data: dict, name: str = "paper-critique-revision",
                                 comparison_questions: list[str] | None = None) -> Constitution:
    """Build a constitution from the paper's CritiqueRevisionInstructions.json mapping
    (optionally pairing the RLMadisonInstructions comparison questions in order)."""
    principles = []
    for i, (key, value) in enumerate(data.items()):
        crit = value["prompt"][0] if isinstance(value.get("prompt"), list) else str(value.get("prompt", ""))
        question = ""
        if comparison_questions:
            question = comparison_questions[i % len(comparison_questions)].strip()
            if question.endswith("Options:"):
                question = question[: -len("Options:")].strip()
        principles.append(Principle(
            id=re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:64],
            name=key,
            critique_request=_strip_paper_markers(crit, "Critique:"),
            revision_request=_strip_paper_markers(str(value["edit_request"]), "Revision:"),
            comparison_question=question,
            tags=["paper"],
        ))
    return Constitution(name=name, principles=principles,
                        description="Imported from the CAI paper's public critique/revision instructions.")


def dump_constitution(constitution: Constitution, fmt: str = "yaml") -> str:
    data = constitution.canonical()
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
