"""`ab-experiment`: two constitution versions, same prompts and seeds; did the change matter?"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cai_core.commands._common import add_command, add_n_boot
from cai_core.errors import CaiError
from cai_core.evaluation.experiments import experiment_table, run_ab_experiment, validate_ab
from cai_core.jobs import JobReporter
from cai_core.models.dispatch import BATCH_SIZE_HELP
from cai_core.jobs.specs import ABExperimentSpec
from cai_core.rlaif.judge_defaults import JUDGE_STYLE_CHOICES
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(
        sub, "ab-experiment", "compare two constitution versions on the same prompts with paired CIs",
        description="Runs critique -> revision with constitution A and with constitution B (same model, prompts, "
                    "seeds and settings), then compares the arms per prompt: changed revisions, evasiveness, edit "
                    "size, violations found and (with --judge-model) the judge's preference between the final "
                    "answers, each difference with a paired bootstrap CI; and per changed principle. "
                    "Re-running with the same --name resumes.")
    p.add_argument("--constitution-a", required=True, help="constitution file or stored NAME[@VERSION] (arm A)")
    p.add_argument("--constitution-b", required=True, help="constitution file or stored NAME[@VERSION] (arm B)")
    p.add_argument("--prompts", required=True, help="prompt set name or JSONL/CSV/TXT file")
    p.add_argument("--model", default="default", help="the model that answers, critiques and revises")
    p.add_argument("--judge-model", default=None, help="optional judge of final A vs final B (both orders)")
    p.add_argument("--judge-constitution", default=None,
                   help="comparison principles for the judge (default: the paper's harmlessness question)")
    p.add_argument("--judge-style", choices=JUDGE_STYLE_CHOICES, default="auto")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--schedule", choices=["random", "sequence", "all"], default="random",
                   help="random (paper; arms may draw different principles), sequence or all (rounds aligned)")
    p.add_argument("--sequence", default="", help="comma-separated principle ids for --schedule sequence")
    p.add_argument("--cot", action="store_true", help="chain-of-thought critiques")
    p.add_argument("--no-few-shot", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    add_n_boot(p)
    p.add_argument("--name", default=None, help="experiment name (default ab-<date>-<time>); the same name resumes")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    p.set_defaults(func=cmd_ab_experiment)


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_ab_experiment(args) -> int:
    store = open_store(args.workspace)
    if args.n_boot < 10:
        raise CaiError("--n-boot must be at least 10")
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and (out.is_dir() or not out.parent.exists()):
        raise CaiError("--out must be a file in an existing folder", where=str(out))
    spec = ABExperimentSpec.from_args(args)
    validate_ab(store, spec)  # all bad input fails here, before anything is written
    reporter = JobReporter(store, args.job_id, None)

    def progress(done: int, total: int, message: str) -> None:
        reporter.progress(done, total, message, force=done >= total)
        if not args.json:
            print(f"[{done}/{total}] {message}", file=sys.stderr)

    res = run_ab_experiment(store, spec, progress=progress, should_stop=lambda: reporter.should_stop,
                            job_id=args.job_id)
    reporter.finish({"evaluation_id": res["id"], "name": res["name"], "stopped": bool(res.get("stopped"))})
    if res.get("stopped"):
        print(f"experiment {res['name']!r} stopped; run the same command again to resume")
        return 0
    result = res["result"]
    if out is not None:
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if args.json:
        print(json.dumps({"id": res["id"], **result}, ensure_ascii=False))
        return 0
    ch = result["principle_changes"]
    print(f"experiment {res['id']} {res['name']!r}: A={result['constitution_a']['version']} "
          f"B={result['constitution_b']['version']}, {result['prompts']} prompts")
    print(f"principles changed: {', '.join(ch['changed']) or '-'}; added: {', '.join(ch['added']) or '-'}; "
          f"removed: {', '.join(ch['removed']) or '-'}")
    fd = result["metrics"]["final_differs"]
    print(f"final answers differ on {_fmt(fd['rate'], 2)} of prompts [{_fmt(fd['ci'][0], 2)}, {_fmt(fd['ci'][1], 2)}]")
    print(f"  {'metric':32s} {'A':>8s} {'B':>8s} {'B - A':>8s} {'95% CI':>20s}")
    for r in experiment_table(result):
        mark = " *" if r["significant"] else (" (too few prompts to call)" if r["too_few"] else "")
        print(f"  {r['metric']:32s} {_fmt(r['A']):>8s} {_fmt(r['B']):>8s} {_fmt(r['B - A']):>8s} "
              f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]{mark}")
    for a in result["attribution"]:
        m = a["metrics"]
        print(f"  principle {a['principle']} ({a['status']}): rounds A={a['rounds_a']} B={a['rounds_b']}, "
              f"{m['n'] if m else 0} prompts used it")
    return 0
