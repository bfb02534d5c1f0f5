"""Input bounds: a prompt must fit the model's context, checked before any work starts.

A 100,000-character prompt used to run for minutes against a 2,048-token model with only a
transformers warning. Every command that generates from user prompts (revise, pairs sample, judge,
evaluate) and the live views call `fit_prompts` first: a prompt whose tokens plus the answer's
max_new_tokens exceed the context is a CaiError naming the prompt and both numbers, unless the user
chose truncation (--truncate-prompts), which keeps the prompt's head and says how many were cut.
Backends that cannot count tokens (an HTTP endpoint without a tokenizer) are not checked here; the
server refuses such prompts itself.

The error advises --truncate-prompts only to a caller that offers it: `truncate` is a bool where the
command has the flag (revise, pairs sample, judge, eval-judge) and None where it has not (evaluate,
ab-experiment, the live views, the Models page), so no message names a flag its command lacks.
Judges read a pair (conversation and two answers) inside a template: `fit_pair_texts` cuts the
three parts together (water-filling: the shortest keep everything, the longest share the rest),
and rlaif.judge_bounds measures the template the judge really adds.
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


def too_long_error(what: str, excerpt: str, n: int, max_new_tokens: int, window: int, spec: str, budget: int,
                   *, offers_truncation: bool) -> CaiError:
    """The one message for an input over the context; it names --truncate-prompts only when the caller's
    command has that flag (offers_truncation)."""
    advice = (f"Shorten it, or let the workbench cut it to fit ({TRUNCATE_FLAG})" if offers_truncation
              else "Shorten it, or use a model with a longer context")
    new = f"{max_new_tokens:,} new token{'' if max_new_tokens == 1 else 's'}"
    return CaiError(f"{what} ({excerpt!r}) is {n:,} tokens; with {new} it does not fit the "
                    f"{window:,}-token context of {spec} (at most {budget:,} prompt tokens). {advice}")


def fit_prompts(backend: Backend, texts: list[str], *, max_new_tokens: int, truncate: bool | None = None,
                what: str = "prompt", extra_tokens: int = 0) -> Fitted:
    """Check each text, as a user turn, plus `max_new_tokens` (and `extra_tokens` the caller adds around
    it) against the model's context. Raises CaiError for the first that does not fit, or (truncate=True)
    cuts it to fit. truncate=None: the caller has no --truncate-prompts, so the error does not advise it."""
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
            raise too_long_error(f"{what} {i + 1}", _excerpt(text), n, max_new_tokens, window, backend.spec, budget,
                                 offers_truncation=truncate is not None)
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


CUT_MARK = " [...] "


def _cut_middle(backend: Backend, tokens: list, keep: int) -> str:
    """The text of `tokens` with only `keep` of them: its head and tail around a cut mark (a conversation
    keeps its first turn and the last one, which the answers reply to)."""
    if keep >= len(tokens):
        return backend.detokenize(tokens)
    head = max(1, (keep + 1) // 2)
    tail = max(0, keep - head)
    return backend.detokenize(tokens[:head]) + CUT_MARK + (backend.detokenize(tokens[-tail:]) if tail else "")


def _cut_head(backend: Backend, tokens: list, keep: int) -> str:
    """The first `keep` tokens of an answer and a cut mark."""
    if keep >= len(tokens):
        return backend.detokenize(tokens)
    return backend.detokenize(tokens[:max(1, keep)]) + CUT_MARK.rstrip()


def shares(lengths: list[int], budget: int) -> list[int]:
    """Water-filling: how many tokens each part keeps so that they sum to at most `budget`; a part
    shorter than its fair share keeps everything and leaves the rest to the longer ones."""
    budget = max(0, int(budget))
    if sum(lengths) <= budget:
        return list(lengths)
    out = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for rank, i in enumerate(order):
        fair = left // (len(lengths) - rank)
        out[i] = min(lengths[i], fair)
        left -= out[i]
    return out


def fit_pair_texts(backend: Backend, parts: list[str], budget: int, measure) -> list[str] | None:
    """Cut the parts of a pair (prompt, answer A, answer B) so that `measure(parts)` (the tokens of
    what the judge really reads) is at most `budget`. The prompt loses its middle, each answer its
    tail. Returns None when the backend cannot count or cut tokens."""
    tokens = [backend.text_tokens(t) for t in parts]
    if any(t is None for t in tokens):
        return None
    lengths = [len(t) for t in tokens]
    overhead = measure(["", "", ""])
    if overhead is None:
        return None
    room = budget - overhead - 3 * len(backend.text_tokens(CUT_MARK) or [])
    keep = shares(lengths, room)
    for _ in range(200):  # detokenize/re-encode can merge tokens differently: shrink until it fits
        cut = [_cut_middle(backend, tokens[0], keep[0])] + [_cut_head(backend, t, k) for t, k in zip(tokens[1:], keep[1:])]
        if measure(cut) <= budget or not any(keep):
            return cut
        keep = [max(0, k - max(1, k // 50)) if k else 0 for k in keep]
    return cut
