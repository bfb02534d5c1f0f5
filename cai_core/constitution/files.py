"""Constitution files: YAML/JSON in the workbench's own format (errors name the line of the
principle at fault), and the import entry point that also recognises the paper's formats.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from cai_core.constitution.model import Constitution
from cai_core.constitution.paper_formats import (
    attach_comparison_questions,
    attach_few_shot,
    from_paper_comparisons,
    from_paper_critique_revision,
    from_paper_few_shot,
    is_paper_critique_revision,
    is_paper_few_shot,
    is_paper_judge_few_shot,
    is_string_list,
    parse_comparison_questions_text,
    parse_few_shot_text,
    parse_paper_few_shot,
)
from cai_core.constitution.parse import item_lines, located_at, parse_mapping
from cai_core.errors import CaiError
from cai_core.data.uploads import read_user_file


# -- files -------------------------------------------------------------------------------------
def load_constitution_file(path: str | Path, name: str | None = None) -> Constitution:
    """Load a constitution from this project's YAML/JSON, or one of the paper's formats:
    CritiqueRevisionInstructions.json (key -> {prompt: [critique], edit_request}),
    RLMadisonInstructions.json (comparison questions only) or CritiqueRevisionFewShotPrompts.json
    (principles taken from the examples' requests). The RLMadison*FewShotPrompts.json judging
    examples are refused here: they come with a constitution (build_import's few_shot). Problems
    name the file and line."""
    path = Path(path)
    return parse_constitution_text(read_user_file(path), path.name, where=str(path), name=name)


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
    data = parse_mapping(text, Path(filename), where)
    stem = Path(filename).stem
    if is_paper_critique_revision(data):
        c = from_paper_critique_revision(data, name=name or stem)
    elif is_paper_few_shot(data):
        c = from_paper_few_shot(parse_paper_few_shot(data, where), name=name or stem)
    elif is_string_list(data):
        c = from_paper_comparisons(data, name=name or stem)
    elif is_paper_judge_few_shot(data):
        raise CaiError("this is a judging few-shot file (RLMadison*FewShotPrompts.json): it holds a constitution's "
                       "judge examples, not principles; import it with --few-shot beside a constitution file "
                       "(or add it on the Constitution page's Import tab)", where=where)
    else:
        lines = item_lines(text, suffix)
        c = Constitution.from_dict(data, where=where, _lines=lines)
        if name:
            c.name = name
        _raise_located(c, where, lines)
        return c
    return c.validate(where=where)


def _raise_located(c: Constitution, where: str | None, lines: dict | None) -> None:
    """Validate, naming the line of the first principle or example with a problem."""
    located: list[tuple[str | None, str]] = []
    for i, p in enumerate(c.principles):
        for msg in p.problems():
            located.append((located_at(where, lines, "principles", i), msg))
    first_of: dict[str, int] = {}
    repeats: dict[str, tuple[int, int]] = {}  # id -> (first index, second index)
    for i, p in enumerate(c.principles):
        if p.id in first_of:
            repeats.setdefault(p.id, (first_of[p.id], i))
        first_of.setdefault(p.id, i)
    others = [m for m in c.problems() if not any(m == msg for _, msg in located)]
    for msg in others:
        match = re.match(r"few-shot example #(\d+)", msg)
        repeat = next((ij for pid, ij in repeats.items() if msg == f"duplicate principle id {pid!r}"), None)
        if repeat:  # at the second one, naming the first one's line
            first_at = located_at(where, lines, "principles", repeat[0])
            if first_at and first_at != where:
                msg += f" (first used at line {first_at.rsplit(':', 1)[1]})"
            located.append((located_at(where, lines, "principles", repeat[1]), msg))
            continue
        located.append((located_at(where, lines, "few_shot", int(match.group(1)) - 1) if match else where, msg))
    if located:
        first = next((w for w, _ in located if w and w != where), where)
        messages = []
        for w, msg in located:
            line = w.rsplit(":", 1)[1] if w and w != where else None
            messages.append(f"line {line}: {msg}" if line and w != first else msg)
        raise CaiError("; ".join(messages), where=first)


# -- import / export ---------------------------------------------------------------------------
FileText = tuple[str, str]   # (text, filename)


def build_import(text: str, filename: str, name: str | None = None,
                 comparisons: FileText | None = None, few_shot: FileText | list[FileText] | None = None,
                 where: str | None = None) -> Constitution:
    """Parse and validate a constitution (+ optional (text, filename) of comparison questions and
    one or more few-shot files: critique/revision examples or judge examples, told apart by
    content) without saving anything; uploads and files share this path."""
    c = parse_constitution_text(text, filename, where=where, name=name)
    if comparisons:
        c = attach_comparison_questions(c, parse_comparison_questions_text(*comparisons))
    for extra in _as_list(few_shot):
        c = attach_few_shot(c, parse_few_shot_text(*extra))
    return c.validate(where=where or filename)


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, tuple) or isinstance(value, (str, Path)) else list(value)


def _read(path: str | Path) -> tuple[str, str]:
    return read_user_file(path), str(path)


def load_import(path: str | Path, name: str | None = None, comparisons: str | Path | None = None,
                few_shot: str | Path | list[str | Path] | None = None) -> Constitution:
    """build_import for files on disk (messages name each file and line)."""
    text, where = _read(path)
    return build_import(text, where, name=name, comparisons=_read(comparisons) if comparisons else None,
                        few_shot=[_read(f) for f in _as_list(few_shot)], where=where)


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
