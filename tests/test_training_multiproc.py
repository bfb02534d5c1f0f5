"""Training past one process: the shipped accelerate configs, and two real processes on CPU.

`configs/accelerate/cpu_ddp_2proc.yaml` starts two ranks with torchrun (DDP over gloo) through the
run manager, exactly as a multi-GPU run starts. The tests check what only a real second rank
shows: each rank sees half the data (an epoch takes half the steps), metrics come from rank 0 only
(one row per logged step), Stop ends every rank at the same step with a checkpoint, and resume
restarts under the same config.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, SFT_ROWS, wait_run

CONFIGS = ROOT / "configs" / "accelerate"
CPU_2PROC = CONFIGS / "cpu_ddp_2proc.yaml"
ROWS = SFT_ROWS * 4  # 16 rows: batch 2 per rank x 2 ranks = 4 steps an epoch (8 with one process)
TINY = dict(max_length=64, batch_size=2, probe_steps=0, save_steps=2, logging_steps=1)


def test_every_shipped_accelerate_config_loads_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    from cai_core.training.runs import read_accelerate_config

    found = {p.stem: load_config_from_file(str(p)) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert {"cpu_ddp_2proc", "ddp", "fsdp", "deepspeed_zero2"} <= set(found)
    assert found["fsdp"].distributed_type.value == "FSDP" and found["fsdp"].fsdp_config["fsdp_version"] == 2
    assert found["deepspeed_zero2"].distributed_type.value == "DEEPSPEED"
    assert found["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
    assert found["cpu_ddp_2proc"].num_processes == 2
    for path in CONFIGS.glob("*.yaml"):
        assert read_accelerate_config(path) == path.read_text()


def test_a_file_that_is_not_an_accelerate_config_is_refused_before_anything_is_written(store, tiny_model_dir, tmp_path):
    from cai_core.errors import CaiError
    from cai_core.training.runs import launch
    from cai_core.training.specs import new_spec

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    bad = tmp_path / "not-accelerate.yaml"
    bad.write_text("learning_rate: 0.1\n")
    spec = new_spec("sft", name="bad-acc", model=str(tiny_model_dir), dataset=str(data), adapter="lora",
                    max_steps=2, **TINY)
    for config, message in ((bad, "not an accelerate config"), (tmp_path / "missing.yaml", "does not exist")):
        with pytest.raises(CaiError, match=message):
            launch(store, spec, accelerate_config=str(config))
    assert store.scalar("SELECT COUNT(*) FROM runs") == 0
    assert not (store.workspace.root / "runs" / "bad-acc").exists()


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": r["messages"][0]["content"]}], "chosen": [r["messages"][1]],
        "rejected": [{"role": "assistant", "content": "Verdict: violation found."}]}) + "\n" for r in ROWS))
    return path, prefs


def _launch_on_two_processes(store, kind: str, name: str, model, dataset, max_steps: int):
    """A LoRA run of the tiny model under the two-rank CPU config (the run manager starts torchrun)."""
    from cai_core.training.runs import launch
    from cai_core.training.specs import new_spec

    spec = new_spec(kind, name=name, model=str(model), dataset=str(dataset), adapter="lora", max_steps=max_steps,
                    **TINY)
    return launch(store, spec, accelerate_config=str(CPU_2PROC))


def _metric_steps(store, run) -> tuple[list[int], list[int]]:
    """(steps of the training-loss lines in metrics.jsonl, steps of the loss rows in the store)."""
    lines = [json.loads(x) for x in run.paths.metrics.read_text().splitlines() if x.strip()]
    rows = [(r["step"], json.loads(r["data_json"])) for r in
            store.query("SELECT step, data_json FROM run_metrics WHERE run_id=? ORDER BY rowid", (run.id,))]
    assert len(rows) == len(lines)  # the file and the store hold the same records
    return [x["step"] for x in lines if "loss" in x], [step for step, data in rows if "loss" in data]


@pytest.mark.slow
def test_sft_and_reward_train_on_two_cpu_processes_with_metrics_from_rank_0(store, tiny_model_dir, data_file,
                                                                             monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sft_data, pref_data = data_file
    sft = _launch_on_two_processes(store, "sft", "ddp-sft", tiny_model_dir, sft_data, max_steps=4)
    reward = _launch_on_two_processes(store, "reward", "ddp-rm", tiny_model_dir, pref_data, max_steps=2)
    for run in (sft, reward):
        assert run.command.split()[1:4] == ["launch", "--config_file", str(run.paths.accelerate)]
        assert "--main_process_port" in run.command  # a free port each, so both runs start side by side
        assert yaml.safe_load(run.paths.accelerate.read_text())["num_processes"] == 2
    sft, reward = wait_run(store, sft.id, timeout=600), wait_run(store, reward.id, timeout=600)
    for run in (sft, reward):
        log = run.paths.log.read_text()
        assert run.status == "finished", log
        assert "processes=2" in log
        assert log.count("[run] finished") == 1  # rank 1 trains but does not report
        file_steps, store_steps = _metric_steps(store, run)
        assert file_steps == sorted(set(file_steps)) and file_steps, log
        assert store_steps == file_steps  # one loss row per logged step: rank 0's (rank 1 logs nothing)
    # Each rank saw half of the 16 rows: 2 per step per rank -> one epoch after 4 steps (8 with one process).
    lines = {x["step"]: x for x in map(json.loads, sft.paths.metrics.read_text().splitlines()) if "loss" in x}
    assert lines[4]["epoch"] == pytest.approx(1.0)
    assert (sft.run_dir / "adapter_model.safetensors").exists()
    assert (reward.run_dir / "adapter_model.safetensors").exists() or (reward.run_dir / "model.safetensors").exists()


def _processes_of(run_dir) -> list[int]:
    """Live (non-zombie) processes whose command line names the run's folder: the launcher and ranks."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(run_dir) in " ".join(proc.info["cmdline"] or []):
            alive.append(proc.pid)
    return alive


@pytest.mark.slow
def test_stop_ends_every_rank_and_resume_restarts_under_the_same_config(store, tiny_model_dir, data_file,
                                                                        monkeypatch):
    from cai_core.training.runs import checkpoint_step, latest_checkpoint, resume_run, stop_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sft_data, _ = data_file
    run = _launch_on_two_processes(store, "sft", "ddp-stop", tiny_model_dir, sft_data, max_steps=400)
    wait_run(store, run.id, timeout=600, until=lambda r: r.paths.metrics.exists()
             and any("loss" in x for x in r.paths.metrics.read_text().splitlines()[1:]))
    stop_run(store, run.id)
    stopped = wait_run(store, run.id, timeout=300)
    log = stopped.paths.log.read_text()
    assert stopped.status == "stopped", log
    assert log.count("[run] stopped at step") == 1
    ckpt = latest_checkpoint(stopped.run_dir)
    assert ckpt is not None
    step = checkpoint_step(ckpt)
    assert 0 < step < 400
    deadline = time.time() + 30
    while time.time() < deadline and _processes_of(stopped.run_dir):
        time.sleep(0.5)
    assert not _processes_of(stopped.run_dir), "a rank outlived Stop"

    resumed = resume_run(store, run.id, max_steps=step + 2)
    assert "--config_file" in resumed.paths.command.read_text().splitlines()[-1]
    done = wait_run(store, run.id, timeout=600)
    log = done.paths.log.read_text()
    assert done.status == "finished", log
    assert f"[run] training from checkpoint-{step}" in log
    assert "processes=2" in log.rsplit("\n$ ", 1)[-1]  # the resumed command's own output
    file_steps, store_steps = _metric_steps(store, done)
    assert file_steps == sorted(set(file_steps)) and max(file_steps) == step + 2
    assert store_steps == file_steps
    assert Path(done.run_dir / "adapter_model.safetensors").exists()
