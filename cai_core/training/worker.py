"""The trainer process: one run, top to bottom (read it like nanoGPT's train.py).

    spec -> device and precision -> tokenizer -> dataset -> model(s) (+ LoRA / QLoRA) -> TRL trainer
         -> train (resume from the latest checkpoint) -> save model or adapter (+ merged copy)

A `RunMonitor` callback streams every log to RUN_DIR/metrics.jsonl and the store, adds memory and
throughput, answers a few fixed probe prompts every `probe_steps` steps (RUN_DIR/samples.jsonl), and
stops gracefully when RUN_DIR/STOP appears or SIGTERM arrives (save a checkpoint, save the model,
exit). PPO's loop ignores `should_training_stop`, so for PPO the callback raises `StopRequested`
and the worker saves. Under `accelerate launch` only the main process writes files and status.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from cai_core.errors import CaiError
from cai_core.jsonl import append_jsonl
from cai_core.models.specs import default_model_dir
from cai_core.store import Store
from cai_core.training.runs import (
    RunPaths,
    checkpoint_step,
    latest_checkpoint,
    record_metrics,
    stop_requested,
)
from cai_core.training.sources import (
    DatasetRef,
    as_messages,
    load_rows,
    prompts_of,
    resolve_dataset,
    resolve_model_ref,
    soft_label_of,
)
from cai_core.training.specs import RunSpec


class StopRequested(Exception):
    """Raised from the callback to leave PPO's loop, which does not honour should_training_stop."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def agreed(flag: bool) -> bool:
    """True on every rank when it is True on any: a stop seen by one rank (the STOP file at a
    slightly different moment, a signal) stops all of them at the same step. Without this one rank
    would leave the loop while the others wait for it in the next gradient all-reduce."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def say(message: str) -> None:
    """A progress line in train.log, from rank 0 only (every rank shares the log)."""
    if is_main_process():
        print(message, flush=True)


# -- models -------------------------------------------------------------------------------------
def model_location(store: Store | None, workspace, ref: str) -> tuple[str, str | None]:
    """(base model path, LoRA adapter path or None) for a model reference.

    A LoRA run resolves to its merged copy when it has one, else to base + adapter.
    """
    resolved = resolve_model_ref(store, ref)
    if resolved == "default":
        return str(default_model_dir(workspace)), None
    if resolved.startswith("hf:"):
        return resolved[3:], None
    path = Path(resolved)
    if (path / "adapter_config.json").exists():
        if (path / "merged" / "config.json").exists():
            return str(path / "merged"), None
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return base, str(path)
    return str(path), None


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_tokenizer(path: str, padding_side: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def load_policy(base: str, adapter: str | None, spec: RunSpec, device: str):
    """A causal LM to train: full precision, or 4-bit nf4 for QLoRA; a parent adapter is merged in."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch_dtype(spec.resolved_precision())
    kwargs: dict = {"dtype": dtype}
    if spec.adapter == "qlora":
        if adapter:
            raise CaiError("QLoRA needs a full base model; the parent LoRA run has no merged copy (merge_lora)")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float16 else torch.float16)
        if device == "cuda":
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if spec.adapter == "qlora" and device == "cpu":
        # bitsandbytes repacks 4-bit weights for fast CPU inference on the first no-grad forward (our probe
        # generations); the repacked layout is not trainable and fails on small shapes. Keep the training layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def load_scorer(ref: str, store, workspace, spec: RunSpec, pad_token_id: int):
    """A reward (or value) model: a 1-label sequence classifier; LoRA reward runs are merged in memory."""
    from transformers import AutoModelForSequenceClassification

    base, adapter = model_location(store, workspace, ref)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, dtype=torch_dtype(spec.resolved_precision()))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.config.pad_token_id = pad_token_id
    return model


def lora_config(spec: RunSpec, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                      target_modules=spec.target_modules(), task_type=task_type)


# -- data -----------------------------------------------------------------------------------------
def _assistant(value) -> list[dict]:
    return [{"role": "assistant", "content": value}] if isinstance(value, str) else list(value)


def build_dataset(spec: RunSpec, ref: DatasetRef, tok):
    """Rows -> the datasets.Dataset the kind's trainer wants (only the columns it reads)."""
    from datasets import Dataset

    rows = load_rows(ref)
    if not rows:
        raise CaiError(f"dataset {ref.given!r} is empty")
    kind = spec.kind
    if kind == "sft":
        from trl.chat_template_utils import has_generation_markers

        # "add_generation_prompt" is not a marker: look for {% generation %} itself.
        has_markers = has_generation_markers(tok.chat_template or "")
        if "messages" in rows[0] and (has_markers or not spec.assistant_only_loss):
            data = [{"messages": r["messages"]} for r in rows]
        elif "messages" in rows[0]:
            # No {% generation %} markers in this chat template: train on the last assistant turn
            # as a prompt-completion pair, which TRL masks the same way (completion-only loss).
            data = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows
                    if r["messages"] and r["messages"][-1].get("role") == "assistant"]
        else:
            data = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    elif kind in ("reward", "dpo"):
        data = [{"prompt": as_messages(r["prompt"]), "chosen": _assistant(r["chosen"]),
                 "rejected": _assistant(r["rejected"])} for r in rows]
        if kind == "reward" and getattr(spec, "soft_labels", False):
            for n, (row, r) in enumerate(zip(data, rows), start=1):
                row["p_chosen"] = soft_label_of(r, n, ref.given)
    elif kind == "ppo":
        data = []
        for msgs in prompts_of(rows):
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
            data.append({"input_ids": list(ids)[-spec.max_length:]})
    else:  # rloo, grpo
        data = [{"prompt": msgs} for msgs in prompts_of(rows)]
    if not data:
        raise CaiError(f"dataset {ref.given!r} has no usable rows for a {kind} run")
    ds = Dataset.from_list(data)
    if spec.eval_split > 0 and len(ds) >= 2:
        n_eval = max(1, round(len(ds) * spec.eval_split))
        split = ds.train_test_split(test_size=n_eval, seed=spec.seed)
        return split["train"], split["test"]
    return ds, None


# -- the callback -------------------------------------------------------------------------------
def make_monitor(store, run_id, run_dir: Path, spec: RunSpec, prober, *, raise_on_stop: bool, start_step: int = 0):
    import psutil
    import torch
    from transformers import TrainerCallback

    term = {"flag": False}

    def on_term(*_):
        term["flag"] = True

    signal.signal(signal.SIGTERM, on_term)  # every rank: the launcher forwards SIGTERM to all of them

    class RunMonitor(TrainerCallback):
        """Metrics to file + store, probe samples, graceful stop."""

        def __init__(self):
            self.last = (time.time(), start_step, None)
            self.proc = psutil.Process()
            self.stopped = False

        def on_train_begin(self, args, state, control, **kw):
            if start_step and state.global_step < start_step:
                state.global_step = start_step  # PPO restarts its counter at 0; continue the run's numbering
            self.last = (time.time(), state.global_step, None)
            if prober and not start_step:
                prober(state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if not is_main_process() or not logs:
                return
            t, step0, tokens0 = self.last
            data = dict(logs)
            dt = time.time() - t
            if state.global_step > step0 and dt > 0:
                data["sys/steps_per_s"] = (state.global_step - step0) / dt
                if "num_tokens" in logs and tokens0 is not None:
                    data["sys/tokens_per_s"] = (logs["num_tokens"] - tokens0) / dt
            data["sys/cpu_rss_mb"] = self.proc.memory_info().rss / 2**20
            if torch.cuda.is_available():
                data["sys/gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            self.last = (time.time(), state.global_step, logs.get("num_tokens", tokens0))
            record_metrics(store, run_id, run_dir, state.global_step, data)

        def on_step_end(self, args, state, control, **kw):
            if prober and spec.probe_steps and state.global_step % spec.probe_steps == 0:
                prober(state.global_step)
            if agreed(term["flag"] or stop_requested(run_dir)):
                self.stopped = True
                if raise_on_stop:
                    raise StopRequested()
                control.should_training_stop = True
                control.should_save = True
            return control

    return RunMonitor()


def _read_samples(path: Path) -> list[dict]:
    """The rows of samples.jsonl (a half-written last line is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def make_prober(spec: RunSpec, tok, get_model, samples_path: Path, on_lengths=None):
    """Greedy answers to the fixed probe prompts, appended to samples.jsonl with the step.

    `on_lengths(step, mean_tokens)` receives the mean answer length, charted as the policy's response length.
    """
    import torch

    prompts = [p for p in spec.probe_prompts if p.strip()]
    if not prompts or not is_main_process() or world_size() > 1:
        return None  # with several processes (FSDP/ZeRO-3) generating on rank 0 alone would hang

    # A step is probed once: a resumed run starts at its checkpoint's step, which was probed before the
    # stop (samples.jsonl keeps it), and the final probe may land on a step probed at its end.
    probed = {row.get("step") for row in _read_samples(samples_path)}

    def probe(step: int) -> None:
        if step in probed:
            return
        probed.add(step)
        model = get_model()
        was_training = model.training
        model.eval()
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            texts = [tok.apply_chat_template(as_messages(p), add_generation_prompt=True, tokenize=False)
                     for p in prompts]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=spec.probe_max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers = tok.batch_decode(new, skip_special_tokens=True)
            lengths = (new != tok.pad_token_id).sum(dim=1).float()
        finally:
            tok.padding_side = side
            if was_training:
                model.train()
        at = round(time.time(), 3)
        append_jsonl(samples_path, [{"step": step, "time": at, "prompt": p, "text": a} for p, a in zip(prompts, answers)])
        if on_lengths:
            on_lengths(step, float(lengths.mean()))

    return probe


# -- the TRL trainer per kind ---------------------------------------------------------------------
def common_args(spec: RunSpec, paths: RunPaths, device: str, has_eval: bool) -> dict:
    precision = spec.resolved_precision()
    report = [] if spec.report_to == "none" else [spec.report_to]
    return dict(
        output_dir=str(paths.checkpoints), run_name=spec.name,
        learning_rate=spec.resolved_lr(), num_train_epochs=spec.epochs, max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size, per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum, warmup_steps=spec.warmup_ratio, seed=spec.seed,
        logging_steps=spec.logging_steps, save_strategy="steps", save_steps=spec.save_steps,
        save_total_limit=spec.save_total_limit, report_to=report, disable_tqdm=True,
        use_cpu=device == "cpu", bf16=precision == "bf16", fp16=precision == "fp16",
        gradient_checkpointing=spec.resolved_gradient_checkpointing(),
        eval_strategy="steps" if has_eval else "no", eval_steps=spec.eval_steps if has_eval else None,
    )


def soft_label_reward_trainer():
    """TRL's RewardTrainer trained on soft labels, as the paper trains its preference model on the
    feedback model's normalised probabilities: the loss is the binary cross-entropy between
    sigmoid(r_chosen - r_rejected) and p_chosen (for p_chosen = 1 it is TRL's -log sigmoid(margin)).
    Logs soft_target (mean p_chosen) and soft_error (mean |sigmoid(margin) - p_chosen|) beside
    TRL's accuracy and margin."""
    import torch
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftLabelCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            out["p_chosen"] = torch.tensor([float(e["p_chosen"]) for e in examples], dtype=torch.float)
            return out

    class SoftLabelRewardTrainer(RewardTrainer):
        def __init__(self, *args, processing_class=None, **kwargs):
            pad = processing_class.pad_token_id if processing_class.pad_token_id is not None \
                else processing_class.eos_token_id
            super().__init__(*args, processing_class=processing_class,
                             data_collator=SoftLabelCollator(pad_token_id=pad), **kwargs)

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "p_chosen"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("p_chosen")
            # TRL's pass computes the rewards and its metrics (accuracy, margin, ...); the loss is replaced
            _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            margin = chosen - rejected
            target = target.to(margin.device, margin.dtype)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, target)
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                self._metrics[mode]["soft_target"].append(
                    self.accelerator.gather_for_metrics(target.mean()).mean().item())
                self._metrics[mode]["soft_error"].append(self.accelerator.gather_for_metrics(
                    (torch.sigmoid(margin) - target).abs().mean()).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SoftLabelRewardTrainer


def build_trainer(spec: RunSpec, store, workspace, paths: RunPaths, device: str, ref: DatasetRef, callbacks,
                  resume_from: Path | None = None):
    """Model(s), dataset and the TRL trainer for the run's kind; returns (trainer, tokenizer, base path)."""
    model_ref = spec.parent_run or spec.model
    base, parent_adapter = model_location(store, workspace, model_ref)
    kind = spec.kind
    tok = load_tokenizer(parent_adapter or base, padding_side="left" if kind == "ppo" else None)
    train_ds, eval_ds = build_dataset(spec, ref, tok)
    args = common_args(spec, paths, device, eval_ds is not None)
    peft = lora_config(spec, "SEQ_CLS" if kind == "reward" else "CAUSAL_LM") if spec.uses_peft else None

    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        uses_messages = "messages" in train_ds.column_names
        cfg = SFTConfig(max_length=spec.max_length, packing=spec.packing,
                        assistant_only_loss=spec.assistant_only_loss and uses_messages, **args)
        trainer = SFTTrainer(model=load_policy(base, parent_adapter, spec, device), args=cfg,
                             train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tok,
                             peft_config=peft, callbacks=callbacks)
    elif kind == "reward":
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, dtype=torch_dtype(spec.resolved_precision()))
        if parent_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, parent_adapter).merge_and_unload()
        model.config.pad_token_id = tok.pad_token_id
        cfg = RewardConfig(max_length=spec.max_length, center_rewards_coefficient=spec.center_rewards_coefficient,
                           **args)
        trainer_class = soft_label_reward_trainer() if spec.soft_labels else RewardTrainer
        trainer = trainer_class(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tok, peft_config=peft, callbacks=callbacks)
    elif kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        cfg = DPOConfig(max_length=spec.max_length, beta=spec.beta, loss_type=[spec.loss_type], **args)
        trainer = DPOTrainer(model=load_policy(base, parent_adapter, spec, device), args=cfg,
                             train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tok,
                             peft_config=peft, callbacks=callbacks)
    elif kind in ("rloo", "grpo"):
        reward = load_scorer(spec.reward_model, store, workspace, spec, tok.pad_token_id)
        online = dict(num_generations=spec.num_generations, max_completion_length=spec.response_length,
                      temperature=spec.temperature, beta=spec.kl_coef, **args)
        if kind == "rloo":
            from trl import RLOOConfig as Config
            from trl import RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as Config
            from trl import GRPOTrainer as Trainer
        reward_tok = load_tokenizer(base)
        trainer = Trainer(model=load_policy(base, parent_adapter, spec, device), reward_funcs=[reward],
                          reward_processing_classes=[reward_tok], args=Config(**online), train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tok, peft_config=peft, callbacks=callbacks)
    elif kind == "ppo":
        trainer = build_ppo(spec, store, workspace, base, parent_adapter, tok, train_ds, eval_ds, args, peft,
                            device, callbacks, resume_from)
    else:
        raise CaiError(f"unknown run kind {kind!r}")
    return trainer, tok, base


def build_ppo(spec, store, workspace, base, parent_adapter, tok, train_ds, eval_ds, args, peft, device, callbacks,
              resume_from: Path | None):
    """PPO (trl.experimental.ppo): policy from the SFT run, reward model, value model initialised from it."""
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    args = {k: v for k, v in args.items() if k not in ("max_steps", "eval_strategy", "eval_steps")}
    batch = spec.batch_size * spec.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    episodes = spec.max_steps * batch if spec.max_steps > 0 else None
    if resume_from is not None and episodes is not None:
        episodes = max(batch, episodes - checkpoint_step(resume_from) * batch)
    cfg = PPOConfig(total_episodes=episodes, response_length=spec.response_length, kl_coef=spec.kl_coef,
                    temperature=spec.temperature, num_ppo_epochs=spec.num_ppo_epochs,
                    num_mini_batches=spec.num_mini_batches, missing_eos_penalty=spec.missing_eos_penalty,
                    stop_token="eos", local_rollout_forward_batch_size=spec.batch_size, num_sample_generations=0,
                    sft_model_path=base, reward_model_path=str(spec.reward_model), **args)
    reward = load_scorer(spec.reward_model, store, workspace, spec, tok.pad_token_id)
    value = load_scorer(spec.value_model or spec.reward_model, store, workspace, spec, tok.pad_token_id)
    if resume_from is not None:
        # PPOTrainer.train() cannot resume; continue from the checkpoint's policy weights instead.
        policy, peft = resume_policy(resume_from, base, parent_adapter, spec, device), None
    else:
        policy = load_policy(base, parent_adapter, spec, device)
    eval_ds = eval_ds if eval_ds is not None else train_ds.select(range(min(len(train_ds), spec.batch_size)))
    return PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                      value_model=value, train_dataset=train_ds, eval_dataset=eval_ds, callbacks=callbacks,
                      peft_config=peft)


def resume_policy(ckpt: Path, base, parent_adapter, spec, device):
    if (ckpt / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(load_policy(base, parent_adapter, spec, device), str(ckpt), is_trainable=True)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch_dtype(spec.resolved_precision()))


def policy_getter(trainer, kind: str):
    def get():
        model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
        return model.policy if kind == "ppo" else model

    return get


# -- saving -----------------------------------------------------------------------------------------
def save_outputs(trainer, spec: RunSpec, paths: RunPaths, base: str, tok) -> None:
    """The trained model or adapter into RUN_DIR (+ a merged full copy for LoRA/QLoRA)."""
    trainer.save_model(str(paths.root))
    if not is_main_process():
        return
    tok.save_pretrained(str(paths.root))
    if spec.uses_peft and spec.merge_lora and (paths.root / "adapter_config.json").exists():
        merge_adapter(paths.root, base, spec, tok)


def merge_adapter(adapter_dir: Path, base: str, spec: RunSpec, tok) -> Path:
    """Reload the base in full precision (not 4-bit), apply the adapter, merge, save to RUN_DIR/merged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = torch_dtype("fp32" if spec.resolved_precision() == "fp32" else spec.resolved_precision())
    if spec.kind == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tok.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    target = RunPaths(adapter_dir).merged
    merged.save_pretrained(str(target))
    tok.save_pretrained(str(target))
    return target


def final_metrics(paths: RunPaths) -> dict:
    """The last value of every metric the run logged."""
    out: dict = {}
    if paths.metrics.exists():
        for line in paths.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.update({k: v for k, v in json.loads(line).items() if v is not None})
            except ValueError:
                continue
    out.pop("time", None)
    return out


# -- the run --------------------------------------------------------------------------------------
def train(spec: RunSpec, store: Store | None, run_id: int | None, *, resume: bool = False) -> str:
    """Run one training spec to the end (or to a graceful stop). Returns "finished" or "stopped"."""
    from transformers import set_seed

    paths = RunPaths(spec.out)
    workspace = store.workspace if store is not None else None
    device = spec.resolved_device()
    if spec.report_to == "tensorboard":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(paths.tensorboard))
    if spec.report_to == "wandb":
        os.environ.setdefault("WANDB_DIR", str(paths.root))
    set_seed(spec.seed)
    say(f"[run] {spec.kind} {spec.name}: device={device} precision={spec.resolved_precision()} "
        f"adapter={spec.adapter}" + (f" processes={world_size()}" if world_size() > 1 else ""))

    ref = resolve_dataset(store, spec.dataset)
    ckpt = latest_checkpoint(paths.root) if resume else None
    if resume and ckpt is None:
        raise CaiError(f"no checkpoint to resume from in {paths.checkpoints}")
    start_step = checkpoint_step(ckpt) if (ckpt and spec.kind == "ppo") else 0

    # The callback needs the prober, which needs the trainer's model: bind it once the trainer exists.
    holder: dict = {"probe": None}

    def probe(step):
        if holder["probe"]:
            holder["probe"](step)

    monitor = make_monitor(store, run_id, paths.root, spec, probe, raise_on_stop=spec.kind == "ppo",
                           start_step=start_step)
    trainer, tok, base = build_trainer(spec, store, workspace, paths, device, ref, [monitor], resume_from=ckpt)
    if spec.kind != "reward":  # a reward model does not generate
        holder["probe"] = make_prober(
            spec, tok, policy_getter(trainer, spec.kind), paths.samples,
            on_lengths=lambda step, n: record_metrics(store, run_id, paths.root, step, {"probe/response_tokens": n}))
    say(f"[run] training{' from ' + ckpt.name if ckpt else ''}")

    try:
        if spec.kind == "ppo":
            trainer.train()
        else:
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except StopRequested:
        trainer._save_checkpoint(trainer.model, trial=None)  # what HF's loop does on should_save
    stopped = monitor.stopped
    if not stopped and spec.kind == "reward" and trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        if is_main_process():
            record_metrics(store, run_id, paths.root, trainer.state.global_step, metrics)
    probe(trainer.state.global_step)
    save_outputs(trainer, spec, paths, base, tok)
    say(f"[run] {'stopped' if stopped else 'finished'} at step {trainer.state.global_step}; saved to {paths.root}")
    return "stopped" if stopped else "finished"
