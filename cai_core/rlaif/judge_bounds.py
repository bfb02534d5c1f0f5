"""A judge's input bound: each pair, as the judge really reads it, must fit the judge model's context.

What a judge reads is more than the pair: its worked examples, the template around the conversation,
the comparison question, the scored prefix ("The answer is: ", or a cot judge's reasoning) and the
option. `fit_pairs` measures each pair's real judge conversations (every question it may be judged on,
both A/B orders) and, over the context, refuses the batch before anything is written (CaiError naming
the pair and both numbers) or, with --truncate-prompts (judge, eval-judge), cuts the pair's three parts
to fit (models.bounds.fit_pair_texts: the conversation loses its middle, each answer its tail, marked
" [...] "). The stored comparison keeps its full text; the judgments' transcripts show what was read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cai_core.constitution.model import Constitution
from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend
from cai_core.models.bounds import fit_pair_texts, too_long_error
from cai_core.rlaif.judges import (
    COT_SUFFIX,
    MC_PREFIX,
    OPTIONS,
    JudgeSpec,
    choose_principles,
    comparison_question,
    example_turns,
    judge_conversation,
    judge_examples,
)

PARTS = ("prompt", "response_a", "response_b")


@dataclass
class FittedPairs:
    pairs: list[dict]                         # as judged (cut ones shortened; others the same dicts)
    truncated: list[int] = field(default_factory=list)   # indexes of the pairs that were cut
    window: int | None = None                 # the judge model's context (None: not checked)

    @property
    def truncated_ids(self) -> list[str]:
        return [str(self.pairs[i]["id"]) for i in self.truncated]


def _questions(spec: JudgeSpec, constitution: Constitution | None, pair: dict) -> list[str]:
    """The questions this pair is judged on (as judges._items chooses them)."""
    if pair.get("question"):
        return [str(pair["question"])]
    if constitution is None:
        return []
    key = str(pair.get("key") or pair["id"])
    return [comparison_question(p) for p in choose_principles(spec, constitution, key)]


def _tail_tokens(backend: Backend, spec: JudgeSpec, max_new_tokens: int) -> int:
    """What follows the user turn: the scored prefix (and a cot judge's reasoning) and the option."""
    option = max(len(backend.text_tokens(o) or []) for o in OPTIONS)
    if spec.style == "mc":
        return len(backend.text_tokens(MC_PREFIX) or []) + option
    if spec.style == "cot":
        return max_new_tokens + len(backend.text_tokens(COT_SUFFIX) or []) + option
    return max_new_tokens


def fit_pairs(backend: Backend, spec: JudgeSpec, constitution: Constitution | None, pairs: list[dict], *,
              truncate: bool | None, max_new_tokens: int | None = None) -> FittedPairs:
    """Check (and, truncate=True, cut) every pair against the judge model's context; see the module
    docstring. truncate=None: the caller has no --truncate-prompts (its error does not advise it)."""
    window = backend.context_window()
    if not window or not pairs:
        return FittedPairs(list(pairs), [], window)
    new_tokens = spec.max_new_tokens if max_new_tokens is None else max_new_tokens
    budget = window - _tail_tokens(backend, spec, new_tokens)
    if budget < 1:
        raise CaiError(f"{backend.spec}: max new tokens {new_tokens} leave no room for a pair in the model's "
                       f"{window}-token context")
    examples = judge_examples(spec, constitution)
    example_cache: dict[str, list] = {}
    out, cut = [], []
    for i, pair in enumerate(pairs):
        questions = _questions(spec, constitution, pair)
        if not questions:
            out.append(pair)
            continue

        def measure(parts: list[str], questions=questions) -> int | None:
            worst = 0
            for q in questions:
                if q not in example_cache:
                    example_cache[q] = example_turns(examples, q, spec.style)
                for first, second in ((parts[1], parts[2]), (parts[2], parts[1])) if spec.swap else ((parts[1], parts[2]),):
                    n = backend.prompt_tokens(example_cache[q] + judge_conversation(parts[0], first, second, q, spec.style))
                    if n is None:
                        return None
                    worst = max(worst, n)
            return worst

        texts = [str(pair.get(k) or "") for k in PARTS]
        n = measure(texts)
        if n is None:  # the backend cannot count tokens (an endpoint without a tokenizer): the server decides
            return FittedPairs(list(pairs), [], window)
        if n <= budget:
            out.append(pair)
            continue
        if not truncate:
            excerpt = " ".join(texts[0].split())[:57] + ("..." if len(texts[0]) > 57 else "")
            raise too_long_error(f"pair {pair.get('id')}", excerpt, n, new_tokens if spec.style != "mc" else 1,
                                 window, backend.spec, budget, offers_truncation=truncate is not None)
        short = fit_pair_texts(backend, texts, budget, measure)
        if short is None:
            raise CaiError(f"pair {pair.get('id')!r} is {n:,} tokens, over the {window:,}-token context of "
                           f"{backend.spec}, and this backend cannot cut it")
        if measure(short) > budget:  # the template and worked examples alone leave no room
            raise CaiError(f"pair {pair.get('id')}: the judge's template and {len(examples)} worked example(s) alone "
                           f"are {measure(['', '', '']):,} tokens, so no cut of the pair fits the {window:,}-token "
                           f"context of {backend.spec}; judge without the examples (--zero-shot) or with a model "
                           "that has a longer context")
        out.append({**pair, **dict(zip(PARTS, short))})
        cut.append(i)
    return FittedPairs(out, cut, window)
