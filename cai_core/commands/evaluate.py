"""`evaluate`: compare policies on held-out red-team (and helpfulness) prompts with an AI judge."""
from __future__ import annotations

import json
import sys

from cai_core.commands._common import add_command, add_n_boot, output_file
from cai_core.errors import CaiError
from cai_core.evaluation.evaluate import leaderboard, run_evaluation, validate_spec
from cai_core.jobs import JobReporter
from cai_core.jobs.specs import EvaluateSpec
from cai_core.models.dispatch import BATCH_SIZE_HELP, check_batch_size
from cai_core.rlaif.judge_defaults import JUDGE_STYLE_CHOICES
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(
        sub, "evaluate", "compare policies: judged win rates, Bradley-Terry/Elo scores, evasiveness",
        description="Every policy answers the same prompts (same seed); every pair of policies is judged on every "
                    "prompt in both orders. Red-team prompts are judged for harmlessness, --helpful-prompts for "
                    "helpfulness. Re-running with the same --name resumes.")
    p.add_argument("--policies", nargs="+", required=True,
                   help="space- or comma-separated policy specs, each SPEC or NAME=SPEC; SPEC: default | run:RUN | "
                        "run:RUN/checkpoint-N | model folder (merged or LoRA adapter) | file.gguf | http://host:port/v1")
    p.add_argument("--prompts", required=True, help="red-team prompts: stored prompt set name or JSONL/CSV/TXT file")
    p.add_argument("--judge-model", required=True, help="the judge: default | folder | hf:ID | http://host:port/v1")
    p.add_argument("--helpful-prompts", default=None, help="helpfulness prompts (set name or file), judged for helpfulness")
    p.add_argument("--judge-constitution", default=None,
                   help="harmlessness comparison principles: constitution file or stored NAME[@VERSION] "
                        "(default: the paper's harmlessness question)")
    p.add_argument("--judge-style", choices=JUDGE_STYLE_CHOICES, default="auto",
                   help="auto: multiple-choice log-probs where the judge offers them, else a parsed verdict")
    p.add_argument("--checkpoints", action="store_true", help="also evaluate every checkpoint-N folder of run policies")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    p.add_argument("--tie-margin", type=float, default=0.0,
                   help="|P(A) - 0.5| at or below this counts as a tie (a verdict that flips with the order always does)")
    add_n_boot(p)
    p.add_argument("--name", default=None, help="evaluation name (default eval-<date>-<time>); the same name resumes")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    p.set_defaults(func=cmd_evaluate)


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_summary(result: dict) -> None:
    for axis in ("harmless", "helpful"):
        rows = leaderboard(result, axis)
        if not rows:
            continue
        print(f"\n{axis}: {result['axes'][axis]['judged']} judged comparisons, "
              f"{result['axes'][axis]['invalid']} invalid")
        print(f"  {'policy':24s} {'BT (Elo scale)':>24s} {'win rate':>22s} {'W/T/L':>17s} {'evasive':>8s}")
        for r in rows:
            bt = f"{_fmt(r['bt_score'])} [{_fmt(r['bt_ci_low'])}, {_fmt(r['bt_ci_high'])}]"
            wr = f"{_fmt(r['win_rate'], 2)} [{_fmt(r['win_rate_ci_low'], 2)}, {_fmt(r['win_rate_ci_high'], 2)}]"
            wtl = f"{_fmt(r['win'], 2)}/{_fmt(r['tie'], 2)}/{_fmt(r['loss'], 2)}"
            print(f"  {r['policy'][:24]:24s} {bt:>24s} {wr:>22s} {wtl:>17s} {_fmt(r['evasive_rate'], 2):>8s}")


def cmd_evaluate(args) -> int:
    store = open_store(args.workspace)
    check_batch_size(args.batch_size)
    if args.n_boot < 10:
        raise CaiError("--n-boot must be at least 10")
    out = output_file(args.out)
    spec = EvaluateSpec.from_args(args)
    validate_spec(store, spec)  # every bad input fails here, before anything is written
    reporter = JobReporter(store, args.job_id, None)

    def progress(done: int, total: int, message: str) -> None:
        reporter.progress(done, total, message, force=done >= total)
        if not args.json:
            print(f"[{done}/{total}] {message}", file=sys.stderr)

    res = run_evaluation(store, spec, progress=progress, should_stop=lambda: reporter.should_stop, job_id=args.job_id)
    summary = {"evaluation_id": res["id"], "name": res["name"], "stopped": bool(res.get("stopped"))}
    reporter.finish(summary)
    if res.get("stopped"):
        print(f"evaluation {res['name']!r} stopped; run the same command again to resume")
        return 0
    if out is not None:
        out.write_text(json.dumps(res["result"], indent=2, ensure_ascii=False), encoding="utf-8")
    check = res["result"].get("contamination") or {}
    if check.get("flagged"):
        print(f"warning: {check['flagged']} of {check['checked']} evaluation prompts also occur in training "
              f"export(s) {', '.join(check['exports'])} (contamination; see \"contamination\" in the result)",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"id": res["id"], **res["result"]}, ensure_ascii=False))
    else:
        print(f"evaluation {res['id']} {res['name']!r}")
        print_summary(res["result"])
    return 0
