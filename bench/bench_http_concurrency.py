"""Revise throughput through an OpenAI-compatible server: 4 requests in flight (the old fixed
pool) vs the number the endpoint chooses (http.CONCURRENCY: 32 for vLLM/TGI, 1 for
llama-cpp-python) - issue 14, "throughput against a server".

Both runs are `run_revision` (answer, one critique, one revision per prompt; greedy; the same
prompts and max new tokens) into a throwaway store, through `HttpBackend(URL#concurrency=4)` and
`HttpBackend(URL)`. A warm-up request comes first; the concurrency-4 run goes first, so any server
prefix cache warmed by it only helps the other run's first batch slightly (prompts differ per
stage). ratio = chosen-concurrency prompts/s / concurrency-4 prompts/s.

Without --url it starts the project's own server (cai_core/models/mock_server.py, vLLM-like,
answering after --latency s however many requests arrive) and stops it afterwards.

    python bench/bench_http_concurrency.py [--url http://127.0.0.1:8000/v1] [--prompts 32] [--latency 0.2]
"""
from __future__ import annotations

from benchlib import ROOT, Timer, finish, parser, red_team_prompts, temp_store

TARGET = 1.0


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="the server's base URL (…/v1); default: start the project's "
                   "mock server (vLLM-like, --latency s per completion)")
    p.add_argument("--latency", type=float, default=0.2, help="the mock server's seconds per completion (without --url)")
    p.add_argument("--prompts", type=int, default=None, help="number of prompts (default 32; 8 with --quick)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per stage (default 64; 16 with --quick)")
    args = p.parse_args()
    n = args.prompts or (8 if args.quick else 32)
    max_new = args.max_new_tokens or (16 if args.quick else 64)
    if args.url is None:
        from cai_core.models.mock_server import start_process

        server = start_process(latency=args.latency)
        args.url = server.url
        print(f"started the mock server at {args.url} (latency {args.latency:g} s)")
        try:
            run(args, n, max_new)
        finally:
            server.kill()
    else:
        run(args, n, max_new)


def run(args, n: int, max_new: int) -> None:
    from cai_core.constitution.files import load_constitution_file
    from cai_core.models.backends.http import HttpBackend
    from cai_core.supervised.revision import ReviseSettings, run_revision

    prompts = red_team_prompts(n)
    constitution = load_constitution_file(ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml")
    settings = ReviseSettings(rounds=1, few_shot=False, cot=False, temperature=0.0, max_new_tokens=max_new, seed=0)
    figures: dict = {"url": args.url, "prompts": n, "max_new_tokens_per_stage": max_new}
    pps = {}
    for label, spec in (("concurrency 4", args.url.split("#")[0] + "#concurrency=4"), ("endpoint's choice", args.url)):
        backend = HttpBackend(spec)
        backend.probe()
        store = temp_store()
        with Timer() as t:
            run_revision(store, backend, constitution, prompts, settings, "bench", batch="bench", batch_size=max(32, n))
        done = store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done'")
        pps[label] = n / t.seconds
        figures[label] = (f"concurrency {backend.concurrency} ({backend.server_kind or 'unknown kind'}): "
                          f"{t.seconds:.1f}s, {pps[label]:.3f} prompts/s, {done}/{n} done")
    finish(args, figures, pps["endpoint's choice"] / pps["concurrency 4"], TARGET)


if __name__ == "__main__":
    main()
