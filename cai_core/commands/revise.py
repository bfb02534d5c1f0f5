"""`revise`: the critique -> revision batch, headless (the page starts it as a background job)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

from cai_core.commands._common import add_command, output_file
from cai_core.constitution.spec import is_file_spec, resolve_constitution
from cai_core.constitution.versions import save_constitution
from cai_core.errors import CaiError
from cai_core.jobs import JobReporter
from cai_core.jsonl import write_jsonl
from cai_core.models.bounds import TRUNCATE_FLAG, fit_prompts
from cai_core.models.dispatch import BATCH_SIZE_HELP, check_batch_size
from cai_core.models.specs import get_backend, recorded_model
from cai_core.data.prompt_sets import resolve_prompts
from cai_core.store import open_store
from cai_core.supervised.revision import (
    ReviseSettings,
    Reviser,
    as_prompt_items,
    default_batch_name,
    get_trajectories,
    to_jsonl_record,
)
from cai_core.workspace import safe_name


def register(sub) -> None:
    p = add_command(sub, "revise", "answer prompts, then critique and revise each answer for N rounds",
                    description="Critique -> revision over a prompt file or stored prompt set. Every step is "
                                "stored as it finishes; re-running the same command resumes and never redoes work.")
    p.add_argument("--model", default="default", help="default | local folder | file.gguf | hf:ID | http://host:port/v1")
    p.add_argument("--constitution", required=True,
                   help="constitution: a file (project YAML/JSON or the paper's JSON), NAME, NAME@VERSION or a version hash")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' field, CSV, .txt (one per line) or a stored prompt set")
    p.add_argument("--rounds", type=int, default=1, help="critique/revision rounds per prompt")
    p.add_argument("--cot", action="store_true", help="chain-of-thought critiques ending in a verdict")
    p.add_argument("--out", default=None, help="write one JSON line per prompt (rounds and final answer) here")
    p.add_argument("--schedule", choices=["random", "sequence", "all"], default="random",
                   help="random: a fresh principle each round (paper); sequence: --sequence in order; all: every enabled principle in turn")
    p.add_argument("--sequence", default="", help="comma-separated principle ids for --schedule sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--early-stop", action="store_true", help="stop a prompt when its critique finds no violation")
    p.add_argument("--no-few-shot", action="store_true", help="leave out the constitution's few-shot examples")
    p.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    p.add_argument(TRUNCATE_FLAG, action="store_true",
                   help="cut prompts too long for the model's context to fit (default: refuse them before any work)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--batch", default=None, help="batch name shown in the app (default: <prompts>-<version>)")
    p.add_argument("--quantization", choices=["4bit", "8bit"], default=None)
    p.set_defaults(func=cmd_revise)


def cmd_revise(args) -> int:
    # validate everything before writing anything
    store = open_store(args.workspace)
    constitution = resolve_constitution(store, args.constitution)
    from_file = is_file_spec(args.constitution)
    prompt_dicts, source = resolve_prompts(store, args.prompts, limit=args.limit)
    items = as_prompt_items(prompt_dicts)
    check_batch_size(args.batch_size)
    settings = ReviseSettings(
        rounds=args.rounds, schedule=args.schedule, cot=args.cot, early_stop=args.early_stop,
        sequence=ReviseSettings.parse_sequence(args.sequence), few_shot=not args.no_few_shot,
        seed=args.seed, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
    ).validate(constitution)
    out = output_file(args.out)
    batch = safe_name(args.batch, "batch name") if args.batch else default_batch_name(source, constitution.version)
    backend = get_backend(args.model, store.workspace, quantization=args.quantization,
                          progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    fitted = fit_prompts(backend, [it.text for it in items], max_new_tokens=settings.max_new_tokens,
                         truncate=args.truncate_prompts)
    for i in fitted.truncated:  # the row records that its prompt was cut, and from how long
        items[i] = replace(items[i], text=fitted.texts[i], meta={**items[i].meta, "truncated_from_chars": len(items[i].text)})
    if fitted.truncated:
        print(f"{len(fitted.truncated)} prompt(s) cut to fit the {fitted.window}-token context", file=sys.stderr)
    if from_file:
        save_constitution(store, constitution, note=f"used by revise from {args.constitution}")

    reporter = JobReporter(store, args.job_id, None)
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", desc="revise", file=sys.stderr, mininterval=1.0)

    reviser = Reviser(store, backend, constitution, settings, args.model, batch=batch, job_id=args.job_id)
    said: set[str] = set()

    def counts() -> dict:
        c = reviser.counts
        return {"total": c.get("prompts", len(items)), "done": c.get("done", 0), "failed": c.get("failed", 0),
                "skipped": c.get("skipped", 0), "retries": int(backend.fault_counts().get("retries", 0))}

    def progress(done: int, total: int, message: str) -> None:
        for note in reviser.notes:  # said once (an endpoint without log-probs)
            if note not in said:
                said.add(note)
                print(f"note: {note}", file=sys.stderr)
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        reporter.progress(done, total, message, force=done >= total)
        if reviser.counts:
            reporter.count(unit="prompts", message=message, **counts())

    ids = reviser.run(items, batch_size=args.batch_size, progress=progress, should_stop=lambda: reporter.should_stop)
    bar.close()
    trajs = get_trajectories(store, ids)
    done = sum(t["status"] == "done" for t in trajs)
    failed = [t for t in trajs if t["status"] == "failed"]
    if out is not None:
        write_jsonl(out, [to_jsonl_record(t) for t in trajs])
    result = {"batch": batch, "trajectories": len(trajs), "done": done, "constitution": constitution.name,
              "constitution_version": constitution.version, "model": args.model,
              "recorded_model": recorded_model(args.model, backend), "out": str(out) if out else None,
              "failed": len(failed), "errors": [f"{t['prompt'][:60]!r}: {t['error']}" for t in failed[:5]],
              "requests": reviser.counts.get("requests"), "in_flight": reviser.counts.get("in_flight"),
              "max_in_flight": reviser.counts.get("max_in_flight"), "faults": backend.fault_counts(),
              "notes": list(reviser.notes)}
    reporter.finish(result, counts=counts())
    print(json.dumps(result), file=sys.stderr)
    stopped = reporter.should_stop and done < len(trajs)
    print(f"{done}/{len(trajs)} prompts done in batch {batch!r}" + (" (stopped; run again to resume)" if stopped else "")
          + (f"; {len(failed)} failed (run again to retry them)" if failed else ""))
    return 0
