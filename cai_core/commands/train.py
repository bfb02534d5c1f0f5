"""`python -m cai_core train SPEC.yaml` or `train {sft,reward,ppo,dpo,rloo,grpo} --model M --dataset D ...`.

In the foreground the run is recorded in the store and trains in this process (metrics to
RUN_DIR/metrics.jsonl, model or adapter in RUN_DIR); with --background it is started through the
run manager and the command returns at once. The run manager itself spawns this command with
--run-id to attach a process to an already recorded run (and --resume to continue it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import yaml

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.store import open_store
from cai_core.training import runs, worker
from cai_core.training.sources import check_spec_sources
from cai_core.training.specs import (
    KINDS,
    SPEC_CLASSES,
    estimate_memory,
    load_spec,
    spec_from_dict,
)

FLAG_FIELDS = {  # CLI option dest -> spec field
    "model": "model", "dataset": "dataset", "reward_model": "reward_model", "parent_run": "parent_run",
    "adapter": "adapter", "max_steps": "max_steps", "out": "out", "name": "name", "lr": "learning_rate",
    "epochs": "epochs", "batch_size": "batch_size", "grad_accum": "grad_accum", "max_length": "max_length",
    "seed": "seed", "save_steps": "save_steps", "eval_split": "eval_split", "report_to": "report_to",
    "precision": "precision", "device": "device", "soft_labels": "soft_labels",
}


_ADAPTER_FLAGS = {"full": "--full", "lora": "--lora", "qlora": "--qlora"}


def train_args(spec) -> list[str]:
    """`train KIND --model ... --dataset ...`: options that build this spec again through `build_spec`
    (the command line the Training page previews; fields at their kind's default are left out)."""
    defaults = SPEC_CLASSES[spec.kind]().to_dict()
    flag_of = {fld: dest for dest, fld in FLAG_FIELDS.items()}
    args = ["train", spec.kind]
    for fld, value in spec.to_dict().items():
        if fld == "kind" or value == defaults.get(fld):
            continue
        if fld == "adapter":
            args.append(_ADAPTER_FLAGS[value])
        elif fld in flag_of and value is not None:
            args += ["--" + flag_of[fld].replace("_", "-"), str(value)]
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            if isinstance(value, str) and yaml.safe_load(value) != value:
                text = json.dumps(value)  # "123", "true", "null": kept a string by quoting
            args += ["--set", f"{fld}={text}"]
    return args


def register(sub) -> None:
    p = add_command(sub, "train", "train a model (SFT, reward, PPO, DPO, RLOO, GRPO) from a spec file or options",
                    description="python -m cai_core train SPEC.yaml | train KIND --model M --dataset D "
                                "[--reward-model R] [--full|--lora|--qlora] [--max-steps N] --out RUN_DIR")
    p.add_argument("target", help="a spec YAML file, or a run kind: " + ", ".join(KINDS))
    p.add_argument("--model", default=None, help="base model: default | model folder | run name")
    p.add_argument("--dataset", default=None, help="export name | .jsonl file | HF dataset folder")
    p.add_argument("--reward-model", default=None, help="reward run name or folder (ppo, rloo, grpo)")
    p.add_argument("--parent-run", default=None, help="start from this run's output")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="adapter", action="store_const", const="full", help="train all weights")
    mode.add_argument("--lora", dest="adapter", action="store_const", const="lora", help="LoRA adapters (default)")
    mode.add_argument("--qlora", dest="adapter", action="store_const", const="qlora", help="LoRA on a 4-bit base")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (-1 = use epochs)")
    p.add_argument("--out", default=None, help="run folder (default workspace/runs/NAME)")
    p.add_argument("--name", default=None, help="run name (default from the folder or kind + time)")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-steps", type=int, default=None)
    p.add_argument("--eval-split", type=float, default=None)
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--report-to", default=None, choices=["none", "tensorboard", "wandb"])
    p.add_argument("--soft-labels", dest="soft_labels", action="store_const", const=True, default=None,
                   help="reward: train on the dataset's p_chosen (export-prefs --soft-labels) with the soft-target "
                        "loss BCE(sigmoid(r_chosen - r_rejected), p_chosen)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other spec field, e.g. --set lora_r=8 --set kl_coef=0.1 (repeatable)")
    p.add_argument("--background", action="store_true", help="start through the run manager and return at once")
    p.add_argument("--accelerate-config", default=None,
                   help="with --background: run under `accelerate launch --config_file FILE` (FSDP/DeepSpeed)")
    p.add_argument("--print-spec", action="store_true", help="print the resolved spec and memory estimate, do not train")
    p.add_argument("--run-id", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)


def build_spec(args):
    """The spec from a YAML file or a kind, with command-line options on top."""
    overrides = {}
    for dest, fld in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[fld] = value
    for item in args.set:
        if "=" not in item:
            raise CaiError(f"--set {item!r}: use FIELD=VALUE")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CaiError(f"--set {item!r}: {exc}") from exc
    if args.target in SPEC_CLASSES:
        base = {"kind": args.target}
        if "dataset" not in overrides:
            raise CaiError(f"train {args.target} needs --dataset (an export name, a .jsonl file or an HF folder)")
    else:
        base = load_spec(args.target).to_dict()
        if overrides.get("kind", base["kind"]) != base["kind"]:
            raise CaiError("the kind comes from the spec file; it cannot be overridden")
    return spec_from_dict({**base, **overrides})


def cmd_train(args) -> int:
    store = open_store(args.workspace)
    if args.run_id is not None:  # spawned by the run manager for an already recorded run
        runs.get_run(store, args.run_id)
        return work(store, args.run_id, load_spec(args.target), resume=args.resume)
    if args.resume:
        raise CaiError("--resume is for runs started by the run manager; use `runs resume RUN`")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CaiError("under several processes the run must be recorded once before the ranks start: use "
                       "`train SPEC.yaml --background --accelerate-config FILE`")
    spec = build_spec(args).validate()
    if args.print_spec:
        check_spec_sources(store, spec)
        print(yaml.safe_dump({"spec": spec.to_dict(), "memory_estimate": estimate_memory(spec)}, sort_keys=False))
        return 0
    if args.background:
        run = runs.launch(store, spec, accelerate_config=args.accelerate_config)
        print(json.dumps({"run_id": run.id, "name": run.name, "run_dir": str(run.run_dir), "pid": run.pid}))
        return 0
    if args.accelerate_config:
        raise CaiError("--accelerate-config needs --background (or run `accelerate launch -m cai_core train ...`)")
    run = runs.prepare_run(store, spec, status="running")
    print(f"[run] {run.name} (id {run.id}) in {run.run_dir}", flush=True)
    return work(store, run.id, load_spec(run.paths.spec))


def work(store, run_id: int, spec, *, resume: bool = False) -> int:
    """Train in this process and record how it ended (only the main process writes status)."""

    main = worker.is_main_process()
    if main:
        runs.mark_running(store, run_id)
    try:
        status = worker.train(spec, store, run_id, resume=resume)
    except CaiError as exc:
        if main:
            runs.mark_ended(store, run_id, "failed", exit_code=2, error=str(exc))
        raise  # the CLI prints it and exits 2
    except BaseException as exc:  # noqa: BLE001 - the run must record why it died
        traceback.print_exc()
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        if main:
            print(f"error: {reason}", file=sys.stderr, flush=True)
            runs.mark_ended(store, run_id, "failed", exit_code=1, error=reason)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    if main:
        final = worker.final_metrics(runs.RunPaths(spec.out))
        runs.mark_ended(store, run_id, status, exit_code=0, final_metrics=final)
        print(json.dumps({"run_id": run_id, "status": status, "run_dir": spec.out,
                          **runs.get_run(store, run_id).key_metrics()}), flush=True)
    return 0
