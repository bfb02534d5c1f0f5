"""Input bounds: a prompt must fit the model's context, checked before any work starts.

A 100,000-character prompt used to run for minutes against a 2,048-token model with only a
transformers warning. Every command that generates from user prompts (revise, pairs sample, judge,
evaluate) and the live views call `fit_prompts` first: a prompt whose tokens plus the answer's
max_new_tokens exceed the context is a CaiError naming the prompt and both numbers, unless the user
chose truncation (--truncate-prompts), which keeps the prompt's head and says how many were cut.
Backends that cannot count tokens (an HTTP endpoint without a tokenizer) are not checked here; the
server refuses such prompts itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend

TRUNCATE_FLAG = "--truncate-prompts"


@dataclass
class Fitted:
    texts: list[str]          # the prompts as they will be used (cut ones shortened)
    truncated: list[int]      # indexes of the prompts that were cut
    window: int | None        # the model's context in tokens (None: unknown, nothing checked)


def _excerpt(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def fit_prompts(backend: Backend, texts: list[str], *, max_new_tokens: int, truncate: bool = False,
                what: str = "prompt", extra_tokens: int = 0) -> Fitted:
    """Check each text, as a user turn, plus `max_new_tokens` (and `extra_tokens` the caller adds around
    it) against the model's context. Raises CaiError for the first that does not fit, or (truncate=True)
    cuts it to fit."""
    window = backend.context_window()
    if not window:
        return Fitted(list(texts), [], None)
    budget = window - int(max_new_tokens) - int(extra_tokens)
    if budget < 1:
        raise CaiError(f"{backend.spec}: max new tokens {max_new_tokens} leave no room for a {what} in the "
                       f"model's {window}-token context")
    out, cut = [], []
    for i, text in enumerate(texts):
        n = backend.prompt_tokens([{"role": "user", "content": text}])
        if n is None:
            return Fitted(list(texts), [], window)
        if n <= budget:
            out.append(text)
            continue
        if not truncate:
            raise CaiError(
                f"{what} {i + 1} ({_excerpt(text)!r}) is {n:,} tokens; with {max_new_tokens:,} new tokens it does "
                f"not fit the {window:,}-token context of {backend.spec} (at most {budget:,} prompt tokens). "
                f"Shorten it, or let the workbench cut it to fit ({TRUNCATE_FLAG})")
        tokens = backend.text_tokens(text)
        if tokens is None:
            raise CaiError(f"{what} {i + 1} is {n:,} tokens, over the {window:,}-token context of {backend.spec}, "
                           "and this backend cannot cut it")
        template = n - len(tokens)  # the chat template's own tokens around the text
        keep = max(1, budget - template)
        short = backend.detokenize(tokens[:keep])
        while keep > 1 and backend.prompt_tokens([{"role": "user", "content": short}]) > budget:
            keep = max(1, keep - max(1, keep // 50))  # a decode/re-encode round trip can merge tokens differently
            short = backend.detokenize(tokens[:keep])
        out.append(short)
        cut.append(i)
    return Fitted(out, cut, window)


def _text(value) -> str:
    if isinstance(value, list):  # a conversation
        return "\n\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return "" if value is None else str(value)


def pair_text(pair: dict) -> str:
    """What a judge reads of a comparison (prompt and both responses), for the context check."""
    return "\n\n".join(_text(pair.get(k)) for k in ("prompt", "response_a", "response_b"))
