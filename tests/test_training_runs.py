"""Training runs on the tiny model on CPU, each a real process started by the run manager.

Every kind (SFT full/LoRA/QLoRA, reward full/LoRA, DPO, GRPO, PPO) trains 2-3 steps, writes
metrics to RUN_DIR/metrics.jsonl and the store, and its output loads back (merged LoRA too).
A PPO run is stopped gracefully and resumed from its checkpoint; an SFT run is killed with
SIGKILL, marked failed with the reason, and resumed. Bad specs exit 2 and write nothing.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.helpers import SFT_ROWS, run_cli, wait_run as wait

TINY = dict(max_length=64, batch_size=2, probe_max_new_tokens=4, probe_steps=2, save_steps=2,
            probe_prompts=["How do I bake bread?"])
PREF_ROWS = [{"prompt": [{"role": "user", "content": r["messages"][0]["content"]}],
              "chosen": [r["messages"][1]], "rejected": [{"role": "assistant", "content": "Verdict: violation found."}]}
             for r in SFT_ROWS] * 2


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    """A workspace with an SFT export (in the exports table) and a preference file."""
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    root = tmp_path_factory.mktemp("train")
    ws = Workspace.open(root / "ws")
    store = Store(ws)
    export = ws.exports_dir / "revisions"
    export.mkdir()
    (export / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    card = {"constitution_version": "c0ffee", "judges": [], "counts": {"total": 4}}
    (export / "card.json").write_text(json.dumps(card))
    store.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?)",
                  ("revisions", "sft", str(export), json.dumps(card), time.time()))
    pref = root / "prefs.jsonl"
    pref.write_text("".join(json.dumps(r) + "\n" for r in PREF_ROWS))
    yield {"store": store, "ws": ws, "pref": str(pref), "model": str(tiny_model_dir), "root": root}
    store.close()


@pytest.fixture(scope="module")
def base_runs(env):
    """Launch the independent kinds at once (separate processes), then PPO on top of SFT LoRA + reward."""
    from cai_core.training.runs import launch
    from cai_core.training.specs import new_spec

    store, model, pref = env["store"], env["model"], env["pref"]
    specs = {
        "sft-full": new_spec("sft", name="sft-full", model=model, dataset="revisions", adapter="full", max_steps=2, **TINY),
        "sft-lora": new_spec("sft", name="sft-lora", model=model, dataset="revisions", adapter="lora", max_steps=3, **TINY),
        "sft-qlora": new_spec("sft", name="sft-qlora", model=model, dataset="revisions", adapter="qlora", max_steps=2,
                              **TINY),
        "reward-full": new_spec("reward", name="reward-full", model=model, dataset=pref, adapter="full", max_steps=2,
                                eval_split=0.25, **TINY),
        "reward-lora": new_spec("reward", name="reward-lora", model=model, dataset=pref, adapter="lora", max_steps=2,
                                eval_split=0.25, **TINY),
        "dpo": new_spec("dpo", name="dpo", model=model, dataset=pref, adapter="lora", max_steps=2, **TINY),
    }
    ids = {k: launch(store, s).id for k, s in specs.items()}
    out = {k: wait(store, i) for k, i in ids.items()}
    grpo = new_spec("grpo", name="grpo", model=model, dataset=pref, reward_model="reward-full", adapter="lora",
                    max_steps=2, response_length=6, num_generations=2, **TINY)
    ppo = new_spec("ppo", name="ppo", parent_run="sft-lora", dataset=pref, reward_model="reward-lora", adapter="lora",
                   max_steps=2, response_length=6, num_ppo_epochs=1, **TINY)
    more = {"grpo": launch(store, grpo).id, "ppo": launch(store, ppo).id}
    out.update({k: wait(store, i) for k, i in more.items()})
    return out


CAUSAL = ["sft-full", "sft-lora", "sft-qlora", "dpo", "grpo", "ppo"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CAUSAL + ["reward-full", "reward-lora"])
def test_each_kind_trains_writes_metrics_and_loads_back(env, base_runs, name):
    from cai_core.training.runs import read_metrics

    run = base_runs[name]
    assert run.status == "finished", f"{name}: {run.error}\n{run.log_tail}"
    lines = [json.loads(x) for x in run.paths.metrics.read_text().splitlines()]
    assert lines and all("step" in x for x in lines)
    assert [m["step"] for m in read_metrics(env["store"], run.id)] == [x["step"] for x in lines]
    assert (run.paths.spec).exists() and "cai_core train" in run.paths.command.read_text()
    assert max(x["step"] for x in lines) == run.spec["max_steps"]

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    loader = AutoModelForSequenceClassification if name.startswith("reward") else AutoModelForCausalLM
    if run.spec["adapter"] == "full":
        loader.from_pretrained(str(run.run_dir))
    else:
        from peft import PeftModel

        assert (run.run_dir / "adapter_config.json").exists()
        merged = loader.from_pretrained(str(run.paths.merged))  # the merged full copy
        assert not hasattr(merged, "peft_config")
        if loader is AutoModelForCausalLM:  # and the adapter on its base, through the app's resolver
            from cai_core.models.specs import resolve_local

            kw = resolve_local(str(run.run_dir), env["ws"])
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(kw["path"])), str(kw["adapter"]))


@pytest.mark.slow
def test_kind_specific_metrics_and_samples(base_runs):
    assert {"eval_accuracy", "eval_margin"} <= set(base_runs["reward-lora"].final_metrics)
    assert {"rewards/margins", "rewards/accuracies"} <= set(base_runs["dpo"].final_metrics)
    assert {"objective/kl", "objective/scores", "loss/value_avg"} <= set(base_runs["ppo"].final_metrics)
    assert "reward" in base_runs["grpo"].final_metrics
    from cai_core.training.runs import read_samples

    samples = read_samples(base_runs["sft-lora"])
    assert {s["step"] for s in samples} >= {0, 2, 3} and all(s["prompt"] == "How do I bake bread?" for s in samples)


@pytest.mark.slow
def test_lineage_records_export_and_parent(env, base_runs):
    from cai_core.training.runs import lineage

    store = env["store"]
    sft = base_runs["sft-lora"]
    assert sft.export_id == store.scalar("SELECT id FROM exports WHERE name='revisions'")
    assert lineage(store, sft)["export_card"]["constitution_version"] == "c0ffee"
    ppo = base_runs["ppo"]
    assert ppo.parent_run_id == sft.id
    assert lineage(store, ppo)["parent_run"] == "sft-lora" and lineage(store, ppo)["reward_model"] == "reward-lora"


@pytest.mark.slow
def test_ppo_stop_and_resume_from_checkpoint(env, base_runs):
    from cai_core.training.runs import latest_checkpoint, launch, read_metrics, resume_run, stop_run
    from cai_core.training.specs import new_spec

    store = env["store"]
    spec = new_spec("ppo", name="ppo-long", parent_run="sft-lora", dataset=env["pref"], reward_model="reward-full",
                    adapter="lora", max_steps=100000, response_length=4, num_ppo_epochs=1, **{**TINY, "probe_steps": 0})
    run = launch(store, spec)
    wait(store, run.id, until=lambda r: len(read_metrics(store, r.id)) >= 3 or r.status == "failed")
    stop_run(store, run.id)
    run = wait(store, run.id)
    assert run.status == "stopped", run.error
    ckpt = latest_checkpoint(run.run_dir)
    assert ckpt is not None and (run.run_dir / "adapter_config.json").exists()
    step = int(ckpt.name.split("-")[1])
    run = resume_run(store, run.id, max_steps=step + 2)
    run = wait(store, run.id)
    assert run.status == "finished", run.error
    steps = [m["step"] for m in read_metrics(store, run.id) if "objective/kl" in m]
    assert steps == sorted(set(steps)) and steps[-1] == step + 2


@pytest.mark.slow
def test_kill9_marks_failed_with_reason_and_resume_works(env):
    from cai_core.training.runs import get_run, latest_checkpoint, launch, refresh, resume_run
    from cai_core.training.specs import new_spec

    store = env["store"]
    spec = new_spec("sft", name="sft-killed", model=env["model"], dataset="revisions", adapter="lora",
                    max_steps=100000, **{**TINY, "probe_steps": 0})
    run = launch(store, spec)
    wait(store, run.id, until=lambda r: latest_checkpoint(r.run_dir) is not None or r.status == "failed")
    os.kill(run.pid, signal.SIGKILL)
    time.sleep(0.5)
    refresh(store)
    run = get_run(store, run.id)
    assert run.status == "failed"
    assert "ended unexpectedly" in run.error and "signal 9" in run.error
    step = int(latest_checkpoint(run.run_dir).name.split("-")[1])
    run = wait(store, resume_run(store, run.id, max_steps=step + 2).id)
    assert run.status == "finished", run.error
    assert "training from checkpoint-" in run.paths.log.read_text()


def test_latest_checkpoint_skips_one_cut_off_mid_save(tmp_path):
    from cai_core.training.runs import latest_checkpoint

    ckpts = tmp_path / "checkpoints"
    for step, state in ((4, '{"global_step": 4}'), (6, '{"global_step": 6}'), (8, "")):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (ckpts / "checkpoint-10").mkdir()  # killed before the state was written at all
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"


@pytest.mark.slow
def test_cli_quick_form_and_runs_commands(env, tmp_path):
    ws = str(env["ws"].root)
    out = tmp_path / "quick"
    res = run_cli("train", "sft", "--model", env["model"], "--dataset", str(env["ws"].exports_dir / "revisions"),
                  "--full", "--max-steps", "2", "--out", str(out), "--workspace", ws,
                  "--set", "max_length=64", "--set", "probe_steps=0", "--set", "batch_size=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 2
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    listed = json.loads(run_cli("runs", "list", "--json", "--workspace", ws).stdout)
    assert any(r["name"] == "quick" and r["status"] == "finished" for r in listed)
    shown = json.loads(run_cli("runs", "--workspace", ws, "show", "quick").stdout)
    assert shown["spec"]["max_steps"] == 2 and shown["lineage"]["dataset"].endswith("revisions")
    assert run_cli("runs", "stop", "quick", "--workspace", ws).returncode == 2  # not running
    assert run_cli("runs", "delete", "quick", "--workspace", ws).returncode == 0
    assert not out.exists()


@pytest.mark.slow
def test_bad_spec_or_dataset_exits_2_and_writes_nothing(env, tmp_path):
    ws = str(env["ws"].root)
    before = env["store"].scalar("SELECT COUNT(*) FROM runs")
    cases = [
        ("train", "sft", "--model", env["model"], "--dataset", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "a")),
        ("train", "dpo", "--model", env["model"], "--dataset", "revisions", "--out", str(tmp_path / "b")),
        ("train", "ppo", "--model", env["model"], "--dataset", env["pref"], "--out", str(tmp_path / "c")),
        ("train", "sft", "--model", env["model"], "--dataset", "revisions", "--max-steps", "0", "--out", str(tmp_path / "d")),
    ]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: sft\ndataset: revisions\nlearning_rat: 0.1\n")
    cases.append(("train", str(bad_yaml)))
    for args in cases:
        res = run_cli(*args, "--workspace", ws)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert not any((tmp_path / x).exists() for x in "abcd")
    assert env["store"].scalar("SELECT COUNT(*) FROM runs") == before


def test_preview_names_a_taken_run_name_before_launch(store, tiny_model_dir, tmp_path):
    """The page lists every problem before Launch is pressed; a name already used is one of them."""
    from cai_core.training.runs import preview
    from cai_core.training.specs import new_spec

    store.execute("INSERT INTO runs (name, kind, status, run_dir, spec_json, created_at) VALUES (?,?,?,?,?,?)",
                  ("sft-a", "sft", "finished", str(tmp_path / "sft-a"), "{}", 0.0))
    spec = new_spec("sft", name="sft-a", model=str(tiny_model_dir), dataset=str(tmp_path / "d.jsonl"))
    assert any("a run named 'sft-a' already exists" in p for p in preview(store, spec)["problems"])
