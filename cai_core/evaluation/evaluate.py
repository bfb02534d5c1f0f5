"""Evaluation: did the constitution and the training make the policy more harmless without
making it evasive or less helpful?

Policies (the base model, a run's output folder or one of its checkpoints, an OpenAI-compatible
endpoint) answer the same held-out prompts with the same seed. Every pair of policies is then
compared on every prompt by an AI judge in both orders (judges.judge_pairs): on red-team prompts
with a harmlessness comparison principle, on helpfulness prompts with a helpfulness principle.
From the verdicts come win/tie/loss rates with bootstrap CIs, Bradley-Terry scores (on the Elo
scale, with CIs) and sequential Elo, per axis and per prompt category; every answer also goes
through the evasiveness detector. The two BT scores give the paper's picture: harmlessness
against helpfulness, one point per policy or checkpoint.

Answers are cached in `eval_answers` and comparisons/judgments are unique per content, so a killed
evaluation resumes where it stopped. The result is one row of `evaluations` (kind "policies"); the
comparisons are stored by the one writer (pairs.add_pairs) with origin "evaluation:<name>" and split
"eval" (never in a training export by default) and can be opened side by side. Prompts that also
occur in a training export are flagged (`contamination`, by prompt hash).
"""
from __future__ import annotations

import time
from itertools import combinations
from typing import Callable

from cai_core.constitution.model import Constitution
from cai_core.constitution.spec import resolve_constitution
from cai_core.errors import CaiError
from cai_core.label_rule import TIE_MARGIN, counted_label, label_from_p, outcome
from cai_core.evaluation.answers import generate_answers
from cai_core.evaluation.evasiveness import detect
from cai_core.evaluation.policies import NAME_PATTERN, Policy, parse_policies
from cai_core.exports import exports_containing, prompt_hash
from cai_core.evaluation.stats import bootstrap_ci, bradley_terry_ci, elo, win_tie_loss
from cai_core.jobs.specs import EvaluateSpec, JobSpec
from cai_core.models.backends.base import GenerationParams
from cai_core.models.specs import get_backend, recorded_model
from cai_core.data.prompt_sets import resolve_prompts
from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, HELPFUL_JUDGE, check_style, resolve_style
from cai_core.rlaif.judges import JudgeSpec, check_can_judge, judge_pairs, stored_verdicts
from cai_core.rlaif.pairs import add_pairs
from cai_core.store import Store, dumps, loads, now

Progress = Callable[[int, int, str], None]


KIND = "policies"


AXES = ("harmless", "helpful")


# -- prompts -----------------------------------------------------------------------------------
def load_eval_prompts(store: Store, source: str, limit: int | None = None) -> list[dict]:
    """Prompts in the one prompts grammar (prompt_sets.resolve_prompts): [{"text", "category"}]."""
    items, _ = resolve_prompts(store, source, limit=limit)
    return [{"text": it["text"], "category": it.get("category")} for it in items]


# -- comparisons -------------------------------------------------------------------------------
def _store_comparisons(store: Store, name: str, axis: str, rows: list[dict]) -> list[int]:
    """Store (or find) the comparisons of one axis through the one writer (pairs.add_pairs), origin
    evaluation:<name>, split eval; returns their ids in order."""
    pairs = [{"id": f"{axis}-{r['prompt_index']}-{r['policy_a']}-{r['policy_b']}", "prompt": r["prompt"],
              "response_a": r["response_a"], "response_b": r["response_b"], "category": r["category"],
              "policy_a": r["policy_a"], "policy_b": r["policy_b"],
              "key_parts": [axis, r["policy_a"], r["policy_b"]],
              "meta": {"axis": axis, "prompt_index": r["prompt_index"]}} for r in rows]
    return add_pairs(store, pairs, origin=f"evaluation:{name}", batch=name, split="eval") if pairs else []


def outcome_of(verdict, tie_margin: float = TIE_MARGIN) -> float | None:
    """Score for policy A from a judge verdict by the one rule (label_rule): 1 win, 0 loss, 0.5 tie
    (flipped with the order, or P(A) within tie_margin of 0.5); None when every judgment was invalid."""
    if verdict is None or verdict.p_a is None:
        return None
    return outcome(counted_label(label_from_p(verdict.p_a, tie_margin), flipped=verdict.flipped))


def _judge_constitution(store: Store, value: str | None) -> Constitution:
    """The harmlessness judge's constitution: built-in when none is given, else the one grammar
    (constitution/spec.py: file | NAME | NAME@VERSION | hash)."""
    if not value:
        return HARMLESS_JUDGE
    return check_can_judge(resolve_constitution(store, value).validate(where=value))


def validate_spec(store: Store, spec: EvaluateSpec) -> tuple[list[Policy], dict[str, list[dict]], Constitution]:
    """Check everything before any work: policies, prompt sources, judge settings."""
    if spec.name is not None and not NAME_PATTERN.match(spec.name):
        raise CaiError(f"invalid evaluation name {spec.name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if spec.max_new_tokens < 1:
        raise CaiError("--max-new-tokens must be at least 1")
    if spec.temperature < 0:
        raise CaiError("--temperature must be >= 0")
    check_style(spec.judge_style)
    if not 0.0 <= spec.tie_margin < 0.5:
        raise CaiError("--tie-margin must be in [0, 0.5)")
    if not (spec.judge_model or "").strip():
        raise CaiError("an evaluation needs a judge model (--judge-model)")
    policies = parse_policies(spec.policies, store, spec.checkpoints)
    prompt_sets = {"harmless": load_eval_prompts(store, spec.prompts, spec.limit)}
    if spec.helpful_prompts:
        prompt_sets["helpful"] = load_eval_prompts(store, spec.helpful_prompts, spec.limit)
    return policies, prompt_sets, _judge_constitution(store, spec.judge_constitution)


def _axis_result(policies: list[Policy], rows: list[dict], outcomes: list[float | None], n_boot: int, seed: int) -> dict:
    names = [p.name for p in policies]
    matches = [(r["policy_a"], r["policy_b"], o) for r, o in zip(rows, outcomes) if o is not None]
    pairs = []
    for a, b in combinations(names, 2):
        scores = [o for r, o in zip(rows, outcomes) if o is not None and r["policy_a"] == a and r["policy_b"] == b]
        pairs.append({"a": a, "b": b, **win_tie_loss(scores, n_boot=n_boot, seed=seed)})
    per_policy = {}
    for n in names:
        own = [o if r["policy_a"] == n else 1.0 - o for r, o in zip(rows, outcomes)
               if o is not None and n in (r["policy_a"], r["policy_b"])]
        per_policy[n] = win_tie_loss(own, n_boot=n_boot, seed=seed)
    bt = bradley_terry_ci(matches, names, prior=1.0, n_boot=min(n_boot, 200), seed=seed)
    elo_scores = elo(matches, names, permutations=20, seed=seed)
    categories: dict[str, dict[str, list[float]]] = {}
    for r, o in zip(rows, outcomes):
        if o is None:
            continue
        cat = r["category"] or "uncategorised"
        categories.setdefault(cat, {}).setdefault(r["policy_a"], []).append(o)
        categories.setdefault(cat, {}).setdefault(r["policy_b"], []).append(1.0 - o)
    by_category = {cat: {n: {"n": len(v), "win_rate": sum(v) / len(v)} for n, v in per.items()}
                   for cat, per in sorted(categories.items())}
    return {
        "comparisons": len(rows),
        "judged": len(matches),
        "invalid": sum(1 for o in outcomes if o is None),
        "pairs": pairs,
        "policies": {n: {**per_policy[n], "bt": bt[n]["score"], "bt_ci": bt[n]["ci"], "elo": elo_scores[n]}
                     for n in names},
        "by_category": by_category,
    }


def evaluation_row(store: Store, name: str, kind: str, spec: JobSpec, job_id: int | None) -> int:
    """The id of the `evaluations` row of this name and kind (an evaluation or an A/B experiment),
    created or, when the same name resumes, updated: its spec is the job spec's JSON."""
    existing = store.one("SELECT id FROM evaluations WHERE name=? AND kind=?", (name, kind))
    if existing is not None:
        store.execute("UPDATE evaluations SET spec_json=?, job_id=COALESCE(?, job_id) WHERE id=?",
                      (dumps(spec.to_dict()), job_id, existing["id"]))
        return int(existing["id"])
    return int(store.execute(
        "INSERT INTO evaluations (name, kind, spec_json, result_json, job_id, created_at) VALUES (?,?,?,?,?,?) "
        "RETURNING id", (name, kind, dumps(spec.to_dict()), None, job_id, now())).fetchone()[0])


def run_evaluation(store: Store, spec: EvaluateSpec, *, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None, job_id: int | None = None) -> dict:
    """Generate, judge and score; store and return the evaluation (id, name, result)."""

    policies, prompt_sets, harmless_c = validate_spec(store, spec)
    name = spec.name or time.strftime("eval-%Y%m%d-%H%M%S")
    eval_id = evaluation_row(store, name, KIND, spec, job_id)

    n_prompts = sum(len(v) for v in prompt_sets.values())
    n_pairs = len(policies) * (len(policies) - 1) // 2
    total = n_prompts * len(policies) + n_prompts * n_pairs * 2
    done = 0

    def tick(k: int, msg: str) -> None:
        nonlocal done
        done += k
        if progress:
            progress(min(done, total), total, msg)

    def stopped() -> bool:
        return bool(should_stop and should_stop())

    stopped_result = {"id": eval_id, "name": name, "result": None, "stopped": True}
    params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                              top_p=spec.top_p, seed=spec.seed)
    answers: dict[str, dict[str, list[str | None]]] = {}
    answer_errors: list[str] = []   # answers whose request still failed after the backend's retries
    judge_counts: dict[str, dict] = {}
    for axis, items in prompt_sets.items():
        texts = [it["text"] for it in items]
        for p in policies:
            if stopped():  # before the next policy's model loads, on either axis
                return stopped_result
            answers.setdefault(axis, {})[p.name] = generate_answers(
                store, p, texts, params, batch_size=spec.batch_size, progress=tick, should_stop=should_stop,
                errors=answer_errors)
    if stopped():
        return stopped_result

    judge_backend = get_backend(spec.judge_model, store.workspace)
    style = resolve_style(spec.judge_style, judge_backend)
    axes_out: dict[str, dict] = {}
    evasiveness: dict[str, dict] = {}
    for axis, items in prompt_sets.items():
        if stopped():  # the next axis stores no comparisons after a Stop
            return stopped_result
        rows = []
        for k, it in enumerate(items):
            for a, b in combinations(policies, 2):
                ra, rb = answers[axis][a.name][k], answers[axis][b.name][k]
                if ra is None or rb is None:
                    continue
                rows.append({"prompt_index": k, "prompt": it["text"], "category": it["category"],
                             "policy_a": a.name, "policy_b": b.name, "response_a": ra, "response_b": rb})
        ids = _store_comparisons(store, name, axis, rows)
        constitution = harmless_c if axis == "harmless" else HELPFUL_JUDGE
        judge_spec = JudgeSpec(model=spec.judge_model, style=style, principles="random", swap=True,
                               seed=spec.seed, batch_size=spec.batch_size)
        to_judge = [{"id": str(cid), "comparison_id": cid, "prompt": r["prompt"], "response_a": r["response_a"],
                     "response_b": r["response_b"]} for cid, r in zip(ids, rows) if r["response_a"] != r["response_b"]]
        identical = len(rows) - len(to_judge)
        tick(identical * 2, f"{axis}: {identical} identical pairs are ties")
        base = done

        def judge_progress(d: int, t: int, msg: str, _base=base) -> None:
            nonlocal done
            done = _base + d
            if progress:
                progress(min(done, total), total, f"{axis}: {msg}")

        verdicts = judge_pairs(judge_backend, judge_spec, constitution, to_judge, store=store,
                               progress=judge_progress, should_stop=should_stop, job_id=job_id,
                               counts_out=judge_counts.setdefault(axis, {})) if to_judge else []
        by_id = {v.comparison_id: v for v in verdicts}
        outcomes = [0.5 if r["response_a"] == r["response_b"] else outcome_of(by_id.get(cid), spec.tie_margin)
                    for cid, r in zip(ids, rows)]
        axis_res = _axis_result(policies, rows, outcomes, spec.n_boot, spec.seed)
        axis_res["judge"] = {**judge_spec.to_dict(), "constitution": constitution.name,
                             "constitution_version": constitution.version}
        axis_res["comparison_ids"] = ids
        axis_res["flipped"] = sum(1 for v in verdicts if v.flipped)
        axes_out[axis] = axis_res
        for p in policies:
            evasiveness.setdefault(p.name, {})[axis] = _evasive_rate(answers[axis][p.name], spec.n_boot, spec.seed)
    if stopped():
        return stopped_result

    result = {
        "name": name,
        "contamination": contamination(store, {axis: [it["text"] for it in items] for axis, items in prompt_sets.items()}),
        "policies": [p.to_dict() for p in policies],
        # the label each policy's answers are stored under: its spec, or "<spec> [int8]" etc. (recorded_model)
        "policy_models": {p.name: recorded_model(p.spec, get_backend(p.spec, store.workspace)) for p in policies},
        "prompts": {axis: len(items) for axis, items in prompt_sets.items()},
        "axes": axes_out,
        "evasiveness": evasiveness,
        "points": _points(policies, axes_out, evasiveness),
        "generation": params.to_dict(),
        # faults at scale: answers and judgments whose requests still failed (a re-run retries them)
        "failed": {"answers": len(answer_errors), "judgments": sum(c.get("failed", 0) for c in judge_counts.values()),
                   "errors": answer_errors[:5]},
        "finished_at": now(),
    }
    store.execute("UPDATE evaluations SET result_json=? WHERE id=?", (dumps(result), eval_id))
    return {"id": eval_id, "name": name, "result": result}


def _evasive_rate(texts: list[str | None], n_boot: int, seed: int) -> dict:
    flags = [1.0 if detect(t).evasive else 0.0 for t in texts if t is not None]
    if not flags:
        return {"n": 0, "evasive": 0, "rate": None, "ci": [None, None]}
    return {"n": len(flags), "evasive": int(sum(flags)), "rate": sum(flags) / len(flags),
            "ci": list(bootstrap_ci(flags, n_boot=n_boot, seed=seed))}


def _points(policies: list[Policy], axes: dict, evasiveness: dict) -> list[dict]:
    """One point per policy: harmlessness and helpfulness BT scores (Elo scale) and evasiveness."""
    out = []
    for p in policies:
        h = axes.get("harmless", {}).get("policies", {}).get(p.name)
        u = axes.get("helpful", {}).get("policies", {}).get(p.name)
        out.append({
            "policy": p.name, "kind": p.kind, "run": p.run, "step": p.step,
            "harmless": h["bt"] if h else None, "harmless_ci": h["bt_ci"] if h else [None, None],
            "helpful": u["bt"] if u else None, "helpful_ci": u["bt_ci"] if u else [None, None],
            "harmless_win_rate": h["win_rate"] if h else None,
            "helpful_win_rate": u["win_rate"] if u else None,
            "evasive_rate": evasiveness.get(p.name, {}).get("harmless", {}).get("rate"),
        })
    return out


# -- contamination -----------------------------------------------------------------------------
def contamination(store: Store, prompts_by_axis: dict[str, list[str] | dict[int, str]]) -> dict:
    """An evaluation's prompts that also occur in a training export (by prompt hash).

    {"checked": prompts checked, "flagged": how many occur in an export, "exports": their names,
     "prompts": [{"axis", "prompt_index", "prompt_hash", "prompt", "exports"}]}"""
    texts = {(axis, k): text for axis, items in prompts_by_axis.items()
             for k, text in (items.items() if isinstance(items, dict) else enumerate(items))}
    hashes = {where: prompt_hash(text) for where, text in texts.items()}
    found = exports_containing(store, hashes.values())
    flagged = [{"axis": axis, "prompt_index": k, "prompt_hash": h, "prompt": texts[(axis, k)], "exports": found[h]}
               for (axis, k), h in sorted(hashes.items()) if h in found]
    return {"checked": len(hashes), "flagged": len(flagged),
            "exports": sorted({n for f in flagged for n in f["exports"]}), "prompts": flagged}


def evaluation_contamination(store: Store, evaluation: dict) -> dict:
    """The contamination check of a stored evaluation, against the exports as they are now (an export
    made after the evaluation counts too); its prompts are read from its comparisons."""
    result = evaluation.get("result") or {}
    prompts_by_axis: dict[str, dict[int, str]] = {}
    for axis, res in (result.get("axes") or {}).items():
        ids = [int(c) for c in res.get("comparison_ids", [])]
        by_index: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in store.query(f"SELECT prompt, meta_json FROM comparisons WHERE id IN ({','.join('?' * len(chunk))})",
                                 chunk):
                by_index.setdefault(int((loads(r["meta_json"], {}) or {}).get("prompt_index", len(by_index))), r["prompt"])
        prompts_by_axis[axis] = by_index
    return contamination(store, prompts_by_axis)


# -- reading back ------------------------------------------------------------------------------
def list_evaluations(store: Store, kind: str | None = None) -> list[dict]:
    """Stored evaluations (and A/B experiments), newest first, without their full results."""
    sql = "SELECT id, name, kind, job_id, created_at, result_json IS NOT NULL AS finished FROM evaluations"
    params: tuple = ()
    if kind:
        sql += " WHERE kind=?"
        params = (kind,)
    return [dict(r) for r in store.query(sql + " ORDER BY created_at DESC, id DESC", params)]


def get_evaluation(store: Store, ref) -> dict:
    """One evaluation by id or name: {id, name, kind, spec, result, job_id, created_at}."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = store.one("SELECT * FROM evaluations WHERE id=?", (int(ref),))
    else:
        row = store.one("SELECT * FROM evaluations WHERE name=? ORDER BY id DESC LIMIT 1", (ref,))
    if row is None:
        raise CaiError(f"no evaluation {ref!r}")
    return {"id": row["id"], "name": row["name"], "kind": row["kind"], "spec": loads(row["spec_json"], {}),
            "result": loads(row["result_json"]), "job_id": row["job_id"], "created_at": row["created_at"]}


def leaderboard(result: dict, axis: str = "harmless") -> list[dict]:
    """Rows for a table: policy, BT score with CI, Elo, win/tie/loss, evasiveness; best first."""
    ax = (result or {}).get("axes", {}).get(axis)
    if not ax:
        return []
    rows = []
    for name, r in ax["policies"].items():
        ev = result.get("evasiveness", {}).get(name, {}).get(axis, {})
        rows.append({
            "policy": name, "bt_score": r["bt"], "bt_ci_low": r["bt_ci"][0], "bt_ci_high": r["bt_ci"][1],
            "elo": r["elo"], "win_rate": r["win_rate"], "win_rate_ci_low": r["win_rate_ci"][0],
            "win_rate_ci_high": r["win_rate_ci"][1], "win": r["win"], "tie": r["tie"], "loss": r["loss"],
            "n": r["n"], "evasive_rate": ev.get("rate"),
        })
    return sorted(rows, key=lambda r: -(r["bt_score"] if r["bt_score"] is not None else float("-inf")))


def evaluation_comparisons(store: Store, evaluation: dict, axis: str | None = None, policy: str | None = None,
                           limit: int = 200, offset: int = 0) -> list[dict]:
    """The comparisons of a finished evaluation with their verdicts (for side-by-side browsing).

    label: the judge's own verdict; counted_label: the outcome the leaderboard counts (outcome_of with
    the evaluation's tie margin: a verdict that flipped with the order, or within the margin, is a tie)."""

    result = evaluation.get("result") or {}
    ids: list[tuple[str, int]] = []
    for ax, res in (result.get("axes") or {}).items():
        if axis in (None, ax):
            ids.extend((ax, int(cid)) for cid in res.get("comparison_ids", []))
    rows = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found = {r["id"]: dict(r) for r in store.query(
            "SELECT id, prompt, response_a, response_b, category, policy_a, policy_b FROM comparisons "
            f"WHERE id IN ({','.join('?' * len(chunk))})", [cid for _, cid in chunk])}
        for ax, cid in chunk:
            r = found.get(cid)
            if r is None or (policy and policy not in (r["policy_a"], r["policy_b"])):
                continue
            rows.append({**r, "axis": ax})
    rows = rows[offset:offset + limit]
    verdicts = stored_verdicts(store, [r["id"] for r in rows]) if rows else {}
    tie_margin = float((evaluation.get("spec") or {}).get("tie_margin") or TIE_MARGIN)
    for r in rows:
        v = verdicts.get(r["id"])
        r["p_a"] = v.p_a if v else None
        r["label"] = "tie" if r["response_a"] == r["response_b"] else (v.label if v else None)
        r["flipped"] = v.flipped if v else False
        r["counted_label"] = r["label"] if r["label"] in (None, "tie") else counted_label(
            label_from_p(v.p_a, tie_margin), flipped=v.flipped)
        r["evasive_a"] = detect(r["response_a"]).evasive
        r["evasive_b"] = detect(r["response_b"]).evasive
    return rows


def latest_evaluation(store: Store, kind: str = KIND) -> dict | None:
    """The newest finished evaluation (or experiment), or None."""
    row = store.one("SELECT id FROM evaluations WHERE kind=? AND result_json IS NOT NULL ORDER BY created_at DESC, id DESC "
                    "LIMIT 1", (kind,))
    return get_evaluation(store, int(row["id"])) if row else None
