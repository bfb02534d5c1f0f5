"""SFT data from the supervised phase: (prompt, final revision) pairs as a TRL conversational dataset.

Each row has a "messages" column ([{"role": "user"}, {"role": "assistant"}]) that TRL's
SFTTrainer reads directly, plus lineage columns (source, trajectory id, constitution version,
model). The paper mixes in the model's own answers to helpfulness prompts so SL-CAI stays
helpful; `mix_helpful` does the same, reusing stored answers and generating missing ones.

Written to workspace/exports/NAME/: data.jsonl, the HF dataset files (save_to_disk, so
`datasets.load_from_disk(folder)` works), card.json and README.md. The folder is built aside
and renamed into place, and recorded in the `exports` table (kind "sft").
"""
from __future__ import annotations

import json
import shutil
from collections import Counter

from cai_core.constitution.model import Constitution, Principle
from cai_core.errors import CaiError
from cai_core.exports import export_exists, record_export
from cai_core.jsonl import write_jsonl
from cai_core.data.prompt_sets import get_prompt_set, get_prompts
from cai_core.provenance import SPLITS, TRAIN_ONLY, parse_splits
from cai_core.store import Store, now
from cai_core.supervised.revision import ReviseSettings, run_revision, trajectory_filter
from cai_core.workspace import safe_name, slug

FORMATS = ("jsonl", "hf")


def parse_formats(text: str | list[str] | tuple) -> tuple[str, ...]:
    items = [f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text) if f and f.strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise CaiError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; use jsonl, hf or jsonl,hf")
    return tuple(dict.fromkeys(items))


def revision_rows(store: Store, *, batch: str | None = None, constitution_version: str | None = None,
                  splits=TRAIN_ONLY) -> list[dict]:
    """Finished trajectories of the given splits (default: train) with at least one round and a
    non-empty final answer."""
    splits = list(splits)
    clauses, params = trajectory_filter(batch=batch, constitution_version=constitution_version, status="done")
    clauses += ["COALESCE(t.rounds, 1) > 0", "TRIM(COALESCE(t.final, '')) != ''",
                "EXISTS (SELECT 1 FROM trajectory_steps s WHERE s.trajectory_id=t.id)",
                f"t.split IN ({','.join('?' * len(splits))})"]
    params += splits
    return [dict(r) for r in store.query(
        "SELECT id, batch, job_id, prompt, final, constitution_name, constitution_version, model, origin, split "
        f"FROM trajectories t WHERE {' AND '.join(clauses)} ORDER BY id", tuple(params))]


def _stored_answer(store: Store, prompt: str, model: str | None) -> dict | None:
    """The model's own first answer to a prompt, from any stored train-split trajectory (answer-only
    runs first; an experiment's trajectories are held out)."""
    sql = ("SELECT id, initial, model, origin, split FROM trajectories WHERE prompt=? AND initial IS NOT NULL "
           "AND TRIM(initial) != '' AND split='train'"
           + (" AND model=?" if model else "") + " ORDER BY COALESCE(rounds, 1) ASC, id ASC LIMIT 1")
    row = store.one(sql, (prompt, model) if model else (prompt,))
    return dict(row) if row else None


def missing_helpful(store: Store, set_name: str, model: str | None) -> int:
    """How many prompts of a set have no stored answer yet (those need a model)."""

    return sum(_stored_answer(store, p["text"], model) is None for p in get_prompts(store, set_name))


def helpful_rows(store: Store, set_name: str, *, model: str | None, backend=None, max_new_tokens: int = 200,
                 seed: int = 0, progress=None, should_stop=None) -> list[dict]:
    """The model's answers to a helpfulness prompt set: stored ones reused, missing ones generated
    (stored as answer-only trajectories in batch 'helpful-<set>', so they are never generated twice)."""

    prompts = get_prompts(store, set_name)
    missing = [p for p in prompts if _stored_answer(store, p["text"], model) is None]
    if missing:
        if backend is None or not model:
            raise CaiError(f"{len(missing)} prompt(s) of {set_name!r} have no stored answer; "
                           "give a model to generate them")

        # Answer-only runs need no principle; a fixed placeholder constitution keeps their keys stable.
        answer_only = Constitution(name="answer-only", principles=[Principle(
            id="none", name="answer only", critique_request="(unused)", revision_request="(unused)")],
            description="Answer-only runs (helpfulness data); no critique or revision.")
        run_revision(store, backend, answer_only, missing,
                     ReviseSettings(rounds=0, seed=seed, max_new_tokens=max_new_tokens), model,
                     batch="helpful-" + slug(set_name, "prompts"), progress=progress, should_stop=should_stop)
    out = []
    for p in prompts:
        found = _stored_answer(store, p["text"], model)
        if found is not None:
            out.append({"id": found["id"], "prompt": p["text"], "answer": found["initial"], "model": found["model"],
                        "origin": found["origin"], "split": found["split"]})
    return out


def _messages(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def build_card(name: str, revisions: list[dict], helpful: list[dict], *, filters: dict, formats: tuple,
               excluded_by_split: dict | None = None) -> dict:
    versions = Counter((r["constitution_name"], r["constitution_version"]) for r in revisions)
    both = revisions + helpful
    return {
        "name": name,
        "kind": "sft",
        "format": "TRL conversational: a 'messages' column of user/assistant turns",
        "created_at": now(),
        "files": (["data.jsonl"] if "jsonl" in formats else []) + (["HF dataset (save_to_disk)"] if "hf" in formats else []),
        "counts": {"revisions": len(revisions), "helpful": len(helpful), "total": len(revisions) + len(helpful)},
        "splits": list(filters.get("include_splits") or TRAIN_ONLY),
        "rows_by_origin": dict(sorted(Counter(r.get("origin") or "unknown" for r in both).items())),
        "rows_by_split": dict(sorted(Counter(r.get("split") or "unknown" for r in both).items())),
        "excluded_by_split": dict(sorted((excluded_by_split or {}).items())),
        "constitution_versions": [{"name": n, "version": v, "rows": c} for (n, v), c in sorted(versions.items())],
        "models": sorted({r["model"] for r in revisions} | {h["model"] for h in helpful}),
        "filters": filters,
        "lineage": {
            "batches": sorted({r["batch"] for r in revisions if r["batch"]}),
            "job_ids": sorted({r["job_id"] for r in revisions if r["job_id"]}),
            "trajectory_ids": [r["id"] for r in revisions],
            "helpful_trajectory_ids": [h["id"] for h in helpful],
        },
    }


def card_markdown(card: dict) -> str:
    lines = [
        f"# SFT dataset `{card['name']}`", "",
        "Supervised-phase Constitutional AI data: each row pairs a prompt with the model's final revision "
        "after critique -> revision rounds" + (", mixed with the model's own answers to helpfulness prompts"
                                               if card["counts"]["helpful"] else "") + ".", "",
        f"- Format: {card['format']}",
        f"- Rows: {card['counts']['total']} ({card['counts']['revisions']} revisions, {card['counts']['helpful']} helpful)",
        f"- Models: {', '.join(card['models']) or '-'}",
        "- Constitution versions: " + (", ".join(f"{v['name']}@{v['version']} ({v['rows']} rows)"
                                                 for v in card["constitution_versions"]) or "-"),
        f"- Batches: {', '.join(card['lineage']['batches']) or '-'}",
        f"- Splits read: {', '.join(card.get('splits', ['train']))}; rows by split: "
        f"{json.dumps(card.get('rows_by_split', {}))}; rows by origin: {json.dumps(card.get('rows_by_origin', {}))}",
        f"- Left out as held-out splits: {json.dumps(card.get('excluded_by_split', {}))}",
        f"- Filters: {json.dumps(card['filters'])}",
        "", "Load with `datasets.load_from_disk(<this folder>)` or read `data.jsonl`; "
            "the full lineage (trajectory ids) is in card.json.", "",
    ]
    return "\n".join(lines)


def held_out_counts(store: Store, *, batch: str | None = None, constitution_version: str | None = None,
                    splits=TRAIN_ONLY) -> dict[str, int]:
    """Finished trajectories matching the filters but outside the splits read: {split: count}."""
    everything = revision_rows(store, batch=batch, constitution_version=constitution_version, splits=SPLITS)
    return dict(Counter(r["split"] for r in everything if r["split"] not in splits))


def export_sft(store: Store, name: str, *, batch: str | None = None, constitution_version: str | None = None,
               mix_helpful: str | None = None, formats=FORMATS, model: str | None = None, backend=None,
               max_new_tokens: int = 200, seed: int = 0, overwrite: bool = False,
               include_splits=None, progress=None, should_stop=None) -> dict:
    """Write the dataset folder and record it; returns the card (with its "path").

    Only train-split trajectories are read unless include_splits adds eval and/or gold (an A/B
    experiment's arms are held out); the card counts rows by origin and split."""

    safe_name(name, "export name")
    target = store.workspace.child_path("exports", name)
    formats = parse_formats(formats)
    if batch and constitution_version:
        raise CaiError("give a batch or a constitution version, not both")
    if export_exists(store, name) and not overwrite:
        raise CaiError(f"an export named {name!r} already exists; choose another name or overwrite it")
    splits = parse_splits(include_splits)
    revisions = revision_rows(store, batch=batch, constitution_version=constitution_version, splits=splits)
    held_out = held_out_counts(store, batch=batch, constitution_version=constitution_version, splits=splits)
    if not revisions:
        what = f"batch {batch!r}" if batch else f"constitution version {constitution_version}" if constitution_version else "the store"
        held = (f" ({sum(held_out.values())} held out as split(s) {', '.join(sorted(held_out))}: add "
                f"--include-split {','.join(sorted(held_out))} to include them)") if held_out else ""
        raise CaiError(f"no finished trajectories (train split) with revisions in {what}{held}; run a revise batch first")
    if mix_helpful:
        get_prompt_set(store, mix_helpful)  # fails clearly before any work
        models = sorted({r["model"] for r in revisions})
        model = model or (models[0] if len(models) == 1 else None)
    helpful = helpful_rows(store, mix_helpful, model=model, backend=backend, max_new_tokens=max_new_tokens,
                           seed=seed, progress=progress, should_stop=should_stop) if mix_helpful else []
    if should_stop and should_stop():
        raise CaiError("stopped before writing; nothing exported (answers generated so far are stored and reused)")

    rows = [{"messages": _messages(r["prompt"], r["final"]), "source": "revision", "trajectory_id": r["id"],
             "constitution_version": r["constitution_version"], "model": r["model"]} for r in revisions]
    rows += [{"messages": _messages(h["prompt"], h["answer"]), "source": "helpful", "trajectory_id": h["id"],
              "constitution_version": None, "model": h["model"]} for h in helpful]
    card = build_card(name, revisions, helpful, formats=formats, excluded_by_split=held_out, filters={
        "batch": batch, "constitution_version": constitution_version, "mix_helpful": mix_helpful,
        "include_splits": list(splits)})

    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if "hf" in formats:
            import datasets

            datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        tmp.mkdir(parents=True, exist_ok=True)
        if "jsonl" in formats:
            write_jsonl(tmp / "data.jsonl", rows)
        (tmp / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / "README.md").write_text(card_markdown(card), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with store.tx() as conn:
        record_export(conn, name, "sft", store.workspace.store_path(target), card, prompts=[r["messages"][0]["content"] for r in rows])
    return {**card, "path": str(target)}

