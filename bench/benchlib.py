"""Shared bits of the bench/ scripts: arguments, the model under test, a throwaway store, the result line.

Every script prints its figures, then as its LAST line `ratio=<float> target=<float>`. `--quick` uses
the tiny random model (built once into a temp folder) and a few items, so it runs in well under a
minute; without it the scripts use the embedded default model (SmolLM2-135M-Instruct) on CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PAPER_DATA = ROOT.parent / "shared" / "datasets" / "cai-paper"
TINY_DIR = Path(tempfile.gettempdir()) / "cai-bench-tiny-model"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny random model and a few items (seconds)")
    p.add_argument("--workspace", default=None, help="workspace holding the converted default model (default ./workspace)")
    p.add_argument("--model", default=None, help="model folder to use instead of the default (or tiny with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def setup(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def model_dir(args) -> Path:
    """The folder of the model under test: --model, the tiny model (--quick), or the embedded default."""
    if args.model:
        return Path(args.model)
    if args.quick:
        if not (TINY_DIR / "config.json").exists():
            from cai_core.models.tiny import build_tiny_model

            build_tiny_model(TINY_DIR)
        return TINY_DIR
    from cai_core.models.specs import default_model_dir
    from cai_core.workspace import Workspace

    return default_model_dir(Workspace.open(args.workspace),
                             progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))


def temp_store():
    """A fresh store in a temp folder, so a benchmark never resumes (skips) earlier work."""
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    return Store(Workspace.open(tempfile.mkdtemp(prefix="cai-bench-")))


def red_team_prompts(n: int) -> list[str]:
    lines = (ROOT / "sample_data" / "prompts" / "red_team.jsonl").read_text().splitlines()
    prompts = [json.loads(l)["prompt"] for l in lines if l.strip()]
    return [prompts[i % len(prompts)] for i in range(n)]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def finish(args, figures: dict, ratio: float, target: float, higher_is_better: bool = True) -> None:
    """Print the figures, whether the target is met, and the final `ratio=... target=...` line."""
    met = ratio >= target if higher_is_better else ratio <= target
    figures = {**figures, "machine": machine(), "quick": bool(args.quick), "ratio": round(ratio, 3),
               "target": target, "met": met, "date": time.strftime("%Y-%m-%d %H:%M")}
    for k, v in figures.items():
        print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(f"target {'met' if met else 'MISSED'} ({'>=' if higher_is_better else '<='} {target})")
    print(f"ratio={ratio:.3f} target={target}")


class CountingBackend:
    """Wraps a backend to count generated tokens (re-tokenized text) for the throughput figures."""

    def __init__(self, inner, tokenizer):
        self.inner, self.tokenizer, self.tokens = inner, tokenizer, 0

    def generate(self, conversations, params):
        outs = self.inner.generate(conversations, params)
        for row in outs:
            for c in row:
                self.tokens += len(self.tokenizer(c.text, add_special_tokens=False)["input_ids"])
        return outs

    def __getattr__(self, name):
        return getattr(self.inner, name)


def seed_loop(backend, prompts, constitution, settings, max_new: int) -> tuple[float, int]:
    """The seed notes' way (../shared/000_17725e7b1a547050.txt): a transformers text-generation
    pipeline called once per prompt and stage (answer, critique, revision), nothing stored.
    Returns (seconds, tokens generated, re-tokenized)."""
    from transformers import pipeline

    from cai_core.supervised.revision import (
        critique_conversation,
        plan_principles,
        revision_conversation,
    )

    generator = pipeline("text-generation", model=backend.model, tokenizer=backend.tokenizer, device="cpu")
    gen_kw = dict(max_new_tokens=max_new, do_sample=False, return_full_text=False,
                  pad_token_id=backend.tokenizer.pad_token_id)

    def call(conv) -> str:
        out = generator(conv, **gen_kw)[0]["generated_text"]
        return out if isinstance(out, str) else out[-1]["content"]

    call([{"role": "user", "content": "hi"}])  # warm-up: the first call pays one-off costs
    tokens = 0
    with Timer() as t:
        for prompt in prompts:
            principle = constitution.principle(plan_principles(constitution, settings, prompt)[0])
            answer = call([{"role": "user", "content": prompt}])
            critique = call(critique_conversation(constitution, principle, prompt, answer, settings))
            revision = call(revision_conversation(constitution, principle, prompt, answer, critique, settings))
            for text in (answer, critique, revision):
                tokens += len(backend.tokenizer(text.strip(), add_special_tokens=False)["input_ids"])
    return t.seconds, tokens
