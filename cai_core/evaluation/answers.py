"""The evaluation's answer cache: each policy's answer to each prompt, keyed by the policy's weights
fingerprint, the prompt and the generation settings, so a killed evaluation resumes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from cai_core.evaluation.policies import Policy
from cai_core.models.backends.base import GenerationParams
from cai_core.models.bounds import fit_prompts
from cai_core.models.dispatch import Request, run_chains
from cai_core.models.specs import get_backend, recorded_model
from cai_core.store import Store, dumps, now


# -- answers -----------------------------------------------------------------------------------
def weights_fingerprint(spec: str) -> str:
    """Size and mtime of a local model's weight files, so retrained weights in the same folder
    never reuse old cached answers (endpoints and 'default' have none)."""
    path = Path(spec)
    if not path.is_dir():
        return ""
    parts = []
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return ",".join(parts)


def _answer_key(model: str, fingerprint: str, prompt: str, params: dict) -> str:
    """model: the policy's recorded label (its spec; "<spec> [int8]" etc. for other numerics)."""
    blob = dumps({"spec": model, "fp": fingerprint, "prompt": prompt, "params": params})
    return hashlib.sha256(blob.encode()).hexdigest()


def generate_answers(store: Store, policy: Policy, prompts: list[str], params: GenerationParams, *,
                     batch_size: int | None = None, progress: Callable[[int, str], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, backend=None,
                     errors: list[str] | None = None) -> list[str | None]:
    """Each prompt's answer from one policy: cached ones read back, the rest generated in flight
    (models/dispatch.py; the same seed for every answer) and stored as each returns (`errors`
    collects those whose request still failed: they stay None for a re-run). The policy's backend is loaded first: the
    numbers it generates with are part of the cache key and the stored label (specs.recorded_model),
    so int8 or 16-bit answers never pass for float32 ones."""

    errors = [] if errors is None else errors
    pdict = params.to_dict()
    fp = weights_fingerprint(policy.spec)
    backend = backend or get_backend(policy.spec, store.workspace)
    model = recorded_model(policy.spec, backend)
    keys = [_answer_key(model, fp, p, pdict) for p in prompts]
    answers: dict[str, str] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for r in store.query(f"SELECT key, text FROM eval_answers WHERE key IN ({','.join('?' * len(chunk))})", chunk):
            answers[r["key"]] = r["text"]
    todo = [i for i, k in enumerate(keys) if k not in answers]
    if progress:
        progress(len(prompts) - len(todo), f"{policy.name}: {len(prompts) - len(todo)} answers cached")
    if todo:
        fit_prompts(backend, [prompts[i] for i in todo], max_new_tokens=params.max_new_tokens)  # before any answer
        done = [0]

        def answer(i: int):
            out = yield Request("generate", [{"role": "user", "content": prompts[i]}], params)
            c = out[0]
            store.execute(
                "INSERT INTO eval_answers (key, policy_spec, prompt, params_json, text, tokens, "
                "finish_reason, created_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (keys[i], model, prompts[i], dumps(pdict), c.text, c.tokens, c.finish_reason, now()))
            answers[keys[i]] = c.text

        def ended(i: int, _value=None) -> None:
            done[0] += 1
            if progress:
                progress(1, f"{policy.name}: answered {done[0]}/{len(todo)}")

        def failed(i: int, exc: BaseException) -> None:
            errors.append(f"{prompts[i][:60]!r}: {exc}")
            ended(i)

        # in flight (models/dispatch.py): as many answers outstanding as the backend serves (batch_size
        # overrides; a local model answers them in batched calls of that many, as before); each answer
        # is stored as it returns, one that still fails is left unanswered (None) for a re-run
        run_chains(backend, ((i, answer(i)) for i in todo), in_flight=batch_size, should_stop=should_stop,
                   on_done=ended, on_error=failed, together=store.tx)
    return [answers.get(k) for k in keys]
