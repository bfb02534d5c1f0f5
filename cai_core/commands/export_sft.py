"""`export-sft`: (prompt, final revision) pairs as a TRL conversational dataset (JSONL + HF folder)."""
from __future__ import annotations

import json
import sys

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.exports import export_exists
from cai_core.jobs import JobReporter
from cai_core.models.specs import get_backend
from cai_core.data.prompt_sets import get_prompt_set
from cai_core.provenance import parse_splits
from cai_core.store import open_store
from cai_core.supervised.sft_export import (
    export_sft,
    missing_helpful,
    parse_formats,
    revision_rows,
)
from cai_core.workspace import safe_name


def register(sub) -> None:
    p = add_command(sub, "export-sft", "export finished trajectories as an SFT dataset (TRL 'messages' format)")
    p.add_argument("--name", required=True, help="export name: folder workspace/exports/NAME")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--batch", default=None, help="only this revise batch")
    which.add_argument("--constitution-version", default=None, help="only trajectories of this constitution version")
    p.add_argument("--mix-helpful", default=None, metavar="PROMPT_SET",
                   help="add the model's own answers to this (helpfulness) prompt set; missing ones are generated")
    p.add_argument("--format", default="jsonl,hf", help="jsonl, hf or jsonl,hf")
    p.add_argument("--model", default=None,
                   help="model for missing helpful answers (default: the model of the exported trajectories)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-split", default=None, metavar="SPLITS",
                   help="also read these held-out splits (comma-separated: eval,gold); default: the train split only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of this name")
    p.set_defaults(func=cmd_export_sft)


def cmd_export_sft(args) -> int:
    store = open_store(args.workspace)
    safe_name(args.name, "export name")
    parse_formats(args.format)
    if export_exists(store, args.name) and not args.overwrite:
        raise CaiError(f"an export named {args.name!r} already exists; choose another name or pass --overwrite")
    revisions = revision_rows(store, batch=args.batch, constitution_version=args.constitution_version,
                              splits=parse_splits(args.include_split))
    backend = None
    if args.mix_helpful:
        get_prompt_set(store, args.mix_helpful)
        models = sorted({r["model"] for r in revisions})
        args.model = args.model or (models[0] if len(models) == 1 else None)
        if revisions and args.model and missing_helpful(store, args.mix_helpful, args.model):
            backend = get_backend(args.model, store.workspace,
                                  progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    reporter = JobReporter(store, args.job_id, None)
    card = export_sft(store, args.name, batch=args.batch, constitution_version=args.constitution_version,
                      mix_helpful=args.mix_helpful, formats=args.format, model=args.model, backend=backend,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, overwrite=args.overwrite,
                      include_splits=args.include_split,
                      progress=lambda d, t, m: reporter.progress(d, t, f"helpful answers: {m}"),
                      should_stop=lambda: reporter.should_stop)
    summary = {"name": card["name"], "path": card["path"], "counts": card["counts"], "models": card["models"],
               "constitution_versions": card["constitution_versions"], "splits": card["splits"],
               "rows_by_origin": card["rows_by_origin"], "rows_by_split": card["rows_by_split"]}
    reporter.finish(summary)
    print(json.dumps(summary, indent=2))
    return 0
