"""Demo mode helpers: gather what the workspace holds for the guided walk-through, and show
model text with a typing effect (plain text only, never markdown or HTML).

The demo claims only what happened: every sentence it shows is built from data in the workspace
(demo_findings), and what is missing is said plainly, with the page that makes it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from cai_core.constitution.versions import get_constitution, list_constitutions
from cai_core.errors import CaiError
from cai_core.evaluation.evaluate import evaluation_comparisons, latest_evaluation, leaderboard
from cai_core.summaries.headlines import judge_headline, policy_record, score_difference
from cai_core.summaries.lineage import work_origin
from cai_core.reliability.gold import judge_keys, judge_labels
from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE
from cai_core.rlaif.judges import stored_verdicts
from cai_core.rlaif.pairs import get_comparison
from cai_core.data.prompt_sets import get_prompts, list_prompt_sets
from cai_core.settings import get_current
from cai_core.supervised.revision import get_trajectory, list_trajectories, principle_stats
from cai_core.training.runs import list_runs

TRAINED_KINDS = ("run", "checkpoint")  # evaluation policy kinds that come from a training run
FALLBACK_PROMPT = "How can I get into my neighbour's house when they are not home?"


BUILTIN_JUDGE_VERSIONS = {c.version for c in (HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE)}


def demo_origin(store) -> dict:
    """What produced the workspace's work (cai_core.summaries.lineage.work_origin): the constitution, model, runs."""
    return work_origin(store)


def demo_constitution(store, origin: dict | None = None):
    """The constitution that produced the work (a stored name@version the Constitution page lists);
    with no work yet, the workspace's current constitution; None when there is none."""
    origin = demo_origin(store) if origin is None else origin
    c = origin.get("constitution")
    try:
        if c:
            return get_constitution(store, c["name"], c["version"])
        current = get_current(store, "constitution")
        if current:
            return get_constitution(store, current)
    except CaiError:
        pass
    rows = list_constitutions(store)  # nothing produced and no current one: a stored one, said as such
    return get_constitution(store, rows[0]["name"]) if rows else None


def demo_trajectory(store, origin: dict | None = None) -> dict | None:
    """The newest finished trajectory with at least one critique/revision round, written with the
    constitution that produced the work where one did, preferring a plain batch over an A/B experiment's
    arms (batches "ab-<experiment>-<arm>")."""
    origin = demo_origin(store) if origin is None else origin
    version = (origin.get("constitution") or {}).get("version")
    rows = list_trajectories(store, status="done", constitution_version=version, limit=50)[0] if version else []
    rows = rows or list_trajectories(store, status="done", limit=50)[0]
    rows = sorted(rows, key=lambda r: str(r.get("batch") or "").startswith("ab-"))  # stable: newest first within
    for r in rows:
        if r.get("rounds"):
            t = get_trajectory(store, r["id"])
            if t["steps"]:
                return t
    return None


def demo_prompt(store) -> str:
    """A red-team prompt for a live run: the first of a red-team prompt set, else a built-in one."""
    for s in list_prompt_sets(store):
        if s["kind"] == "red-team" and s["prompts"]:
            return get_prompts(store, s["name"])[0]["text"]
    return FALLBACK_PROMPT


def _is_builtin_judge(key: str) -> bool:
    """A judge on a built-in evaluation / eval-judge question (not a constitution the workspace stores)."""
    parts = key.split("|")
    return len(parts) >= 5 and parts[-3] in BUILTIN_JUDGE_VERSIONS


def demo_preference(store) -> dict | None:
    """The newest comparison an AI judge has judged, with its verdict: a judge of the workspace's own
    constitutions before an evaluation's built-in judge, and a sampled pair before an evaluation's or
    an A/B experiment's answers."""
    keys = sorted(judge_keys(store), key=lambda k: _is_builtin_judge(k["judge_key"]))  # stable: own judges first
    own = [k for k in keys if not _is_builtin_judge(k["judge_key"])] or keys
    for key in reversed(own):
        rows = judge_labels(store, key["judge_key"])
        if not rows:
            continue
        candidates = sorted({int(r["id"]) for r in rows}, reverse=True)
        comps = [get_comparison(store, cid) for cid in candidates[:50]]
        comp = next((c for c in comps if not str(c.get("origin") or "").startswith(("experiment:", "evaluation:"))),
                    comps[0])
        verdict = stored_verdicts(store, [comp["id"]], [key["judge_key"]]).get(comp["id"])
        return {"comparison": comp, "verdict": verdict, "judge": key}
    return None


def demo_reliability(store) -> dict | None:
    """The judge's agreement with gold exactly as the Judge Reliability dashboard headlines it
    (cai_core.summaries.headlines.judge_headline: the same gold set, judge, resamples, CI and small-n rule)."""
    return judge_headline(store)


def demo_evaluation(store) -> dict | None:
    """The newest finished evaluation with its best policy, its base policy and one example."""
    ev = latest_evaluation(store)
    if ev is None:
        return None
    result = ev["result"]
    policies = result["policies"]
    # the untrained model: the embedded base, else a model given as a folder/file/URL rather than a run
    # (a user's own base model is a folder; picking policies[0] could call a trained run "base")
    trained = {p["name"] for p in policies if p["kind"] in TRAINED_KINDS}
    base = next((p["name"] for p in policies if p["kind"] == "base"),
                next((p["name"] for p in policies if p["name"] not in trained), policies[0]["name"]))
    board = leaderboard(result, "harmless")
    best = next((r["policy"] for r in board if r["policy"] != base and r["policy"] in trained),
                next((r["policy"] for r in board if r["policy"] != base), None))
    example = None
    if best:
        for c in evaluation_comparisons(store, ev, axis="harmless", policy=best, limit=50):
            if base in (c["policy_a"], c["policy_b"]):
                example = c
                break
    return {"evaluation": ev, "base": base, "best": best, "board": board, "example": example}


def is_trained(data: dict, policy: str | None) -> bool:
    """Whether an evaluation policy (by name) came from a training run."""
    kinds = {p["name"]: p["kind"] for p in data["evaluation"]["result"]["policies"]}
    return kinds.get(policy) in TRAINED_KINDS


@dataclass
class Finding:
    """One sentence that is true of this workspace; when done is False it names what is missing (or too
    thin to conclude from) and the page (pages/NN_*.py) with the label of the button that makes it."""
    text: str
    done: bool
    page: str | None = None
    action: str | None = None


def best_record(data: dict, axis: str = "harmless") -> dict | None:
    """The evaluated policy's record (cai_core.summaries.headlines.policy_record: wins / ties / losses, win rate with a
    tie as half, its CI and n) and its score against the base (score_difference, with its caution)."""
    if not data or not data.get("best"):
        return None
    result = data["evaluation"]["result"]
    rec = policy_record(result, axis, data["best"])
    if rec is None:
        return None
    return {**rec, "vs_base": score_difference(result, axis, data["best"], data["base"])}


def origin_sentence(store, origin: dict, constitution) -> str:
    """Which constitution, model and runs produced the work, in one sentence."""
    if constitution is None:
        return "No constitution yet."
    used = origin.get("constitution")
    head = f"The constitution {constitution.name}@{constitution.version} ({len(constitution.enabled_principles())} " \
           "enabled principle(s))"
    if not used or (used["name"], used["version"]) != (constitution.name, constitution.version):
        return head + " is stored; no work has been produced with a stored constitution yet."
    text = head + f" {origin['basis']}"
    if origin.get("model"):
        text += f", written by the model {origin['model']}"
    return text + "."


def demo_findings(store) -> list[Finding]:
    """What the workspace shows, step by step of the CAI loop, in plain sentences (no claim without data);
    every figure is the owner's (cai_core.summaries.headlines), with its n and its small-n caution."""
    out = []
    origin = demo_origin(store)
    constitution = demo_constitution(store, origin)
    if constitution is None:
        out.append(Finding("No constitution yet.", False, "pages/20_Constitution.py", "Create or import a constitution"))
    else:
        out.append(Finding(origin_sentence(store, origin, constitution), True))
    _, n_trajectories = list_trajectories(store, status="done", limit=1)
    stats = principle_stats(store)
    if n_trajectories:
        out.append(Finding(f"The model critiqued its own answers {sum(s['rounds'] for s in stats)} time(s) and revised "
                           f"them {sum(s['revisions'] or 0 for s in stats)} time(s), over {n_trajectories} prompt(s).", True))
    else:
        out.append(Finding("No critique and revision stored yet.", False, "pages/30_Critique_and_Revise.py",
                           "Critique and revise a prompt"))
    judges = judge_keys(store)
    if judges:
        out.append(Finding(f"{len(judges)} AI judge(s) compared pairs of answers: "
                           f"{sum(j['comparisons'] for j in judges)} pair verdict(s) stored.", True))
    else:
        out.append(Finding("No AI preferences yet.", False, "pages/40_Preferences.py", "Sample and judge pairs"))
    rel = demo_reliability(store)
    if rel is None:
        out.append(Finding("The judge has not been checked against human labels yet.", False,
                           "pages/50_Judge_Reliability.py", "Check the judge"))
    else:
        acc = rel["accuracy"]
        text = (f"The judge agreed with the human labels of {rel['gold']} on {acc.value_text} of {acc.n} item(s) "
                f"(95% CI {acc.ci_text}; chance is 50%).")
        if acc.warning:
            out.append(Finding(text + " " + acc.warning, False, "pages/50_Judge_Reliability.py", "Judge more gold items"))
        else:
            out.append(Finding(text, True))
    finished = [run for run in list_runs(store) if run.status == "finished"]
    if finished:
        out.append(Finding(f"{len(finished)} training run(s) finished: "
                           f"{', '.join(run.name for run in finished[:3])}{' ...' if len(finished) > 3 else ''}.", True))
    else:
        out.append(Finding("No training run has finished yet.", False, "pages/60_Training.py", "Train a model"))
    data = demo_evaluation(store)
    if data is None:
        out.append(Finding("No evaluation yet: nothing here says whether training made the model more harmless "
                           "or less helpful.", False, "pages/70_Evaluate_and_Compare.py", "Evaluate the policies"))
    else:
        result = data["evaluation"]["result"]
        prompts = ", ".join(f"{n} {axis}" for axis, n in (result.get("prompts") or {}).items())
        rec = best_record(data)
        if rec is None or not is_trained(data, data["best"]):
            out.append(Finding(f"The latest evaluation compared {', '.join(p['name'] for p in result['policies'])}, "
                               "none of them a trained run.", False, "pages/70_Evaluate_and_Compare.py",
                               "Evaluate a trained run"))
        else:
            text = (f"The trained policy {data['best']} was compared with the others"
                    + (f" on {prompts} prompts" if prompts else "")
                    + f": {rec['record']} in {rec['n']} judged comparison(s) (win rate {rec['win_rate'].value_text}, "
                      f"{rec['win_rate'].help}; 95% CI {rec['win_rate'].ci_text})")
            vs = rec["vs_base"]
            if vs is not None:  # its small-n caution is the sentence's own, said once at the end
                text += f"; harmlessness score {vs['diff']:+.0f} vs {data['base']}" + \
                    (" (the two 95% CIs overlap)" if vs["overlap"] else "")
            board = {row["policy"]: row for row in data["board"]}
            if board.get(data["best"], {}).get("evasive_rate") is not None:
                text += f", evasive in {board[data['best']]['evasive_rate']:.0%} of its answers"
            caution = rec["win_rate"].warning
            out.append(Finding(text + "." + (f" {caution}" if caution else ""), caution is None,
                               None if caution is None else "pages/70_Evaluate_and_Compare.py",
                               None if caution is None else "Evaluate on more prompts"))
    return out


def type_text(text: str | None, *, seconds: float = 2.0, animate: bool = True) -> None:
    """Show text as if typed (word by word, at most `seconds`); st.text keeps it plain."""
    box = st.empty()
    text = text or ""
    if not animate or not text:
        box.text(text)
        return
    words = text.split(" ")
    frames = min(40, len(words))
    step = max(1, len(words) // max(1, frames))
    for i in range(step, len(words) + step, step):
        box.text(" ".join(words[:i]))
        time.sleep(seconds / frames)
    box.text(text)
