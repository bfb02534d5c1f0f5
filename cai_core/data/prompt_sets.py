"""Prompt sets: named lists of prompts (red-team, helpfulness, other) the pipelines run over.

Prompts come from a JSONL file (a "prompt" field; "category" used when present; every other
field kept as metadata), a CSV with a prompt column, a .txt with one prompt per line, or a
column of a HF dataset. A whole file is validated before anything is written, and a set is
written in one transaction, so a broken line never leaves half a set behind.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable

from cai_core.errors import CaiError
from cai_core.jsonl import jsonl_rows
from cai_core.store import Store, dumps, loads, now
from cai_core.data.uploads import read_user_file

KINDS = ("red-team", "helpfulness", "other")
PROMPT_FIELDS = ("prompt", "text", "question")  # accepted column names, first match wins
_MAX_NAME = 128


# -- parsing -----------------------------------------------------------------------------------
def load_prompts_file(path: str | Path) -> list[dict]:
    """Read prompts from .jsonl/.json lines, .csv or .txt. Returns [{"text", "category", "meta"}]."""
    path = Path(path)
    return parse_prompts_text(read_user_file(path), path.name, where=str(path))


def parse_prompts_text(raw: str, filename: str, where: str | None = None) -> list[dict]:
    """Parse prompt file content; the format follows the file extension (used for uploads too)."""
    where = where or filename
    suffix = Path(filename).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        items = _parse_jsonl(raw, where)
    elif suffix == ".csv":
        items = _parse_csv(raw, where)
    elif suffix in (".txt", ""):
        items = [{"text": line.strip(), "category": None, "meta": {}}
                 for line in raw.splitlines() if line.strip()]
    else:
        raise CaiError(f"unsupported prompt file type {suffix!r}: use .jsonl, .csv or .txt", where=where)
    if not items:
        raise CaiError("no prompts found (the file is empty)", where=where)
    return items


def _item(record: dict, where: str) -> dict:
    key = next((k for k in PROMPT_FIELDS if k in record), None)
    if key is None:
        raise CaiError(f"no 'prompt' field (fields: {', '.join(sorted(map(str, record))) or 'none'})", where=where)
    text = record[key]
    if not isinstance(text, str) or not text.strip():
        raise CaiError(f"'{key}' must be a non-empty string", where=where)
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        category = str(category)
    meta = {k: v for k, v in record.items() if k not in (key, "category")}
    return {"text": text.strip(), "category": (category or None), "meta": meta}


def _parse_jsonl(raw: str, where: str) -> list[dict]:
    items = []
    for lineno, loc, record in jsonl_rows(raw, where, "malformed JSON on line {line} ({msg} at column {col})"):
        if isinstance(record, str):
            record = {"prompt": record}
        if not isinstance(record, dict):
            raise CaiError(f"line {lineno} is not a JSON object with a 'prompt' field", where=loc)
        try:
            items.append(_item(record, loc))
        except CaiError as exc:
            raise CaiError(f"line {lineno}: {str(exc).removeprefix(loc + ': ')}", where=loc) from None
    return items


def _parse_csv(raw: str, where: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(raw))
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise CaiError(f"line 1: malformed CSV ({exc})", where=f"{where}:1") from exc
    if not header:
        return []
    fields = [(f or "").strip() for f in header]
    key = next((k for k in PROMPT_FIELDS if k in fields), None)
    if key is None:
        raise CaiError(f"line 1: no 'prompt' column (columns: {', '.join(fields)})", where=f"{where}:1")
    items = []
    try:
        for row in reader:
            loc = f"{where}:{reader.line_num}"
            if None in row or None in row.values():
                raise CaiError(f"line {reader.line_num}: expected {len(fields)} columns", where=loc)
            record = {k.strip(): v for k, v in row.items() if k and k.strip()}
            if not any(v.strip() for v in record.values()):
                continue  # a blank row
            if not record[key].strip():
                raise CaiError(f"line {reader.line_num}: the prompt is empty", where=loc)
            item = _item({key: record.pop(key), **record}, loc)
            item["meta"] = {k: v for k, v in item["meta"].items() if v != ""}
            items.append(item)
    except csv.Error as exc:
        raise CaiError(f"line {reader.line_num}: malformed CSV ({exc})", where=f"{where}:{reader.line_num}") from exc
    return items


def _normalise_items(items: Iterable, where: str) -> list[dict]:
    out = []
    for i, it in enumerate(items, start=1):
        if isinstance(it, str):
            it = {"text": it}
        if not isinstance(it, dict):
            raise CaiError(f"item {i}: expected a string or a mapping", where=where)
        text = it.get("text", it.get("prompt"))
        if not isinstance(text, str) or not text.strip():
            raise CaiError(f"item {i}: the prompt text is empty", where=where)
        meta = it.get("meta") or {}
        if not isinstance(meta, dict):
            raise CaiError(f"item {i}: meta must be a mapping", where=where)
        category = it.get("category")
        out.append({"text": text.strip(), "category": (str(category) if category else None), "meta": meta})
    if not out:
        raise CaiError("no prompts to import", where=where)
    return out


# -- store -------------------------------------------------------------------------------------
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise CaiError("a prompt set needs a name")
    name = name.strip()
    if len(name) > _MAX_NAME:
        raise CaiError(f"prompt set name is longer than {_MAX_NAME} characters")
    return name


def import_prompt_set(store: Store, name: str, path_or_items, kind: str = "red-team",
                      source: str | None = None, replace: bool = False) -> int:
    """Validate every prompt, then write the set in one transaction. Returns the set id.

    `path_or_items` is a file path or a list of strings / {"text"|"prompt", "category", "meta"}.
    An existing name is an error unless replace=True (then the old set and its prompts go).
    """
    name = _check_name(name)
    if kind not in KINDS:
        raise CaiError(f"unknown prompt set kind {kind!r}; use one of {', '.join(KINDS)}")
    if isinstance(path_or_items, (str, os.PathLike)):
        items = load_prompts_file(path_or_items)
        source = source or str(path_or_items)
    else:
        items = _normalise_items(path_or_items, where=source or name)
    with store.tx() as conn:
        existing = conn.execute("SELECT id FROM prompt_sets WHERE name=?", (name,)).fetchone()
        if existing is not None:
            if not replace:
                raise CaiError(f"a prompt set named {name!r} already exists; choose another name or replace it")
            conn.execute("DELETE FROM prompts WHERE set_id=?", (existing[0],))
            conn.execute("DELETE FROM prompt_sets WHERE id=?", (existing[0],))
        set_id = conn.execute(
            "INSERT INTO prompt_sets (name, kind, source, created_at) VALUES (?,?,?,?) RETURNING id",
            (name, kind, source, now()),
        ).fetchall()[0][0]
        conn.executemany(
            "INSERT INTO prompts (set_id, idx, text, category, meta_json) VALUES (?,?,?,?,?)",
            [(set_id, i, it["text"], it["category"], dumps(it["meta"]) if it["meta"] else None)
             for i, it in enumerate(items)],
        )
    return set_id


def import_hf_dataset_column(store: Store, name: str, dataset_path_or_id: str, column: str,
                             split: str = "train", kind: str = "red-team", category_column: str | None = None,
                             limit: int | None = None, replace: bool = False) -> int:
    """Import one text column of a HF dataset as a prompt set.

    A local folder is read with datasets.load_from_disk (a DatasetDict picks `split`); a hub ID
    is only fetched when the hub is allowed (CAI_ALLOW_HUB=1), since the workbench runs offline.
    """
    ds = _load_hf_split(dataset_path_or_id, split)
    if column not in ds.column_names:
        raise CaiError(f"no column {column!r}; columns: {', '.join(ds.column_names)}", where=str(dataset_path_or_id))
    if category_column and category_column not in ds.column_names:
        raise CaiError(f"no column {category_column!r}; columns: {', '.join(ds.column_names)}",
                       where=str(dataset_path_or_id))
    n = len(ds) if limit is None else min(len(ds), max(0, int(limit)))
    texts = ds[column][:n]
    cats = ds[category_column][:n] if category_column else [None] * n
    items = []
    for i, (text, cat) in enumerate(zip(texts, cats)):
        if not isinstance(text, str) or not text.strip():
            raise CaiError(f"row {i}: column {column!r} is empty or not text", where=str(dataset_path_or_id))
        items.append({"text": text, "category": cat, "meta": {"row": i}})
    source = f"hf:{dataset_path_or_id}[{split}].{column}"
    return import_prompt_set(store, name, items, kind=kind, source=source, replace=replace)


def _load_hf_split(dataset_path_or_id: str, split: str):
    import datasets

    path = Path(str(dataset_path_or_id)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CaiError("not a dataset folder (expected a folder written by save_to_disk)", where=str(path))
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise CaiError(f"cannot read a HF dataset here ({exc})", where=str(path)) from exc
    else:
        if os.environ.get("CAI_ALLOW_HUB") != "1":
            raise CaiError(f"{dataset_path_or_id}: no such folder, and loading from the hub is off "
                           "(set CAI_ALLOW_HUB=1 to allow it)")
        try:
            ds = datasets.load_dataset(str(dataset_path_or_id))
        except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; the user needs the text
            raise CaiError(f"cannot load dataset {dataset_path_or_id!r}: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise CaiError(f"no split {split!r}; splits: {', '.join(ds)}", where=str(dataset_path_or_id))
        ds = ds[split]
    return ds


def list_prompt_sets(store: Store) -> list[dict]:
    """Every set with its kind, source and prompt count, newest first."""
    return [dict(r) for r in store.query(
        "SELECT s.id, s.name, s.kind, s.source, s.created_at, COUNT(p.id) AS prompts "
        "FROM prompt_sets s LEFT JOIN prompts p ON p.set_id = s.id GROUP BY s.id ORDER BY s.created_at DESC, s.id DESC"
    )]


def get_prompt_set(store: Store, set_name: str) -> dict:
    row = store.one("SELECT id, name, kind, source, created_at FROM prompt_sets WHERE name=?", (set_name,))
    if row is None:
        raise CaiError(f"no prompt set {set_name!r}")
    return dict(row)


def get_prompts(store: Store, set_name: str) -> list[dict]:
    """The prompts of a set in order: [{"id", "idx", "text", "category", "meta"}]."""
    set_id = get_prompt_set(store, set_name)["id"]
    return [{"id": r["id"], "idx": r["idx"], "text": r["text"], "category": r["category"],
             "meta": loads(r["meta_json"], {})}
            for r in store.query("SELECT id, idx, text, category, meta_json FROM prompts WHERE set_id=? ORDER BY idx",
                                 (set_id,))]


def delete_prompt_set(store: Store, set_name: str) -> None:
    """Remove a set and its prompts (trajectories keep their own copy of the prompt text)."""
    set_id = get_prompt_set(store, set_name)["id"]
    with store.tx() as conn:
        conn.execute("DELETE FROM prompts WHERE set_id=?", (set_id,))
        conn.execute("DELETE FROM prompt_sets WHERE id=?", (set_id,))


PROMPT_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".txt")


def resolve_prompts(store: Store, spec: str, limit: int | None = None) -> tuple[list[dict], str]:
    """The one prompts grammar every command uses: a prompts file (.jsonl/.csv/.txt) or a stored
    prompt set name. Returns (items, label): items are [{"text", "category", "meta", "prompt_id"}]
    (prompt_id: the stored prompt's id, None for a file); label is the set name or the file stem.

    An existing file wins; a name that looks like a file (a prompts suffix or a path separator) but
    does not exist is "file not found", never silently a set; limit keeps the first N prompts.
    """
    spec = (spec or "").strip()
    if not spec:
        raise CaiError("no prompts given: name a stored prompt set or a prompts file (.jsonl/.csv/.txt)")
    if limit is not None and limit < 1:
        raise CaiError("--limit must be at least 1")
    path = Path(spec).expanduser()
    if path.is_file():
        items = [{"text": p["text"], "category": p.get("category"), "meta": dict(p.get("meta") or {}), "prompt_id": None}
                 for p in load_prompts_file(path)]
        label = path.stem
    elif store.one("SELECT 1 FROM prompt_sets WHERE name=?", (spec,)):
        items = [{"text": p["text"], "category": p["category"], "meta": dict(p.get("meta") or {}), "prompt_id": p["id"]}
                 for p in get_prompts(store, spec)]
        label = spec
    elif path.suffix.lower() in PROMPT_FILE_SUFFIXES or os.sep in spec or "/" in spec:
        raise CaiError("prompts file not found", where=str(path))
    else:
        raise CaiError(f"{spec!r} is neither a prompts file (.jsonl/.csv/.txt) nor a stored prompt set: no prompt "
                       "set with that name (see `python -m cai_core prompts list`)")
    return (items[:limit] if limit is not None else items), label
