"""JSON Lines, written one way everywhere: UTF-8, one compact object per line, model and user text
kept as written (no \\u escapes), and a whole file either fully written or not at all.

Exports (data.jsonl, lineage.jsonl), CLI --out files, label files and a run's metrics.jsonl and
samples.jsonl all go through here, so a reader never meets a half-written file or two dialects.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


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
    """Every row of a JSONL file the workbench wrote (blank lines skipped). User uploads have their
    own readers, which say which line is bad."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
