"""Training specs: defaults, validation messages, YAML round trip, memory estimate, dataset checks (no training)."""
from __future__ import annotations

import json

import pytest

from cai_core.errors import CaiError
from cai_core.training.sources import check_dataset, check_spec_sources, resolve_dataset
from cai_core.training.specs import (
    KINDS,
    estimate_memory,
    load_spec,
    model_shape,
    new_spec,
    save_spec,
    spec_from_dict,
)

SFT_ROWS = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(3)]
PREF_ROWS = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "good"}],
              "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(3)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cpu_defaults_are_fp32_without_checkpointing(monkeypatch):
    spec = new_spec("sft", dataset="x", device="cpu")
    assert spec.resolved_precision() == "fp32"
    assert spec.resolved_gradient_checkpointing() is False
    assert spec.resolved_lr() == 2e-4  # LoRA default for SFT
    assert new_spec("sft", dataset="x", adapter="full").resolved_lr() == 2e-5


def test_validation_lists_every_problem():
    spec = new_spec("rloo", dataset="", batch_size=3, num_generations=2, lora_dropout=1.5, max_steps=0)
    with pytest.raises(CaiError) as err:
        spec.validate()
    msg = str(err.value)
    for part in ("dataset is empty", "lora_dropout", "max_steps", "reward_model", "multiple of num_generations"):
        assert part in msg


def test_kind_specific_rules():
    assert any("QLoRA" in p for p in new_spec("reward", dataset="d", adapter="qlora").problems())
    assert any("QLoRA" in p for p in new_spec("ppo", dataset="d", reward_model="r", adapter="qlora").problems())
    assert new_spec("sft", dataset="d", adapter="qlora").problems() == []
    assert any("num_mini_batches" in p for p in
               new_spec("ppo", dataset="d", reward_model="r", batch_size=3, num_mini_batches=2).problems())
    assert any("precision bf16 needs a GPU" in p for p in new_spec("sft", dataset="d", device="cpu",
                                                                   precision="bf16").problems())
    if not _has("tensorboard"):
        assert any("tensorboard package is not installed" in p for p in
                   new_spec("sft", dataset="d", report_to="tensorboard").problems())


def _has(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_unknown_field_and_bad_values_are_clear():
    with pytest.raises(CaiError, match="unknown field"):
        spec_from_dict({"kind": "sft", "dataset": "d", "lora_rank": 8})
    with pytest.raises(CaiError, match="kind"):
        spec_from_dict({"kind": "sgd"})
    with pytest.raises(CaiError, match="batch_size"):
        spec_from_dict({"kind": "sft", "batch_size": "many"})


def test_yaml_roundtrip_and_string_coercion(tmp_path):
    for kind in KINDS:
        extra = {"reward_model": "r"} if kind in ("ppo", "rloo", "grpo") else {}
        spec = new_spec(kind, dataset="d", lora_r=8, probe_prompts=["hi"], **extra)
        path = save_spec(spec, tmp_path / f"{kind}.yaml")
        assert load_spec(path) == spec
    (tmp_path / "s.yaml").write_text("kind: dpo\ndataset: d\nlearning_rate: '5e-6'\nbeta: '0.2'\nmax_steps: '7'\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.learning_rate == 5e-6 and spec.beta == 0.2 and spec.max_steps == 7
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(CaiError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")


def test_memory_estimate_orders_modes_and_counts_params(tiny_model_dir):
    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "np") as fh:
        exact = sum(fh.get_tensor(k).size for k in fh.keys())
    assert model_shape(tiny_model_dir)["params"] == exact
    est = {m: estimate_memory(new_spec("sft", dataset="d", adapter=m, device="cpu"), tiny_model_dir)
           for m in ("full", "lora", "qlora")}
    assert est["qlora"]["weights_mb"] < est["lora"]["weights_mb"] <= est["full"]["weights_mb"]
    assert est["lora"]["optimizer_mb"] < est["full"]["optimizer_mb"]
    assert est["full"]["trainable_params"] == exact
    small = estimate_memory(new_spec("sft", dataset="d", batch_size=1, device="cpu"), tiny_model_dir)
    big = estimate_memory(new_spec("sft", dataset="d", batch_size=16, device="cpu"), tiny_model_dir)
    assert big["activations_mb"] > small["activations_mb"] and big["total_mb"] > small["total_mb"]
    ppo = estimate_memory(new_spec("ppo", dataset="d", reward_model="r", device="cpu"), tiny_model_dir)
    assert ppo["reward_model_mb"] > 0 and ppo["value_model_mb"] > 0
    default = estimate_memory(new_spec("sft", dataset="d", adapter="full", device="cpu"))
    assert default["params"] > 100e6  # the embedded SmolLM2-135M shape


def test_dataset_shapes_are_checked(tmp_path, store):
    sft = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    pref = write_jsonl(tmp_path / "pref.jsonl", PREF_ROWS)
    check_dataset(resolve_dataset(store, str(sft)), "sft")
    check_dataset(resolve_dataset(store, str(pref)), "dpo")
    check_dataset(resolve_dataset(store, str(pref)), "ppo")  # prompts come from the preference rows
    with pytest.raises(CaiError, match="preference dataset"):
        check_dataset(resolve_dataset(store, str(sft)), "reward")
    with pytest.raises(CaiError, match="SFT needs 'messages'"):
        check_dataset(resolve_dataset(store, str(pref)), "sft")
    with pytest.raises(CaiError, match="neither an export name"):
        resolve_dataset(store, "no-such-export")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CaiError, match="not a .jsonl"):
        resolve_dataset(store, str(tmp_path / "x.csv"))


def test_export_name_and_hf_folder_resolve(tmp_path, store):
    import datasets

    folder = tmp_path / "exports" / "prefs"
    datasets.Dataset.from_list(PREF_ROWS).save_to_disk(str(folder))
    ref = resolve_dataset(store, str(folder))
    assert ref.hf_dir == folder.resolve()
    check_dataset(ref, "reward")
    (folder / "card.json").write_text(json.dumps({"constitution_version": "abc123", "judges": ["j1"]}))
    store.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?)",
                  ("prefs", "preference", str(folder), json.dumps({"constitution_version": "abc123"}), 0))
    ref = resolve_dataset(store, "prefs")
    assert ref.export_id and ref.export_kind == "preference" and ref.card["constitution_version"] == "abc123"


def test_sources_check_models_and_reward_kind(tmp_path, store, tiny_model_dir):
    data = write_jsonl(tmp_path / "pref.jsonl", PREF_ROWS)
    with pytest.raises(CaiError, match="not 'default', a run name"):
        check_spec_sources(store, new_spec("dpo", dataset=str(data), model=str(tmp_path / "nope")))
    with pytest.raises(CaiError, match="not a reward model"):
        check_spec_sources(store, new_spec("ppo", dataset=str(data), model=str(tiny_model_dir),
                                           reward_model=str(tiny_model_dir)))
    assert check_spec_sources(store, new_spec("dpo", dataset=str(data), model=str(tiny_model_dir))).jsonl
