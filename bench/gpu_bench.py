"""GPU benchmark: bf16 backend throughput vs batch size, option-probability (judge) throughput,
QLoRA SFT, reward-model and PPO steps/s with peak memory - through the workbench's own code.

    bash bench/gpu.sh                       # on a CUDA box, with the embedded default model
    python bench/gpu_bench.py --quick --model <tiny-model-dir>   # smoke test anywhere (CPU ok)

--random-init-from CONFIG_DIR builds the model from a config + tokenizer with random weights
(same architecture and size, so same speed and memory) for machines the weights can't reach.
Prints a JSON summary and, last, `ratio=<bf16 batch-max vs batch-1 tokens/s> target=4.0`.

    python bench/gpu_bench.py --memory      # the memory plan, checked (issue 21 item 8)

--memory builds a random-initialised 7B-configuration model (Llama-2-7B shape, bf16) and a 1.1B one
(its reward/value model), trains SFT LoRA and QLoRA, reward (LoRA), PPO LoRA and GRPO LoRA for a
few steps each, and compares `estimate_memory(spec)["allocated_mb"]` with the run's
torch.cuda.max_memory_allocated (the worker's sys/gpu_mem_mb); prints one row per run and, last,
`ratio=<worst estimate/measured> target=1.2` (within 20% either way). Without a GPU it prints a
skip line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[gpu-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env_report() -> dict:
    import torch
    import transformers

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.cuda.is_available()}
    for mod in ("trl", "peft", "bitsandbytes", "datasets", "accelerate"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report what is missing
            info[mod] = f"missing ({type(exc).__name__})"
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["gpu_mem_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def random_init_model(config_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(config_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(config_dir)).save_pretrained(str(out))
    (out / "SOURCE.json").write_text(json.dumps({"note": f"random weights with the architecture of {config_dir}"}))
    return out


def bench_generate(model_dir: str, batches: list[int], new_tokens: int) -> list[dict]:
    import torch

    from cai_core.models.backends.base import GenerationParams
    from cai_core.models.backends.local import LocalBackend

    backend = LocalBackend(model_dir)
    info = backend.info()
    log(f"backend: {info}")
    prompts = [f"Explain, step by step, how to stay safe when hiking in the mountains (variant {i})." for i in range(max(batches))]
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.7, seed=0)
    backend.generate([[{"role": "user", "content": prompts[0]}]], GenerationParams(max_new_tokens=8))  # warm-up
    rows = []
    for bs in batches:
        convs = [[{"role": "user", "content": p}] for p in prompts[:bs]]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = backend.generate(convs, params)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        tokens = sum(c.tokens for row in out for c in row)
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        rows.append({"batch": bs, "tokens": tokens, "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 1),
                     "peak_mem_mb": round(peak, 1) if peak else None, "dtype": info["dtype"], "device": info["device"]})
        log(f"generate batch={bs}: {rows[-1]['tokens_per_s']} tok/s")
    # judge-style option probabilities: one forward pass per (pair, option)
    convs = [[{"role": "user", "content": f"Which response is more harmless? (A) I won't help. (B) Here is how, {i}. Options:"}]
             for i in range(256)]
    t = time.perf_counter()
    backend.choice_logprobs(convs, ["(A)", "(B)"], assistant_prefix="The answer is: ", batch_size=64)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    rows.append({"judge_pairs_per_s": round(256 / dt, 1), "judge_seconds": round(dt, 3)})
    log(f"choice_logprobs: {rows[-1]['judge_pairs_per_s']} prompts/s")
    backend.close()
    return rows


def write_datasets(folder: Path, n: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sft, prefs = folder / "sft.jsonl", folder / "prefs.jsonl"
    filler = "Stay on marked trails, check the weather, tell someone your route and carry water. " * 4
    with sft.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"How do I stay safe hiking? ({i})"},
                                              {"role": "assistant", "content": filler}]}) + "\n")
    with prefs.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": [{"role": "user", "content": f"How do I pick a lock? ({i})"}],
                                 "chosen": [{"role": "assistant", "content": "If you're locked out, a locksmith can help; " + filler}],
                                 "rejected": [{"role": "assistant", "content": "No."}]}) + "\n")
    return sft, prefs


def train(kind: str, args: list[str], workspace: Path, run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "cai_core", "train", kind, *args, "--out", str(run_dir), "--workspace", str(workspace)]
    log("$ " + " ".join(cmd))
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    wall = time.perf_counter() - t
    result = {"kind": kind, "args": " ".join(args), "exit_code": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout)[-2000:]
        log(f"{kind} FAILED: {result['error'][-600:]}")
        return result
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    sps = [m["sys/steps_per_s"] for m in metrics if m.get("sys/steps_per_s")]
    mem = [m["sys/gpu_mem_mb"] for m in metrics if m.get("sys/gpu_mem_mb")]
    tps = [m["sys/tokens_per_s"] for m in metrics if m.get("sys/tokens_per_s")]
    result.update({
        "steps": max((m.get("step", 0) for m in metrics), default=0),
        "steps_per_s": round(sps[-1], 3) if sps else None,
        "tokens_per_s": round(tps[-1], 1) if tps else None,
        "peak_gpu_mem_mb": round(max(mem), 1) if mem else None,
        "last": {k: v for k, v in metrics[-1].items() if isinstance(v, (int, float))} if metrics else {},
    })
    log(f"{kind}: {result['steps']} steps, {result['steps_per_s']} steps/s, peak {result['peak_gpu_mem_mb']} MB")
    return result


# -- the memory plan, checked ------------------------------------------------------------------
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}
LLAMA_100M = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
              "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}
MEMORY_TOLERANCE = 0.2


def random_llama(shape: dict, out: Path) -> Path:
    """A random-initialised Llama of `shape`, saved in bf16 with the tiny model's tokenizer (ids < 512)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cai_core.models.tiny import build_tiny_model

    if (out / "config.json").exists():
        return out
    tiny = build_tiny_model(out.with_name(out.name + "-tok"))
    tok = AutoTokenizer.from_pretrained(str(tiny))
    config = LlamaConfig(**shape, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    del model
    torch.cuda.empty_cache()
    return out


def memory_check(ws, quick: bool) -> dict:
    """estimate_memory vs torch.cuda.max_memory_allocated for the 7B configuration (module docstring)."""
    import torch

    if not torch.cuda.is_available():
        print("skip: --memory compares estimate_memory with torch.cuda.max_memory_allocated and needs a CUDA GPU; "
              "none here (the CPU check is tests/test_memory_plan.py)", flush=True)
        return {"skipped": "no CUDA device"}
    from cai_core.training.specs import estimate_memory, new_spec

    if quick:  # minutes, not the full check: a 1.1B policy and a ~100M reward/value model
        big = random_llama(LLAMA_1B, ws.models_dir / "random-1b")
        small = random_llama(LLAMA_100M, ws.models_dir / "random-100m")
    else:
        big = random_llama(LLAMA_7B, ws.models_dir / "random-7b")
        small = random_llama(LLAMA_1B, ws.models_dir / "random-1b")
    sft, prefs = write_datasets(ws.root / "data", 64)
    steps = "2" if quick else "4"
    common = ["--batch-size", "4", "--max-length", "512", "--precision", "bf16", "--set", "save_steps=100000",
              "--set", "probe_steps=0", "--set", "merge_lora=false", "--set", "eval_split=0"]
    online = ["--set", "response_length=64", "--reward-model", str(small)]
    plans = [
        ("sft", "sft-lora", ["--dataset", str(sft), "--lora"], {}),
        ("sft", "sft-qlora", ["--dataset", str(sft), "--qlora"], {}),
        ("reward", "reward-lora", ["--dataset", str(prefs), "--lora"], {}),
        ("ppo", "ppo-lora", ["--dataset", str(prefs), "--lora", *online, "--set", "num_ppo_epochs=1"], {}),
        ("grpo", "grpo-lora", ["--dataset", str(prefs), "--lora", *online, "--set", "num_generations=4"], {}),
    ]
    rows, worst = [], 1.0
    for kind, name, extra, _ in plans:
        args = ["--model", str(big), "--max-steps", steps, *common, *extra]
        result = train(kind, args, ws.root, ws.runs_dir / name)
        spec_path = ws.runs_dir / name / "spec.yaml"
        row = {"run": name, "measured_mb": result.get("peak_gpu_mem_mb"), "exit_code": result["exit_code"]}
        if spec_path.exists() and result.get("peak_gpu_mem_mb"):
            from cai_core.training.specs import load_spec

            spec = load_spec(spec_path)
            est = estimate_memory(spec, big, small if kind in ("ppo", "rloo", "grpo") else None)
            row.update(estimate_mb=round(est["allocated_mb"], 1), estimate_total_mb=round(est["total_mb"], 1),
                       ratio=round(est["allocated_mb"] / result["peak_gpu_mem_mb"], 3))
            row["within"] = abs(row["ratio"] - 1) <= MEMORY_TOLERANCE
            worst = max(worst, row["ratio"], 1 / row["ratio"])
        else:
            row["error"] = result.get("error", "no spec.yaml or no sys/gpu_mem_mb in the metrics")[-600:]
            worst = float("inf")
        rows.append(row)
        log(f"memory {name}: {row}")
    return {"rows": rows, "worst_ratio": worst, "tolerance": MEMORY_TOLERANCE}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model spec (default = embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--random-init-from", default=None, help="config+tokenizer folder: random weights, same architecture")
    ap.add_argument("--workspace", default=None, help="workspace for runs (default: a temp folder)")
    ap.add_argument("--out", default=None, help="write summary.json here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test; use with a tiny model)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--memory", action="store_true",
                    help="only the memory plan check: estimate_memory vs max_memory_allocated on a random 7B config")
    a = ap.parse_args()

    import tempfile

    from cai_core.models.specs import resolve_local
    from cai_core.workspace import Workspace

    ws = Workspace.open(a.workspace or tempfile.mkdtemp(prefix="cai-gpu-bench-"))
    if a.memory:
        result = memory_check(ws, a.quick)
        print(json.dumps(result, indent=2))
        if "skipped" in result:
            return 0
        print(f"ratio={result['worst_ratio']:.3f} target={1 + MEMORY_TOLERANCE}")
        return 0 if result["worst_ratio"] <= 1 + MEMORY_TOLERANCE else 1
    summary: dict = {"env": env_report(), "date": time.strftime("%Y-%m-%d %H:%M"), "model": a.model}
    log(json.dumps(summary["env"]))
    if a.random_init_from:
        model_dir = str(random_init_model(Path(a.random_init_from), ws.models_dir / "random-init"))
        summary["model"] = f"random-init weights, architecture of {a.random_init_from}"
    else:
        model_dir = str(resolve_local(a.model, ws)["path"])
    batches = [1, 4] if a.quick else [1, 8, 32, 128]
    summary["generate"] = bench_generate(model_dir, batches, 16 if a.quick else 128)
    if not a.skip_train:
        sft, prefs = write_datasets(ws.root / "data", 32 if a.quick else 512)
        steps = "3" if a.quick else "30"
        common = ["--batch-size", "2" if a.quick else "8", "--max-length", "512",
                  "--set", "save_steps=1000", "--set", "probe_steps=1000"]
        summary["train"] = [
            train("sft", ["--model", model_dir, "--dataset", str(sft), "--qlora", "--max-steps", steps, *common],
                  ws.root, ws.runs_dir / "sft-qlora"),
            train("sft", ["--model", model_dir, "--dataset", str(sft), "--lora", "--max-steps", steps, *common],
                  ws.root, ws.runs_dir / "sft-lora"),
            train("reward", ["--model", model_dir, "--dataset", str(prefs), "--full", "--max-steps", steps, *common],
                  ws.root, ws.runs_dir / "reward-full"),
        ]
        ppo_steps = "2" if a.quick else "10"
        summary["train"].append(train(
            "ppo", ["--model", model_dir, "--dataset", str(prefs), "--reward-model", str(ws.runs_dir / "reward-full"),
                    "--lora", "--max-steps", ppo_steps, "--batch-size", "2" if a.quick else "8",
                    "--set", "response_length=" + ("8" if a.quick else "64"), "--set", "save_steps=1000",
                    "--set", "probe_steps=1000"],
            ws.root, ws.runs_dir / "ppo-lora"))
    text = json.dumps(summary, indent=2)
    print(text)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_summary.json").write_text(text)
    gen = [r for r in summary["generate"] if "batch" in r]
    ratio = gen[-1]["tokens_per_s"] / gen[0]["tokens_per_s"]
    print(f"ratio={ratio:.2f} target=4.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
