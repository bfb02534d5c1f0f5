"""The one run-folder layout (RunPaths) that training, evaluation and the pages share.

RUN_DIR/
    spec.yaml, command.txt, train.log, metrics.jsonl, samples.jsonl, STOP, tb/
    checkpoints/checkpoint-N/     what the trainer saves every save_steps (HF Trainer output_dir)
    (model or adapter files)      the final model, saved into RUN_DIR itself
    merged/                       a LoRA run's merged full copy

Light on purpose (no torch, no store): evaluation lists a run's checkpoints and resolves
`run:NAME/checkpoint-N` through it, the worker writes through it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_model_dir(path: Path) -> bool:
    """A loadable model or adapter folder (config.json or adapter_config.json)."""
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


def checkpoint_step(path: Path) -> int:
    """N of a checkpoint-N folder."""
    return int(Path(path).name.split("-", 1)[1])


class RunPaths:
    """Every file a run folder holds."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self.spec = self.root / "spec.yaml"
        self.command = self.root / "command.txt"
        self.log = self.root / "train.log"
        self.metrics = self.root / "metrics.jsonl"
        self.samples = self.root / "samples.jsonl"
        self.stop = self.root / "STOP"
        self.checkpoints = self.root / "checkpoints"
        self.merged = self.root / "merged"
        self.tensorboard = self.root / "tb"
        self.accelerate = self.root / "accelerate.yaml"  # the launch config, copied so resume uses the same

    @property
    def final_model(self) -> Path:
        """Where the trained model (or adapter) is saved: the run folder itself."""
        return self.root

    def checkpoint(self, step: int) -> Path:
        """The folder the trainer saves step N's checkpoint in."""
        return self.checkpoints / f"checkpoint-{int(step)}"

    def checkpoint_dirs(self) -> list[tuple[int, Path]]:
        """Every checkpoint-N folder (complete or not), by step."""
        found = []
        if self.checkpoints.is_dir():
            for sub in self.checkpoints.iterdir():
                m = CHECKPOINT.match(sub.name)
                if m and sub.is_dir():
                    found.append((int(m.group(1)), sub))
        return sorted(found)

    def model_checkpoints(self) -> list[tuple[int, Path]]:
        """The checkpoints a policy can be loaded from (they hold a model or an adapter), by step."""
        return [(step, sub) for step, sub in self.checkpoint_dirs() if is_model_dir(sub)]

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (HF writes trainer_state.json last, so a kill in the middle
        of a save leaves a newer, broken one, which resume must skip)."""
        for _, d in sorted(self.checkpoint_dirs(), reverse=True):
            try:
                json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            return d
        return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under RUN_DIR/checkpoints (see RunPaths.latest_checkpoint)."""
    return RunPaths(run_dir).latest_checkpoint()
