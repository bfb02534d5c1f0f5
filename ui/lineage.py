"""The Notebook page's parts: counts, the lineage graph, one table per kind, the HTML export.

Everything comes from cai_core.summaries.lineage; tables are st.dataframe (names shown literally) and the graph
is the same plotly figure the HTML export embeds."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from cai_core.summaries.lineage import LAYERS, Lineage, kind_title, lineage_figure, notebook_html, notebook_rows
from cai_core.store import Store
from ui.common import show_error


def counts(lin: Lineage) -> None:
    cols = st.columns(len(LAYERS))
    for col, kind in zip(cols, LAYERS):
        col.metric(kind_title(kind), len(lin.of_kind(kind)))


def graph(lin: Lineage) -> None:
    if not lin.nodes:
        st.info("Nothing in this workspace yet: save a constitution, run a batch, judge pairs, export, train "
                "and evaluate, and each step appears here with what it came from.")
        return
    st.plotly_chart(lineage_figure(lin), width="stretch", key="nb_graph")
    st.caption("Columns run in the order CAI work feeds the next step; an arrow goes from a source to what was "
               "made from it, and a link that spans columns bends around the items between. Hover an item for "
               "its full name, its details and its sources.")


def tables(lin: Lineage) -> None:
    for kind in LAYERS:
        rows = notebook_rows(lin, kind)
        with st.expander(f"{kind_title(kind)} ({len(rows)})", expanded=False):
            if rows:
                st.dataframe(pd.DataFrame(rows).astype(str), hide_index=True, width="stretch")
            else:
                st.caption("none yet")


def html_export(store: Store) -> None:
    """Build on request (it embeds plotly.js, a few MB), then offer the download."""
    if st.button("Build the shareable HTML notebook", key="nb_build",
                 help="One file, charts inline, opens offline; the same as `python -m cai_core notebook`."):
        try:
            st.session_state["nb_html"] = notebook_html(store)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the page goes on
            show_error(exc)
    if st.session_state.get("nb_html"):
        st.download_button("Download notebook.html", data=st.session_state["nb_html"], file_name="notebook.html",
                           mime="text/html", key="nb_download")
