"""The run manager: a training run is its own process, recorded in the `runs` table.

`launch` validates the spec, makes RUN_DIR (spec.yaml, command.txt), records the run and spawns
`python -m cai_core train RUN_DIR/spec.yaml --run-id N` (or `accelerate launch ... -m cai_core
train ...`) in its own session, its output in RUN_DIR/train.log. The worker streams metrics to
RUN_DIR/metrics.jsonl and `run_metrics`. Nothing here depends on the app staying up: `refresh`
(called by every listing) reattaches by pid liveness and marks runs whose process died as failed,
with the reason from the log. Stop is graceful (a STOP file the worker's callback checks: it saves a
checkpoint and the model, then exits); kill is SIGKILL; resume restarts from the latest checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cai_core.errors import CaiError
from cai_core.exports import get_export
from cai_core.jobs import supervisor
from cai_core.jsonl import append_jsonl
from cai_core.models.llama_server import free_port
from cai_core.jobs.supervisor import log_tail
from cai_core.store import Store, dumps, loads, now
from cai_core.training.paths import RunPaths, checkpoint_step, latest_checkpoint
from cai_core.training.sources import (
    check_spec_sources,
    lineage_summary,
    model_dir_for_estimate,
    resolve_model_ref,
    run_output_dir,
)
from cai_core.training.specs import RunSpec, dump_spec, memory_plan, spec_from_dict
from cai_core.workspace import slug

ACTIVE = ("queued", "running")
TERMINAL = ("finished", "failed", "stopped")
REPO_ROOT = supervisor.REPO_ROOT
QUEUED_GRACE_S = 120  # a queued run whose process never reported is failed after this

# The metrics a run list shows per kind (last logged value of each).
KEY_METRICS = {
    "sft": ["loss", "mean_token_accuracy", "eval_loss"],
    "reward": ["eval_accuracy", "eval_margin", "accuracy", "loss"],
    "dpo": ["rewards/accuracies", "rewards/margins", "loss"],
    "ppo": ["objective/scores", "objective/kl", "objective/rlhf_reward"],
    "rloo": ["reward", "kl", "loss"],
    "grpo": ["reward", "reward_std", "loss"],
}


@dataclass
class Run:
    id: int
    name: str
    kind: str
    spec: dict
    status: str
    pid: int | None
    command: str | None
    run_dir: Path
    parent_run_id: int | None
    export_id: int | None
    exit_code: int | None
    error: str | None
    log_tail: str | None
    final_metrics: dict
    created_at: float
    started_at: float | None
    ended_at: float | None

    @classmethod
    def from_row(cls, row, workspace=None) -> "Run":
        """`workspace` resolves the stored run folder (relative to the workspace root) on this machine."""
        run_dir = workspace.resolve(row["run_dir"]) if workspace is not None else Path(row["run_dir"])
        return cls(
            id=row["id"], name=row["name"], kind=row["kind"], spec=loads(row["spec_json"], {}), status=row["status"],
            pid=row["pid"], command=row["command"], run_dir=run_dir, parent_run_id=row["parent_run_id"],
            export_id=row["export_id"], exit_code=row["exit_code"], error=row["error"], log_tail=row["log_tail"],
            final_metrics=loads(row["final_metrics_json"], {}) or {}, created_at=row["created_at"],
            started_at=row["started_at"], ended_at=row["ended_at"],
        )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def duration_s(self) -> float | None:
        if not self.started_at:
            return None
        return (self.ended_at or now()) - self.started_at

    @property
    def paths(self) -> "RunPaths":
        return RunPaths(self.run_dir)

    def key_metrics(self) -> dict:
        return {k: self.final_metrics[k] for k in KEY_METRICS.get(self.kind, []) if k in self.final_metrics}


# -- creating and launching ----------------------------------------------------------------
def _unique_name(store: Store, kind: str) -> str:
    base = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, i = base, 2
    while store.one("SELECT 1 FROM runs WHERE name=?", (name,)):
        name, i = f"{base}-{i}", i + 1
    return name


def prepare_run(store: Store, spec: RunSpec, *, command: list[str] | None = None,
                accelerate_config: str | None = None, status: str = "queued") -> Run:
    """Validate everything, then write RUN_DIR/spec.yaml + command.txt and record the run.

    Nothing is written when the spec, its dataset or its models are wrong.
    """
    spec.validate()
    ref = check_spec_sources(store, spec)
    launch_config = read_accelerate_config(accelerate_config) if accelerate_config else None
    name_taken = _name_taken(store, spec)
    if name_taken:
        raise CaiError(name_taken)
    if spec.out:
        run_dir = Path(spec.out).expanduser().resolve()
        name = spec.name or _name_from_dir(store, run_dir)
    else:
        name = spec.name or _unique_name(store, spec.kind)
        run_dir = store.workspace.child_path("runs", name)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise CaiError(f"run folder {run_dir} already exists and is not empty; choose another --out or name")
    if store.one("SELECT 1 FROM runs WHERE run_dir=? OR run_dir=?", (str(run_dir), store.workspace.store_path(run_dir))):
        raise CaiError(f"run folder {run_dir} belongs to another run")
    parent_name = spec.parent_run or (spec.model if run_output_dir(store, spec.model) else None)
    parent_id = store.scalar("SELECT id FROM runs WHERE name=?", (parent_name,)) if parent_name else None
    spec = spec.copy(name=name, out=str(run_dir))

    run_dir.mkdir(parents=True, exist_ok=True)
    RunPaths(run_dir).spec.write_text(dump_spec(spec), encoding="utf-8")
    if launch_config is not None:
        RunPaths(run_dir).accelerate.write_text(launch_config, encoding="utf-8")
    with store.tx() as conn:
        cur = conn.execute(
            "INSERT INTO runs (name, kind, spec_json, status, run_dir, parent_run_id, export_id, created_at) "
            "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
            (name, spec.kind, dumps(spec.to_dict()), status, store.workspace.store_path(run_dir), parent_id,
             ref.export_id, now()),
        )
        run_id = int(cur.fetchall()[0][0])  # fetchall: the statement is finished before the commit
    argv = command or train_command(store, run_dir, run_id)
    RunPaths(run_dir).command.write_text(shlex.join(argv) + "\n", encoding="utf-8")
    store.execute("UPDATE runs SET command=? WHERE id=?", (shlex.join(argv), run_id))
    return get_run(store, run_id)


def _name_from_dir(store: Store, run_dir: Path) -> str:
    base = slug(run_dir.name, "run")
    name, i = base, 2
    while store.one("SELECT 1 FROM runs WHERE name=?", (name,)):
        name, i = f"{base}-{i}", i + 1
    return name


def read_accelerate_config(path: str | Path) -> str:
    """The text of an `accelerate launch` config file, checked: a YAML mapping naming its
    distributed_type (MULTI_GPU, FSDP, DEEPSPEED, ...) and num_processes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CaiError(f"accelerate config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CaiError(f"accelerate config is not valid YAML: {exc}", where=str(path)) from None
    if not isinstance(data, dict) or "distributed_type" not in data:
        raise CaiError("not an accelerate config (no distributed_type; see configs/accelerate/)", where=str(path))
    if int(data.get("num_processes") or 1) < 1:
        raise CaiError("num_processes must be at least 1", where=str(path))
    return text


def train_command(store: Store, run_dir: Path, run_id: int, *, resume: bool = False) -> list[str]:
    """The exact command a run's process runs (also written to command.txt).

    A run with RUN_DIR/accelerate.yaml starts under `accelerate launch` with that config. On one
    machine the rendezvous port is a free one picked now, so two multi-process runs (or a run and a
    test) never collide on the config's fixed port; several machines keep the config's port, which
    every machine must agree on.
    """
    paths = RunPaths(run_dir)
    tail = ["-m", "cai_core", "train", str(paths.spec), "--workspace", str(store.workspace.root),
            "--run-id", str(run_id)] + (["--resume"] if resume else [])
    if paths.accelerate.exists():
        accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
        config = yaml.safe_load(paths.accelerate.read_text(encoding="utf-8")) or {}
        port = [] if int(config.get("num_machines") or 1) > 1 else ["--main_process_port", str(free_port())]
        return [accelerate, "launch", "--config_file", str(paths.accelerate)] + port + tail
    return [sys.executable] + tail


def _spawn(store: Store, run: Run, argv: list[str], env: dict | None = None) -> Run:
    pid = supervisor.spawn(argv, run.paths.log, env={**store.child_env(), **(env or {})}, header=f"\n$ {shlex.join(argv)}\n")
    store.execute("UPDATE runs SET pid=?, host=? WHERE id=?", (pid, socket.gethostname(), run.id))
    return get_run(store, run.id)


def launch(store: Store, spec: RunSpec, *, accelerate_config: str | None = None, env: dict | None = None) -> Run:
    """Validate, record and start a run in the background; returns at once (the UI polls)."""
    run = prepare_run(store, spec, accelerate_config=accelerate_config)
    return _spawn(store, run, shlex.split(run.command), env)


# -- reading ------------------------------------------------------------------------------------
def get_run(store: Store, ref: int | str) -> Run:
    """A run by id or name."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = store.one("SELECT * FROM runs WHERE id=?", (int(ref),))
        if row is None and isinstance(ref, str):
            row = store.one("SELECT * FROM runs WHERE name=?", (ref,))
    else:
        row = store.one("SELECT * FROM runs WHERE name=?", (ref,))
    if row is None:
        raise CaiError(f"no run {ref!r}")
    return Run.from_row(row, store.workspace)


def list_runs(store: Store, kind: str | None = None, limit: int = 200) -> list[Run]:
    refresh(store)
    if kind:
        rows = store.query("SELECT * FROM runs WHERE kind=? ORDER BY id DESC LIMIT ?", (kind, limit))
    else:
        rows = store.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
    return [Run.from_row(r, store.workspace) for r in rows]


def read_metrics(store: Store, run_id: int, since_step: int | None = None) -> list[dict]:
    """Logged metrics in order, each {"step": n, "time": t, ...}."""
    rows = store.query("SELECT step, data_json FROM run_metrics WHERE run_id=?" +
                       (" AND step>?" if since_step is not None else "") + " ORDER BY rowid",
                       (run_id, since_step) if since_step is not None else (run_id,))
    return [{**loads(r["data_json"], {}), "step": r["step"]} for r in rows]


def read_samples(run: Run) -> list[dict]:
    path = run.paths.samples
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
    return out


def lineage(store: Store, run: Run) -> dict:
    """Where a run comes from: its export (and through the card the constitution, judges, overrides),
    its parent run, its base and reward models."""

    out: dict = {"model": run.spec.get("model"), "dataset": run.spec.get("dataset")}
    if run.spec.get("reward_model"):
        out["reward_model"] = run.spec["reward_model"]
    if run.parent_run_id:
        out["parent_run"] = store.scalar("SELECT name FROM runs WHERE id=?", (run.parent_run_id,))
    if run.export_id:
        row = get_export(store, int(run.export_id))
        if row:
            out["export"] = {"name": row["name"], "kind": row["kind"], "path": row["path"]}
            out["export_card"] = lineage_summary(row["card"])
    return out


# -- the worker's side: status and metrics ------------------------------------------------------
def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def record_metrics(store: Store | None, run_id: int | None, run_dir: Path, step: int, data: dict) -> dict:
    """One logged step: a line in RUN_DIR/metrics.jsonl and a row in run_metrics."""
    clean = {k: _clean(v) for k, v in data.items() if isinstance(k, str)}
    clean = {"step": int(step), "time": round(now(), 3), **{k: v for k, v in clean.items() if k not in ("step", "time")}}
    append_jsonl(RunPaths(run_dir).metrics, [clean])
    if store is not None and run_id:
        store.execute("INSERT INTO run_metrics (run_id, step, data_json, created_at) VALUES (?,?,?,?)",
                      (run_id, int(step), dumps(clean), now()))
    return clean


def mark_running(store: Store, run_id: int) -> None:
    store.execute("UPDATE runs SET status='running', pid=COALESCE(pid, ?), started_at=COALESCE(started_at, ?), "
                  "ended_at=NULL, error=NULL, exit_code=NULL WHERE id=?", (os.getpid(), now(), run_id))


def mark_ended(store: Store, run_id: int, status: str, *, exit_code: int, error: str | None = None,
               final_metrics: dict | None = None) -> None:
    run = get_run(store, run_id)
    store.execute(
        "UPDATE runs SET status=?, exit_code=?, error=?, ended_at=?, log_tail=?, "
        "final_metrics_json=COALESCE(?, final_metrics_json) WHERE id=?",
        (status, exit_code, error, now(), log_tail(run.paths.log, 40) or None,
         dumps(final_metrics) if final_metrics is not None else None, run_id),
    )


def stop_requested(run_dir: Path) -> bool:
    return RunPaths(run_dir).stop.exists()


# -- control --------------------------------------------------------------------------------------
def death_reason(pid: int, code: int | None, tail: str) -> str:
    """Why a run's process ended without recording its end: the error it logged, or - killed by a
    signal or silent - that it was killed, with its last output quoted as output (the last line of a
    killed run is usually a metrics dict, which is not a reason)."""
    error = supervisor.error_line(tail)
    killed = code is not None and code < 0
    if error and not killed:
        return f"the training process {pid} ended unexpectedly (exit code {code}): {error}" if code is not None \
            else f"the training process {pid} ended unexpectedly: {error}"
    how = (f"killed by {supervisor.how_it_ended(code)}" if killed else
           f"{supervisor.how_it_ended(code)} without an error message" if code is not None
           else "gone without an error message: killed?")
    last = tail.strip().splitlines()[-1].strip() if tail.strip() else ""
    return f"the training process {pid} ended unexpectedly ({how})" + (f"; last output: {last}" if last else "")


def refresh(store: Store) -> list[int]:
    """Reattach: runs whose process is gone are marked failed with the reason from their log."""
    failed = []
    for row in store.query("SELECT * FROM runs WHERE status IN ('queued','running') AND (host IS NULL OR host=?)",
                           (socket.gethostname(),)):  # another machine's pid means nothing here
        run = Run.from_row(row, store.workspace)
        if run.pid is None:
            if now() - run.created_at > QUEUED_GRACE_S:
                store.execute("UPDATE runs SET status='failed', error=?, ended_at=? WHERE id=? AND status='queued'",
                              ("the run was recorded but its process never started", now(), run.id))
                failed.append(run.id)
            continue
        if supervisor.alive(run.pid):
            continue
        code = supervisor.reap(run.pid)
        row2 = store.one("SELECT status FROM runs WHERE id=?", (run.id,))
        if row2 is None or row2["status"] not in ACTIVE:
            continue  # it finished and wrote its status between our two reads
        tail = log_tail(run.paths.log, 40)
        reason = death_reason(run.pid, code, tail)
        store.execute("UPDATE runs SET status='failed', error=?, exit_code=?, ended_at=?, log_tail=? "
                      "WHERE id=? AND status IN ('queued','running')",
                      (reason, code, now(), tail or None, run.id))
        failed.append(run.id)
    return failed


def stop_run(store: Store, ref: int | str) -> Run:
    """Graceful stop: the worker sees RUN_DIR/STOP at the next step, saves a checkpoint and the model, exits."""
    refresh(store)
    run = get_run(store, ref)
    if not run.active:
        raise CaiError(f"run {run.name} is {run.status}, not running")
    run.paths.stop.write_text(f"stop requested at {time.ctime()}\n")
    return run


def kill_run(store: Store, ref: int | str) -> Run:
    """SIGKILL the run's process group at once (no save); the run is marked failed."""
    run = get_run(store, ref)
    if not run.active:
        raise CaiError(f"run {run.name} is {run.status}, not running")
    host = store.scalar("SELECT host FROM runs WHERE id=?", (run.id,))
    if host and host != socket.gethostname():
        raise CaiError(f"run {run.name} runs on {host}: kill it there, or stop it from here (runs stop)")
    supervisor.stop(run.pid, grace_s=0)  # SIGKILL to the whole group (launcher and ranks) at once
    store.execute("UPDATE runs SET status='failed', error=?, exit_code=?, ended_at=?, log_tail=? WHERE id=? "
                  "AND status IN ('queued','running')",
                  ("killed by the user (SIGKILL; nothing saved after the last checkpoint)", -9, now(),
                   log_tail(run.paths.log, 40) or None, run.id))
    return get_run(store, run.id)


def resume_run(store: Store, ref: int | str, *, max_steps: int | None = None, accelerate_config: str | None = None,
               env: dict | None = None) -> Run:
    """Start the run again from its latest checkpoint (optionally with a new max_steps).

    A multi-process run resumes under the accelerate config it was launched with (RUN_DIR/
    accelerate.yaml) unless another one is given."""
    refresh(store)
    run = get_run(store, ref)
    if run.active:
        raise CaiError(f"run {run.name} is still {run.status}; stop it first")
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        raise CaiError(f"run {run.name} has no checkpoint to resume from (checkpoints are saved every "
                       f"{run.spec.get('save_steps')} steps and on a graceful stop)")
    step = checkpoint_step(ckpt)
    spec = spec_from_dict(run.spec)
    if max_steps is not None:
        if max_steps <= step:
            raise CaiError(f"max_steps {max_steps} must be above the checkpoint's step {step}")
        spec = spec.copy(max_steps=int(max_steps))
    elif spec.max_steps > 0 and spec.max_steps <= step:
        raise CaiError(f"run {run.name} already reached max_steps {spec.max_steps}; give a larger --max-steps")
    spec.validate()
    paths = run.paths
    paths.spec.write_text(dump_spec(spec), encoding="utf-8")
    paths.stop.unlink(missing_ok=True)
    if accelerate_config:
        paths.accelerate.write_text(read_accelerate_config(accelerate_config), encoding="utf-8")
    _truncate_metrics(store, run, step)
    argv = train_command(store, run.run_dir, run.id, resume=True)
    with open(paths.command, "a", encoding="utf-8") as fh:
        fh.write(f"# resumed from {ckpt.name} at {time.ctime()}:\n{shlex.join(argv)}\n")
    store.execute("UPDATE runs SET status='queued', pid=NULL, exit_code=NULL, error=NULL, ended_at=NULL, "
                  "spec_json=?, created_at=created_at WHERE id=?", (dumps(spec.to_dict()), run.id))
    return _spawn(store, get_run(store, run.id), argv, env)


def _truncate_metrics(store: Store, run: Run, step: int) -> None:
    """Metrics logged after the checkpoint are replayed by the resumed run: drop them first."""
    store.execute("DELETE FROM run_metrics WHERE run_id=? AND step>?", (run.id, step))
    path = run.paths.metrics
    if path.exists():
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:
                continue
        path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    samples = run.paths.samples
    if samples.exists():
        keep = [ln for ln in samples.read_text(encoding="utf-8").splitlines()
                if ln.strip() and _step_of(ln) <= step]
        samples.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except ValueError:
        return 0


def delete_run(store: Store, ref: int | str, *, keep_files: bool = False) -> None:
    """Forget a run and remove its folder (refused while it runs)."""
    refresh(store)
    run = get_run(store, ref)
    if run.active:
        raise CaiError(f"run {run.name} is {run.status}; stop or kill it before deleting")
    store.execute("DELETE FROM runs WHERE id=?", (run.id,))
    if not keep_files and run.run_dir.exists() and RunPaths(run.run_dir).spec.exists():
        shutil.rmtree(run.run_dir, ignore_errors=True)


def run_model_dir(run: Run, *, merged: bool = False) -> Path:
    """Where a run's trained model is: RUN_DIR (model or adapter), or RUN_DIR/merged."""
    return run.paths.merged if merged and run.paths.merged.exists() else run.run_dir


def describe_model(store: Store, ref: str) -> str:
    """A model reference as the worker will load it (for the page's summary)."""
    return resolve_model_ref(store, ref)


def _name_taken(store: Store, spec: RunSpec) -> str | None:
    if spec.name and store.one("SELECT 1 FROM runs WHERE name=?", (spec.name,)):
        return f"a run named {spec.name!r} already exists; pick another name, or resume/delete that run"
    return None


def preview(store: Store, spec: RunSpec) -> dict:
    """What the page shows before launch: every problem (empty = ready), the memory estimate, the dataset."""

    problems = spec.problems()
    name_taken = _name_taken(store, spec)
    if name_taken:  # known before launch, like every other problem
        problems.append(name_taken)
    dataset = None
    if not problems:
        try:
            ref = check_spec_sources(store, spec)
            dataset = {"location": ref.location, "export": ref.export_name, **lineage_summary(ref.card)}
        except CaiError as exc:
            problems.append(str(exc))
    memory = memory_plan(spec, model_dir_for_estimate(store, spec.parent_run or spec.model),
                         model_dir_for_estimate(store, getattr(spec, "reward_model", None)))
    return {"problems": problems, "memory": memory, "dataset": dataset}
