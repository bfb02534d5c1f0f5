"""Page files -> navigation entries: pages/NN_Title_Words.py is "Title Words" at /title-words.

app.py and the browser tests both name pages through here. (A url path equal to the file name
would dodge Streamlit's "Page not found" dialog on a fresh session's first deep link, but only
because Streamlit then runs the page file on its own, without app.py's sidebar and first-start
setup; the dialog is the lesser evil.)
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
