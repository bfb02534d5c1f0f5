"""`python -m cai_core judge`: AI judges over a pairs file or a stored batch of comparisons."""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from cai_core.commands._common import add_command
from cai_core.constitution.spec import is_file_spec, resolve_constitution
from cai_core.constitution.versions import save_constitution
from cai_core.errors import CaiError
from cai_core.jobs import JobReporter
from cai_core.jsonl import write_jsonl
from cai_core.models.bounds import TRUNCATE_FLAG
from cai_core.models.dispatch import BATCH_SIZE_HELP, check_batch_size
from cai_core.models.specs import get_backend
from cai_core.rlaif.judge_bounds import fit_pairs
from cai_core.rlaif.judges import STYLES, JudgeSpec, judge_ensemble
from cai_core.rlaif.pairs import add_pairs, comparisons_for, file_origin, load_pairs_file
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(sub, "judge", "judge response pairs with an AI judge (both A/B orders by default)")
    p.add_argument("--judge-model", required=True, help="judge model spec: default | folder | file.gguf | hf:ID | http://host:port/v1")
    p.add_argument("--constitution", default=None,
                   help="constitution: a file (YAML/JSON/paper JSON), NAME, NAME@VERSION or a version hash "
                        "(optional only when every pair carries its own question)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help='JSONL: {"id","prompt","response_a","response_b"} or prompt/chosen/rejected or paper eval rows')
    src.add_argument("--batch", help="judge the stored comparisons of this batch instead of a file")
    p.add_argument("--cot", action="store_true", help="chain-of-thought style (same as --style cot)")
    p.add_argument("--style", choices=STYLES, default=None,
                   help="mc: option log-probs; cot: reasoning then log-probs, clamped; parse: verdict parsed from text")
    p.add_argument("--no-swap", action="store_true", help="judge only the A/B order (no position debiasing)")
    p.add_argument("--principles", default="random", help="random | all | comma-separated principle ids")
    p.add_argument("--ensemble-models", default="", help="more judge models (comma-separated) combined with --judge-model")
    p.add_argument("--combine", choices=["mean", "vote"], default="mean", help="how ensemble members combine")
    p.add_argument("--cot-clamp", default="0.4,0.6", help="LOW,HIGH clamp of CoT probabilities")
    p.add_argument("--max-new-tokens", type=int, default=160, help="reasoning (cot) or verdict (parse) length")
    p.add_argument("--seed", type=int, default=0, help="seed of the random principle draw and of generation")
    p.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    p.add_argument("--zero-shot", action="store_true",
                   help="judge without the constitution's judge examples (shown first by default when it has them)")
    p.add_argument("--out", default=None, help="write one JSON line per pair (id, p_a, label, p_a_ab, p_a_ba, flipped, invalid)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(TRUNCATE_FLAG, action="store_true",
                   help="cut a pair too long for a judge model's context to fit (the conversation loses its middle, "
                        "each answer its tail; the stored comparison keeps its full text) instead of refusing the "
                        "batch; the summary counts them")
    p.set_defaults(func=cmd_judge)


def cmd_judge(args) -> int:
    store = open_store(args.workspace)
    style = args.style or ("cot" if args.cot else "mc")
    if args.cot and args.style not in (None, "cot"):
        raise CaiError(f"--cot conflicts with --style {args.style}")
    try:
        clamp = tuple(float(x) for x in args.cot_clamp.split(","))
        if len(clamp) != 2:
            raise ValueError
    except ValueError as exc:
        raise CaiError(f"--cot-clamp must be LOW,HIGH (e.g. 0.4,0.6), not {args.cot_clamp!r}") from exc
    check_batch_size(args.batch_size)
    models = [args.judge_model] + [m.strip() for m in args.ensemble_models.split(",") if m.strip()]
    specs = [JudgeSpec(model=m, style=style, principles=args.principles, swap=not args.no_swap, cot_clamp=clamp,
                       seed=args.seed, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       few_shot=not args.zero_shot) for m in models]
    # validate everything before writing anything
    if args.pairs:
        pairs = load_pairs_file(args.pairs, seed=args.seed)
    else:
        pairs = comparisons_for(store, batch=args.batch)
        if not pairs:
            raise CaiError(f"no stored comparisons in batch {args.batch!r}")
    constitution = None
    if args.constitution:
        constitution = resolve_constitution(store, args.constitution)
    elif not all(p.get("question") for p in pairs):
        raise CaiError("--constitution is required (these pairs have no question of their own)")
    if constitution is not None:
        for spec in specs:
            if isinstance(spec.principles, list):
                for pid in spec.principles:
                    constitution.principle(pid)
    if args.out:
        out_dir = Path(args.out).resolve().parent
        if not out_dir.is_dir():
            raise CaiError(f"--out folder {out_dir} does not exist")
    backends = [get_backend(m, store.workspace) for m in models]  # a bad model spec fails before any write
    fitted_pairs = pairs
    for backend, spec in zip(backends, specs):  # a pair too long for a judge fails here, not after half the batch
        fitted_pairs = fit_pairs(backend, spec, constitution, fitted_pairs, truncate=args.truncate_prompts).pairs
    truncated = [str(p["id"]) for p, f in zip(pairs, fitted_pairs) if f is not p]
    if constitution is not None and args.constitution and is_file_spec(args.constitution):
        save_constitution(store, constitution, note=f"used by judge from {args.constitution}")
    if args.pairs:
        add_pairs(store, pairs, origin=file_origin(args.pairs, pairs), batch=Path(args.pairs).stem)
    if truncated:  # the judges read the cut copies (with the comparison ids add_pairs gave); the store keeps the full text
        cut = {str(p["id"]): p for p in fitted_pairs}
        pairs = [{**cut[str(p["id"])], "comparison_id": p.get("comparison_id")} if str(p["id"]) in truncated else p
                 for p in pairs]
        print(f"{len(truncated)} pair(s) cut to fit the judge's context ({TRUNCATE_FLAG})", file=sys.stderr)
    reporter = JobReporter(store, args.job_id, unit="judgments")
    plan = {"done": 0, "total": None, "skipped": 0}

    def progress(done, total, message):
        # the engine counts the judgments left to do; those already stored are skipped ones
        if plan["total"] is None:
            found = re.match(r"(\d+) judgments already stored", message or "")
            plan["skipped"] = int(found.group(1)) if found else 0
        plan["done"], plan["total"] = done, total
        reporter.count(total=total + plan["skipped"], done=done, skipped=plan["skipped"], message=message)
        if not args.job_id and sys.stderr.isatty():
            print(f"\r{message}", end="", file=sys.stderr)

    judged: dict = {}  # done / failed (a request that still failed after the backend's retries) / skipped
    verdicts = judge_ensemble(list(zip(backends, specs)), constitution, pairs, store, combine=args.combine,
                              progress=progress, should_stop=lambda: reporter.should_stop, job_id=args.job_id,
                              counts_out=judged)
    if args.out:
        write_jsonl(args.out, (v.out_row() for v in verdicts))
    labels = Counter(v.label or "invalid" for v in verdicts)
    summary = {
        "pairs": len(verdicts), "judges": [s.judge_key for s in specs], "style": style, "swap": not args.no_swap,
        "A": labels.get("A", 0), "B": labels.get("B", 0), "tie": labels.get("tie", 0),
        "no_valid_judgment": labels.get("invalid", 0), "invalid_judgments": sum(v.invalid for v in verdicts),
        "flipped": sum(v.flipped for v in verdicts), "disagreements": sum(v.disagreement for v in verdicts),
        "stopped": reporter.should_stop, "out": args.out, "truncated": len(truncated),
        "failed_judgments": judged.get("failed", 0),
        "faults": {k: v for b in backends for k, v in b.fault_counts().items()},
    }
    retries = sum(int(b.fault_counts().get("retries", 0)) for b in backends)
    reporter.finish(summary, counts={"done": judged.get("done", plan["done"]), "failed": judged.get("failed", 0),
                                     "retries": retries})  # in judgments, not pairs (it read "4/4" after 16 of 112)
    if args.json:
        print(json.dumps(summary))
    else:
        if sys.stderr.isatty() and not args.job_id:
            print(file=sys.stderr)
        print(f"judged {summary['pairs']} pairs with {', '.join(summary['judges'])}: "
              f"A {summary['A']}, B {summary['B']}, tie {summary['tie']}, no valid judgment {summary['no_valid_judgment']}; "
              f"invalid judgments {summary['invalid_judgments']}, flips {summary['flipped']}, "
              f"ensemble disagreements {summary['disagreements']}" + (f"; wrote {args.out}" if args.out else ""))
    return 0
