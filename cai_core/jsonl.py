"""JSON Lines, written one way everywhere: UTF-8, one compact object per line, model and user text
kept as written (no \\u escapes), and a whole file either fully written or not at all.

Exports (data.jsonl, lineage.jsonl), CLI --out files, label files and a run's metrics.jsonl and
samples.jsonl all go through here, so a reader never meets a half-written file or two dialects.
User JSONL (prompt sets, pairs, labels, the paper's evals) is read line by line with `jsonl_rows`,
which names the file and line of a bad one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from cai_core.errors import CaiError


def jsonl_line(row) -> str:
    """One row as its JSONL line (with the newline)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable) -> int:
    """Write rows to `path`, all lines or none: a temporary file beside it, renamed into place (a failure
    part-way, including one raised by the rows themselves, leaves the old file untouched). Returns the count."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(jsonl_line(row))
                count += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def append_jsonl(path: str | os.PathLike, rows: Iterable) -> None:
    """Append rows to a log-like file (a run's metrics and samples) with one write call, so a reader polling
    the file rarely meets a half line (`read_samples` skips one)."""
    text = "".join(jsonl_line(row) for row in rows)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every row of a JSONL file the workbench wrote (blank lines skipped). User files go through
    `jsonl_rows`, which says which line is bad."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def jsonl_rows(text: str, source: str,
               bad_line: str = "not valid JSON ({msg} at column {col})") -> Iterator[tuple[int, str, object]]:
    """The rows of user JSONL text, each as (line number, "source:line", parsed value); blank lines
    skipped. A line that is not JSON raises a CaiError located at source:line, worded by `bad_line`
    ({line}, {msg} and {col} are filled in), so each reader keeps its own message."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaiError(bad_line.format(line=lineno, msg=exc.msg, col=exc.colno), where=where) from exc
        yield lineno, where, value
