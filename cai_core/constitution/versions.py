"""Constitution versions in the store: save (a new version only when the content changed), read by
name, NAME@VERSION or hash, list, import and export.
"""
from __future__ import annotations

from pathlib import Path

from cai_core.constitution.files import dump_constitution, load_import
from cai_core.constitution.model import Constitution
from cai_core.errors import CaiError
from cai_core.store import Store, dumps, loads, now


# -- store -------------------------------------------------------------------------------------
def save_constitution(store: Store, constitution: Constitution, note: str | None = None,
                      parent_version: str | None = None) -> str:
    """Validate and store a version (no-op when this exact content exists). Returns the version."""
    constitution.validate()
    version = constitution.version
    with store.tx() as conn:
        conn.execute(
            "INSERT INTO constitutions (name, version, parent_version, content_json, note, created_at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (name, version) DO NOTHING",
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


def constitution_names(store: Store) -> list[str]:
    """The stored constitution names, sorted (one query; list_constitutions also reads each newest version)."""
    return [r["name"] for r in store.query("SELECT DISTINCT name FROM constitutions ORDER BY name")]


def list_versions(store: Store, name: str) -> list[dict]:
    return [dict(r) for r in store.query(
        "SELECT version, parent_version, note, created_at FROM constitutions WHERE name=? ORDER BY created_at DESC, id DESC",
        (name,))]


def save_imported(store: Store, c: Constitution, note: str) -> str:
    """Save an imported constitution as a new version of its name (parent: the newest one)."""
    parent = _latest_version(store, c.name)
    return save_constitution(store, c, note=note, parent_version=parent if parent != c.version else None)


def import_constitution(store: Store, path: str | Path, name: str | None = None,
                        comparisons: str | Path | None = None,
                        few_shot: str | Path | list[str | Path] | None = None, note: str | None = None) -> tuple[Constitution, str]:
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


def export_constitution(store: Store, name: str, version: str | None = None, fmt: str = "yaml") -> str:
    return dump_constitution(get_constitution(store, name, version), fmt)
