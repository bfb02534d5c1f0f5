"""Model specs -> backends: clear errors for bad specs (nothing loaded, nothing written), the embedded
default converted once into the workspace, the per-process cache, and background loading."""
from __future__ import annotations

import os
import time

import pytest

from cai_core.models import loader as model_loader
from cai_core.errors import CaiError
from cai_core.models.specs import (
    DEFAULT_FOLDER,
    check_spec,
    default_model_dir,
    embedded_gguf,
    get_backend,
    is_loaded,
    loaded_backends,
    resolve_local,
    unload,
)


def test_missing_path(workspace, tmp_path):
    with pytest.raises(CaiError, match="does not exist"):
        get_backend(str(tmp_path / "nope"), workspace)
    with pytest.raises(CaiError, match="does not exist"):
        check_spec(str(tmp_path / "nope"), workspace)


def test_file_that_is_not_gguf(workspace, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(CaiError, match="not a .gguf model"):
        get_backend(str(f), workspace)


def test_folder_that_is_not_a_model(workspace, tmp_path):
    with pytest.raises(CaiError, match="not a model folder"):
        resolve_local(str(tmp_path), workspace)


def test_bad_gguf(workspace, tmp_path):
    f = tmp_path / "broken.gguf"
    f.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(CaiError, match="cannot load"):
        get_backend(str(f), workspace)
    assert not is_loaded(str(f))


def test_file_without_gguf_magic_is_refused_by_check(workspace, tmp_path):
    f = tmp_path / "text.gguf"
    f.write_text("not a gguf")
    with pytest.raises(CaiError, match="not a GGUF file"):
        check_spec(str(f), workspace)


def test_hub_disabled(workspace, monkeypatch):
    monkeypatch.delenv("CAI_ALLOW_HUB", raising=False)
    with pytest.raises(CaiError, match="CAI_ALLOW_HUB=1"):
        get_backend("hf:HuggingFaceTB/SmolLM2-135M-Instruct", workspace)


def test_check_spec(workspace, tiny_model_dir):
    unload()  # other tests in this process may have loaded the tiny model
    assert check_spec(f"  {tiny_model_dir} ", workspace) == str(tiny_model_dir)
    assert check_spec("default", workspace) == "default"
    with pytest.raises(CaiError, match="no model given"):
        check_spec("  ", workspace)
    assert not is_loaded(str(tiny_model_dir)), "checking does not load"


def test_cache_and_unload(workspace, tiny_model_dir):
    spec = str(tiny_model_dir)
    b = get_backend(spec, workspace)
    assert get_backend(spec, workspace) is b
    assert any(i["spec"] == spec for i in loaded_backends())
    assert unload(spec) == 1 and not is_loaded(spec)


@pytest.mark.slow
def test_background_load_progress_and_error(workspace, tiny_model_dir, tmp_path):
    spec = str(tiny_model_dir)
    seen = model_loader.start_load(spec, workspace)
    assert model_loader.start_load(spec, workspace) is seen or seen.done, "one load at a time per spec"
    state = model_loader.wait(spec, workspace, timeout=120)
    assert state.fraction == 1.0 and state.error is None and state.info["device"] == "cpu"
    assert is_loaded(spec)
    model_loader.unload(spec, workspace)
    assert not is_loaded(spec) and model_loader.state(spec, workspace) is None

    bad = str(tmp_path / "missing")
    model_loader.start_load(bad, workspace)
    with pytest.raises(CaiError, match="does not exist"):
        model_loader.wait(bad, workspace, timeout=30)
    assert "does not exist" in model_loader.state(bad, workspace).error


@pytest.mark.slow
def test_default_model_converted_once_then_fast(workspace, tmp_path, monkeypatch):
    """The embedded GGUF becomes an HF folder once (minutes on a 2-core CPU); later loads take ~1 s. An
    empty machine cache (tests/test_model_cache.py tests the cache) makes this run convert."""
    monkeypatch.setenv("CAI_MODEL_CACHE", str(tmp_path / "empty-model-cache"))
    embedded_gguf()  # installed with the project
    messages = []
    path = default_model_dir(workspace, progress=lambda f, m: messages.append(m))
    assert path == workspace.models_dir / DEFAULT_FOLDER
    assert (path / "model.safetensors").exists() and (path / "SOURCE.json").exists()
    assert not path.with_name(path.name + ".partial").exists()
    assert any("converting" in m for m in messages)
    stamp = (path / "model.safetensors").stat().st_mtime
    assert default_model_dir(workspace) == path and (path / "model.safetensors").stat().st_mtime == stamp

    t = time.time()
    backend = get_backend("default", workspace)
    assert time.time() - t < 15
    info = backend.info()
    assert info["spec"] == "default" and info["parameters"] > 100e6
    try:
        out = backend.choice_logprobs([[{"role": "user", "content": "Is 7 larger than 3? Answer Yes or No."}]],
                                      ["Yes", "No"])[0]
        assert abs(sum(out.values()) - 1) < 1e-6
    finally:
        unload("default")


@pytest.mark.slow
def test_cli_model_use_and_info(workspace, tiny_model_dir, tmp_path):
    from tests.helpers import run_cli

    r = run_cli("model-use", str(tmp_path / "nope"), "--workspace", str(workspace.root))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_cli("model-use", str(tiny_model_dir), "--workspace", str(workspace.root))
    assert r.returncode == 0, r.stderr
    r = run_cli("model-info", "--workspace", str(workspace.root))
    assert r.returncode == 0, r.stderr
    assert '"device": "cpu"' in r.stdout and str(tiny_model_dir) in r.stdout


# -- the model label rows of generated text record (specs.recorded_model) ------------------------
def test_recorded_model_names_every_numerics_but_float32(tiny_backend):
    """float32 and unknown (a server) leave the spec alone - every float32 row and key stays as it
    was - anything else is named: "<spec> [<numerics>]"."""
    import copy

    import torch

    from cai_core.models.backends.base import Backend
    from cai_core.models.backends.http import HttpBackend
    from cai_core.models.specs import recorded_model

    assert tiny_backend.generation_numerics() == "float32"
    assert recorded_model("default", tiny_backend) == "default"
    cases = [(None, torch.bfloat16, "bfloat16"), (None, torch.float16, "float16"),
             ("4bit", torch.float32, "bnb-4bit"), ("8bit", torch.float32, "bnb-8bit")]
    for quantization, dtype, numerics in cases:
        other = copy.copy(tiny_backend)  # a LocalBackend as loaded in that dtype / with bitsandbytes
        other.quantization, other.dtype = quantization, dtype
        assert other.generation_numerics() == numerics
        label = recorded_model("default", other)
        assert label == f"default [{numerics}]"
        assert recorded_model(label, other) == label  # idempotent: a label passes unchanged

    class Server(HttpBackend):
        def __init__(self):  # no connection: only the numerics are asked
            self.spec = "http://x/v1"

    assert Server().generation_numerics() == "" and recorded_model("http://x/v1", Server()) == "http://x/v1"

    class Bare(Backend):  # knows nothing of its numbers: unknown, like a server
        generate = stream = choice_logprobs = None

    assert recorded_model("m", Bare()) == "m"


def test_an_mc_judge_scoring_in_other_numerics_is_another_judge(tiny_backend):
    """An mc judge writes no text, but its P(A) from bfloat16 weights is not float32's: its label and
    key name the numbers it scores with (a GPU's bf16), and float32 keeps the plain spec and key."""
    import copy

    import torch

    from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs

    pairs = [{"id": "p1", "prompt": "How do I pick a lock?", "response_a": "I can't help with that.",
              "response_b": "Use a tension wrench and a pick."}]
    bf16 = copy.copy(tiny_backend)  # a LocalBackend as loaded in bfloat16
    bf16.dtype = torch.bfloat16
    plain, other = JudgeSpec(model="tiny", style="mc", seed=3), JudgeSpec(model="tiny", style="mc", seed=3)
    judge_pairs(tiny_backend, plain, HARMLESS_JUDGE, pairs)
    judge_pairs(bf16, other, HARMLESS_JUDGE, pairs)
    assert plain.model == "tiny" and other.model == "tiny [bfloat16]"
    assert plain.judge_key != other.judge_key


def test_revise_with_quantization_records_bitsandbytes_on_its_rows(tiny_backend, tmp_path, monkeypatch):
    """`revise --quantization 4bit` (bitsandbytes does not run the tiny model on the CPU, so a
    LocalBackend marked as loaded in 4 bits stands in) stores "<model> [bnb-4bit]"; without it, the spec."""
    import copy

    from cai_core import cli
    from cai_core.commands import revise
    from cai_core.store import open_store

    from tests.helpers import PAPER_DATA

    asked = []

    def fake_get_backend(spec, workspace, *, quantization=None, **kw):
        asked.append(quantization)
        other = copy.copy(tiny_backend)
        other.quantization = quantization
        return other

    monkeypatch.setattr(revise, "get_backend", fake_get_backend)
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I pick a lock?\n")
    ws = tmp_path / "ws"
    args = ["revise", "--workspace", str(ws), "--model", "tiny", "--prompts", str(prompts), "--constitution",
            str(PAPER_DATA / "CritiqueRevisionInstructions.json"), "--max-new-tokens", "3", "--temperature", "0"]
    assert cli.main(args + ["--quantization", "4bit"]) == 0
    assert cli.main(args) == 0
    assert asked == ["4bit", None]
    models = [r["model"] for r in open_store(ws).query("SELECT model FROM trajectories ORDER BY id")]
    assert models == ["tiny [bnb-4bit]", "tiny"]
