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


# The workspace's current items, like the active model: every page starts its pickers on them, and
# picking another one there (or in the sidebar) makes it current.
CURRENT_KINDS = {"constitution": "current_constitution", "prompt_set": "current_prompt_set"}


def get_current(store: Store, kind: str) -> str | None:
    """The name of the workspace's current constitution / prompt set (None: none chosen yet)."""
    return get_setting(store, CURRENT_KINDS[kind])


def set_current(store: Store, kind: str, name: str | None) -> None:
    set_setting(store, CURRENT_KINDS[kind], name)
