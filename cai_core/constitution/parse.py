"""Constitution text -> a mapping, with the line of each principle and few-shot example, so
every parse error names file:line (shared by the workbench's own format and the paper importers).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from cai_core.errors import CaiError


def parse_mapping(text: str, path: Path, where: str | None = None):
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


def item_lines(text: str, suffix: str) -> dict[str, list[int]]:
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


def located_at(where: str | None, lines: dict | None, kind: str, index: int) -> str | None:
    if lines and index < len(lines.get(kind, [])):
        return f"{where}:{lines[kind][index]}"
    return where
