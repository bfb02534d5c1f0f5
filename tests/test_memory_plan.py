"""The GPU memory plan, checked (issue 21 item 8), CPU part: estimate_memory against the measured peak RSS
of real training processes (tiny and default models; SFT, reward, PPO), and the Training page's verdict
before launch (fits, or the first setting to change). The GPU part is bench/gpu_bench.py --memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_core.training.specs import RUNTIME_MB, estimate_memory, memory_plan, new_spec
from tests.helpers import ROOT

TOLERANCE = 0.2  # the estimate's total within 20% of the measured peak RSS
ANSWER = "I can't help with that, but here is how to stay safe and get support."


# -- the plan before launch ----------------------------------------------------------------------
def test_a_run_that_fits_gets_no_advice(tiny_model_dir):
    plan = memory_plan(new_spec("sft", dataset="d", device="cpu"), tiny_model_dir, available_mb=64_000)
    assert plan["fits"] is True and plan["advice"] is None
    assert plan["total_mb"] == pytest.approx(plan["allocated_mb"] + RUNTIME_MB["cpu"])  # no CUDA allocator reserve
    gpu = memory_plan(new_spec("sft", dataset="d", device="cuda", precision="bf16"), tiny_model_dir, available_mb=80_000)
    assert gpu["total_mb"] == pytest.approx(gpu["allocated_mb"] * 1.15 + RUNTIME_MB["cuda"])


def test_unknown_device_memory_is_said_not_guessed(tiny_model_dir, monkeypatch):
    from cai_core.training import specs

    monkeypatch.setattr(specs, "system_memory_mb", lambda: None)
    plan = memory_plan(new_spec("sft", dataset="d", device="cpu"), tiny_model_dir)
    assert plan["fits"] is None and plan["advice"] is None


def test_full_fine_tuning_that_does_not_fit_is_told_to_use_lora_first():
    spec = new_spec("sft", dataset="d", device="cpu", adapter="full", batch_size=2, max_length=256)
    full = estimate_memory(spec)
    lora = estimate_memory(spec.copy(adapter="lora"))
    room = (full["total_mb"] + lora["total_mb"]) / 2 / 0.9  # LoRA fits, full does not
    plan = memory_plan(spec, None, available_mb=room)
    assert plan["fits"] is False and plan["advice"].startswith("use LoRA") and plan["advice_fits"] is True
    assert plan["advice_total_mb"] == pytest.approx(lora["total_mb"])


def test_on_a_gpu_lora_that_does_not_fit_is_told_qlora_then_batch(monkeypatch):
    spec = new_spec("sft", dataset="d", device="cuda", precision="bf16", adapter="lora", batch_size=8,
                    max_length=1024, gradient_checkpointing=True)
    lora = estimate_memory(spec, available_mb=1e9)
    qlora = estimate_memory(spec.copy(adapter="qlora"), available_mb=1e9)
    plan = memory_plan(spec, None, available_mb=(lora["total_mb"] + qlora["total_mb"]) / 2 / 0.9)
    assert plan["advice"].startswith("use QLoRA") and plan["advice_fits"] is True
    # reward runs cannot use QLoRA: the batch comes first there
    reward = new_spec("reward", dataset="d", device="cuda", precision="bf16", adapter="lora", batch_size=8,
                      max_length=1024, gradient_checkpointing=True)
    r = estimate_memory(reward, available_mb=1e9)
    plan = memory_plan(reward, None, available_mb=r["total_mb"] * 0.95 / 0.9)
    assert plan["advice"].startswith("lower batch size to 4") and "gradient accumulation 2" in plan["advice"]


def test_nothing_fits_names_the_biggest_saving_and_says_it_is_not_enough():
    spec = new_spec("sft", dataset="d", device="cpu", adapter="full", batch_size=4, max_length=512)
    plan = memory_plan(spec, None, available_mb=100)
    assert plan["fits"] is False and plan["advice"] and plan["advice_fits"] is False
    assert plan["advice_total_mb"] < plan["total_mb"]


def test_the_training_page_says_whether_it_fits_and_what_to_change():
    from ui.training import memory_verdict

    spec = new_spec("sft", dataset="d", device="cpu", adapter="full", batch_size=2, max_length=256)
    full, lora = estimate_memory(spec), estimate_memory(spec.copy(adapter="lora"))
    no = memory_verdict(memory_plan(spec, None, available_mb=(full["total_mb"] + lora["total_mb"]) / 2 / 0.9))
    assert no.startswith("Does not fit") and "First change: use LoRA" in no and "fits)" in no
    yes = memory_verdict(memory_plan(spec, None, available_mb=1e6))
    assert yes.startswith("Fits:")


def test_the_training_page_shows_the_verdict_before_launch(ws, tiny_model_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from cai_core.training import specs

    monkeypatch.setattr(specs, "system_memory_mb", lambda: 64_000.0)
    at = AppTest.from_file(str(ROOT / "pages" / "60_Training.py"), default_timeout=60)
    at.run()
    at.text_input(key="tr_model").set_value(str(tiny_model_dir)).run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Fits: about") and "on this machine" in s.value for s in at.success), \
        [s.value for s in at.success]


# -- measured peaks on CPU -----------------------------------------------------------------------
def peak_rss_mb(argv: list[str], env: dict) -> float:
    """Peak RSS (MB) of a command run in a fresh wrapper process (RUSAGE_CHILDREN counts its children only)."""
    code = ("import json, resource, subprocess, sys; r = subprocess.run(json.loads(sys.argv[1])); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=str(ROOT), timeout=1200)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PEAK")]
    assert line and line[-1].split()[2] == "0", out.stdout[-2000:] + out.stderr[-3000:]
    kb = int(line[-1].split()[1])
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # Linux: KiB; macOS: bytes


# What importing the training stack took where RUNTIME_MB was measured (this repository's .venv, 2026-12-07).
# The same packages' resident size varies by machine and install (a fresh clone's new .venv mapped ~60 MB
# more of the same shared libraries), so the runtime is shifted by what importing takes here.
IMPORTS_WHEN_MEASURED_MB = 484.0
IMPORTS = "import cai_core.training.worker, datasets, peft, torch, transformers, trl"


def runtime_shift_mb(env: dict) -> float:
    """How much more (or less) the runtime holds here than where RUNTIME_MB was measured."""
    return peak_rss_mb([sys.executable, "-c", IMPORTS], env) - IMPORTS_WHEN_MEASURED_MB


def _fill(tok, prompt: str, words: list[str], max_length: int) -> str:
    """The longest run of `words` whose chat (prompt + answer) stays within max_length tokens."""
    lo, hi = 1, len(words)
    while lo < hi:  # binary search on the number of words
        mid = (lo + hi + 1) // 2
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": " ".join(words[:mid])}]
        if len(tok.apply_chat_template(chat, tokenize=True, return_dict=False)) <= max_length - 2:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def _data(folder: Path, model_dir: str, max_length: int) -> tuple[Path, Path]:
    """Rows as long as max_length allows (the estimate plans for full-length sequences; the reward
    trainer drops longer pairs, so they fill the length without passing it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    words = (ANSWER + " ") * 60
    words = words.split()
    prompts = [f"How do I do risky thing number {i}?" for i in range(8)]
    sft, pref = folder / "sft.jsonl", folder / "pref.jsonl"
    long = {q: _fill(tok, q, words, max_length) for q in prompts}
    bad = {q: _fill(tok, q, ["Sure,", "here", "is", "how."] + words, max_length) for q in prompts}
    sft.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                    {"role": "assistant", "content": " ".join(words)}]}) + "\n"
                           for q in prompts))  # SFT truncates to max_length
    pref.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}],
                                        "chosen": [{"role": "assistant", "content": long[q]}],
                                        "rejected": [{"role": "assistant", "content": bad[q]}]})
                            + "\n" for q in prompts))
    return sft, pref


def measure(model: str, tmp_path: Path, kinds: tuple[str, ...]) -> list[dict]:
    """Train each kind for 2 steps in its own process; its peak RSS next to the estimate of its spec."""
    from cai_core.training.specs import load_spec

    from cai_core.models.specs import default_model_dir
    from cai_core.workspace import Workspace

    ws = tmp_path / "ws"
    model_dir = model if Path(model).is_dir() else str(default_model_dir(Workspace.open(ws)))  # the machine cache
    sft, pref = _data(tmp_path, model_dir, 128)
    env = {"OMP_NUM_THREADS": "1", "CAI_ENGINE": "transformers"}
    common = ["--max-steps", "2", "--batch-size", "2", "--max-length", "128", "--device", "cpu", "--precision", "fp32",
              "--workspace", str(ws), "--set", "probe_steps=0", "--set", "eval_split=0"]
    rows, reward_dir = [], None
    shift = runtime_shift_mb(env)
    for kind in kinds:
        k = kind.split("-")[0]
        extra = {"sft": ["--lora", "--dataset", str(sft)], "sft-full": ["--full", "--dataset", str(sft)],
                 "reward": ["--full", "--dataset", str(pref)],
                 "ppo": ["--lora", "--dataset", str(pref), "--set", "response_length=16", "--set", "num_ppo_epochs=1",
                         "--reward-model", str(reward_dir)]}[kind]
        out = ws / "runs" / f"mem-{kind}"
        t0 = time.time()
        peak = peak_rss_mb([sys.executable, "-m", "cai_core", "train", k, "--model", model, "--out", str(out),
                            *extra, *common], env)
        spec = load_spec(out / "spec.yaml")
        est = estimate_memory(spec, model_dir, reward_dir if k == "ppo" else None)
        total = est["total_mb"] + shift
        rows.append({"kind": kind, "peak_rss_mb": round(peak), "estimate_mb": round(total),
                     "runtime_shift_mb": round(shift), "ratio": round(total / peak, 3),
                     "seconds": round(time.time() - t0)})
        if k == "reward":
            reward_dir = str(out / "model") if (out / "model").exists() else str(out)
    print("\n".join(json.dumps(r) for r in rows))
    return rows


@pytest.mark.slow
def test_the_estimate_matches_the_tiny_models_peak_rss(tmp_path, tiny_model_dir):
    """On the tiny model the runtime (torch, transformers, trl) is nearly all of it: RUNTIME_MB is measured here."""
    rows = measure(str(tiny_model_dir), tmp_path, ("sft", "reward", "ppo"))
    for r in rows:
        assert abs(r["ratio"] - 1) <= TOLERANCE, r


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CAI_MEMORY_DEFAULT") != "1",
                    reason="several minutes on 2 cores: CAI_MEMORY_DEFAULT=1 measures the default model too")
def test_the_estimate_matches_the_default_models_peak_rss(tmp_path):
    """SmolLM2-135M (the default model): weights, gradients, Adam and activations are most of the peak."""
    rows = measure("default", tmp_path, ("sft", "sft-full", "reward", "ppo"))
    for r in rows:
        assert abs(r["ratio"] - 1) <= TOLERANCE, r
