"""Critique -> revision throughput: the workbench's batched engine vs a seed-style loop.

Both sides run the same model, the same prompts, the same conversations (answer, one critique
against a principle, one revision; no few-shot turns, greedy decoding, the same max new tokens):

- engine: `cai_core.supervised.revision.run_revision` (all answers of a batch in one `generate` call, then all
  critiques, then all revisions; every step committed to a throwaway store);
- seed loop: a transformers `pipeline("text-generation")` called once per prompt and stage, as in
  the seed notes (../shared/000_17725e7b1a547050.txt), nothing stored.

Tokens are counted the same way on both sides: the generated texts re-tokenized.
ratio = engine prompts/s / loop prompts/s. Target >= 4 (32 prompts, default model, CPU).
"""
from __future__ import annotations

from benchlib import CountingBackend, Timer, finish, model_dir, parser, red_team_prompts, seed_loop, setup, temp_store

TARGET = 4.0


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=None, help="number of prompts (default 32; 8 with --quick)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per stage (default 64; 16 with --quick)")
    p.add_argument("--batch-size", type=int, default=32, help="engine batch size")
    p.add_argument("--few-shot", action="store_true",
                   help="both sides put the constitution's few-shot examples before each critique and revision "
                        "(the app's default; the engine prefills that shared block once per batch)")
    args = p.parse_args()
    setup(args)
    n = args.prompts or (8 if args.quick else 32)
    max_new = args.max_new_tokens or (16 if args.quick else 64)

    import torch

    from cai_core.models.backends.local import LocalBackend
    from cai_core.constitution.files import load_constitution_file
    from cai_core.supervised.revision import (
        ReviseSettings,
        run_revision,
    )
    from benchlib import ROOT

    path = model_dir(args)
    prompts = red_team_prompts(n)
    constitution = load_constitution_file(ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml")
    settings = ReviseSettings(rounds=1, few_shot=args.few_shot, cot=False, temperature=0.0, max_new_tokens=max_new, seed=0)
    model_name = str(path)

    backend = LocalBackend(path, device="cpu", dtype="float32")
    counting = CountingBackend(backend, backend.tokenizer)
    backend.generate([[{"role": "user", "content": "hi"}]], settings.params(0))  # warm-up

    # -- seed-style loop: one pipeline call per prompt and stage -------------------------------------
    loop_seconds, loop_tokens = seed_loop(backend, prompts, constitution, settings, max_new)

    # -- the engine: batched, stored -------------------------------------------------------------
    store = temp_store()
    with Timer() as t_engine:
        ids = run_revision(store, counting, constitution, prompts, settings, model_name,
                           batch="bench", batch_size=args.batch_size)
    done = store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done'")
    assert done == len(set(ids)), f"engine finished {done} of {len(ids)} trajectories"

    loop_pps, engine_pps = n / loop_seconds, n / t_engine.seconds
    finish(args, {
        "model": path.name, "prompts": n, "max_new_tokens_per_stage": max_new, "engine_batch_size": args.batch_size,
        "few_shot": args.few_shot,
        "torch_threads": torch.get_num_threads(),
        "seed_loop": f"{loop_seconds:.1f}s, {loop_pps:.3f} prompts/s, {loop_tokens / loop_seconds:.1f} tokens/s ({loop_tokens} tokens)",
        "engine": f"{t_engine.seconds:.1f}s, {engine_pps:.3f} prompts/s, {counting.tokens / t_engine.seconds:.1f} tokens/s ({counting.tokens} tokens)",
        "tokens_per_s_ratio": round((counting.tokens / t_engine.seconds) / max(1e-9, loop_tokens / loop_seconds), 2),
    }, engine_pps / loop_pps, TARGET)


if __name__ == "__main__":
    main()
