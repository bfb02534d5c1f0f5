"""One model on two backends: one runs generation (`generate`, `stream`), the other scores options
(`choice_logprobs`). Generic: which backend does which is the caller's choice (models/specs.py).

Its one use is the opt-in `ctranslate2-int8` engine: generation on a CTranslate2 int8 copy (batched
generation 1.14x on the 2-core CPU; the live run 2.06x plain decoding, about what auto's prompt lookup
gives in float32; docs/benchmarks.md rows 8e-8f)
and option scoring on transformers float32. int8 text leaves float32's within a few tokens and int8
moved a judge's P(A) by up to 0.25, so scoring stays on float32 and no multiple-choice judgment
changes with this engine, while the generated text is labelled with its numerics on every row it
writes (`generation_numerics` -> specs.recorded_model, e.g. "default [int8]").

(The `auto` engine used to route streaming to CTranslate2 float32; it no longer does - float32 CT2
is not faster on batches, nor on the live run, where transformers streams with prompt lookup:
docs/benchmarks.md rows 8b-8f.)

Both backends read the same HF folder with the same tokenizer and chat template, so prompt counting
and token cutting (input bounds) are the scoring backend's and hold for both.
"""
from __future__ import annotations

from typing import Iterator

from cai_core.models.backends.base import Backend, Completion, Conversation, GenerationParams


class RoutedBackend(Backend):
    """generate, stream -> `generating`; choice_logprobs (and option_scoring, input bounds) -> `scoring`.

    engine: the name info() reports (the engine the user chose)."""

    def __init__(self, generating: Backend, scoring: Backend, spec: str = "", engine: str = "routed"):
        self.generating = generating
        self.scoring = scoring
        self.spec = spec or scoring.spec
        self.engine = engine

    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        return self.generating.generate(conversations, params)

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        return self.generating.stream(conversation, params)

    def choice_logprobs(self, conversations: list[Conversation], options: list[str],
                        assistant_prefix: str | list[str] = "") -> list[dict[str, float]]:
        return self.scoring.choice_logprobs(conversations, options, assistant_prefix=assistant_prefix)

    @property
    def supports_logprobs(self) -> bool:
        return self.scoring.supports_logprobs

    def max_in_flight(self) -> int:
        return self.generating.max_in_flight()

    @property
    def concurrent(self) -> bool:
        return self.generating.concurrent and self.scoring.concurrent

    def option_scoring(self) -> str:
        return self.scoring.option_scoring()

    def generation_numerics(self) -> str:
        return self.generating.generation_numerics()

    def scoring_numerics(self) -> str:
        return self.scoring.scoring_numerics()

    def info(self) -> dict:
        scoring, generating = self.scoring.info(), self.generating.info()
        out = dict(scoring)
        out.update(engine=self.engine,
                   route={"stream": generating.get("engine"), "generate": generating.get("engine"),
                          "choice_logprobs": scoring.get("engine")},
                   generation_numerics=self.generation_numerics(), ct2_dir=generating.get("ct2_dir"),
                   memory_mb=round((scoring.get("memory_mb") or 0) + (generating.get("memory_mb") or 0), 1))
        return out

    def context_window(self) -> int | None:
        return self.scoring.context_window()

    def prompt_tokens(self, conversation: Conversation) -> int | None:
        return self.scoring.prompt_tokens(conversation)

    def text_tokens(self, text: str) -> list | None:
        return self.scoring.text_tokens(text)

    def detokenize(self, tokens: list) -> str:
        return self.scoring.detokenize(tokens)

    def close(self) -> None:
        self.generating.close()
        self.scoring.close()
