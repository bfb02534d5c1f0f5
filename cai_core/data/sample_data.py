"""First start: load the sample constitutions and prompt sets so a new user sees something at once.

Runs on every app start, so it must be cheap and idempotent: once the samples have been loaded a
marker in settings makes it return after one query, and a sample the user deleted later is not
brought back. Items that already exist under the same name are left alone. A fresh workspace
starts on the pair the README walks through (settings.DEFAULT_CURRENT: harmless_helpful + red_team).
"""
from __future__ import annotations

from pathlib import Path

from cai_core.constitution.files import load_constitution_file
from cai_core.constitution.versions import list_constitutions, save_constitution
from cai_core.errors import CaiError
from cai_core.data.prompt_sets import import_prompt_set, list_prompt_sets
from cai_core.settings import get_setting, set_default_current, set_setting
from cai_core.store import Store

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
MARKER = "bootstrap.samples_loaded"
# prompt set name -> (file under sample_data/prompts, kind)
SAMPLE_PROMPT_SETS = {
    "red_team": ("red_team.jsonl", "red-team"),
    "helpfulness": ("helpfulness.jsonl", "helpfulness"),
}


def sample_constitution_files(sample_dir: Path = SAMPLE_DIR) -> list[Path]:
    return sorted((sample_dir / "constitutions").glob("*.yaml"))


def ensure_samples(store: Store, sample_dir: Path = SAMPLE_DIR, force: bool = False) -> dict:
    """Load sample constitutions and prompt sets that are absent. Returns what was added.

    `force=True` ignores the "already loaded once" marker (still never overwrites anything).
    """
    added: dict = {"constitutions": [], "prompt_sets": [], "skipped": False}
    if not force and get_setting(store, MARKER):
        added["skipped"] = True
        return added
    have = {c["name"] for c in list_constitutions(store)}
    for path in sample_constitution_files(sample_dir):
        constitution = load_constitution_file(path)
        if constitution.name not in have:
            save_constitution(store, constitution, note="sample")
            added["constitutions"].append(constitution.name)
    have_sets = {s["name"] for s in list_prompt_sets(store)}
    for name, (filename, kind) in SAMPLE_PROMPT_SETS.items():
        path = sample_dir / "prompts" / filename
        if name in have_sets or not path.exists():
            continue
        try:
            import_prompt_set(store, name, path, kind=kind, source=f"sample_data/prompts/{filename}")
        except CaiError:
            if name not in {s["name"] for s in list_prompt_sets(store)}:
                raise  # a real problem, not another process winning the race
            continue
        added["prompt_sets"].append(name)
    set_default_current(store, {"constitution": [c["name"] for c in list_constitutions(store)],
                                "prompt_set": [s["name"] for s in list_prompt_sets(store)]})
    set_setting(store, MARKER, True)
    return added
