"""Policies an evaluation compares: the base model, a run's output folder or one of its
checkpoints, a model folder or an OpenAI-compatible endpoint, each with a short name.

A run's folders follow the one layout (training/paths.RunPaths): the trained model in RUN_DIR,
checkpoints in RUN_DIR/checkpoints/checkpoint-N, exactly where the trainer writes them.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from cai_core.errors import CaiError
from cai_core.store import Store
from cai_core.training.paths import CHECKPOINT, RunPaths, is_model_dir

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# -- policies ----------------------------------------------------------------------------------
@dataclass
class Policy:
    name: str
    spec: str                      # a model spec for models.get_backend
    kind: str                      # base | run | checkpoint | folder | endpoint | model
    run: str | None = None
    step: int | None = None        # checkpoint step

    def to_dict(self) -> dict:
        return asdict(self)


def split_specs(values) -> list[str]:
    """Policies given as a list and/or space- or comma-separated strings."""
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values or []:
        out.extend(s for s in re.split(r"[\s,]+", str(v).strip()) if s)
    return out


# run kinds whose output is a reward model (a scorer), not a policy that answers prompts
NOT_POLICIES = ("reward",)


def _run_dir(store: Store, name: str) -> Path:
    row = store.one("SELECT run_dir, kind FROM runs WHERE name=?", (name,))
    if row is None:
        raise CaiError(f"no run named {name!r} (see `python -m cai_core runs` / the Training page)")
    if row["kind"] in NOT_POLICIES:
        raise CaiError(f"run {name!r} trained a {row['kind']} model, which scores answers but does not write "
                       "them: evaluate a policy run (sft, dpo, ppo, rloo, grpo)")
    return store.workspace.resolve(row["run_dir"])


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """A run folder's loadable checkpoints (RUN_DIR/checkpoints/checkpoint-N), by step."""
    return RunPaths(folder).model_checkpoints()


def _run_of_checkpoint(path: Path) -> str:
    """The run a checkpoint folder belongs to: RUN_DIR/checkpoints/checkpoint-N -> RUN_DIR's name."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name


def _default_name(spec: str) -> str:
    if spec == "default":
        return "default"
    if spec.startswith("http://") or spec.startswith("https://"):
        u = urlparse(spec)
        model = re.search(r"#model=(.+)$", spec)
        return (model.group(1) if model else (u.hostname or "endpoint") + (f"-{u.port}" if u.port else ""))[:64]
    if spec.startswith("hf:"):
        return spec[3:].split("/")[-1]
    path = Path(spec)
    m = CHECKPOINT.match(path.name)
    return f"{_run_of_checkpoint(path)}@{m.group(1)}" if m else path.name


def parse_policy(text: str, store: Store) -> Policy:
    """`SPEC` or `NAME=SPEC`; SPEC: default | run:RUN | run:RUN/checkpoint-N | folder | .gguf | hf:ID | URL."""
    name = None
    head, sep, tail = text.partition("=")
    if sep and NAME_PATTERN.match(head) and tail:
        name, text = head, tail
    spec = text.strip()
    if not spec:
        raise CaiError("empty policy spec")
    if spec.startswith("run:"):
        run, _, sub = spec[4:].partition("/")
        paths = RunPaths(_run_dir(store, run))
        folder = paths.final_model
        step = None
        if sub:
            m = CHECKPOINT.match(sub.strip("/").removeprefix("checkpoints/"))
            if not m:
                raise CaiError(f"policy {spec!r}: after run:{run}/ give checkpoint-N (one of "
                               f"{', '.join(f'checkpoint-{n}' for n, _ in paths.model_checkpoints()) or 'none yet'})")
            step = int(m.group(1))
            folder = paths.checkpoint(step)
        if not folder.is_dir() or not is_model_dir(folder):
            have = ", ".join(f"checkpoint-{n}" for n, _ in paths.model_checkpoints()) or "none"
            raise CaiError(f"run {run!r} has no trained model at {folder} (not finished, or no such checkpoint; "
                           f"checkpoints: {have})")
        return Policy(name or (f"{run}@{step}" if step is not None else run), str(folder),
                      "checkpoint" if step is not None else "run", run=run, step=step)
    if spec == "default":
        return Policy(name or "default", "default", "base")
    if spec.startswith(("http://", "https://")):
        return Policy(name or _default_name(spec), spec, "endpoint")
    if spec.startswith("hf:"):
        return Policy(name or _default_name(spec), spec, "model")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CaiError(f"policy {spec!r}: no such folder or file (use default, run:NAME, a model folder or a URL)")
    if path.is_dir() and not is_model_dir(path):
        raise CaiError(f"policy {spec!r} is not a model folder (no config.json or adapter_config.json)")
    m = CHECKPOINT.match(path.name)
    if m:
        return Policy(name or _default_name(str(path)), str(path), "checkpoint", run=_run_of_checkpoint(path),
                      step=int(m.group(1)))
    return Policy(name or _default_name(str(path)), str(path), "folder")


def parse_policies(values, store: Store, with_checkpoints: bool = False) -> list[Policy]:
    """Parse and check the policy list: at least two, unique names (checkpoints added on request)."""
    policies = [parse_policy(s, store) for s in split_specs(values)]
    if with_checkpoints:
        extra = []
        for p in policies:
            if p.kind in ("run", "folder"):
                for step, sub in checkpoints(p.spec):
                    extra.append(Policy(f"{p.name}@{step}", str(sub), "checkpoint", run=p.run or p.name, step=step))
        policies += extra
    if len(policies) < 2:
        raise CaiError("an evaluation compares at least two policies (e.g. --policies default run:my-sft)")
    seen: dict[str, str] = {}
    for p in policies:
        if p.name in seen:
            raise CaiError(f"two policies are named {p.name!r} ({seen[p.name]} and {p.spec}); name them with NAME=SPEC")
        seen[p.name] = p.spec
    return policies


def policy_options(store: Store) -> list[dict]:
    """What the page offers as policies: the base model, every run with a trained model, and its checkpoints."""
    out = [{"label": "default (embedded base model)", "spec": "default"}]
    for r in store.query("SELECT name, kind, status, run_dir FROM runs ORDER BY created_at DESC"):
        if r["kind"] in NOT_POLICIES:
            continue
        folder = store.workspace.resolve(r["run_dir"])
        if is_model_dir(folder):
            out.append({"label": f"run {r['name']} ({r['kind']}, {r['status']})", "spec": f"run:{r['name']}"})
        for step, _ in checkpoints(folder):
            out.append({"label": f"run {r['name']} checkpoint {step}", "spec": f"run:{r['name']}/checkpoint-{step}"})
    return out
