"""Streamlit helpers shared by the pages (UI only: they call cai_core, never torch/trl/SQL)."""
