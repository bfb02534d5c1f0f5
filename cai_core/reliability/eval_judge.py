"""eval-judge: run one judge over a gold set and measure it (accuracy, kappa, biases, 95% CIs).

The orchestration the CLI, the Judge reliability page's background job and the docs' measurements
share: validate everything (gold file, judge settings, constitution, few-shot files), load the
judge, import the gold set as comparisons (reused on a re-run), judge them (stored judgments are
read back, not redone), and compare the judge's labels with the gold ones.

The judge's constitution: a spec in the one grammar (constitution/spec.py: file, NAME,
NAME@VERSION, version hash), else `harmless_helpful` when stored, else the
built-in HHH question. `--few-shot` files add judge examples (the paper's RLMadisonFewShotPrompts.json,
RLMadisonPrecogFewShotPrompts.json for cot) to it, which makes a new constitution version, so
zero-shot and few-shot judges keep separate keys; `--zero-shot` hides any examples it holds.
The job's options are `jobspecs.EvalJudgeSpec`, which the CLI, the page and `run_eval_judge` share.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cai_core.constitution.model import Constitution
from cai_core.constitution.paper_formats import attach_few_shot, load_few_shot_file
from cai_core.constitution.spec import resolve_constitution
from cai_core.constitution.versions import get_constitution
from cai_core.errors import CaiError
from cai_core.jobs.specs import EvalJudgeSpec
from cai_core.models.specs import get_backend
from cai_core.reliability.gold import (
    comparison_meta,
    gold_from_comparisons,
    import_paper_eval,
    judge_labels,
    load_gold_pairs,
)
from cai_core.reliability.metrics import json_safe, reliability_report
from cai_core.rlaif.judge_bounds import fit_pairs
from cai_core.rlaif.judge_defaults import HHH_JUDGE
from cai_core.rlaif.judges import JudgeSpec, judge_pairs
from cai_core.rlaif.pairs import add_pairs, comparisons_for
from cai_core.store import Store

DEFAULT_CONSTITUTION = "harmless_helpful"
BUILTIN = "builtin"

Progress = Callable[[int, int, str], None]


def judge_of(spec: EvalJudgeSpec) -> JudgeSpec:
    """The judge an eval-judge job measures (its judge_key names the judgments it reads back)."""
    return JudgeSpec(model=spec.judge_model, style=spec.style, principles=spec.principles, swap=not spec.no_swap,
                     seed=spec.seed, max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                     few_shot=not spec.zero_shot)


def judge_constitution(store: Store, value: str | None, few_shot_files: list[str] | None = None) -> Constitution:
    """The constitution eval-judge judges with (see the module docstring), judge examples added."""
    if value and value != BUILTIN:
        constitution = resolve_constitution(store, value)
    elif value is None and store.one("SELECT 1 FROM constitutions WHERE name=?", (DEFAULT_CONSTITUTION,)):
        constitution = get_constitution(store, DEFAULT_CONSTITUTION)
    else:
        constitution = Constitution.from_dict(HHH_JUDGE.canonical())
    for path in few_shot_files or []:
        constitution = attach_few_shot(constitution, load_few_shot_file(path))
    return constitution.validate()


@dataclass
class EvalJudgeResult:
    report: dict                 # reliability_report + what was judged (json-safe)
    judge_rows: list[dict]       # the judge's labels per comparison (id = comparison id)
    judge_key: str
    stopped: bool


def run_eval_judge(store: Store, spec: EvalJudgeSpec, *, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None, job_id: int | None = None) -> EvalJudgeResult:
    """Validate, then judge the gold set and report (nothing is written before validation passes)."""
    t0 = time.time()
    if spec.n_boot < 0:
        raise CaiError("--n-boot must be 0 or more")
    kind, items = load_gold_pairs(spec.gold, spec.seed, spec.limit)
    jspec = judge_of(spec)
    few_shot_files = list(spec.few_shot or ())
    constitution = judge_constitution(store, spec.constitution, few_shot_files)
    if isinstance(jspec.principles, list):
        for pid in jspec.principles:
            constitution.principle(pid)
    if few_shot_files and not spec.zero_shot and not constitution.judge_examples_for(jspec.style):
        raise CaiError(f"the few-shot files hold no judge examples for the {jspec.style} style "
                       "(RLMadisonFewShotPrompts.json serves mc and parse, RLMadisonPrecogFewShotPrompts.json cot)")
    backend = get_backend(spec.judge_model, store.workspace, device=spec.device, dtype=spec.dtype)
    # a pair too long for the judge is refused before anything is stored (or, --truncate-prompts, cut below)
    fit_pairs(backend, jspec, constitution, items, truncate=spec.truncate_prompts)
    # validated: now write (the constitution is not saved as a side effect: the judge key names its version)
    set_name = Path(spec.gold).stem
    if kind == "paper":
        ids = import_paper_eval(store, spec.gold, seed=spec.seed, limit=spec.limit)["ids"]
    else:
        ids = add_pairs(store, items, origin=f"gold:{set_name}", batch=set_name)
    pairs = comparisons_for(store, ids=ids)
    fitted = fit_pairs(backend, jspec, constitution, pairs, truncate=spec.truncate_prompts)
    pairs = fitted.pairs  # the judge reads the cut copies; the stored comparisons keep the full text
    judge_pairs(backend, jspec, constitution, pairs, store, progress=progress, should_stop=should_stop, job_id=job_id)
    id_set = {str(i) for i in ids}
    gold_rows = [g for g in gold_from_comparisons(store) if g["id"] in id_set]
    judge_rows = judge_labels(store, jspec.judge_key, ids)
    no_verdict = len(id_set - {r["id"] for r in judge_rows})
    report = reliability_report(judge_rows, gold_rows, n_boot=spec.n_boot, seed=spec.seed)
    report.update({
        "judge_key": jspec.judge_key, "judge_model": spec.judge_model, "style": spec.style,
        "constitution": constitution.name, "constitution_version": constitution.version,
        "judge_examples": jspec.examples, "gold": str(spec.gold), "gold_set": set_name, "items": len(ids),
        "no_valid_verdict": no_verdict, "limit": spec.limit, "swap": jspec.swap, "device": spec.device,
        "dtype": spec.dtype, "seconds": round(time.time() - t0, 1),
        "stopped": bool(should_stop and should_stop()),
        "truncated": len(fitted.truncated), "truncated_ids": fitted.truncated_ids, "context_window": fitted.window,
    })
    report.pop("disagreements", None)
    return EvalJudgeResult(json_safe(report), judge_rows, jspec.judge_key, report["stopped"])


def labels_for_gold_file(store: Store, judge_rows: list[dict]) -> list[dict]:
    """The judge's labels with the ids of the gold file itself (paper item id in the orientation
    judged, or the pairs file's id), so `reliability --judgments OUT --gold GOLD_FILE` matches
    them; the store's id stays as comparison_id."""
    metas = comparison_meta(store, [r["id"] for r in judge_rows])

    def file_id(cid: str) -> str:
        meta = metas.get(cid, {}).get("meta") or {}
        return str(meta.get("gold_id") or meta.get("external_id") or cid)

    return [{"id": file_id(r["id"]), "comparison_id": int(r["id"]),
             **{k: r[k] for k in ("label", "p_a", "p_a_ab", "p_a_ba", "rater", "principle")}} for r in judge_rows]
