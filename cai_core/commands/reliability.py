"""`reliability` (agreement of judge labels with gold labels) and `eval-judge` (run a judge over a gold set)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cai_core.commands._common import add_command, add_n_boot
from cai_core.errors import CaiError
from cai_core.jobs import JobReporter
from cai_core.jobs.specs import EvalJudgeSpec
from cai_core.models.bounds import TRUNCATE_FLAG
from cai_core.models.dispatch import BATCH_SIZE_HELP, check_batch_size
from cai_core.reliability.eval_judge import DEFAULT_CONSTITUTION, labels_for_gold_file, run_eval_judge
from cai_core.label_rule import label_from_p
from cai_core.reliability.gold import read_labels
from cai_core.reliability.labels import write_labels
from cai_core.reliability.metrics import json_safe, reliability_report
from cai_core.rlaif.judge_defaults import HHH_QUESTION
from cai_core.rlaif.judges import STYLES
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(sub, "reliability", "agreement of judge labels with gold labels (accuracy, kappa, CIs, biases)")
    p.add_argument("--judgments", required=True,
                   help='label JSONL {"id","label","p_a"?,"rater"?} or the judge command\'s --out file')
    p.add_argument("--gold", required=True, help="label JSONL (several raters per id allowed) or a paper eval set")
    add_n_boot(p)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_reliability)

    p = add_command(sub, "eval-judge", "run a judge over a gold set and report its accuracy with a 95%% CI")
    p.add_argument("--judge-model", required=True, help="default | folder | file.gguf | hf:ID | http://host:port/v1")
    p.add_argument("--gold", required=True,
                   help="a paper eval set (438HHHEvaluations.jsonl, HarmfulVsEthical.jsonl) or a pairs JSONL with gold_label")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--style", choices=STYLES, default="mc")
    p.add_argument("--constitution", default=None,
                   help=f"a file, NAME, NAME@VERSION or a version hash; default: {DEFAULT_CONSTITUTION} if stored, else one built-in "
                        f"principle ('{HHH_QUESTION}'); 'builtin' forces the latter")
    p.add_argument("--few-shot", default=None, metavar="FILE", nargs="+",
                   help="add judge examples to the constitution (RLMadisonFewShotPrompts.json for mc/parse, "
                        "RLMadisonPrecogFewShotPrompts.json for cot)")
    p.add_argument("--zero-shot", action="store_true",
                   help="judge without the constitution's judge examples (they are used by default when present)")
    p.add_argument("--principles", default="random", help="random | all | comma-separated principle ids")
    p.add_argument("--no-swap", action="store_true", help="judge only the A/B order")
    p.add_argument("--seed", type=int, default=0, help="seed of the A/B randomisation, principle draw and bootstrap")
    p.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    p.add_argument("--max-new-tokens", type=int, default=160, help="reasoning length (cot) / verdict length (parse)")
    add_n_boot(p)
    p.add_argument("--device", default="auto", help="local models: auto | cpu | cuda | mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="local models: auto = bf16 on a capable GPU, fp32 on CPU")
    p.add_argument("--out", default=None, help="also write the judge's labels as label JSONL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(TRUNCATE_FLAG, action="store_true",
                   help="cut an item too long for the judge model's context to fit (the conversation loses its "
                        "middle, each answer its tail; the stored item keeps its full text) instead of refusing "
                        "the run; the report counts them")
    p.set_defaults(func=cmd_eval_judge)


# -- reliability -------------------------------------------------------------------------------
def cmd_reliability(args) -> int:
    if args.n_boot < 0:
        raise CaiError("--n-boot must be 0 or more")
    judge_rows = expand_members(read_labels(args.judgments, allow_no_verdict=True))
    gold_rows = read_labels(args.gold)
    report = reliability_report(judge_rows, gold_rows, n_boot=args.n_boot, seed=args.seed)
    if report["n"] == 0:
        raise CaiError(f"no id of {args.judgments} has a gold label in {args.gold} "
                       f"({report['n_unmatched']} judged ids without gold)")
    report = json_safe(report)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_table(report))
    return 0


def expand_members(rows: list[dict]) -> list[dict]:
    """The judge command's rows carry per-principle `members`; one row per member gives the
    per-principle breakdown and self-consistency. Rows without members are kept as they are."""

    out = []
    for r in rows:
        members = r.get("members")
        if not isinstance(members, list) or not members:
            out.append(r)
            continue
        for m in members:
            if not isinstance(m, dict):
                continue
            p = m.get("p_a")
            label = m.get("label") or (label_from_p(p) if isinstance(p, (int, float)) else None)
            row = {k: v for k, v in r.items() if k != "members"}
            row.update(label=label, p_a=p, principle=m.get("principle_id"),
                       rater=r.get("rater") or m.get("judge_key") or "judge")
            # the members keep no per-order P(A); the pair-level ones stand in (exact for one principle)
            if len(members) > 1:
                row.update(p_a_ab=None, p_a_ba=None)
            out.append(row)
    return out


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ci(lo_hi) -> str:
    if not lo_hi or lo_hi[0] is None:
        return ""
    return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def format_table(report: dict) -> str:
    """The agreement table as plain text (the same figures as --json)."""
    lines = []
    rows = [("combined" if len(report["judges"]) > 1 else (report["raters"][0] if report["raters"] else "judge"), report)]
    if len(report["judges"]) > 1:
        rows += [(j["rater"], j) for j in report["judges"]]
    width = max(12, *(len(name) for name, _ in rows))
    head = (f"{'judge':<{width}}  {'n':>5}  {'accuracy [95% CI]':<24}  {'no ties [95% CI]':<24}  "
            f"{'Cohen kappa [95% CI]':<26}  {'flip':>5}  {'ECE':>5}  {'Brier':>5}")
    lines.append(head)
    lines.append("-" * len(head))
    for name, r in rows:
        lines.append(
            f"{name:<{width}}  {r['n']:>5}  {_fmt(r['accuracy']) + ' ' + _ci(r['accuracy_ci']):<24}  "
            f"{_fmt(r['accuracy_no_ties']) + ' ' + _ci(r['accuracy_no_ties_ci']):<24}  "
            f"{_fmt(r['cohen_kappa']) + ' ' + _ci(r['cohen_kappa_ci']):<26}  {_fmt(r.get('flip_rate'), 2):>5}  "
            f"{_fmt(r.get('ece'), 2):>5}  {_fmt(r.get('brier'), 2):>5}")
    ref = report["reference"]
    lines.append(f"{'chance':<{width}}  {'':>5}  {'0.500':<24}  {'0.500':<24}  {'0.000':<26}")
    lines.append(f"{'MT-Bench GPT-4 vs human':<{width}}  {'':>5}  {ref['gpt4_human_with_ties']:<24.2f}  "
                 f"{ref['gpt4_human_without_ties']:<24.2f}")
    lines.append(f"{'MT-Bench human vs human':<{width}}  {'':>5}  {'':<24}  {ref['human_human_without_ties']:<24.2f}")
    extra = []
    if report.get("first_position_win_rate") is not None:
        extra.append(f"first-shown answer wins {report['first_position_win_rate']:.3f} (0.5 = no position bias)")
    if report.get("longer_win_rate") is not None:
        extra.append(f"longer answer wins {report['longer_win_rate']:.3f} (gold: {_fmt(report.get('gold_longer_win_rate'))}), "
                     f"length correlation {_fmt(report.get('length_corr'))}")
    if report.get("inter_judge"):
        ij = report["inter_judge"]
        extra.append(f"among judges: Fleiss kappa {_fmt(ij['fleiss_kappa'])} {_ci(ij['fleiss_kappa_ci'])}, "
                     f"Krippendorff alpha {_fmt(ij['krippendorff_alpha'])} {_ci(ij['krippendorff_alpha_ci'])}")
    for d in report.get("judge_differences") or []:
        extra.append(f"accuracy {d['a']} minus {d['b']}: {d['diff']:+.3f} {_ci(d['ci'])} paired over {d['n']} items "
                     f"(both right {d['both_right']}, only the first {d['only_a_right']}, only the second "
                     f"{d['only_b_right']}, both wrong {d['both_wrong']})")
    if report.get("gold_inter_rater"):
        gi = report["gold_inter_rater"]
        extra.append(f"among gold raters: Fleiss kappa {_fmt(gi['fleiss_kappa'])} {_ci(gi['fleiss_kappa_ci'])}, "
                     f"Krippendorff alpha {_fmt(gi['krippendorff_alpha'])} {_ci(gi['krippendorff_alpha_ci'])}")
    extra.append(f"judge ties {_fmt(report['judge_tie_rate'])}, gold ties {_fmt(report['gold_tie_rate'])}; "
                 f"{report['n_invalid']} judge rows without a valid verdict, {report['n_unmatched']} judged ids without gold")
    return "\n".join(lines + [""] + extra)


# -- eval-judge --------------------------------------------------------------------------------
def cmd_eval_judge(args) -> int:
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise CaiError(f"--out folder {Path(args.out).resolve().parent} does not exist")
    check_batch_size(args.batch_size)
    store = open_store(args.workspace)
    spec = EvalJudgeSpec.from_args(args)
    reporter = JobReporter(store, args.job_id, unit="judgments")
    plan: dict = {}  # the judgments left to do when judging began (those already stored are skipped)

    def progress(done, total, message):
        plan.setdefault("to_do", total)
        plan["done"] = done
        reporter.progress(done, total, message)
        if not args.job_id and not args.json:
            print(f"\r{message}", end="", file=sys.stderr, flush=True)

    result = run_eval_judge(store, spec, progress=progress, should_stop=lambda: reporter.should_stop,
                            job_id=args.job_id)
    if not args.job_id and not args.json:
        print(file=sys.stderr)
    report = result.report
    if args.out:
        write_labels(args.out, labels_for_gold_file(store, result.judge_rows))
    summary = {k: report.get(k) for k in ("judge_key", "gold_set", "n", "accuracy", "accuracy_ci", "cohen_kappa",
                                          "cohen_kappa_ci", "flip_rate", "ece", "brier", "no_valid_verdict",
                                          "truncated", "context_window")}
    # judged now + already stored = every pair in each order (judge_pairs counted only those still to do)
    orders = report["items"] * (2 if report["swap"] else 1)
    to_do = min(orders, plan.get("to_do", orders))
    reporter.finish(summary, counts={"total": orders, "skipped": orders - to_do, "done": min(to_do, plan.get("done", 0))})
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    acc, ci = report["accuracy"], report["accuracy_ci"]
    print(f"judge {result.judge_key} on {report['gold_set']}: {report['n']} items judged"
          f"{' in both A/B orders' if report['swap'] else ''}, {report['no_valid_verdict']} without a valid verdict, "
          f"{report['judge_examples']} judge examples shown, {report['seconds']}s")
    if report.get("truncated"):
        print(f"{report['truncated']} of {report['items']} items cut to fit the judge's {report['context_window']:,}-token "
              f"context (--truncate-prompts; comparison ids {', '.join(report['truncated_ids'][:10])}"
              f"{', ...' if report['truncated'] > 10 else ''})")
    if acc is not None:
        print(f"accuracy {acc:.3f} {_ci(ci)} vs chance 0.500 "
              f"({'above' if ci[0] is not None and ci[0] > 0.5 else 'below' if ci[1] is not None and ci[1] < 0.5 else 'not distinguishable from'} chance)")
    print(format_table(report))
    return 0
