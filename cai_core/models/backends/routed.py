"""The `auto` engine on the CPU: each kind of call goes to the engine measured faster for it.

On the 2-core CPU (docs/benchmarks.md, rows 8b-8c; quiet machine, float32 on both sides, same greedy
text on 32 of 32 answers) CTranslate2 decodes one conversation faster than transformers - batch-1
streaming 16.4 vs 11.4 tokens/s, the Critique and Revise page's live 2-round run 25.5 s vs 39.2 s -
but is slower on batches of long prompts: its per-step decoder cost grows with batch x context
(193 ms/step at 32 rows x 20 tokens, 968 ms at 32 x 320) where transformers' does not, so the
batched critique->revision pipeline took 190 s against 162 s. Option scoring is prefill-bound, and
transformers shares a prefix across a batch (a pair's two orders, a few-shot block).

So: `stream` (the live page, token by token) runs on CTranslate2; `generate` and `choice_logprobs`
(batch jobs, judging, evaluation) run on transformers. Both hold the same float32 weights and
tokenizer, so a trajectory does not change meaning with the route: greedy text is the same and
option probabilities agree within 1e-5 (docs/benchmarks.md rows 6 and 8b).
"""
from __future__ import annotations

from typing import Iterator

from cai_core.models.backends.base import Backend, Completion, Conversation, GenerationParams


class RoutedBackend(Backend):
    """stream -> `streaming` (CTranslate2); generate, choice_logprobs -> `batched` (transformers)."""

    def __init__(self, streaming: Backend, batched: Backend, spec: str = ""):
        self.streaming = streaming
        self.batched = batched
        self.spec = spec or batched.spec

    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        return self.batched.generate(conversations, params)

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        return self.streaming.stream(conversation, params)

    def choice_logprobs(self, conversations: list[Conversation], options: list[str],
                        assistant_prefix: str | list[str] = "") -> list[dict[str, float]]:
        return self.batched.choice_logprobs(conversations, options, assistant_prefix=assistant_prefix)

    def option_scoring(self) -> str:
        return self.batched.option_scoring()

    def info(self) -> dict:
        batched, streaming = self.batched.info(), self.streaming.info()
        out = dict(batched)
        out.update(engine="auto", route={"stream": streaming.get("engine"), "generate": batched.get("engine"),
                                         "choice_logprobs": batched.get("engine")},
                   ct2_dir=streaming.get("ct2_dir"),
                   memory_mb=round((batched.get("memory_mb") or 0) + (streaming.get("memory_mb") or 0), 1))
        return out

    def context_window(self) -> int | None:
        return self.batched.context_window()

    def prompt_tokens(self, conversation: Conversation) -> int | None:
        return self.batched.prompt_tokens(conversation)

    def text_tokens(self, text: str) -> list | None:
        return self.batched.text_tokens(text)

    def detokenize(self, tokens: list) -> str:
        return self.batched.detokenize(tokens)

    def close(self) -> None:
        self.streaming.close()
        self.batched.close()
