"""Live counts for the Home page: what the workspace holds at each step of the CAI flow."""
from __future__ import annotations

from cai_core.store import Store

COUNTS = {
    "constitutions": "SELECT COUNT(DISTINCT name) FROM constitutions",
    "constitution_versions": "SELECT COUNT(*) FROM constitutions",
    "prompt_sets": "SELECT COUNT(*) FROM prompt_sets",
    "prompts": "SELECT COUNT(*) FROM prompts",
    "trajectories": "SELECT COUNT(*) FROM trajectories WHERE status='done'",
    "comparisons": "SELECT COUNT(*) FROM comparisons",
    "judgments": "SELECT COUNT(*) FROM judgments",
    "human_labels": "SELECT COUNT(*) FROM human_labels",
    "exports": "SELECT COUNT(*) FROM exports",
    "runs": "SELECT COUNT(*) FROM runs",
    "evaluations": "SELECT COUNT(*) FROM evaluations",
}


def workspace_counts(store: Store) -> dict[str, int]:
    return {name: int(store.scalar(sql) or 0) for name, sql in COUNTS.items()}
