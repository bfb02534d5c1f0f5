"""`python -m cai_core pairs ...`: sample response pairs from a policy, import pairs files, list batches."""
from __future__ import annotations

import json
import sys

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.jobs import JobReporter
from cai_core.models.bounds import TRUNCATE_FLAG, fit_prompts
from cai_core.models.dispatch import BATCH_SIZE_HELP, check_batch_size
from cai_core.models.specs import get_backend
from cai_core.data.prompt_sets import resolve_prompts
from cai_core.rlaif.pairs import (
    import_pairs_file,
    list_batches,
    sample_pairs,
)
from cai_core.store import open_store
from cai_core.workspace import safe_name


def register(sub) -> None:
    p = add_command(sub, "pairs", "response pairs for judging: sample, import, list")
    psub = p.add_subparsers(dest="pairs_command", metavar="ACTION", required=True)

    s = add_command(psub, "sample", "sample k responses per prompt from a policy and store every distinct pair")
    s.add_argument("--model", default="default", help="policy: default | folder (e.g. an SFT run's output) | file.gguf | hf:ID | http://...")
    s.add_argument("--prompts", required=True, help="stored prompt set name or a prompts file (.jsonl/.csv/.txt)")
    s.add_argument("--k", type=int, default=2, help="responses per prompt (pairs = every two distinct responses)")
    s.add_argument("--batch", required=True, help="batch name for the new comparisons")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    s.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    s.add_argument(TRUNCATE_FLAG, action="store_true",
                   help="cut prompts too long for the model's context to fit (default: refuse them before any work)")
    s.set_defaults(func=cmd_sample)

    i = add_command(psub, "import", "import pairs: id/prompt/response_a/response_b, prompt/chosen/rejected, or the paper's eval files")
    i.add_argument("file")
    i.add_argument("--batch", default=None, help="batch name (default: the file name)")
    i.add_argument("--seed", type=int, default=0, help="seed of the A/B side draw for chosen/rejected rows")
    i.add_argument("--split", choices=["train", "eval", "gold"], default=None,
                   help="split of the imported pairs (default: gold for the paper's eval files, else train)")
    i.set_defaults(func=cmd_import)

    ls = add_command(psub, "list", "list comparison batches")
    ls.set_defaults(func=cmd_list)


def cmd_sample(args) -> int:
    store = open_store(args.workspace)
    safe_name(args.batch, "batch name")
    if args.k < 2:
        raise CaiError("--k must be at least 2")
    if args.temperature <= 0:
        raise CaiError("--temperature must be > 0 to sample different responses")
    check_batch_size(args.batch_size)
    prompts, _ = resolve_prompts(store, args.prompts, limit=args.limit)
    backend = get_backend(args.model, store.workspace)
    fitted = fit_prompts(backend, [p["text"] for p in prompts], max_new_tokens=args.max_new_tokens,
                         truncate=args.truncate_prompts)
    for i in fitted.truncated:
        prompts[i] = {**prompts[i], "text": fitted.texts[i]}
    if fitted.truncated:
        print(f"{len(fitted.truncated)} prompt(s) cut to fit the {fitted.window}-token context", file=sys.stderr)
    reporter = JobReporter(store, args.job_id, len(prompts))
    result = sample_pairs(store, backend, args.model, prompts, batch=args.batch, k=args.k,
                          temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          seed=args.seed, progress=lambda d, t, m: reporter.progress(d, t, m),
                          should_stop=lambda: reporter.should_stop, batch_size=args.batch_size)
    reporter.progress(len(prompts), len(prompts), "done", force=True)
    result["faults"] = backend.fault_counts()
    reporter.finish(result, counts={**result["counts"], "retries": int(result["faults"].get("retries", 0))})
    print(json.dumps(result))
    return 0


def cmd_import(args) -> int:
    store = open_store(args.workspace)
    if args.batch:
        safe_name(args.batch, "batch name")
    result = import_pairs_file(store, args.file, batch=args.batch, seed=args.seed, split=args.split)
    result.pop("comparison_ids")
    print(json.dumps(result))
    return 0


def cmd_list(args) -> int:
    for row in list_batches(open_store(args.workspace)):
        print(f"{row['batch'] or '-':30s} {row['origin'] or '-':24s} {row['split'] or '-':6s} {row['comparisons']:6d}")
    return 0
