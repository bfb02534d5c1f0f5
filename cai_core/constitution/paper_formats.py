"""Importers for the CAI paper's public prompt files (CritiqueRevisionInstructions.json,
CritiqueRevisionFewShotPrompts.json, RLMadisonInstructions.json, RLMadisonFewShotPrompts.json,
RLMadisonPrecogFewShotPrompts.json): their markers stripped, their few-shot dialogues parsed into
examples.

As in the paper, the critique/revision principles and the comparison questions stay two lists:
comparison questions become comparison-only principles beside the critique ones, never paired
with them by position. Critique few-shot examples keep their own request texts (no principle is
added for them); the RLMadison files become the constitution's judge examples.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cai_core.constitution.model import (
    Constitution,
    FewShotExample,
    JudgeExample,
    Principle,
    few_shot_from_dict,
    judge_example_from_dict,
)
from cai_core.constitution.parse import item_lines, located_at, parse_mapping
from cai_core.errors import CaiError
from cai_core.data.uploads import read_user_file


def is_paper_critique_revision(data) -> bool:
    return isinstance(data, dict) and "principles" not in data and bool(data) and all(
        isinstance(v, dict) and "prompt" in v and "edit_request" in v for v in data.values())


def is_string_list(data) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(x, str) for x in data)


def is_paper_few_shot(data) -> bool:
    return is_string_list(data) and all("CritiqueRequest:" in x and "Revision:" in x for x in data)


def is_paper_judge_few_shot(data) -> bool:
    """RLMadisonFewShotPrompts.json ({prompt, corrects, incorrects}) or the Precog CoT file ({prompt}
    holding the two options, the reasoning and 'So the answer is: (X)')."""
    return isinstance(data, list) and bool(data) and all(
        isinstance(x, dict) and isinstance(x.get("prompt"), str)
        and (("corrects" in x and "incorrects" in x) or "So the answer is:" in x["prompt"]) for x in data)


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
    """Build a constitution from the paper's CritiqueRevisionInstructions.json mapping (optionally
    with the RLMadisonInstructions comparison questions as a second, separate list)."""
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
    c = Constitution(name=name, principles=[],
                     description="Comparison questions from the CAI paper (judging phase only).")
    return attach_comparison_questions(c, questions)


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
    """Add comparison questions as a separate list (a copy; the input is unchanged).

    Each question becomes a comparison-only principle `comparison_N` (the judge draws from these);
    the constitution's critique/revision principles are left as they are: the paper keeps its 16
    critique principles and its 16 comparison questions apart, and nothing pairs them by position.
    """
    questions = [_clean_question(q) for q in questions if _clean_question(q)]
    if not questions:
        raise CaiError("no comparison questions to attach")
    new = Constitution.from_dict(c.canonical())
    ids = {p.id for p in new.principles}
    for j, q in enumerate(questions, start=1):
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


# -- judge examples (RLMadison few-shot files) -----------------------------------------------------
_PRECOG = re.compile(
    r"^\s*(?:Human:\s*)?Consider the following conversation between a human(?: \(H\))? and an assistant(?: \(A\))?:"
    r"\s*(?P<conv>.*?)\s*\{\}\s*\(A\) \[\[\[(?P<a>.*?)\]\]\]\s*\(B\) \[\[\[(?P<b>.*?)\]\]\]\s*"
    r"Assistant:\s*Let's think step by step:?\s*(?P<reasoning>.*?)\s*Human:\s*So the answer is:\s*\(?(?P<answer>[AB])\)?\s*$",
    re.S)
_SPEAKER = re.compile(r"(^|\n\n)(H|A):\s*")


def _conversation_text(text: str) -> str:
    """'\n\nHuman: ...\n\nAssistant:' or 'H: ...\n\nA: ...' -> 'Human: ...\n\nAssistant: ...' (the
    trailing empty Assistant cue dropped)."""
    text = _SPEAKER.sub(lambda m: m.group(1) + ("Human: " if m.group(2) == "H" else "Assistant: "), text.strip())
    text = re.sub(r"\s*Assistant:\s*$", "", text)
    return text.strip()


def parse_paper_judge_examples(items: list, where: str | None = None) -> list[JudgeExample]:
    """The paper's judging few-shot files as JudgeExamples.

    RLMadisonFewShotPrompts.json ({prompt, corrects, incorrects}): mc examples. The better response
    is shown as (A) in examples 1, 3, 5... and as (B) in 2, 4..., so the examples teach no position.
    RLMadisonPrecogFewShotPrompts.json (transcripts with the options, 'Let's think step by step:'
    reasoning and 'So the answer is: (X)'): cot examples, options and answer as written. Both ask
    the question of the pair being judged (the files leave its place empty).
    """
    if not is_paper_judge_few_shot(items):
        raise CaiError("expected the paper's RLMadisonFewShotPrompts.json or RLMadisonPrecogFewShotPrompts.json "
                       "(a list of {prompt, corrects, incorrects} or of {prompt} CoT transcripts)", where=where)
    out = []
    for n, item in enumerate(items, start=1):
        if "corrects" in item:
            good, bad = item.get("corrects"), item.get("incorrects")
            if not (isinstance(good, list) and isinstance(bad, list) and good and bad
                    and isinstance(good[0], str) and isinstance(bad[0], str)):
                raise CaiError(f"judge example #{n}: corrects and incorrects must be non-empty lists of text",
                               where=where)
            conversation = _conversation_text(item["prompt"])
            better_first = n % 2 == 1
            a, b = (good[0], bad[0]) if better_first else (bad[0], good[0])
            out.append(JudgeExample(conversation=conversation, response_a=a.strip(), response_b=b.strip(),
                                    answer="A" if better_first else "B", style="mc"))
            continue
        m = _PRECOG.match(item["prompt"])
        if not m:
            raise CaiError(f"judge example #{n} does not follow 'Consider the following conversation ... {{}} "
                           "(A) [[[...]]] (B) [[[...]]] Assistant: Let's think step by step: ... So the answer is: (X)'",
                           where=where)
        out.append(JudgeExample(conversation=_conversation_text(m.group("conv")), response_a=m.group("a").strip(),
                                response_b=m.group("b").strip(), answer=m.group("answer"),
                                reasoning=m.group("reasoning").strip(), style="cot"))
    return out


def load_few_shot_file(path: str | Path) -> list[PaperFewShot | FewShotExample | JudgeExample]:
    """Few-shot examples from the paper's JSON (list of transcripts) or our YAML/JSON
    (a list of {question, response, critique, revision[, principle_id]} or {few_shot: [...]}), or
    judge examples from the paper's RLMadison*FewShotPrompts.json or our {judge_examples: [...]}."""
    path = Path(path)
    return parse_few_shot_text(read_user_file(path), path.name, where=str(path))


def parse_few_shot_text(text: str, filename: str,
                        where: str | None = None) -> list[PaperFewShot | FewShotExample | JudgeExample]:
    where = where or filename
    data = parse_mapping(text, Path(filename), where)
    if is_string_list(data):
        return parse_paper_few_shot(data, where=where)
    if is_paper_judge_few_shot(data):
        return parse_paper_judge_examples(data, where=where)
    if isinstance(data, dict) and "judge_examples" in data:
        raw = data["judge_examples"]
        if not isinstance(raw, list) or not raw:
            raise CaiError("expected a non-empty list of judge examples", where=where)
        return [judge_example_from_dict(e, i, where) for i, e in enumerate(raw)]
    if isinstance(data, dict) and "few_shot" in data:
        data = data["few_shot"]
    if not isinstance(data, list) or not data:
        raise CaiError("expected a non-empty list of few-shot examples", where=where)
    lines = item_lines(text, Path(filename).suffix.lower())
    return [few_shot_from_dict(f, i, located_at(where, lines, "few_shot", i)) for i, f in enumerate(data)]


def _norm(text: str) -> str:
    return " ".join((text or "").lower().split())


def attach_few_shot(c: Constitution, examples: list[PaperFewShot | FewShotExample | JudgeExample]) -> Constitution:
    """Add few-shot examples to a copy of a constitution.

    Judge examples go to `judge_examples`. A paper critique example keeps its own critique and
    revision request texts (shown with it, whatever the principles say); it is linked to the
    principle with the same critique request when there is one, and no principle is ever added.
    """
    new = Constitution.from_dict(c.canonical())
    by_request = {_norm(p.critique_request): p.id for p in new.principles if p.critique_request}
    for ex in examples:
        if isinstance(ex, JudgeExample):
            new.judge_examples.append(ex)
        elif isinstance(ex, FewShotExample):
            new.few_shot.append(ex)
        else:
            new.few_shot.append(FewShotExample(**{
                **asdict(ex.example), "principle_id": by_request.get(_norm(ex.critique_request)),
                "critique_request": ex.critique_request, "revision_request": ex.revision_request}))
    return new


def from_paper_few_shot(examples: list[PaperFewShot], name: str = "paper-few-shot") -> Constitution:
    """A constitution made only from the paper's few-shot file: its distinct requests become the
    principles, and each example keeps its own requests."""
    principles: list[Principle] = []
    seen: set[str] = set()
    for ex in examples:
        if _norm(ex.critique_request) in seen:
            continue
        seen.add(_norm(ex.critique_request))
        k = len(principles) + 1
        principles.append(Principle(id=f"few_shot_request_{k}", name=f"Few-shot request {k}",
                                    critique_request=ex.critique_request, revision_request=ex.revision_request,
                                    tags=["paper", "few-shot"]))
    base = Constitution(name=name, principles=principles,
                        description="Principles and examples from the CAI paper's few-shot prompts.")
    return attach_few_shot(base, examples)
