"""Importers for the CAI paper's public prompt files (CritiqueRevisionInstructions.json,
CritiqueRevisionFewShotPrompts.json, RLMadisonInstructions.json): their markers stripped, their
few-shot dialogues parsed into examples.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cai_core.constitution.model import (
    Constitution,
    FewShotExample,
    Principle,
    few_shot_from_dict,
)
from cai_core.constitution.parse import item_lines, located_at, parse_mapping
from cai_core.errors import CaiError
from cai_core.uploads import read_user_file


def is_paper_critique_revision(data) -> bool:
    return isinstance(data, dict) and "principles" not in data and bool(data) and all(
        isinstance(v, dict) and "prompt" in v and "edit_request" in v for v in data.values())


def is_string_list(data) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(x, str) for x in data)


def is_paper_few_shot(data) -> bool:
    return is_string_list(data) and all("CritiqueRequest:" in x and "Revision:" in x for x in data)


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
    return parse_comparison_questions_text(read_user_file(path), path.name, where=str(path))


def parse_comparison_questions_text(text: str, filename: str, where: str | None = None) -> list[str]:
    where = where or filename
    data = parse_mapping(text, Path(filename), where)
    if not is_string_list(data):
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
    if not is_string_list(items):
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
    return parse_few_shot_text(read_user_file(path), path.name, where=str(path))


def parse_few_shot_text(text: str, filename: str, where: str | None = None) -> list[PaperFewShot | FewShotExample]:
    where = where or filename
    data = parse_mapping(text, Path(filename), where)
    if is_string_list(data):
        return parse_paper_few_shot(data, where=where)
    if isinstance(data, dict) and "few_shot" in data:
        data = data["few_shot"]
    if not isinstance(data, list) or not data:
        raise CaiError("expected a non-empty list of few-shot examples", where=where)
    lines = item_lines(text, Path(filename).suffix.lower())
    return [few_shot_from_dict(f, i, located_at(where, lines, "few_shot", i)) for i, f in enumerate(data)]


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
