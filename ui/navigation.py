"""Page files -> navigation entries: pages/NN_Title_Words.py is "Title Words" at /title-words.

app.py and the browser tests both name pages through here. (Streamlit's "Page not found" dialog on
a fresh server's first deep link came from its pages/-folder mode, not from these names: ui/launch.py
switches that mode off.)
"""
from __future__ import annotations

from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


def page_files() -> list[Path]:
    return sorted(PAGES_DIR.glob("[0-9]*_*.py"))


def page_title(path: Path) -> str:
    return path.stem.split("_", 1)[1].replace("_", " ")


def page_url(path: Path) -> str:
    return page_title(path).lower().replace(" ", "-")
