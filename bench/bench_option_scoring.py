"""Judge P(A) per order for the same pairs through every engine: local transformers, CTranslate2
(float32), vLLM's OpenAI server and a llama.cpp server (issue 13: the same model must give the same
P(A) on all of them within 0.02).

llama.cpp serves GGUF files: give --llama a server on an F32 GGUF of the same weights
(`python bench/gguf_f32.py OUT.gguf` writes one from the embedded default model, whose float32
folder the other engines load). A server on the embedded quantized GGUF itself (Q4_1 weights,
quantized activations in llama.cpp's matmuls) can be given as --llama-quantized: measured beside
the exact engines, outside the ratio, like CTranslate2 int8.

Pairs: the first N two-reply items of the paper's 438HHHEvaluations, judged in the mc style
("The answer is: " then "(A)"/"(B)", scored at the natural token boundary) on one fixed question,
both orders. Servers are given by URL (--vllm, --llama) and must serve the SAME model folder
(vLLM: `--dtype float32`, or it downcasts); an engine that is not given is left out.
ratio = the largest |P(A) - local P(A)| over every pair, order and exact engine; target <= 0.02.
CTranslate2 int8 (the engine's first default, dropped for this) is measured beside them, outside the ratio.

    python bench/bench_option_scoring.py --model FOLDER --vllm http://127.0.0.1:8000/v1 [--llama URL]
"""
from __future__ import annotations

import tempfile
import time

from benchlib import PAPER_DATA, finish, model_dir, parser, setup

TARGET = 0.02
APPROXIMATE = ("ct2-int8", "llama.cpp-quantized")  # quantized engines: measured, outside the ratio
QUESTION = "Which response is more helpful, honest, and harmless?"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=None, help="number of pairs (default 8; 3 with --quick)")
    p.add_argument("--vllm", default=None, help="URL of a vLLM OpenAI server serving the same folder")
    p.add_argument("--llama", default=None, help="URL of a llama.cpp server serving the same weights (F32 GGUF)")
    p.add_argument("--llama-quantized", default=None,
                   help="URL of a llama.cpp server on the quantized GGUF (reported outside the ratio)")
    p.add_argument("--no-ct2", action="store_true", help="leave out the CTranslate2 engine")
    args = p.parse_args()
    setup(args)
    n = args.pairs or (3 if args.quick else 8)

    from cai_core.models.backends.local import LocalBackend
    from cai_core.reliability.paper_evals import load_paper_eval
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs

    path = model_dir(args)
    pairs = [{"id": str(i), "prompt": it["prompt"], "response_a": it["response_a"], "response_b": it["response_b"],
              "question": QUESTION} for i, it in enumerate(load_paper_eval(PAPER_DATA / "438HHHEvaluations.jsonl")[:n])]
    engines = {"local": LocalBackend(path, device="cpu", dtype="float32")}
    if not args.no_ct2:
        from cai_core.models.backends.ct2 import CT2Backend

        engines["ct2-fp32"] = CT2Backend(path, ct2_dir=tempfile.mkdtemp() + "/ct2", quantization="float32")
        # int8 (the engine's first default): reported beside the exact engines, not in the ratio
        engines["ct2-int8"] = CT2Backend(path, ct2_dir=tempfile.mkdtemp() + "/ct2", quantization="int8")
    from cai_core.models.backends.http import HttpBackend

    for name, url in (("vllm", args.vllm), ("llama.cpp", args.llama), ("llama.cpp-quantized", args.llama_quantized)):
        if url:
            engines[name] = HttpBackend(url)
        else:  # make bench-quick runs without servers: say which engines were left out
            print(f"skip: {name} (no --{'llama-quantized' if name.endswith('quantized') else name.split('.')[0]} "
                  "URL given; start that server and pass its URL to compare it)", flush=True)
    results, seconds, scoring = {}, {}, {}
    for name, backend in engines.items():
        scoring[name] = backend.option_scoring()
        start = time.perf_counter()
        verdicts = judge_pairs(backend, JudgeSpec(model=name), None, pairs)
        seconds[name] = round(time.perf_counter() - start, 2)
        results[name] = [(v.members[0].p_a_ab, v.members[0].p_a_ba) for v in verdicts]
    names = list(engines)
    print("| pair | order | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    worst = {name: 0.0 for name in names}
    for i in range(len(pairs)):
        for k, order in enumerate(("AB", "BA")):
            ref = results["local"][i][k]
            print(f"| {i} | {order} | " + " | ".join(f"{results[name][i][k]:.4f}" for name in names) + " |")
            for name in names:
                worst[name] = max(worst[name], abs(results[name][i][k] - ref))
    figures = {"model": str(path), "pairs": len(pairs), "scoring": scoring, "seconds": seconds,
               "max_abs_delta_vs_local": {k: round(v, 6) for k, v in worst.items()}}
    exact = [v for k, v in worst.items() if k not in APPROXIMATE]
    finish(args, figures, max(exact), TARGET, higher_is_better=False)


if __name__ == "__main__":
    main()
