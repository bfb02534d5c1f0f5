"""Run specs: one dataclass per run kind (like TRL's Trainer + Config pairs), validated before launch.

A spec is everything needed to reproduce a run: it is written to RUN_DIR/spec.yaml and the worker
builds the TRL config from it. Defaults fit the device found (bf16 + gradient checkpointing on a
capable GPU, fp32 on CPU) through precision="auto" / gradient_checkpointing=None, resolved at launch.
This module imports neither torch nor TRL (pages use it); `detect_device` only looks for torch lazily.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cai_core.errors import CaiError
from cai_core.workspace import safe_name

KINDS = ("sft", "reward", "ppo", "dpo", "rloo", "grpo")
ADAPTERS = ("full", "lora", "qlora")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
REPORT_TO = ("none", "tensorboard", "wandb")
DEVICES = ("auto", "cpu", "cuda")

DEFAULT_PROBES = [
    "How can I get back at a coworker who embarrassed me?",
    "What is the capital of France?",
    "Can you help me pick a lock?",
]

KIND_HELP = {
    "sft": "Supervised fine-tuning on the critique-revision dataset (assistant tokens only).",
    "reward": "Reward (preference) model: one scalar per answer, trained on AI-labelled pairs.",
    "ppo": "PPO against the trained reward model, with a value model and a KL penalty to the SFT policy.",
    "dpo": "DPO: learn directly from the preference pairs, no reward model, no sampling.",
    "rloo": "RLOO: online sampling, several answers per prompt, reward model as the reward function.",
    "grpo": "GRPO: like RLOO with group-normalised advantages.",
}

# Which dataset shape each kind consumes.
DATA_NEEDS = {"sft": "sft", "reward": "preference", "dpo": "preference", "ppo": "prompts", "rloo": "prompts",
              "grpo": "prompts"}
# TRL's default learning rates differ a lot per algorithm; LoRA wants a larger one.
DEFAULT_LR = {"sft": 2e-5, "reward": 1e-5, "ppo": 3e-6, "dpo": 5e-7, "rloo": 1e-6, "grpo": 1e-6}
LORA_LR = {"sft": 2e-4, "reward": 1e-4, "ppo": 1e-5, "dpo": 5e-6, "rloo": 1e-5, "grpo": 1e-5}


def _f(default, help: str, **kw):
    """A spec field with its help text (the page shows it next to the widget)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunSpec:
    """Fields every run kind has."""

    kind: str = "sft"
    name: str | None = _f(None, "Run name (folder under workspace/runs); generated from kind and time when empty.")
    out: str | None = _f(None, "Run folder; default workspace/runs/NAME.")
    model: str = _f("default", "Base model: 'default' (embedded SmolLM2-135M), a model folder, or a run name.")
    parent_run: str | None = _f(None, "Start from this run's output (its name); overrides `model`.")
    dataset: str = _f("", "Dataset: an export name, a .jsonl file, or an HF save_to_disk folder.")
    adapter: str = _f("lora", "full: train all weights; lora: small low-rank adapters; qlora: LoRA on a 4-bit base.")
    lora_r: int = _f(16, "LoRA rank: adapter size; 8-64 is typical.")
    lora_alpha: int = _f(32, "LoRA scaling (alpha/r multiplies the update); usually 2 x r.")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.")
    lora_targets: str = _f("all-linear", "Modules that get adapters: 'all-linear' or comma-separated names (q_proj,v_proj).")
    learning_rate: float | None = _f(None, "Peak learning rate; empty = a default for the kind and adapter mode.")
    epochs: float = _f(1.0, "Passes over the dataset (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = use epochs).")
    batch_size: int = _f(4, "Examples per device per step.")
    grad_accum: int = _f(1, "Gradient accumulation: effective batch = batch_size x grad_accum x GPUs.")
    max_length: int = _f(512, "Longest tokenised example (longer ones are truncated).")
    warmup_ratio: float = _f(0.0, "Share of steps with a linear learning-rate warm-up.")
    seed: int = _f(42, "Random seed (data order, LoRA init, sampling).")
    eval_split: float = _f(0.0, "Share of the dataset held out for evaluation (0 = none).")
    eval_steps: int = _f(50, "Evaluate on the held-out split every N steps.")
    probe_prompts: list = _f(list(DEFAULT_PROBES), "Fixed prompts the policy answers during training (samples.jsonl).")
    probe_steps: int = _f(50, "Generate probe answers every N steps (0 = only at start and end).")
    probe_max_new_tokens: int = _f(48, "Length of the probe answers.")
    logging_steps: int = _f(1, "Log metrics every N steps.")
    save_steps: int = _f(100, "Save a checkpoint every N steps (resume starts from the latest).")
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.")
    merge_lora: bool = _f(True, "For LoRA/QLoRA, also save a merged full model in RUN_DIR/merged.")
    precision: str = _f("auto", "auto: bf16 on a GPU that supports it, fp16 on older GPUs, fp32 on CPU.")
    gradient_checkpointing: bool | None = _f(None, "Recompute activations to save memory; empty = on for GPU, off for CPU.")
    device: str = _f("auto", "auto, cpu or cuda.")
    report_to: str = _f("none", "Also log to tensorboard (RUN_DIR/tb) or wandb.")

    # -- construction ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def copy(self, **changes) -> "RunSpec":
        return dataclasses.replace(self, **changes)

    @property
    def uses_peft(self) -> bool:
        return self.adapter in ("lora", "qlora")

    def resolved_lr(self) -> float:
        if self.learning_rate:
            return float(self.learning_rate)
        return (LORA_LR if self.uses_peft else DEFAULT_LR)[self.kind]

    def resolved_device(self) -> str:
        return detect_device()["device"] if self.device == "auto" else self.device

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        dev = detect_device()
        if self.resolved_device() != "cuda":
            return "fp32"
        return "bf16" if dev.get("bf16") else "fp16"

    def resolved_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing is not None:
            return bool(self.gradient_checkpointing)
        return self.resolved_device() == "cuda"

    def target_modules(self) -> str | list[str]:
        t = (self.lora_targets or "all-linear").strip()
        return t if t == "all-linear" else [x.strip() for x in t.split(",") if x.strip()]

    # -- validation ------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything wrong with the spec that can be seen without the store (empty list = fine)."""
        p: list[str] = []
        if self.kind not in KINDS:
            p.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.name is not None:
            try:
                safe_name(self.name, "run name")
            except CaiError as exc:
                p.append(str(exc))
        if not str(self.model or "").strip() and not self.parent_run:
            p.append("model is empty: use 'default', a model folder or a run name")
        if not str(self.dataset or "").strip():
            p.append("dataset is empty: give an export name, a .jsonl file or an HF dataset folder")
        if self.adapter not in ADAPTERS:
            p.append(f"adapter {self.adapter!r} is not one of {', '.join(ADAPTERS)}")
        elif self.adapter == "qlora" and self.kind in ("reward", "ppo"):
            p.append(f"{self.kind} runs support adapter full or lora (QLoRA is for sft, dpo, rloo and grpo)")
        if self.precision not in PRECISIONS:
            p.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            p.append(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.report_to not in REPORT_TO:
            p.append(f"report_to {self.report_to!r} is not one of {', '.join(REPORT_TO)}")
        elif self.report_to != "none" and importlib.util.find_spec(self.report_to) is None:
            p.append(f"report_to {self.report_to}: the {self.report_to} package is not installed in this environment")
        if self.resolved_device_safe() == "cpu" and self.precision in ("bf16", "fp16") and self.adapter != "qlora":
            p.append(f"precision {self.precision} needs a GPU; use fp32 (or auto) on CPU")
        _positive(p, self, "lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "logging_steps",
                  "save_steps", "save_total_limit", "probe_max_new_tokens", "eval_steps")
        if not 0 <= self.lora_dropout < 1:
            p.append("lora_dropout must be in [0, 1)")
        if self.learning_rate is not None and not (0 < float(self.learning_rate) < 1):
            p.append("learning_rate must be between 0 and 1 (e.g. 2e-5)")
        if self.max_steps == 0 or self.max_steps < -1:
            p.append("max_steps must be a positive number of steps, or -1 to use epochs")
        if self.max_steps == -1 and not self.epochs > 0:
            p.append("epochs must be > 0 when max_steps is -1")
        if not 0 <= self.eval_split < 0.9:
            p.append("eval_split must be in [0, 0.9)")
        if not 0 <= self.warmup_ratio < 1:
            p.append("warmup_ratio must be in [0, 1)")
        if self.probe_steps < 0:
            p.append("probe_steps must be >= 0")
        if not isinstance(self.probe_prompts, list) or not all(isinstance(x, str) for x in self.probe_prompts):
            p.append("probe_prompts must be a list of strings")
        return p

    def resolved_device_safe(self) -> str:
        return self.device if self.device != "auto" else detect_device()["device"]

    def validate(self) -> "RunSpec":
        """Raise one CaiError listing every problem (so the user fixes them in one go)."""
        problems = self.problems()
        if problems:
            raise CaiError("invalid training spec:\n  - " + "\n  - ".join(problems))
        return self


@dataclass
class SFTSpec(RunSpec):
    kind: str = "sft"
    assistant_only_loss: bool = _f(True, "Train on the assistant's tokens only (the revision), not on the prompt.")
    packing: bool = _f(False, "Pack several short examples into one sequence (faster, mixes examples).")


@dataclass
class RewardSpec(RunSpec):
    kind: str = "reward"
    eval_split: float = _f(0.1, "Share of pairs held out to report accuracy and margin.")
    center_rewards_coefficient: float | None = _f(None, "Penalty pulling mean reward to 0 (e.g. 0.01); empty = off.")
    soft_labels: bool = _f(False, "Train on the judge's probabilities (the dataset's p_chosen, from export-prefs "
                                  "--soft-labels) with binary cross-entropy between sigmoid(r_chosen - r_rejected) "
                                  "and p_chosen, as the paper does; off = every pair counts as certain.")


@dataclass
class DPOSpec(RunSpec):
    kind: str = "dpo"
    beta: float = _f(0.1, "DPO temperature: higher stays closer to the reference model.")
    loss_type: str = _f("sigmoid", "sigmoid (DPO), ipo, hinge, robust ... (TRL loss_type).")


@dataclass
class _OnlineSpec(RunSpec):
    """Kinds that sample answers and score them with a reward model."""

    reward_model: str = _f("", "Reward model: a reward run's name or its folder.")
    kl_coef: float = _f(0.05, "KL penalty to the starting policy: higher keeps answers closer to it.")
    response_length: int = _f(64, "Longest sampled answer in tokens.")
    temperature: float = _f(0.7, "Sampling temperature for the rollouts.")

    def problems(self) -> list[str]:
        p = super().problems()
        if not str(self.reward_model or "").strip():
            p.append(f"{self.kind} needs a reward_model (a reward run's name or its folder)")
        if self.kl_coef < 0:
            p.append("kl_coef must be >= 0")
        _positive(p, self, "response_length")
        if not self.temperature > 0:
            p.append("temperature must be > 0")
        return p


@dataclass
class PPOSpec(_OnlineSpec):
    kind: str = "ppo"
    value_model: str | None = _f(None, "Value model init: empty = a copy of the reward model (usual choice).")
    num_ppo_epochs: int = _f(4, "Optimisation passes over each batch of rollouts.")
    num_mini_batches: int = _f(1, "Mini-batches per rollout batch (must divide batch_size x grad_accum).")
    missing_eos_penalty: float | None = _f(None, "Subtract this from the score of answers that never end.")

    def problems(self) -> list[str]:
        p = super().problems()
        _positive(p, self, "num_ppo_epochs", "num_mini_batches")
        if self.num_mini_batches > 0 and (self.batch_size * self.grad_accum) % self.num_mini_batches:
            p.append("num_mini_batches must divide batch_size x grad_accum")
        return p


@dataclass
class RLOOSpec(_OnlineSpec):
    kind: str = "rloo"
    num_generations: int = _f(4, "Answers sampled per prompt (the leave-one-out baseline needs >= 2).")

    def problems(self) -> list[str]:
        p = super().problems()
        if self.num_generations < 2:
            p.append("num_generations must be >= 2")
        elif (self.batch_size * self.grad_accum) % self.num_generations:
            p.append(f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                     f"num_generations ({self.num_generations})")
        return p


@dataclass
class GRPOSpec(RLOOSpec):
    kind: str = "grpo"
    kl_coef: float = _f(0.0, "KL penalty (TRL's beta); 0 skips the reference model, as TRL does by default.")


SPEC_CLASSES: dict[str, type[RunSpec]] = {
    "sft": SFTSpec, "reward": RewardSpec, "ppo": PPOSpec, "dpo": DPOSpec, "rloo": RLOOSpec, "grpo": GRPOSpec,
}


def _positive(problems: list[str], spec, *names: str) -> None:
    for n in names:
        v = getattr(spec, n)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            problems.append(f"{n} must be a positive number (got {v!r})")


def field_help(kind: str) -> dict[str, str]:
    """Help text per field for a kind (the page shows it beside each widget)."""
    return {f.name: f.metadata.get("help", "") for f in fields(SPEC_CLASSES[kind])}


def new_spec(kind: str, **values) -> RunSpec:
    """A spec of a kind with defaults, overridden by values (unknown keys are an error)."""
    return spec_from_dict({**values, "kind": kind})


def spec_from_dict(data: dict) -> RunSpec:
    if not isinstance(data, dict):
        raise CaiError("a training spec must be a mapping of field: value")
    kind = data.get("kind")
    if kind not in SPEC_CLASSES:
        raise CaiError(f"spec kind {kind!r} is not one of {', '.join(KINDS)}")
    cls = SPEC_CLASSES[kind]
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise CaiError(f"unknown field(s) for a {kind} spec: {', '.join(unknown)} "
                       f"(known: {', '.join(sorted(known))})")
    values = {}
    for k, v in data.items():
        values[k] = _coerce(known[k], v)
    return cls(**values)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """YAML and form values arrive as strings sometimes ('2e-5'); turn them into the field's type."""
    if value is None or value == "":
        return None if "None" in str(f.type) else value
    t = str(f.type)
    try:
        if t.startswith("float"):
            return float(value)
        if t.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
    except (TypeError, ValueError):
        raise CaiError(f"field {f.name}: {value!r} is not a valid {t.split(' ')[0]}") from None
    if f.name == "probe_prompts" and isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def load_spec(path: str | Path) -> RunSpec:
    path = Path(path)
    if not path.is_file():
        raise CaiError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CaiError(f"{path} is not valid YAML: {exc}") from exc
    return spec_from_dict(data)


def dump_spec(spec: RunSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)


def save_spec(spec: RunSpec, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dump_spec(spec), encoding="utf-8")
    return path


# -- device -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def detect_device() -> dict:
    """What this machine offers: device, bf16 support, GPU count and memory (MB).

    Asks `nvidia-smi` rather than importing torch, so a page can show defaults in milliseconds.
    """
    info = {"device": "cpu", "bf16": False, "gpus": 0, "gpu_memory_mb": None, "name": "CPU"}
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not shutil.which("nvidia-smi"):
        return info
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return info
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    if not rows or len(rows[0]) < 3:
        return info
    try:
        cap = float(rows[0][2])
        mem = float(rows[0][1])
    except ValueError:
        return info
    info.update(device="cuda", bf16=cap >= 8.0, gpus=len(rows), gpu_memory_mb=mem, name=rows[0][0])
    return info


def system_memory_mb() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**20
    except Exception:  # noqa: BLE001 - an estimate without the total is still useful
        return None


# -- memory estimate --------------------------------------------------------------------------
DEFAULT_MODEL_SHAPE = {  # SmolLM2-135M-Instruct, used before the embedded model is converted
    "params": 134_515_008, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "vocab_size": 49152, "num_attention_heads": 9, "num_key_value_heads": 3,
}


def model_shape(model_dir: str | Path | None) -> dict:
    """Parameter count (from the safetensors header, no weights read) and config sizes of a model folder."""
    if model_dir is None:
        return dict(DEFAULT_MODEL_SHAPE)
    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists() and (d / "adapter_config.json").exists():
        base = json.loads((d / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return model_shape(base) if base and Path(base).exists() else dict(DEFAULT_MODEL_SHAPE)
    if not cfg_path.exists():
        return dict(DEFAULT_MODEL_SHAPE)
    cfg = json.loads(cfg_path.read_text())
    shape = {k: cfg.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size",
                                     "num_attention_heads", "num_key_value_heads")}
    params = 0
    for st in d.glob("*.safetensors"):
        params += _safetensors_params(st)
    if not params:
        h, i, n, v = (shape["hidden_size"] or 0, shape["intermediate_size"] or 0, shape["num_hidden_layers"] or 0,
                      shape["vocab_size"] or 0)
        params = v * h + n * (4 * h * h + 3 * h * i)
    shape["params"] = params
    return shape


def _safetensors_params(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error):
        return 0
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _lora_params(shape: dict, r: int, targets) -> int:
    h, i, n = shape.get("hidden_size") or 0, shape.get("intermediate_size") or 0, shape.get("num_hidden_layers") or 0
    heads, kv = shape.get("num_attention_heads") or 1, shape.get("num_key_value_heads") or shape.get("num_attention_heads") or 1
    kv_dim = h * kv // heads
    per = {"q_proj": h + h, "k_proj": h + kv_dim, "v_proj": h + kv_dim, "o_proj": h + h,
           "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    chosen = per.values() if targets == "all-linear" else [per.get(t, 2 * h) for t in targets]
    return n * r * sum(chosen)


# What a training process holds besides the model's own tensors (MB). CPU: python + torch + transformers +
# trl + peft + datasets imported and a tiny-model run's peak RSS (tests/test_memory_plan.py measures it:
# 521-530 MB on 2026-12-07, of which 487 MB before any model loads). CUDA: the context and cuBLAS
# workspaces, which torch.cuda.max_memory_allocated does not count but the card must hold.
RUNTIME_MB = {"cpu": 520.0, "cuda": 600.0, "mps": 520.0}
# what the device holds over what is allocated: CUDA's caching allocator reserves blocks beyond the live
# tensors; on the CPU torch frees to malloc, and peak RSS matched allocated + runtime within 1% (SFT LoRA
# and full on the default model, 2026-12-07), so nothing is added there
RESERVE = {"cuda": 1.15}
FIT_SHARE = 0.9  # a run "fits" when its total is under 90% of the device's memory


def _lora_inputs(shape: dict, targets) -> int:
    """Sum of the input widths of the adapted linear layers (what LoRA's dropout copies per token)."""
    h, i = shape.get("hidden_size") or 0, shape.get("intermediate_size") or 0
    width = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h, "up_proj": h, "down_proj": i}
    chosen = width.values() if targets == "all-linear" else [width.get(t, h) for t in targets]
    return sum(chosen)


def estimate_memory(spec: RunSpec, model_dir: str | Path | None = None, reward_dir: str | Path | None = None,
                    available_mb: float | None = None) -> dict:
    """A peak-memory estimate (MB) before launch: weights, gradients, optimizer, activations, extras.

    Rules of thumb: full fine-tuning with AdamW costs ~16 bytes per parameter (fp32 master weights,
    gradients and two Adam moments); LoRA keeps the base frozen in 16-bit (or 4-bit for QLoRA) and
    pays 16 bytes only for the adapter; activations grow with batch x length x layers and the logits
    with batch x length x vocabulary. Online kinds hold extra models (reference, reward, value).

    allocated_mb is the model's share (compare with torch.cuda.max_memory_allocated on a GPU, or with
    a CPU run's peak RSS minus runtime_mb); total_mb = allocated x RESERVE + runtime_mb is what the
    device must hold, and `fits` compares it with FIT_SHARE of the device's memory (available_mb, or
    what the machine reports). Checked against measured peaks in tests/test_memory_plan.py (CPU) and
    bench/gpu_bench.py --memory (GPU, a random-initialised 7B-configuration model).
    """
    shape = model_shape(model_dir)
    P = int(shape["params"])
    h = shape.get("hidden_size") or 0
    n = shape.get("num_hidden_layers") or 0
    vocab = shape.get("vocab_size") or 0
    prec = spec.resolved_precision()
    half = prec in ("bf16", "fp16")
    base_bytes = {"full": 4, "lora": 2 if half else 4, "qlora": 0.55}[spec.adapter]
    trainable = P if spec.adapter == "full" else _lora_params(shape, spec.lora_r, spec.target_modules())
    if spec.kind == "reward" and spec.adapter != "full":
        trainable += h  # the score head is trained too
    mb = 2**20
    weights = P * base_bytes
    grads = trainable * 4
    optimizer = trainable * 8
    seqs = spec.batch_size
    seq_len = spec.max_length
    if spec.kind in ("reward", "dpo"):
        seqs *= 2  # chosen and rejected
    if spec.kind in ("rloo", "grpo"):
        seq_len = min(spec.max_length, 256) + getattr(spec, "response_length", 64)
    if spec.kind == "ppo":
        seq_len = min(spec.max_length, 256) + spec.response_length
    act_bytes = 2 if half else 4
    per_layer = 17 * seqs * seq_len * h * act_bytes  # Korthikanti et al.: ~34 bytes x s x b x h per layer in 16-bit
    if spec.uses_peft and spec.lora_dropout > 0:
        # PEFT's dropout keeps a copy of each adapted layer's input (and its mask) for the backward pass:
        # on the default model's SFT LoRA the peak rose 450 MB over full-length rows where full SFT rose 135 MB
        per_layer += seqs * seq_len * _lora_inputs(shape, spec.target_modules()) * (act_bytes + 1)
    activations = (2 * seqs * seq_len * h * act_bytes * n + per_layer) if spec.resolved_gradient_checkpointing() \
        else per_layer * n
    # fp32 logits, their log-softmax, its gradient and TRL's entropy/accuracy metrics: ~4 copies (measured)
    logits = 0 if spec.kind == "reward" else seqs * seq_len * vocab * 4 * 4
    extras = {}
    if spec.kind in ("ppo", "rloo", "grpo", "dpo") and spec.adapter == "full":
        if spec.kind != "grpo" or getattr(spec, "kl_coef", 0) > 0:
            extras["reference_model"] = P * (2 if half else 4)
    if spec.kind in ("ppo", "rloo", "grpo"):
        rshape = model_shape(reward_dir) if reward_dir else shape
        rp = int(rshape["params"])
        extras["reward_model"] = rp * (2 if half else 4)
        if spec.kind == "ppo":
            extras["value_model"] = rp * 4 + rp * 12  # trained in full: weights + grads + Adam
    device = spec.resolved_device_safe()
    if spec.uses_peft and spec.merge_lora and device != "cuda":
        # the merged copy: the base reloaded in the run's precision on the CPU, beside the trained model
        # (worker.merge_adapter); on a GPU run it lives in host memory, not on the card
        extras["merged_copy"] = P * (2 if half else 4)
    allocated = weights + grads + optimizer + activations + logits + sum(extras.values())
    runtime = RUNTIME_MB.get(device, RUNTIME_MB["cpu"]) * mb
    total = allocated * RESERVE.get(device, 1.0) + runtime
    if available_mb is None:
        dev = detect_device()
        available_mb = dev.get("gpu_memory_mb") if device == "cuda" else system_memory_mb()
    out = {
        "params": P,
        "trainable_params": int(trainable),
        "precision": prec,
        "device": device,
        "weights_mb": weights / mb,
        "gradients_mb": grads / mb,
        "optimizer_mb": optimizer / mb,
        "activations_mb": (activations + logits) / mb,
        **{f"{k}_mb": v / mb for k, v in extras.items()},
        "runtime_mb": runtime / mb,
        "allocated_mb": allocated / mb,
        "total_mb": total / mb,
        "available_mb": available_mb,
    }
    out["fits"] = None if available_mb is None else out["total_mb"] < available_mb * FIT_SHARE
    return out


def _halved(spec: RunSpec) -> RunSpec:
    """Half the batch, twice the accumulation: the same effective batch."""
    return spec.copy(batch_size=max(1, spec.batch_size // 2), grad_accum=spec.grad_accum * 2)


def _changes(spec: RunSpec) -> list[tuple[str, RunSpec]]:
    """The settings to try, in the order a user should: cheapest in quality and speed first."""
    out: list[tuple[str, RunSpec]] = []
    on_gpu = spec.resolved_device_safe() == "cuda"
    if spec.adapter == "full":
        out.append(("use LoRA (adapter lora) instead of training every weight", spec.copy(adapter="lora")))
    if on_gpu and spec.adapter in ("full", "lora") and spec.kind not in ("reward", "ppo"):
        out.append(("use QLoRA (adapter qlora: LoRA on a 4-bit base)", spec.copy(adapter="qlora")))
    if on_gpu and not spec.resolved_gradient_checkpointing():
        out.append(("turn on gradient checkpointing", spec.copy(gradient_checkpointing=True)))
    if spec.batch_size > 1:
        smaller = _halved(spec)
        out.append((f"lower batch size to {smaller.batch_size} (gradient accumulation {smaller.grad_accum} keeps "
                     "the effective batch)", smaller))
    if not on_gpu and not spec.resolved_gradient_checkpointing():
        out.append(("turn on gradient checkpointing", spec.copy(gradient_checkpointing=True)))
    if spec.max_length > 128:
        out.append((f"lower max length to {spec.max_length // 2}", spec.copy(max_length=spec.max_length // 2)))
    return out


def memory_plan(spec: RunSpec, model_dir: str | Path | None = None, reward_dir: str | Path | None = None,
                available_mb: float | None = None) -> dict:
    """Whether the run fits before launch and, if not, the first setting to change: the estimate plus
    `advice` (None when it fits or the device's memory is unknown) and `advice_fits` (whether that one
    change alone makes it fit; when none does, the change that saves the most is given)."""
    est = estimate_memory(spec, model_dir, reward_dir, available_mb)
    est.update(advice=None, advice_fits=None, advice_total_mb=None)
    if est["fits"] is not False:
        return est
    tried = []
    for label, changed in _changes(spec):
        after = estimate_memory(changed, model_dir, reward_dir, est["available_mb"])
        if after["fits"]:
            est.update(advice=label, advice_fits=True, advice_total_mb=after["total_mb"])
            return est
        tried.append((after["total_mb"], label))
    if tried:
        total, label = min(tried)
        if total < est["total_mb"]:
            est.update(advice=label, advice_fits=False, advice_total_mb=total)
    return est
