"""Engines for the critique->revision loop on the CPU: CTranslate2 vs transformers vs the seed loop.

One run, one model, the same prompts and settings (answer, one critique, one revision; greedy; no
few-shot turns; the same max new tokens):

- transformers engine: `run_revision` on the LocalBackend (fp32, batched `generate`);
- CTranslate2 engine: `run_revision` on the CT2Backend (float32 by default, batched `generate_batch`);
- seed loop: a transformers `pipeline()` call per prompt and stage (benchlib.seed_loop).

Also measured: batch-1 streaming tokens/s on each engine, and the live 2-round run for one prompt
(`stream_revision`, what the Critique and Revise page runs; --live-prompts of them, 4 by default) on
the transformers engine as it runs now (prompt lookup: local.PROMPT_LOOKUP_TOKENS), on the same
engine with plain one-token-per-pass decoding (how it ran when issue 14 was filed: the live target is
>= 2x that, same settings, same run), and on CTranslate2; with the texts compared (the same greedy text
is the condition for calling it a speed-up). And how close the CTranslate2 greedy text stays to
transformers fp32 (answers whose first 16 tokens are equal).
ratio = CTranslate2 engine prompts/s / transformers engine prompts/s. Target >= 2.5.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from benchlib import (
    ROOT,
    CountingBackend,
    Timer,
    finish,
    model_dir,
    parser,
    red_team_prompts,
    seed_loop,
    setup,
    temp_store,
)

TARGET = 2.5
AGREE_TOKENS = 16


def _revise(backend, tokenizer, prompts, constitution, settings, batch_size) -> tuple[float, int, list[str]]:
    """(seconds, generated tokens, answers) of one batched run on a throwaway store."""
    from cai_core.supervised.revision import get_trajectory, run_revision

    counting = CountingBackend(backend, tokenizer)
    store = temp_store()
    with Timer() as t:
        ids = run_revision(store, counting, constitution, prompts, settings, str(backend.spec),
                           batch="bench", batch_size=batch_size)
    answers = [get_trajectory(store, i)["initial"] for i in ids]
    return t.seconds, counting.tokens, answers


def _stream_tps(backend, tokenizer, prompt: str, max_new: int) -> float:
    from cai_core.models.backends.base import GenerationParams

    params = GenerationParams(max_new_tokens=max_new, temperature=0.0)
    t0 = time.perf_counter()
    text = "".join(backend.stream([{"role": "user", "content": prompt}], params))
    seconds = time.perf_counter() - t0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) / max(seconds, 1e-9)


def _live_two_rounds(backend, prompts, constitution, settings) -> tuple[float, list[list[str]]]:
    """Seconds of the page's live run over `prompts`, one after another (answer, then 2 x (critique,
    revision), streamed and stored), and every stage's text per prompt."""
    from dataclasses import replace

    from cai_core.supervised.revision import get_trajectory, stream_revision

    store = temp_store()
    texts = []
    with Timer() as t:
        for prompt in prompts:
            for _ in stream_revision(store, backend, constitution, prompt, replace(settings, rounds=2),
                                     str(backend.spec), batch="live"):
                pass
    for row in store.query("SELECT id FROM trajectories ORDER BY id"):
        traj = get_trajectory(store, row["id"])
        texts.append([traj["initial"]] + [x for step in traj["steps"] for x in (step["critique"], step["revision"])])
    return t.seconds, texts


@contextmanager
def plain_decoding():
    """The transformers engine without prompt lookup: one forward pass per token."""
    from cai_core.models.backends import local

    saved, local.PROMPT_LOOKUP_TOKENS = local.PROMPT_LOOKUP_TOKENS, None
    try:
        yield
    finally:
        local.PROMPT_LOOKUP_TOKENS = saved


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=None, help="number of prompts (default 32; 8 with --quick)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per stage (default 64; 16 with --quick)")
    p.add_argument("--batch-size", type=int, default=32, help="engine batch size")
    p.add_argument("--no-seed-loop", action="store_true", help="skip the slow per-prompt pipeline loop")
    p.add_argument("--live-prompts", type=int, default=None, help="prompts of the live 2-round run (default 4; 1 with --quick)")
    p.add_argument("--quantization", default=None, help="CTranslate2 compute type (default: the engine's, float32)")
    args = p.parse_args()
    setup(args)
    n = args.prompts or (8 if args.quick else 32)
    max_new = args.max_new_tokens or (16 if args.quick else 64)

    import tempfile

    from cai_core.constitution.files import load_constitution_file
    from cai_core.models.backends.ct2 import CT2Backend
    from cai_core.models.backends.local import LocalBackend
    from cai_core.supervised.revision import ReviseSettings

    from cai_core.models.specs import CT2_QUANTIZATION

    args.quantization = args.quantization or CT2_QUANTIZATION
    path = model_dir(args)
    prompts = red_team_prompts(n)
    constitution = load_constitution_file(ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml")
    settings = ReviseSettings(rounds=1, few_shot=False, cot=False, temperature=0.0, max_new_tokens=max_new, seed=0)

    hf = LocalBackend(path, device="cpu", dtype="float32")
    with Timer() as t_convert:
        ct2 = CT2Backend(path, ct2_dir=tempfile.mkdtemp(prefix="cai-bench-ct2-"), quantization=args.quantization,
                         intra_threads=args.threads or 0)
    tok = hf.tokenizer
    warm = [[{"role": "user", "content": "hi"}]]
    hf.generate(warm, settings.params(0))
    ct2.generate(warm, settings.params(0))

    hf_s, hf_tokens, hf_answers = _revise(hf, tok, prompts, constitution, settings, args.batch_size)
    ct2_s, ct2_tokens, ct2_answers = _revise(ct2, tok, prompts, constitution, settings, args.batch_size)
    loop = None if args.no_seed_loop else seed_loop(hf, prompts, constitution, settings, max_new)
    agree = sum(tok(a or "", add_special_tokens=False)["input_ids"][:AGREE_TOKENS]
                == tok(b or "", add_special_tokens=False)["input_ids"][:AGREE_TOKENS]
                for a, b in zip(hf_answers, ct2_answers))
    stream_hf = _stream_tps(hf, tok, prompts[0], max_new)
    with plain_decoding():
        stream_plain = _stream_tps(hf, tok, prompts[0], max_new)
    stream_ct2 = _stream_tps(ct2, tok, prompts[0], max_new)
    live = prompts[:args.live_prompts or (1 if args.quick else 4)]
    with plain_decoding():
        live_plain, texts_plain = _live_two_rounds(hf, live, constitution, settings)
    live_hf, texts_hf = _live_two_rounds(hf, live, constitution, settings)
    live_ct2, texts_ct2 = _live_two_rounds(ct2, live, constitution, settings)
    stages = sum(len(t) for t in texts_plain)

    figures = {
        "model": path.name, "prompts": n, "max_new_tokens_per_stage": max_new, "batch_size": args.batch_size,
        "ct2_conversion_and_load_s": round(t_convert.seconds, 1),
        "transformers_engine": f"{hf_s:.1f}s, {n / hf_s:.3f} prompts/s, {hf_tokens / hf_s:.1f} tokens/s",
        "ctranslate2_engine": f"{ct2_s:.1f}s, {n / ct2_s:.3f} prompts/s, {ct2_tokens / ct2_s:.1f} tokens/s",
        "ct2_quantization": args.quantization,
        "ct2_answers_first_16_tokens_equal_transformers_fp32": f"{agree}/{n}",
        "stream_batch1_tokens_per_s": f"transformers {stream_hf:.1f} (plain decoding {stream_plain:.1f}), "
                                      f"ctranslate2 {stream_ct2:.1f}",
        "live_2_rounds_prompts": len(live),
        "live_2_rounds_s": f"transformers {live_hf:.1f}, transformers plain decoding {live_plain:.1f}, "
                           f"ctranslate2 {live_ct2:.1f}",
        "live_2_rounds_speedup_vs_plain_decoding": f"transformers {live_plain / max(live_hf, 1e-9):.2f}x, "
                                                   f"ctranslate2 {live_plain / max(live_ct2, 1e-9):.2f}x (target 2x)",
        "live_2_rounds_stages_equal_to_plain_decoding":
            f"transformers {sum(a == b for x, y in zip(texts_hf, texts_plain) for a, b in zip(x, y))}/{stages}, "
            f"ctranslate2 {sum(a == b for x, y in zip(texts_ct2, texts_plain) for a, b in zip(x, y))}/{stages}",
    }
    if loop:
        loop_s, loop_tokens = loop
        figures["seed_loop"] = f"{loop_s:.1f}s, {n / loop_s:.3f} prompts/s, {loop_tokens / loop_s:.1f} tokens/s"
        figures["ctranslate2_vs_seed_loop"] = round(loop_s / ct2_s, 2)
    finish(args, figures, hf_s / ct2_s, TARGET)


if __name__ == "__main__":
    main()
