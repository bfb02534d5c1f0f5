"""Constitutional AI workbench: the Streamlit entry point (router + sidebar).

Pages are the files in pages/, ordered by their numeric prefix ("30_Critique_and_Revise.py" ->
"Critique and Revise"). All CAI logic lives in cai_core; pages only render what it returns.
"""
from __future__ import annotations

import streamlit as st

from cai_core.errors import CaiError
from cai_core.data.sample_data import ensure_samples
from ui.common import active_model, error_box, get_store, workspace_root
from ui.navigation import page_files, page_title, page_url
from ui.sidebar import render_sidebar

ICONS = {
    "Home": ":material/home:",
    "Models": ":material/memory:",
    "Constitution": ":material/gavel:",
    "Critique and Revise": ":material/edit_note:",
    "Preferences": ":material/compare_arrows:",
    "Judge Reliability": ":material/verified:",
    "Training": ":material/model_training:",
    "Evaluate and Compare": ":material/leaderboard:",
    "Demo": ":material/slideshow:",
    "Notebook": ":material/account_tree:",
}


def discover_pages() -> list:
    pages = []
    for path in page_files():
        title = page_title(path)
        pages.append(st.Page(str(path), title=title, icon=ICONS.get(title, ":material/article:"),
                             default=not pages, url_path=page_url(path)))
    return pages


# an emoji favicon is drawn in the page; a ":material/...:" one is fetched from fonts.gstatic.com (offline: fails)
st.set_page_config(page_title="CAI workbench", page_icon="⚖️", layout="wide")
try:
    store = get_store()
except CaiError as exc:  # the store cannot be opened (a PostgreSQL server down, a newer schema): say so, stop
    error_box(str(exc))
    st.stop()
ensure_samples(store)  # first start: sample constitutions and prompt sets (one query afterwards)
nav = st.navigation(discover_pages())
render_sidebar(store, workspace_root(), active_model())
nav.run()
