"""Read-side summaries of the whole workspace: Home counts, the lineage notebook, headline figures."""
