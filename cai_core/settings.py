"""Small persistent settings in the store (active model, annotator name, ...). Never secrets."""
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
