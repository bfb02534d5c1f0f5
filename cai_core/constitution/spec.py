"""The one grammar for "which constitution", used by every command and page that takes one
(revise, judge, eval-judge, evaluate, ab-experiment, ...):

    FILE            a .yaml/.yml/.json file (project format or the paper's JSON)
    NAME            the newest stored version of that name
    NAME@VERSION    a stored version (full hash, or a unique prefix of at least 6 hex digits)
    VERSION         a stored version hash alone (or a unique prefix of at least 6 hex digits)

Resolving never falls back to another constitution and never saves anything: a caller that wants
a file's constitution recorded (for lineage) saves it itself, after all validation, with a note
saying why (see `is_file_spec`).
"""
from __future__ import annotations

import re
from pathlib import Path

from cai_core.constitution.files import load_constitution_file
from cai_core.constitution.model import Constitution
from cai_core.errors import CaiError
from cai_core.store import Store, loads

FILE_SUFFIXES = (".yaml", ".yml", ".json")
_HASH = re.compile(r"^[0-9a-f]{6,64}$")
GRAMMAR = "a .yaml/.json file, NAME, NAME@VERSION or a version hash"


def is_file_spec(spec: str) -> bool:
    """Whether a spec names a file (an existing file, or a path with a constitution suffix)."""
    path = Path((spec or "").strip()).expanduser()
    return path.is_file() or path.suffix.lower() in FILE_SUFFIXES


def _by_version(store: Store, version: str, name: str | None = None) -> Constitution | None:
    """A stored version by full hash or unique prefix (optionally of one name); None when absent."""
    where, params = "version LIKE ? ESCAPE '\\'", [version.replace("_", "\\_").replace("%", "\\%") + "%"]
    if name is not None:
        where += " AND name=?"
        params.append(name)
    rows = store.query(f"SELECT version, content_json FROM constitutions WHERE {where} ORDER BY id", params)
    versions = sorted({r["version"] for r in rows})
    if not versions:
        return None
    if version in versions:
        versions = [version]
    if len(versions) > 1:
        raise CaiError(f"version prefix {version!r} is ambiguous ({', '.join(v[:12] for v in versions[:5])}...): "
                       "give more digits")
    row = next(r for r in rows if r["version"] == versions[0])
    return Constitution.from_dict(loads(row["content_json"]))


def resolve_constitution(store: Store, spec: str) -> Constitution:
    """The constitution a spec names (see the module docstring); CaiError when it names none."""
    spec = (spec or "").strip()
    if not spec:
        raise CaiError(f"no constitution given: use {GRAMMAR}")
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CaiError("constitution file not found", where=str(path))
        return load_constitution_file(path)
    name, at, version = spec.partition("@")
    if at:
        if not name or not version:
            raise CaiError(f"constitution {spec!r}: NAME@VERSION needs both a name and a version")
        if not store.one("SELECT 1 FROM constitutions WHERE name=?", (name,)):
            raise CaiError(f"no stored constitution named {name!r} (spec {spec!r}; use {GRAMMAR})")
        found = _by_version(store, version, name) if _HASH.match(version) else None
        if found is None:
            raise CaiError(f"constitution {name!r} has no version {version!r} (see `python -m cai_core constitution "
                           f"versions {name}`)")
        return found
    row = store.one("SELECT content_json FROM constitutions WHERE name=? ORDER BY created_at DESC, id DESC LIMIT 1",
                    (spec,))
    if row is not None:
        return Constitution.from_dict(loads(row["content_json"]))
    if _HASH.match(spec):
        found = _by_version(store, spec)
        if found is not None:
            return found
    raise CaiError(f"{spec!r} is neither a file nor a stored constitution (use {GRAMMAR})")
