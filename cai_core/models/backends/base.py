"""The one interface for all model access: generate, stream, and option probabilities.

A conversation is a list of {"role": ..., "content": ...} messages. Backends apply the chat
template themselves (local) or let the server do it (HTTP).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Iterator

from cai_core.errors import CaiError

Conversation = list[dict]
DEFAULT_IN_FLIGHT = 8  # rows per batched call of an in-process model on the CPU (the historic --batch-size)


@dataclass
class GenerationParams:
    max_new_tokens: int = 200
    temperature: float = 0.7     # 0 means greedy
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1                   # samples per conversation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "GenerationParams":
        data = dict(data or {})
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class RequestFailed(CaiError):
    """One request that still failed after its retries (an HTTP backend's connection errors,
    timeouts, 429 and 5xx): a batch stores the item as failed with this message and goes on.
    reason: short cause ("HTTP 503", "timeout", "connection refused", ...); attempts: tries made;
    code: the last HTTP status, if any."""

    def __init__(self, message: str, *, reason: str = "", attempts: int = 1, code: int | None = None):
        super().__init__(message)
        self.reason, self.attempts, self.code = reason, attempts, code


@dataclass
class Completion:
    text: str
    tokens: int = 0
    finish_reason: str = "stop"   # stop | length


class Backend(ABC):
    """Something that generates text and scores options."""

    spec: str = ""

    @abstractmethod
    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        """Batched generation: for each conversation, params.n completions."""

    @abstractmethod
    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as the model writes them."""

    @abstractmethod
    def choice_logprobs(
        self, conversations: list[Conversation], options: list[str], assistant_prefix: str | list[str] = ""
    ) -> list[dict[str, float]]:
        """For each conversation, normalised probabilities over `options` (e.g. "(A)", "(B)")
        as continuations of the assistant turn after `assistant_prefix`, read from log-probs.
        assistant_prefix: one text for all, or one per conversation (a CoT judge's own reasoning),
        so per-item prefixes still score in one batched call (see `assistant_prefixes`)."""

    @property
    def supports_logprobs(self) -> bool:
        return True

    def option_scoring(self) -> str:
        """How choice_logprobs scores: "exact" (summed option-token log-probs at the natural
        boundary), or a short description of an approximation (e.g. an HTTP server whose prompt
        text is unknown: "approximate: first-token top-k"), which judges put in their key."""
        return "exact"

    def generation_numerics(self) -> str:
        """The numbers this backend's generated text (generate, stream) comes from: "float32",
        "bfloat16"/"float16", "bnb-4bit"/"bnb-8bit" (bitsandbytes), "int8" (CTranslate2 int8), or ""
        when unknown (a server; the default). Rows record it beside the model (specs.recorded_model),
        so text from other numbers never passes for float32 text."""
        return ""

    def scoring_numerics(self) -> str:
        """The numbers choice_logprobs computes with (an mc judge's P(A)); the same weights as
        generation unless a backend routes scoring elsewhere (backends/routed.py)."""
        return self.generation_numerics()

    def info(self) -> dict:
        return {"spec": self.spec}

    def fault_counts(self) -> dict:
        """Faults met and handled so far (an HTTP backend: retries, http_503, connection, failed, ...);
        {} for a backend without transient faults (a model in this process)."""
        return {}

    # -- keeping it busy (cai_core.models.dispatch) ----------------------------------------------
    def max_in_flight(self) -> int:
        """How much work to keep outstanding: for a server (`concurrent`), the requests it serves at
        once (its concurrency, times its replicas); for a model in this process, the rows of one
        batched call (sized by memory). A batch's --batch-size overrides it."""
        return DEFAULT_IN_FLIGHT

    @property
    def concurrent(self) -> bool:
        """True when separate calls run at the same time (an HTTP server: the dispatcher sends one
        request per conversation from threads); False when calls run one at a time (a model in this
        process holds a lock: the dispatcher groups ready requests into batched calls)."""
        return False

    # -- input bounds (cai_core.models.bounds checks prompts with these before any work) --------
    def context_window(self) -> int | None:
        """The most tokens (prompt + answer) the model attends to; None when unknown (nothing is checked)."""
        return None

    def prompt_tokens(self, conversation: Conversation) -> int | None:
        """Tokens of a conversation as the model sees it (chat template and generation prompt included);
        None when this backend cannot count them."""
        return None

    def text_tokens(self, text: str) -> list | None:
        """A text's tokens (no special tokens), for cutting it to fit; None when unknown."""
        return None

    def detokenize(self, tokens: list) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release memory (models) or connections."""


def assistant_prefixes(conversations: list[Conversation], assistant_prefix: str | list[str]) -> list[str]:
    """choice_logprobs' prefix argument as one text per conversation."""
    if isinstance(assistant_prefix, str):
        return [assistant_prefix] * len(conversations)
    prefixes = list(assistant_prefix)
    if len(prefixes) != len(conversations):
        raise CaiError(f"{len(prefixes)} assistant prefixes for {len(conversations)} conversations")
    return prefixes


def common_prefix_length(a, b) -> int:
    """How many leading items (token ids or token strings) two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def natural_boundary(prompt: list, fulls: list[list]) -> int:
    """Where option scoring starts, given the bare prompt's tokens and each prompt+option text's tokens.

    The one rule every engine uses (local, CTranslate2, llama.cpp and vLLM servers), so they all
    compute the same quantity. Prompt+option is tokenised as ONE text, as the model would see it
    written: "The answer is: " + "(A)" reads ':' 'Ġ(' 'A' ')', not ':' 'Ġ' '(' 'A' ')'. When the
    prompt's last tokens merge with an option's first, every option of that conversation is scored
    from the same boundary - the longest token prefix shared by the bare prompt and all
    prompt+option sequences - so each score is log P(rest of prompt text + option | shared
    prefix); the shared rest cancels in the normalisation over options. At least one token stays
    context (the first token has no log-prob)."""
    if not prompt:
        raise CaiError("a conversation tokenizes to nothing")
    boundary = max(1, min([len(prompt)] + [common_prefix_length(prompt, f) for f in fulls]))
    if any(len(f) <= boundary for f in fulls):
        raise CaiError("an option adds no tokens after the prompt")
    return boundary


def natural_option_tokens(tokenize, text: str, options: list[str]) -> tuple[list, list[list]]:
    """(context tokens, one continuation per option) at the natural boundary (see natural_boundary).
    tokenize: text -> token list, without special tokens beyond what the text itself holds."""
    prompt = list(tokenize(text))
    fulls = [list(tokenize(text + o)) for o in options]
    boundary = natural_boundary(prompt, fulls)
    return prompt[:boundary], [f[boundary:] for f in fulls]


def normalise(logprobs: dict[str, float]) -> dict[str, float]:
    """Turn option log-probs into probabilities that sum to 1 (softmax over the options)."""
    top = max(logprobs.values())
    exps = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(exps.values())
    return {k: v / total for k, v in exps.items()}


def apply_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut text at the first stop string; report whether one was found."""
    cut = len(text)
    for s in stop or []:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut != len(text)
