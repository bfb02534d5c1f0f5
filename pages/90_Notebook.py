"""Notebook: the workspace's experiment record - constitution versions, batches, judges, exports,
runs and evaluations - with their lineage as a graph, and a shareable HTML copy."""
from __future__ import annotations

import streamlit as st

from cai_core.summaries.lineage import workspace_lineage
from ui.command_preview import show_command
from ui.common import get_store, store_cached
from ui.lineage import counts, graph, html_export, tables

store = get_store()

st.title("Notebook")
st.caption("Everything this workspace holds and where each piece came from: which constitution version "
           "revised which batch, which judges labelled which pairs, which export fed which run, and where "
           "each run was evaluated. Read from the store as recorded, not from what a form intended.")

lin = store_cached(workspace_lineage)
counts(lin)
graph(lin)
tables(lin)
st.subheader("Share")
html_export(store)
show_command(store, ["notebook", "--out", "notebook.html"],
             note="The same file from a shell:")
