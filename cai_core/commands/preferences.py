"""`python -m cai_core label | queue | export-prefs`: human annotation and the preference export."""
from __future__ import annotations

import json

from cai_core.commands._common import add_command
from cai_core.jobs import JobReporter
from cai_core.rlaif.preferences import add_label, export_preferences, queue
from cai_core.store import open_store


def _keys(text: str | None) -> list[str] | None:
    keys = [k.strip() for k in (text or "").split(",") if k.strip()]
    return keys or None


def register(sub) -> None:
    p = add_command(sub, "label", "add a human label to a comparison (append-only; an override when it differs from the AI)")
    p.add_argument("id", type=int, help="comparison id")
    p.add_argument("label", choices=["A", "B", "tie", "skip", "both_bad"])
    p.add_argument("--annotator", required=True)
    p.add_argument("--reason", default=None)
    p.add_argument("--blind", action="store_true", help="record that the AI verdict was hidden while labelling")
    p.add_argument("--judges", default=None, help="judge keys (comma-separated) the override is measured against (default: all)")
    p.add_argument("--client-id", default=None,
                   help="your id for this one answer: the same comparison, annotator and client id is stored once "
                        "(a retried command adds nothing)")
    p.set_defaults(func=cmd_label)

    q = add_command(sub, "queue", "list the annotation queue")
    q.add_argument("--order", default="uncertain", choices=["uncertain", "flips", "disagreement", "random", "newest", "oldest"])
    q.add_argument("--status", default="unlabelled", choices=["unlabelled", "labelled", "all", "invalid", "overrides"])
    q.add_argument("--batch", default=None)
    q.add_argument("--judges", default=None)
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_queue)

    e = add_command(sub, "export-prefs", "export resolved preferences as a TRL preference dataset (JSONL + HF folder + card)")
    e.add_argument("--name", required=True, help="export name (workspace/exports/NAME)")
    e.add_argument("--batch", default=None)
    e.add_argument("--source", default=None,
                   help="only comparisons of this origin (sampled, imported, gold:<set>, evaluation:<name>, experiment:<name>)")
    e.add_argument("--include-split", default=None, metavar="SPLITS",
                   help="also read these held-out splits (comma-separated: eval,gold); default: the train split only")
    e.add_argument("--keep-flipped", action="store_true",
                   help="keep AI verdicts that flipped with the A/B order (by their mean P(A)); default: left out")
    e.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help="leave out AI verdicts with max(P(A), 1-P(A)) below P (0.5-1)")
    e.add_argument("--judges", default=None,
                   help="judge keys (comma-separated) for the AI labels, or 'all' (every judge combined); default: "
                        "the newest complete judge (never one whose newest job stopped, failed or runs, nor one "
                        "that judged only part of its batches)")
    e.add_argument("--combine", choices=["mean", "vote"], default="mean")
    e.add_argument("--soft-labels", action="store_true", help="add a p_chosen column")
    e.add_argument("--margin", action="store_true", help="add a margin column (2*p_chosen-1) for RewardTrainer")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)


def cmd_label(args) -> int:
    result = add_label(open_store(args.workspace), args.id, args.label, args.annotator, reason=args.reason,
                       blind=args.blind, judge_keys=_keys(args.judges), client_id=args.client_id)
    print(json.dumps(result))
    return 0


def cmd_queue(args) -> int:
    page = queue(open_store(args.workspace), order=args.order, status=args.status, batch=args.batch,
                 judge_keys=_keys(args.judges), limit=args.limit, offset=args.offset, seed=args.seed)
    print(f"{page['total']} comparisons ({args.status}, {args.order} first)")
    for r in page["rows"]:
        p = "-" if r["ai_p_a"] is None else f"{r['ai_p_a']:.3f}"
        flags = ",".join(f for f, on in (("flip", r["flipped"]), ("disagree", r["disagreement"]),
                                          (f"invalid={r['invalid']}", r["invalid"])) if on)
        print(f"{r['id']:6d}  P(A)={p:6s} AI={r['ai_label'] or '-':4s} human={r['human_label'] or '-':8s} {flags:20s} "
              f"{r['prompt'][:60]!r}")
    return 0


def cmd_export(args) -> int:
    store = open_store(args.workspace)
    reporter = JobReporter(store, args.job_id)
    card = export_preferences(store, args.name, batch=args.batch, source=args.source, judge_keys=_keys(args.judges),
                              combine=args.combine, soft_labels=args.soft_labels, margin=args.margin,
                              include_splits=args.include_split, keep_flipped=args.keep_flipped,
                              min_confidence=args.min_confidence, overwrite=args.overwrite, progress=lambda d, t, m: reporter.progress(d, t, m))
    reporter.finish({"path": card["path"], **card["counts"]})
    print(json.dumps({"path": card["path"], "counts": card["counts"], "splits": card["splits"],
                      "rows_by_origin": card["rows_by_origin"], "rows_by_split": card["rows_by_split"],
                      "left_out_by_origin": card["left_out_by_origin"], "ai_labels": card["ai_labels"],
                      "share_human_overrides": card["share_human_overrides"]}))
    return 0
