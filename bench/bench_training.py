"""Training overhead: the run manager's step time vs the same bare TRL script on the same data.

For SFT (LoRA), the reward model (full) and PPO (LoRA, rewarded by that reward model), the same
model, data and hyper-parameters are trained twice, each in its own fresh process:

- managed: `cai_core.training.runs.launch` (worker process, metrics to file and store every step,
  graceful-stop checks, memory/throughput figures) - step times from the stored per-step metrics;
- bare: a plain TRL script (`--bare`, below: transformers + peft + trl only, no cai_core) with one
  callback noting the time at every step end.

Step time = median interval between consecutive steps after the first two (warm-up and setup are
not part of a step). ratio = the worst kind's managed / bare step time. Target <= 1.05.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 1.05
BENCH = Path(__file__).resolve()


# -- the bare TRL script (no cai_core) --------------------------------------------------------------
def bare(cfg: dict) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    torch.manual_seed(cfg["seed"])
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    kind, model_path = cfg["kind"], cfg["model"]
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in Path(cfg["data"]).read_text().splitlines() if line.strip()]
    common = dict(output_dir=cfg["out"], learning_rate=cfg["lr"], max_steps=cfg["steps"],
                  per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=cfg["grad_accum"],
                  seed=cfg["seed"], logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                  use_cpu=True, gradient_checkpointing=False, bf16=False, fp16=False)
    lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        import re

        if re.search(r"{%-?\s*generation\s*-?%}", tok.chat_template or ""):  # assistant-only loss via markers
            data, sft_cfg = rows, SFTConfig(max_length=cfg["max_length"], assistant_only_loss=True, **common)
        else:  # no markers: the last assistant turn as the completion (TRL masks the prompt the same way)
            data = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
            sft_cfg = SFTConfig(max_length=cfg["max_length"], assistant_only_loss=False, **common)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                             args=sft_cfg, train_dataset=Dataset.from_list(data), processing_class=tok,
                             peft_config=lora, callbacks=[Clock()])
    elif kind == "reward":
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(model=model, args=RewardConfig(max_length=cfg["max_length"], **common),
                                train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[Clock()])
    else:  # ppo
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        tok.padding_side = "left"
        data = [{"input_ids": list(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))[-cfg["max_length"]:]} for r in rows]
        ds = Dataset.from_list(data)
        common.pop("max_steps")
        batch = cfg["batch_size"] * cfg["grad_accum"]
        ppo_cfg = PPOConfig(total_episodes=cfg["steps"] * batch, response_length=cfg["response_length"],
                            kl_coef=cfg["kl_coef"], temperature=cfg["temperature"], num_ppo_epochs=cfg["num_ppo_epochs"],
                            num_mini_batches=1, stop_token="eos", local_rollout_forward_batch_size=cfg["batch_size"],
                            num_sample_generations=0, sft_model_path=model_path, reward_model_path=cfg["reward"],
                            **common)

        def scorer():
            m = AutoModelForSequenceClassification.from_pretrained(cfg["reward"], num_labels=1, dtype=torch.float32)
            m.config.pad_token_id = tok.pad_token_id
            return m

        trainer = PPOTrainer(args=ppo_cfg, processing_class=tok,
                             model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                             ref_model=None, reward_model=scorer(), value_model=scorer(), train_dataset=ds,
                             eval_dataset=ds.select(range(min(len(ds), cfg["batch_size"]))), peft_config=lora,
                             callbacks=[Clock()])
    trainer.train()
    print("TIMES " + json.dumps(times), flush=True)


# -- the comparison ------------------------------------------------------------------------------
def median_step(times: list[float]) -> float:
    gaps = [b - a for a, b in zip(times, times[1:])][2:]
    if not gaps:
        raise SystemExit(f"too few steps to time ({len(times)}); use more --steps")
    return statistics.median(gaps)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        return bare(json.loads(Path(sys.argv[2]).read_text()))
    from benchlib import ROOT, finish, model_dir, parser, red_team_prompts, setup, temp_store

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 12; 6 with --quick)")
    p.add_argument("--kinds", default="sft,reward,ppo")
    p.add_argument("--max-length", type=int, default=None, help="default 256")
    args = p.parse_args()
    setup(args)
    steps = args.steps or (6 if args.quick else 12)
    max_length = args.max_length or 256  # longer pairs are dropped by the reward trainer
    from cai_core.training.runs import get_run, launch, read_metrics, refresh
    from cai_core.training.specs import new_spec

    model = str(model_dir(args))
    store = temp_store()
    ws = store.workspace.root
    prompts = red_team_prompts(16)
    answer = "I can't help with that, but here is how to stay safe and get support."
    sft_rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]} for q in prompts]
    pref_rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": answer}],
                  "rejected": [{"role": "assistant", "content": "Sure, here is exactly how to do it."}]} for q in prompts]
    files = {"sft": ws / "sft.jsonl", "pref": ws / "pref.jsonl"}
    files["sft"].write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    files["pref"].write_text("".join(json.dumps(r) + "\n" for r in pref_rows))
    common = dict(model=model, max_steps=steps, batch_size=2, grad_accum=1, max_length=max_length, probe_steps=0,
                  save_steps=100000, logging_steps=1, eval_split=0.0, seed=0, precision="fp32", device="cpu")
    env = {"OMP_NUM_THREADS": str(args.threads or os.environ.get("OMP_NUM_THREADS", "1"))}
    results, worst = {}, 0.0
    reward_dir = None
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        if kind == "sft":
            spec = new_spec("sft", name="bench-sft", dataset=str(files["sft"]), adapter="lora", **common)
        elif kind == "reward":
            spec = new_spec("reward", name="bench-reward", dataset=str(files["pref"]), adapter="full", **common)
        elif kind == "ppo":
            if reward_dir is None:
                raise SystemExit("ppo needs the reward kind first (it scores with that model)")
            spec = new_spec("ppo", name="bench-ppo", dataset=str(files["pref"]), adapter="lora", reward_model=reward_dir,
                            response_length=8 if args.quick else 32, num_ppo_epochs=1, **common)
        else:
            raise SystemExit(f"unknown kind {kind}")
        # managed
        run = launch(store, spec, env=env)
        while True:
            refresh(store)
            run = get_run(store, run.id)
            if run.status in ("finished", "failed", "stopped"):
                break
            time.sleep(0.5)
        if run.status != "finished":
            raise SystemExit(f"managed {kind} run {run.status}: {run.error}\n{run.paths.log.read_text()[-2000:]}")
        first: dict[int, float] = {}
        for m in read_metrics(store, run.id):
            first.setdefault(m["step"], m.get("created_at") or m.get("time") or 0.0)
        managed_times = [first[s] for s in sorted(first)]
        if kind == "reward":
            reward_dir = str(run.run_dir / "model") if (run.run_dir / "model").exists() else str(run.run_dir)
        # bare, same values
        cfg = {"kind": kind, "model": model, "data": str(files["sft" if kind == "sft" else "pref"]),
               "out": str(ws / f"bare-{kind}"), "steps": steps, "batch_size": spec.batch_size,
               "grad_accum": spec.grad_accum, "max_length": spec.max_length, "lr": spec.resolved_lr(), "seed": spec.seed,
               "lora_r": spec.lora_r, "lora_alpha": spec.lora_alpha, "lora_dropout": spec.lora_dropout,
               "reward": reward_dir, "response_length": getattr(spec, "response_length", None),
               "kl_coef": getattr(spec, "kl_coef", None), "temperature": getattr(spec, "temperature", None),
               "num_ppo_epochs": getattr(spec, "num_ppo_epochs", None)}
        cfg_path = ws / f"bare-{kind}.json"
        cfg_path.write_text(json.dumps(cfg))
        proc = subprocess.run([sys.executable, str(BENCH), "--bare", str(cfg_path)], capture_output=True, text=True,
                              env={**os.environ, **env, "PYTHONPATH": ""}, cwd=str(ROOT))
        line = next((l for l in proc.stdout.splitlines() if l.startswith("TIMES ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"bare {kind} failed:\n{proc.stderr[-3000:]}")
        bare_times = json.loads(line[6:])
        m_step, b_step = median_step(managed_times), median_step(bare_times)
        ratio = m_step / b_step
        worst = max(worst, ratio)
        results[kind] = f"managed {m_step * 1000:.0f} ms/step, bare {b_step * 1000:.0f} ms/step, ratio {ratio:.3f}"
    finish(args, {"model": Path(model).name, "steps": steps, "max_length": max_length, "batch_size": 2, **results},
           worst, TARGET, higher_is_better=False)


if __name__ == "__main__":
    main()
