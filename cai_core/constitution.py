"""Principles and constitutions: named, versioned (content hash) lists of principles.

A principle holds the three texts CAI needs: a critique request and a revision request (the
supervised phase) and a comparison question (the judging phase). Templates may use
{question}, {response} and {critique}; anything else is rejected. Saving an edited constitution
adds a new version; old versions stay readable, and any two can be diffed per principle.

A principle with only a comparison question (the paper's RLMadisonInstructions imported on their
own) is "comparison-only": judges use it, the critique -> revision phase skips it.
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
from .textdiff import Segment, word_diff

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
        principles = [_principle_from_dict(p, i, _at(where, _lines, "principles", i))
                      for i, p in enumerate(raw_principles)]
        few = [_few_shot_from_dict(f, i, _at(where, _lines, "few_shot", i)) for i, f in enumerate(raw_few)]
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


def _few_shot_from_dict(f, i: int, where: str | None) -> FewShotExample:
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
def load_constitution_file(path: str | Path, name: str | None = None) -> Constitution:
    """Load a constitution from this project's YAML/JSON, or one of the paper's formats:
    CritiqueRevisionInstructions.json (key -> {prompt: [critique], edit_request}),
    RLMadisonInstructions.json (comparison questions only) or CritiqueRevisionFewShotPrompts.json
    (principles taken from the examples' requests). Problems name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise CaiError("file not found", where=str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaiError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from exc
    return parse_constitution_text(text, path.name, where=str(path), name=name)


def parse_constitution_text(text: str, filename: str, where: str | None = None,
                            name: str | None = None) -> Constitution:
    """Parse constitution file content (the format follows the extension; used for uploads too)."""
    where = where or filename
    suffix = Path(filename).suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise CaiError(f"unsupported constitution file type {suffix or '(none)'!r}: use .yaml, .yml or .json",
                       where=where)
    if not text.strip():
        raise CaiError("the file is empty", where=where)
    data = _parse_mapping(text, Path(filename), where)
    stem = Path(filename).stem
    if _is_paper_critique_revision(data):
        c = from_paper_critique_revision(data, name=name or stem)
    elif _is_paper_few_shot(data):
        c = from_paper_few_shot(parse_paper_few_shot(data, where), name=name or stem)
    elif _is_string_list(data):
        c = from_paper_comparisons(data, name=name or stem)
    elif isinstance(data, list) and data and all(isinstance(x, dict) and "corrects" in x for x in data):
        raise CaiError("this is a judging few-shot file (RLMadison*FewShotPrompts.json), not a constitution",
                       where=where)
    else:
        lines = _item_lines(text, suffix)
        c = Constitution.from_dict(data, where=where, _lines=lines)
        if name:
            c.name = name
        _raise_located(c, where, lines)
        return c
    return c.validate(where=where)


def _parse_mapping(text: str, path: Path, where: str | None = None):
    where = where or str(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            where_line = f"{where}:{mark.line + 1}" if mark else where
            problem = getattr(exc, "problem", None) or str(exc)
            raise CaiError(f"malformed YAML{line}: {problem}", where=where_line) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaiError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                       where=f"{where}:{exc.lineno}") from None


def _item_lines(text: str, suffix: str) -> dict[str, list[int]]:
    """1-based line of each principle and few-shot example, so problems can point at them."""
    out: dict[str, list[int]] = {"principles": [], "few_shot": []}
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            root = yaml.compose(text)
        except yaml.YAMLError:
            return out
        if isinstance(root, yaml.MappingNode):
            for key, value in root.value:
                if key.value in out and isinstance(value, yaml.SequenceNode):
                    out[key.value] = [item.start_mark.line + 1 for item in value.value]
        return out
    # JSON: each principle has an "id" key, each example a "question" key (in file order).
    starts = [0] + [m.end() for m in re.finditer(r"\n", text)]

    def line_of(pos: int) -> int:
        lo = 0
        while lo + 1 < len(starts) and starts[lo + 1] <= pos:
            lo += 1
        return lo + 1

    out["principles"] = [line_of(m.start()) for m in re.finditer(r'"id"\s*:', text)]
    out["few_shot"] = [line_of(m.start()) for m in re.finditer(r'"question"\s*:', text)]
    return out


def _at(where: str | None, lines: dict | None, kind: str, index: int) -> str | None:
    if lines and index < len(lines.get(kind, [])):
        return f"{where}:{lines[kind][index]}"
    return where


def _raise_located(c: Constitution, where: str | None, lines: dict | None) -> None:
    """Validate, naming the line of the first principle or example with a problem."""
    located: list[tuple[str | None, str]] = []
    for i, p in enumerate(c.principles):
        for msg in p.problems():
            located.append((_at(where, lines, "principles", i), msg))
    others = [m for m in c.problems() if not any(m == msg for _, msg in located)]
    for msg in others:
        match = re.match(r"few-shot example #(\d+)", msg)
        located.append((_at(where, lines, "few_shot", int(match.group(1)) - 1) if match else where, msg))
    if located:
        first = next((w for w, _ in located if w and w != where), where)
        messages = []
        for w, msg in located:
            line = w.rsplit(":", 1)[1] if w and w != where else None
            messages.append(f"line {line}: {msg}" if line and w != first else msg)
        raise CaiError("; ".join(messages), where=first)


def _is_paper_critique_revision(data) -> bool:
    return isinstance(data, dict) and "principles" not in data and bool(data) and all(
        isinstance(v, dict) and "prompt" in v and "edit_request" in v for v in data.values())


def _is_string_list(data) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(x, str) for x in data)


def _is_paper_few_shot(data) -> bool:
    return _is_string_list(data) and all("CritiqueRequest:" in x and "Revision:" in x for x in data)


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


def _clean_question(q: str) -> str:
    q = (q or "").strip()
    if q.endswith("Options:"):
        q = q[: -len("Options:")].strip()
    return q


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_.-")[:64] or "principle"


def from_paper_critique_revision(data: dict, name: str = "paper-critique-revision",
                                 comparison_questions: list[str] | None = None) -> Constitution:
    """Build a constitution from the paper's CritiqueRevisionInstructions.json mapping
    (optionally pairing the RLMadisonInstructions comparison questions in order)."""
    principles = []
    for key, value in data.items():
        crit = value["prompt"][0] if isinstance(value.get("prompt"), list) else str(value.get("prompt", ""))
        principles.append(Principle(
            id=_safe_id(key),
            name=key,
            critique_request=_strip_paper_markers(crit, "Critique:"),
            revision_request=_strip_paper_markers(str(value["edit_request"]), "Revision:"),
            tags=["paper"],
        ))
    c = Constitution(name=name, principles=principles,
                     description="Imported from the CAI paper's public critique/revision instructions.")
    return attach_comparison_questions(c, comparison_questions) if comparison_questions else c


def from_paper_comparisons(questions: list[str], name: str = "paper-comparisons") -> Constitution:
    """The paper's RLMadisonInstructions.json on its own: comparison-only principles (judging phase)."""
    principles = [Principle(id=f"comparison_{i + 1}", name=f"Comparison {i + 1}", critique_request="",
                            revision_request="", comparison_question=_clean_question(q),
                            tags=["paper", "comparison-only"])
                  for i, q in enumerate(questions)]
    return Constitution(name=name, principles=principles,
                        description="Comparison questions from the CAI paper (judging phase only).")


def load_comparison_questions(path: str | Path) -> list[str]:
    """Read a JSON/YAML list of comparison questions (the paper's RLMadisonInstructions.json)."""
    path = Path(path)
    if not path.is_file():
        raise CaiError("file not found", where=str(path))
    return parse_comparison_questions_text(path.read_text(encoding="utf-8-sig"), path.name, where=str(path))


def parse_comparison_questions_text(text: str, filename: str, where: str | None = None) -> list[str]:
    where = where or filename
    data = _parse_mapping(text, Path(filename), where)
    if not _is_string_list(data):
        raise CaiError("expected a list of comparison questions (strings)", where=where)
    out = [_clean_question(q) for q in data]
    empty = [i + 1 for i, q in enumerate(out) if not q]
    if empty:
        raise CaiError(f"comparison question #{empty[0]} is empty", where=where)
    return out


def attach_comparison_questions(c: Constitution, questions: list[str]) -> Constitution:
    """Pair comparison questions with principles in order (a copy; the input is unchanged).

    Fewer questions than principles: they are reused in turn (as the paper's 16 cover 16).
    More questions than principles: the extra ones become comparison-only principles.
    """
    questions = [_clean_question(q) for q in questions if _clean_question(q)]
    if not questions:
        raise CaiError("no comparison questions to attach")
    new = Constitution.from_dict(c.canonical())
    for i, p in enumerate(new.principles):
        p.comparison_question = questions[i % len(questions)]
    ids = {p.id for p in new.principles}
    for j, q in enumerate(questions[len(new.principles):], start=len(new.principles) + 1):
        pid = f"comparison_{j}"
        while pid in ids:
            pid += "_"
        ids.add(pid)
        new.principles.append(Principle(id=pid, name=f"Comparison {j}", critique_request="", revision_request="",
                                        comparison_question=q, tags=["paper", "comparison-only"]))
    return new


# -- few-shot examples -------------------------------------------------------------------------
@dataclass
class PaperFewShot:
    """One example of the paper's CritiqueRevisionFewShotPrompts.json, with its own requests."""
    example: FewShotExample
    critique_request: str
    revision_request: str


_PAPER_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):")


def parse_paper_few_shot(items: list[str], where: str | None = None) -> list[PaperFewShot]:
    """Split each 'Human:/Assistant:/CritiqueRequest:/Critique:/RevisionRequest:/Revision:' text.

    Earlier turns of a multi-turn dialogue stay in the question as a transcript
    ("...\n\nAssistant: ...\n\nHuman: ..."); the response is the last assistant turn.
    """
    if not _is_string_list(items):
        raise CaiError("expected a list of few-shot texts", where=where)
    out = []
    for n, raw in enumerate(items, start=1):
        parts = _PAPER_TURN.split(raw)
        turns = [(parts[k], parts[k + 1].strip()) for k in range(1, len(parts) - 1, 2)]
        while turns and turns[-1][0] == "Human" and not turns[-1][1]:
            turns.pop()  # the trailing "Human:" that cues the next example
        roles = [r for r, _ in turns]
        tail = ["CritiqueRequest", "Critique", "RevisionRequest", "Revision"]
        if roles[-4:] != tail or "Assistant" not in roles or roles[0] != "Human":
            raise CaiError(f"few-shot example #{n} does not follow Human:/Assistant:/CritiqueRequest:/"
                           "Critique:/RevisionRequest:/Revision:", where=where)
        dialogue = turns[:-4]
        if dialogue[-1][0] != "Assistant":
            raise CaiError(f"few-shot example #{n}: the dialogue must end with an Assistant turn", where=where)
        first = dialogue[0][1]
        rest = "".join(f"\n\n{role}: {text}" for role, text in dialogue[1:-1])
        texts = dict(turns[-4:])
        out.append(PaperFewShot(
            example=FewShotExample(question=first + rest, response=dialogue[-1][1], critique=texts["Critique"],
                                   revision=texts["Revision"]),
            critique_request=texts["CritiqueRequest"], revision_request=texts["RevisionRequest"]))
    return out


def load_few_shot_file(path: str | Path) -> list[PaperFewShot | FewShotExample]:
    """Few-shot examples from the paper's JSON (list of transcripts) or our YAML/JSON
    (a list of {question, response, critique, revision[, principle_id]} or {few_shot: [...]})."""
    path = Path(path)
    if not path.is_file():
        raise CaiError("file not found", where=str(path))
    return parse_few_shot_text(path.read_text(encoding="utf-8-sig"), path.name, where=str(path))


def parse_few_shot_text(text: str, filename: str, where: str | None = None) -> list[PaperFewShot | FewShotExample]:
    where = where or filename
    data = _parse_mapping(text, Path(filename), where)
    if _is_string_list(data):
        return parse_paper_few_shot(data, where=where)
    if isinstance(data, dict) and "few_shot" in data:
        data = data["few_shot"]
    if not isinstance(data, list) or not data:
        raise CaiError("expected a non-empty list of few-shot examples", where=where)
    lines = _item_lines(text, Path(filename).suffix.lower())
    return [_few_shot_from_dict(f, i, _at(where, lines, "few_shot", i)) for i, f in enumerate(data)]


def _norm(text: str) -> str:
    return " ".join((text or "").lower().split())


def attach_few_shot(c: Constitution, examples: list[PaperFewShot | FewShotExample],
                    enable_new: bool = False) -> Constitution:
    """Add few-shot examples to a copy of a constitution.

    A paper example is linked to the principle whose critique request it uses; when none matches,
    its requests become a new principle (disabled unless enable_new, so it only serves the example).
    """
    new = Constitution.from_dict(c.canonical())
    by_request = {_norm(p.critique_request): p.id for p in new.principles if p.critique_request}
    ids = {p.id for p in new.principles}
    for ex in examples:
        if isinstance(ex, FewShotExample):
            new.few_shot.append(ex)
            continue
        pid = by_request.get(_norm(ex.critique_request))
        if pid is None:
            k = 1
            while f"few_shot_request_{k}" in ids:
                k += 1
            pid = f"few_shot_request_{k}"
            ids.add(pid)
            by_request[_norm(ex.critique_request)] = pid
            new.principles.append(Principle(id=pid, name=f"Few-shot request {k}", critique_request=ex.critique_request,
                                            revision_request=ex.revision_request, tags=["paper", "few-shot"],
                                            enabled=enable_new))
        new.few_shot.append(FewShotExample(**{**asdict(ex.example), "principle_id": pid}))
    return new


def from_paper_few_shot(examples: list[PaperFewShot], name: str = "paper-few-shot") -> Constitution:
    """A constitution made only from the paper's few-shot file: its distinct requests become principles."""
    c = attach_few_shot(Constitution(name=name, principles=[],
                                     description="Principles and examples from the CAI paper's few-shot prompts."),
                        examples, enable_new=True)
    return c


# -- import / export ---------------------------------------------------------------------------
def build_import(text: str, filename: str, name: str | None = None,
                 comparisons: tuple[str, str] | None = None, few_shot: tuple[str, str] | None = None,
                 where: str | None = None) -> Constitution:
    """Parse and validate a constitution (+ optional (text, filename) of comparison questions and
    few-shot examples) without saving anything; uploads and files share this path."""
    c = parse_constitution_text(text, filename, where=where, name=name)
    if comparisons:
        c = attach_comparison_questions(c, parse_comparison_questions_text(*comparisons))
    if few_shot:
        c = attach_few_shot(c, parse_few_shot_text(*few_shot))
    return c.validate(where=where or filename)


def save_imported(store: Store, c: Constitution, note: str) -> str:
    """Save an imported constitution as a new version of its name (parent: the newest one)."""
    parent = _latest_version(store, c.name)
    return save_constitution(store, c, note=note, parent_version=parent if parent != c.version else None)


def _read(path: str | Path) -> tuple[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CaiError("file not found", where=str(path))
    try:
        return path.read_text(encoding="utf-8-sig"), str(path)
    except UnicodeDecodeError as exc:
        raise CaiError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from exc


def load_import(path: str | Path, name: str | None = None, comparisons: str | Path | None = None,
                few_shot: str | Path | None = None) -> Constitution:
    """build_import for files on disk (messages name each file and line)."""
    text, where = _read(path)
    return build_import(text, where, name=name, comparisons=_read(comparisons) if comparisons else None,
                        few_shot=_read(few_shot) if few_shot else None, where=where)


def import_constitution(store: Store, path: str | Path, name: str | None = None,
                        comparisons: str | Path | None = None, few_shot: str | Path | None = None,
                        note: str | None = None) -> tuple[Constitution, str]:
    """Read a constitution file (+ optional comparison questions and few-shot file), validate
    everything, then save one new version. Returns (constitution, version)."""
    c = load_import(path, name=name, comparisons=comparisons, few_shot=few_shot)
    return c, save_imported(store, c, note or f"imported from {Path(path).name}")


def _latest_version(store: Store, name: str) -> str | None:
    return store.scalar("SELECT version FROM constitutions WHERE name=? ORDER BY created_at DESC, id DESC LIMIT 1",
                        (name,))


def save_edited(store: Store, constitution: Constitution, note: str | None = None,
                parent_version: str | None = None) -> tuple[str, bool]:
    """Save an edit as a new version. Returns (version, created): created is False when nothing changed."""
    constitution.validate()
    exists = store.scalar("SELECT 1 FROM constitutions WHERE name=? AND version=?",
                          (constitution.name, constitution.version))
    version = save_constitution(store, constitution, note=note, parent_version=parent_version)
    return version, not exists


def dump_constitution(constitution: Constitution, fmt: str = "yaml") -> str:
    """Text of this project's format; loading it back gives the same version."""
    data = constitution.canonical()
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise CaiError(f"unknown export format {fmt!r}: use yaml or json")
    import yaml

    header = f"# constitution {constitution.name!r}, version {constitution.version} (content hash)\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def export_constitution(store: Store, name: str, version: str | None = None, fmt: str = "yaml") -> str:
    return dump_constitution(get_constitution(store, name, version), fmt)


# -- diff --------------------------------------------------------------------------------------
DIFF_FIELDS = ("name", "critique_request", "revision_request", "comparison_question", "tags", "enabled")
FEW_SHOT_FIELDS = ("question", "response", "critique", "revision", "principle_id")


@dataclass
class Change:
    """One principle (or few-shot example, or the header) that differs between two versions."""
    kind: str                      # principle | few_shot | constitution
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
    for k in range(max(len(old.few_shot), len(new.few_shot))):
        a = old.few_shot[k] if k < len(old.few_shot) else None
        b = new.few_shot[k] if k < len(new.few_shot) else None
        fields = _diff_fields(a, b, FEW_SHOT_FIELDS)
        if fields:
            status = "added" if a is None else "removed" if b is None else "changed"
            changes.append(Change("few_shot", f"#{k + 1}", status, f"few-shot example #{k + 1}",
                                  old_index=k if a else None, new_index=k if b else None, fields=fields))
    return changes


def _moved_ids(old_order: list[str], new_order: list[str]) -> set[str]:
    """Ids outside the longest common subsequence of the two orders: the ones that moved."""
    import difflib

    keep = set()
    for block in difflib.SequenceMatcher(a=old_order, b=new_order, autojunk=False).get_matching_blocks():
        keep.update(old_order[block.a:block.a + block.size])
    return set(new_order) - keep
