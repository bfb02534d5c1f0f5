"""Small persistent settings in the store (active model, current constitution and prompt set,
annotator name, ...). Never secrets."""
from __future__ import annotations

from typing import Any

from cai_core.store import Store, dumps, loads

SECRET_HINTS = ("key", "token", "secret", "password")


def get_setting(store: Store, key: str, default: Any = None) -> Any:
    row = store.one("SELECT value_json FROM settings WHERE key=?", (key,))
    return default if row is None else loads(row["value_json"])


def set_setting(store: Store, key: str, value: Any) -> None:
    if any(h in key.lower() for h in SECRET_HINTS):
        raise ValueError(f"refusing to store {key!r}: secrets come from the environment or st.secrets")
    store.execute(
        "INSERT INTO settings (key, value_json) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value_json=excluded.value_json",
        (key, dumps(value)),
    )


# The workspace's current items, one source of truth for every session, page and command: the store.
# The sidebar and every page read them before drawing a picker and write them when one is picked; no
# session keeps its own copy (a copy is what let the sidebar, a page and another tab disagree).
CURRENT_KINDS = {"constitution": "current_constitution", "prompt_set": "current_prompt_set", "model": "active_model"}
# What a fresh workspace starts on: the pair the README's command-line walk-through uses.
DEFAULT_CURRENT = {"constitution": "harmless_helpful", "prompt_set": "red_team"}


def get_current(store: Store, kind: str, default: Any = None) -> Any:
    """The workspace's current constitution / prompt set name, or the active model spec ("model")
    (`default`: none chosen yet)."""
    if kind not in CURRENT_KINDS:
        raise ValueError(f"unknown current-item kind {kind!r}; known: {', '.join(CURRENT_KINDS)}")
    return get_setting(store, CURRENT_KINDS[kind], default)


def set_current(store: Store, kind: str, name: str | None) -> None:
    if kind not in CURRENT_KINDS:
        raise ValueError(f"unknown current-item kind {kind!r}; known: {', '.join(CURRENT_KINDS)}")
    set_setting(store, CURRENT_KINDS[kind], name)


def set_default_current(store: Store, names: dict[str, list[str]]) -> None:
    """A workspace with no current constitution / prompt set yet starts on DEFAULT_CURRENT's when it
    exists (`names`: kind -> the stored names). Never changes a choice already made."""
    for kind, wanted in DEFAULT_CURRENT.items():
        if get_current(store, kind) is None and wanted in names.get(kind, ()):
            set_current(store, kind, wanted)
