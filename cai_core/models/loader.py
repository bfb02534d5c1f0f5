"""Load a model in a background thread so a page can show progress instead of freezing.

The backend cache in `models` is per process; the Streamlit server is one process, so a model
loaded here is the one every page then uses. `start_load` returns at once; pages poll `state()`
(fraction, message, error) from a fragment and call `unload` to free memory.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cai_core.errors import CaiError
from cai_core.models import specs as models
from cai_core.workspace import Workspace


@dataclass
class LoadState:
    spec: str
    fraction: float = 0.0
    message: str = "queued"
    error: str | None = None
    done: bool = False
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    info: dict | None = None

    @property
    def loading(self) -> bool:
        return not self.done

    @property
    def seconds(self) -> float:
        return (self.ended_at or time.time()) - self.started_at


_states: dict[tuple, LoadState] = {}
_lock = threading.Lock()


def _key(spec: str, ws: Workspace) -> tuple:
    return (spec.strip(), str(ws.root))


def start_load(spec: str, ws: Workspace, **backend_kwargs) -> LoadState:
    """Start loading `spec` unless it is loading already; returns its state (already done if cached)."""
    spec = (spec or models.DEFAULT_SPEC).strip()
    key = _key(spec, ws)
    with _lock:
        current = _states.get(key)
        if current is not None and current.loading:
            return current
        state = LoadState(spec)
        _states[key] = state

    def progress(fraction: float, message: str) -> None:
        state.fraction, state.message = max(state.fraction, float(fraction)), message

    def work() -> None:
        try:
            backend = models.get_backend(spec, ws, progress=progress, **backend_kwargs)
            state.info = backend.info()
            state.fraction, state.message = 1.0, "ready"
        except CaiError as exc:
            state.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never lost in a thread
            state.error = f"{type(exc).__name__}: {exc}"
        finally:
            state.ended_at = time.time()
            state.done = True

    threading.Thread(target=work, name=f"load {spec}", daemon=True).start()
    return state


def state(spec: str, ws: Workspace) -> LoadState | None:
    with _lock:
        return _states.get(_key(spec, ws))


def wait(spec: str, ws: Workspace, timeout: float = 600.0) -> LoadState:
    """Block until a started load ends (CLI and tests); raises CaiError with the load's error."""
    st = state(spec, ws)
    if st is None:
        raise CaiError(f"{spec} is not being loaded")
    deadline = time.time() + timeout
    while not st.done:
        if time.time() > deadline:
            raise CaiError(f"loading {spec} took longer than {timeout:.0f} s")
        time.sleep(0.05)
    if st.error:
        raise CaiError(st.error)
    return st


def unload(spec: str | None, ws: Workspace | None = None) -> int:
    """Free a loaded model (or all, spec=None) and forget its load state."""
    with _lock:
        for key in [k for k in _states if spec is None or k[0] == spec]:
            if _states[key].done:
                del _states[key]
    return models.unload(spec)
