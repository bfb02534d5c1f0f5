"""Constitution A/B experiments: did a change of wording matter?

Same prompts, same model, same seeds and settings, two constitution versions (or two wordings of
one principle, saved as two versions). The critique -> revision engine runs each arm; then, per
prompt, the two arms are compared: whether the final answers (and which rounds' revisions)
differ, evasiveness of each final answer, edit size (words changed from the initial answer),
the share of critiques that found a violation, and optionally an AI judge's preference between
the two final answers (both orders). Each difference B - A gets a paired bootstrap CI (prompts
resampled with both arms together), so a researcher sees whether it is more than noise.

Per-principle attribution: the principles whose text changed between the versions (or that were
added or removed) are listed; for each, the prompts whose trajectories used it in a round are
compared separately, next to the prompts that never met a changed principle.

Note: with the paper's random schedule the principle of each round is drawn per trajectory (the
draw depends on the constitution version), so the arms may use different principles on the same
prompt; schedule "sequence" or "all" keeps the rounds aligned.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Callable

from cai_core.constitution.model import Constitution
from cai_core.constitution.spec import resolve_constitution
from cai_core.constitution.versions import save_constitution
from cai_core.errors import CaiError
from cai_core.evaluation.evaluate import evaluation_row, outcome_of
from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, check_style, resolve_style
from cai_core.evaluation.evasiveness import detect
from cai_core.evaluation.stats import (
    MIN_PAIRS_FOR_SIGNIFICANCE,
    bootstrap_ci,
    paired_bootstrap_diff,
    win_tie_loss,
)
from cai_core.jobs.specs import ABExperimentSpec
from cai_core.models.bounds import fit_prompts
from cai_core.models.dispatch import check_batch_size
from cai_core.models.specs import get_backend
from cai_core.data.prompt_sets import resolve_prompts
from cai_core.rlaif.judges import JudgeSpec, check_can_judge, judge_pairs
from cai_core.rlaif.pairs import add_pairs
from cai_core.store import Store, dumps, now
from cai_core.supervised.revision import (
    ReviseSettings,
    as_prompt_items,
    get_trajectories,
    run_revision,
)
from cai_core.data.textdiff import edit_distance_words

KIND = "ab-experiment"
PRINCIPLE_FIELDS = ("name", "critique_request", "revision_request", "comparison_question", "enabled")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Progress = Callable[[int, int, str], None]


def principle_changes(a: Constitution, b: Constitution) -> dict:
    """Principles changed (same id, different text), added (only in B) and removed (only in A)."""
    pa = {p.id: p for p in a.principles}
    pb = {p.id: p for p in b.principles}
    changed = {}
    for pid in pa.keys() & pb.keys():
        fields = [f for f in PRINCIPLE_FIELDS if getattr(pa[pid], f) != getattr(pb[pid], f)]
        if fields:
            changed[pid] = fields
    return {
        "changed": dict(sorted(changed.items())),
        "added": sorted(pb.keys() - pa.keys()),
        "removed": sorted(pa.keys() - pb.keys()),
        "few_shot_changed": [asdict(f) for f in a.few_shot] != [asdict(f) for f in b.few_shot],
    }


def validate_ab(store: Store, spec: ABExperimentSpec):
    """Resolve and check everything before any work; returns (constitution A, B, prompts, settings)."""

    if spec.name is not None and not _NAME.match(spec.name):
        raise CaiError(f"invalid experiment name {spec.name!r}: 1-64 letters, digits, '.', '_' or '-'")
    check_batch_size(spec.batch_size)
    check_style(spec.judge_style)
    ca = resolve_constitution(store, spec.constitution_a)
    cb = resolve_constitution(store, spec.constitution_b)
    ca.validate(where=spec.constitution_a)
    cb.validate(where=spec.constitution_b)
    if ca.version == cb.version:
        raise CaiError(f"both arms are the same constitution version ({ca.version}); change a wording and save it "
                       "as a new version first")
    items = as_prompt_items(resolve_prompts(store, spec.prompts, limit=spec.limit)[0])
    settings = ReviseSettings(rounds=spec.rounds, schedule=spec.schedule,
                              sequence=ReviseSettings.parse_sequence(spec.sequence), cot=spec.cot,
                              few_shot=not spec.no_few_shot, seed=spec.seed, max_new_tokens=spec.max_new_tokens,
                              temperature=spec.temperature, top_p=spec.top_p)
    settings.validate(ca)
    settings.validate(cb)
    if spec.judge_constitution and not spec.judge_model:
        raise CaiError("--judge-constitution needs --judge-model")
    if spec.judge_constitution:
        check_can_judge(resolve_constitution(store, spec.judge_constitution))
    return ca, cb, items, settings


def _arm_metrics(traj: dict) -> dict:
    final = traj.get("final") or ""
    initial = traj.get("initial") or ""
    steps = traj.get("steps") or []
    verdicts = [s["violation"] for s in steps if s.get("violation") is not None]
    v = detect(final)
    return {
        "trajectory_id": traj["id"],
        "principles": [s["principle_id"] for s in steps],
        "final": final,
        "evasive": v.evasive,
        "evasive_reason": v.reason,
        "edit_words": edit_distance_words(initial, final),
        "violation_rate": (sum(verdicts) / len(verdicts)) if verdicts else None,
    }


def _paired(a: list, b: list, n_boot: int, seed: int) -> dict | None:
    """Paired bootstrap of B - A over items where both are known."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    r = paired_bootstrap_diff([y for _, y in pairs], [x for x, _ in pairs], n_boot=n_boot, seed=seed)
    r["mean_a"], r["mean_b"] = r["mean_b"], r["mean_a"]  # the helper's first argument is B here
    return r


def _group_metrics(items: list[dict], n_boot: int, seed: int) -> dict:
    out = {
        "n": len(items),
        "evasive": _paired([float(i["a"]["evasive"]) for i in items], [float(i["b"]["evasive"]) for i in items], n_boot, seed),
        "edit_words": _paired([i["a"]["edit_words"] for i in items], [i["b"]["edit_words"] for i in items], n_boot, seed),
        "violation_rate": _paired([i["a"]["violation_rate"] for i in items], [i["b"]["violation_rate"] for i in items],
                                  n_boot, seed),
        "judge_pref_b": None,
    }
    prefs = [i.get("pref_b") for i in items]
    if any(p is not None for p in prefs):
        # B's score (1 win, 0.5 tie, 0 loss) against A's (1 - B's): the difference is P(B preferred) - P(A preferred)
        out["judge_pref_b"] = _paired([None if p is None else 1.0 - p for p in prefs], prefs, n_boot, seed)
        out["judge_wtl_b"] = win_tie_loss([p for p in prefs if p is not None], n_boot=n_boot, seed=seed)
    differs = [1.0 if i["final_differs"] else 0.0 for i in items]
    out["final_differs"] = {"rate": sum(differs) / len(differs) if differs else None,
                            "ci": list(bootstrap_ci(differs, n_boot=n_boot, seed=seed)) if differs else [None, None]}
    return out


def _judge_finals(store: Store, spec: ABExperimentSpec, name: str, items: list[dict], job_id: int | None,
                  progress: Progress | None, should_stop) -> None:
    """Judge final A vs final B per prompt (both orders); sets item["pref_b"] (1 B better, 0.5 tie, 0 A better)."""

    constitution = resolve_constitution(store, spec.judge_constitution) if spec.judge_constitution else HARMLESS_JUDGE
    backend = get_backend(spec.judge_model, store.workspace)
    style = resolve_style(spec.judge_style, backend)
    pairs = []
    for it in items:
        if not it["final_differs"]:
            it["pref_b"] = 0.5
            continue
        pairs.append({"id": str(it["index"]), "prompt": it["prompt"], "response_a": it["a"]["final"],
                      "response_b": it["b"]["final"], "category": it["category"], "policy_a": "A", "policy_b": "B",
                      "meta": {"trajectory_a": it["a"]["trajectory_id"], "trajectory_b": it["b"]["trajectory_id"]},
                      "item": it})
    ids = add_pairs(store, [{k: v for k, v in p.items() if k != "item"} for p in pairs],
                    origin=f"experiment:{name}", batch=name, split="eval") if pairs else []
    for p, cid in zip(pairs, ids):
        p["item"]["comparison_id"] = cid
    pairs = [{"id": str(cid), "comparison_id": cid, "prompt": p["prompt"], "response_a": p["response_a"],
              "response_b": p["response_b"]} for p, cid in zip(pairs, ids)]
    if not pairs:
        return
    jspec = JudgeSpec(model=spec.judge_model, style=style, principles="random", swap=True, seed=spec.seed,
                      batch_size=spec.batch_size)
    verdicts = {v.comparison_id: v for v in judge_pairs(backend, jspec, constitution, pairs, store=store,
                                                         progress=progress, should_stop=should_stop, job_id=job_id)}
    for it in items:
        cid = it.get("comparison_id")
        if cid is not None:
            o = outcome_of(verdicts.get(cid))
            it["pref_b"] = None if o is None else 1.0 - o
            v = verdicts.get(cid)
            it["judge_p_a"] = v.p_a if v else None


def run_ab_experiment(store: Store, spec: ABExperimentSpec, *, progress: Progress | None = None,
                      should_stop: Callable[[], bool] | None = None, job_id: int | None = None) -> dict:
    """Run both arms (resumable), compare them, store and return {id, name, result}."""

    ca, cb, prompt_items, settings = validate_ab(store, spec)
    name = spec.name or time.strftime("ab-%Y%m%d-%H%M%S")
    backend = get_backend(spec.model, store.workspace)
    fit_prompts(backend, [getattr(it, "text", it) for it in prompt_items],
                max_new_tokens=settings.max_new_tokens)  # a prompt too long is refused before either arm runs
    for c, src in ((ca, spec.constitution_a), (cb, spec.constitution_b)):
        save_constitution(store, c, note=f"used by A/B experiment {name} ({src})")
    exp_id = evaluation_row(store, name, KIND, spec, job_id)

    # one progress bar over the whole experiment: arm A's steps, then arm B's, then the judging
    # (at most both orders of every prompt), instead of a bar that fills up once per phase
    judge_units = 2 * len(prompt_items) if spec.judge_model else 0
    arm_units = {"A": 0, "B": 0}

    arms = {}
    for label, c in (("A", ca), ("B", cb)):
        def arm_progress(done: int, total: int, msg: str, _label=label) -> None:
            arm_units[_label] = total
            if progress:
                before = arm_units["A"] if _label == "B" else 0
                progress(before + done, 2 * total + judge_units, f"arm {_label}: {msg}")

        ids = run_revision(store, backend, c, prompt_items, settings, spec.model, batch=f"ab-{name}-{label}",
                           origin=f"experiment:{name}", job_id=job_id, batch_size=spec.batch_size, progress=arm_progress, should_stop=should_stop)
        if should_stop and should_stop():
            return {"id": exp_id, "name": name, "result": None, "stopped": True}
        arms[label] = get_trajectories(store, ids)

    changes = principle_changes(ca, cb)
    touched_ids = set(changes["changed"]) | set(changes["added"]) | set(changes["removed"])
    items = []
    for k, (pi, ta, tb) in enumerate(zip(prompt_items, arms["A"], arms["B"])):
        a, b = _arm_metrics(ta), _arm_metrics(tb)
        steps_a = {s["round"]: s for s in ta["steps"]}
        steps_b = {s["round"]: s for s in tb["steps"]}
        rounds_differ = [r for r in sorted(set(steps_a) | set(steps_b))
                         if (steps_a.get(r) or {}).get("revision") != (steps_b.get(r) or {}).get("revision")]
        used = set(a["principles"]) | set(b["principles"])
        items.append({
            "index": k, "prompt": pi.text, "category": pi.category, "a": a, "b": b,
            "final_differs": a["final"] != b["final"], "rounds_differ": rounds_differ,
            "changed_principles_used": sorted(used & touched_ids),
            "same_plan": a["principles"] == b["principles"], "pref_b": None,
        })
    if spec.judge_model:
        arms_done = arm_units["A"] + arm_units["B"]

        def judge_progress(done: int, total: int | None, msg: str) -> None:
            if progress:
                progress(arms_done + done, arms_done + (total or done), f"judging: {msg}")

        _judge_finals(store, spec, name, items, job_id, judge_progress, should_stop)
        if should_stop and should_stop():
            return {"id": exp_id, "name": name, "result": None, "stopped": True}

    attribution = []
    for pid in sorted(touched_ids):
        group = [it for it in items if pid in it["changed_principles_used"]]
        status = "changed" if pid in changes["changed"] else ("added" if pid in changes["added"] else "removed")
        attribution.append({
            "principle": pid, "status": status, "fields": changes["changed"].get(pid, []),
            "rounds_a": sum(it["a"]["principles"].count(pid) for it in items),
            "rounds_b": sum(it["b"]["principles"].count(pid) for it in items),
            "metrics": _group_metrics(group, spec.n_boot, spec.seed) if group else None,
        })
    untouched = [it for it in items if not it["changed_principles_used"]]
    result = {
        "name": name,
        "constitution_a": {"name": ca.name, "version": ca.version, "source": spec.constitution_a},
        "constitution_b": {"name": cb.name, "version": cb.version, "source": spec.constitution_b},
        "model": spec.model,
        "settings": asdict(settings),
        "judge_model": spec.judge_model,
        "principle_changes": changes,
        "prompts": len(items),
        "metrics": _group_metrics(items, spec.n_boot, spec.seed),
        "attribution": attribution,
        "untouched": _group_metrics(untouched, spec.n_boot, spec.seed) if untouched else None,
        "same_plan_share": sum(it["same_plan"] for it in items) / len(items) if items else None,
        "items": items,
        "finished_at": now(),
    }
    store.execute("UPDATE evaluations SET result_json=? WHERE id=?", (dumps(result), exp_id))
    return {"id": exp_id, "name": name, "result": result}


def experiment_table(result: dict) -> list[dict]:
    """The headline rows: metric, A, B, B - A with its CI, and whether the CI excludes 0."""
    labels = {"evasive": "evasive share", "edit_words": "edit size (words)",
              "violation_rate": "critiques finding a violation", "judge_pref_b": "judge: net preference for B"}
    rows = []
    for key, label in labels.items():
        m = (result or {}).get("metrics", {}).get(key)
        if not m:
            continue
        too_few = m["n"] < MIN_PAIRS_FOR_SIGNIFICANCE  # also for results stored before the rule
        rows.append({"metric": label, "A": m["mean_a"], "B": m["mean_b"], "B - A": m["diff"],
                     "ci_low": m["ci"][0], "ci_high": m["ci"][1], "n": m["n"],
                     "significant": m["significant"] and not too_few, "too_few": too_few})
    return rows
