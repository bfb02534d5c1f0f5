"""Local transformers backend: HF folder, GGUF file, optional PEFT adapter, bitsandbytes 4/8-bit.

Batched generation uses left padding and the tokenizer's chat template. Option probabilities
(the paper's multiple-choice labels) need no text generation, and no prompt prefix is prefilled
twice (see choice_logprobs).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from cai_core.errors import CaiError
from cai_core.models.backends.base import (
    DEFAULT_IN_FLIGHT,
    Backend,
    Completion,
    Conversation,
    GenerationParams,
    apply_stop,
    assistant_prefixes,
    common_prefix_length,
    natural_option_tokens,
    normalise,
)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str = "auto"):
    import torch

    if requested != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[requested]
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device == "mps":
        return torch.float16
    return torch.float32


def mark_plain(model) -> None:
    """A GGUF-loaded model is dequantized already; drop the quantizer marks so it can be saved and trained."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        try:
            del model.config.quantization_config
        except AttributeError:
            pass


class LocalBackend(Backend):
    def __init__(
        self,
        path: str | Path,
        *,
        gguf_file: str | None = None,
        adapter: str | Path | None = None,
        quantization: str | None = None,   # None | "4bit" | "8bit"
        device: str = "auto",
        dtype: str = "auto",
        display_name: str | None = None,
        progress=None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = display_name or str(path)
        self.device = pick_device(device)
        self._lock = threading.Lock()  # one generate at a time per model (threads share it)
        path = Path(path)
        if progress:
            progress(0.05, f"loading tokenizer from {path}")
        load_kwargs: dict = {}
        if gguf_file:
            load_kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), **load_kwargs)
        except Exception as exc:  # noqa: BLE001 - report any loader failure as one clear message
            raise CaiError(f"cannot load a tokenizer from {path / gguf_file if gguf_file else path}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise CaiError(f"the tokenizer at {path} has no chat template; the workbench needs a chat model")
        self.dtype = pick_dtype(self.device, dtype)
        if quantization in ("4bit", "8bit"):
            from transformers import BitsAndBytesConfig

            if quantization == "4bit":
                load_kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=self.dtype
                )
            else:
                load_kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        elif quantization:
            raise CaiError(f"unknown quantization {quantization!r}: use 4bit or 8bit")
        if progress:
            progress(0.2, f"loading weights from {path}" + (" (dequantizing GGUF: minutes on a 2-core CPU)" if gguf_file else ""))
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype, **load_kwargs)
        except Exception as exc:  # noqa: BLE001
            raise CaiError(f"cannot load model weights from {path}: {exc}") from exc
        if gguf_file:
            mark_plain(model)
        if adapter:
            if progress:
                progress(0.8, f"attaching adapter {adapter}")
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(adapter))
            except Exception as exc:  # noqa: BLE001
                raise CaiError(f"cannot attach the adapter at {adapter}: {exc}") from exc
        if not quantization:
            model.to(self.device)
        model.eval()
        _draft_from_recent_ngrams(model)
        self.model = model
        self.path = path
        self.adapter = str(adapter) if adapter else None
        self.quantization = quantization
        self._torch = torch
        if progress:
            progress(1.0, "model ready")

    # -- helpers ---------------------------------------------------------------------------
    def _prompt_text(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def context_window(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(self.tokenizer, "model_max_length", None)
        return value if isinstance(value, int) and 0 < value < 10**8 else None  # transformers' "unset" is 1e30

    def prompt_tokens(self, conversation: Conversation) -> int | None:
        return len(self.tokenizer(self._prompt_text(conversation), add_special_tokens=False)["input_ids"])

    def text_tokens(self, text: str) -> list | None:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, tokens: list) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _input_device(self):
        return next(self.model.parameters()).device

    def info(self) -> dict:
        torch = self._torch
        params = sum(p.numel() for p in self.model.parameters())
        mem = None
        if self.device == "cuda":
            mem = torch.cuda.memory_allocated() / 2**20
        else:
            mem = sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20
        return {
            "spec": self.spec,
            "kind": "local",
            "engine": "transformers",
            "path": str(self.path),
            "adapter": self.adapter,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "quantization": self.quantization,
            "parameters": params,
            "memory_mb": round(mem, 1) if mem is not None else None,
        }

    def max_in_flight(self) -> int:
        """Rows per batched call (dispatch): on a GPU, what the free memory holds of each row's KV
        cache at the full context (a quarter kept back for activations), 1..64; on the CPU the
        historic 8 (two cores gain nothing from wider batches, and the same batches keep sampled
        text the same for a seed)."""
        if self.device != "cuda":
            return DEFAULT_IN_FLIGHT
        try:
            free, _ = self._torch.cuda.mem_get_info()
            cfg = self.model.config
            layers = int(getattr(cfg, "num_hidden_layers"))
            heads = int(getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads"))
            head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
            per_row = 2 * layers * heads * head_dim * (self.context_window() or 2048) * self._torch.finfo(self.dtype).bits // 8
            return max(1, min(64, int(free * 0.75 // max(1, per_row))))
        except Exception:  # noqa: BLE001 - an unusual config: the CPU figure
            return DEFAULT_IN_FLIGHT

    def generation_numerics(self) -> str:
        """"bnb-4bit"/"bnb-8bit" with bitsandbytes, else the weights' dtype ("float32", "bfloat16", ...)."""
        if self.quantization:
            return f"bnb-{self.quantization}"
        return str(self.dtype).replace("torch.", "")

    # -- generation ------------------------------------------------------------------------
    def _gen_kwargs(self, params: GenerationParams, one_row: bool = False) -> dict:
        """generate() arguments; one_row (a single conversation, one sample: the live page's stream)
        adds prompt lookup (see PROMPT_LOOKUP_TOKENS)."""
        kw = dict(
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if one_row:
            kw.update(prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS)
        if params.temperature and params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kw.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kw

    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        torch = self._torch
        if not conversations:
            return []
        texts = [self._prompt_text(c) for c in conversations]
        n = max(1, int(params.n))
        kw = self._gen_kwargs(params, one_row=len(conversations) == 1 and n == 1)
        prompts = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        shared = shared_prefix(prompts) if len(prompts) > 1 else 0
        with self._lock, torch.inference_mode():
            if shared >= MIN_SHARED_GENERATION:
                enc, kw["cache"] = self._prefilled(prompts, shared, n)
            else:
                self.tokenizer.padding_side = "left"
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(self._input_device()) for k, v in enc.items()}
                if n > 1:
                    kw["num_return_sequences"] = n
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(**enc, **kw)
        prompt_len = enc["input_ids"].shape[1]
        new = out[:, prompt_len:]
        results: list[list[Completion]] = []
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        for i in range(len(conversations)):
            row = []
            for j in range(n):
                ids = new[i * n + j].tolist()
                # trim trailing pad/eos
                while ids and ids[-1] in (pad, eos):
                    ids.pop()
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                text, stopped = apply_stop(text, params.stop)
                finish = "stop" if stopped or len(ids) < params.max_new_tokens else "length"
                row.append(Completion(text=text.strip(), tokens=len(ids), finish_reason=finish))
            results.append(row)
        return results

    def _prefilled(self, prompts: list[list[int]], shared: int, n: int):
        """Inputs and KV cache for generating from prompts that share their first `shared` tokens
        (a constitution's few-shot block): the prefix is prefilled once and its cache copied per row
        (and per sample), instead of once per row. Each row is prefix + left-padded suffix; the
        mask's hole over the pads keeps positions and attention what they would be unpadded."""
        torch = self._torch
        dev = self._input_device()
        prefix = torch.tensor([prompts[0][:shared]], device=dev)
        cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
        cache.batch_repeat_interleave(len(prompts) * n)
        suffix_ids, suffix_mask = _left_pad(torch, [p[shared:] for p in prompts], self.tokenizer.pad_token_id)
        input_ids = torch.cat([prefix.cpu().repeat(len(prompts), 1), suffix_ids], dim=1)
        mask = torch.cat([torch.ones((len(prompts), shared), dtype=torch.long), suffix_mask], dim=1)
        # explicit positions: generate() would number the pads too and shift each suffix against the prefix
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        enc = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        return {k: v.repeat_interleave(n, 0).to(dev) for k, v in enc.items()}, cache

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        """Text pieces as the model writes them. A reader that stops early (a Stop in the UI closes the
        generator) ends the generation at the next token instead of leaving it to run to max_new_tokens
        while holding the model's lock."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        torch = self._torch
        abandoned = threading.Event()

        class WhenAbandoned(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool, device=input_ids.device)

        text = self._prompt_text(conversation)
        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self._input_device()) for k, v in enc.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kw = self._gen_kwargs(params, one_row=True)
        kw["stopping_criteria"] = StoppingCriteriaList([WhenAbandoned()])
        errors: list[BaseException] = []

        def work():
            try:
                with self._lock, torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    self.model.generate(**enc, **kw, streamer=streamer)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the reader below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        produced = ""
        try:
            for piece in streamer:
                if not piece:
                    continue
                candidate = produced + piece
                cut, stopped = apply_stop(candidate, params.stop)
                if stopped:
                    if len(cut) > len(produced):
                        yield cut[len(produced):]
                    break
                produced = candidate
                yield piece
        finally:  # also on GeneratorExit: the reader is gone, so generation stops at the next token
            abandoned.set()
            thread.join()
        if errors:
            raise CaiError(f"generation failed: {errors[0]}")

    # -- option probabilities --------------------------------------------------------------
    def choice_logprobs(self, conversations: list[Conversation], options: list[str],
                        assistant_prefix: str | list[str] = "", batch_size: int = 16) -> list[dict[str, float]]:
        """Summed option-token log-probs per conversation, normalised over the options, at the
        natural token boundary every engine shares (base.natural_boundary).

        Prefill is the cost on CPU, so nothing is prefilled twice: neighbouring conversations that
        share a long token prefix (a judge's two A/B orders of one pair share the whole conversation
        and question) prefill it once as a group; each member then runs only its own suffix on a copy
        of the group's KV cache, and each option runs only its own tokens on a copy of the member's."""
        torch = self._torch
        if not options:
            raise CaiError("choice_logprobs needs at least one option")
        if any(not self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options):
            raise CaiError("an option tokenizes to nothing")
        k = len(options)
        pad = self.tokenizer.pad_token_id
        dev = self._input_device()

        def tokenize(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        # the natural boundary (base.natural_boundary): prompts are the context tokens, and each
        # conversation has its own option continuations (" (A)" after "is: " may absorb the space)
        prompts, continuations = [], []
        for c, prefix in zip(conversations, assistant_prefixes(conversations, assistant_prefix)):
            context, conts = natural_option_tokens(tokenize, self._prompt_text(c) + prefix, options)
            prompts.append(context)
            continuations.append(conts)
        width_o = max(len(ids) for conts in continuations for ids in conts)
        out: list[tuple[int, dict[str, float]]] = []  # (input index, distribution): batches go by length
        with self._lock, torch.inference_mode():
            for chunk in _chunks(prefix_groups(prompts), prompts, batch_size):
                rows = [m for _, members in chunk for m in members]
                b = len(rows)
                # 1. each group's shared prefix, once (left padded so every prefix ends at the last column)
                prefix_ids, prefix_mask = _left_pad(torch, [prompts[members[0]][:shared] for shared, members in chunk], pad)
                prefix_pos = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
                group_of_row = torch.tensor([g for g, (_, members) in enumerate(chunk) for _ in members])
                cache = None  # one-token prompts: nothing to share
                if prefix_ids.shape[1]:
                    cache = self.model(input_ids=prefix_ids.to(dev), attention_mask=prefix_mask.to(dev),
                                       position_ids=prefix_pos.to(dev), use_cache=True, logits_to_keep=1).cache
                    cache.batch_select_indices(group_of_row.to(dev))
                # 2. each member's own suffix (at least one token), continuing its group's positions
                shared_of_row = torch.tensor([shared for shared, members in chunk for _ in members])
                suffix_ids, suffix_mask = _left_pad(torch, [prompts[r][int(shared_of_row[i]):] for i, r in enumerate(rows)], pad)
                mask = torch.cat([prefix_mask[group_of_row], suffix_mask], dim=1)
                suffix_pos = shared_of_row[:, None] + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
                first = self.model(input_ids=suffix_ids.to(dev), attention_mask=mask.to(dev),
                                   position_ids=suffix_pos.to(dev), cache=cache, use_cache=True, logits_to_keep=1)
                first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # predicts each option's 1st token
                # 3. the options' remaining tokens on k copies of each member's cache (right padding
                #    after each continuation: earlier tokens never see it)
                cont = torch.full((b * k, width_o), pad, dtype=torch.long)
                cont_mask = torch.zeros((b * k, width_o), dtype=torch.long)
                for r, row in enumerate(rows):
                    for j, ids in enumerate(continuations[row]):
                        cont[r * k + j, : len(ids)] = torch.tensor(ids)
                        cont_mask[r * k + j, : len(ids)] = 1
                cache = first.cache
                cache.batch_repeat_interleave(k)
                full_mask = torch.cat([mask.repeat_interleave(k, 0), cont_mask], dim=1)
                cont_pos = suffix_pos[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(width_o)
                rest = self.model(input_ids=cont.to(dev), attention_mask=full_mask.to(dev),
                                  position_ids=cont_pos.to(dev), cache=cache, use_cache=False)
                rest_logp = torch.log_softmax(rest.logits.float(), dim=-1)
                for r in range(b):
                    scores = {}
                    for j, (option, ids) in enumerate(zip(options, continuations[rows[r]])):
                        total = float(first_logp[r, ids[0]])
                        for t in range(1, len(ids)):
                            total += float(rest_logp[r * k + j, t - 1, ids[t]])
                        scores[option] = total
                    out.append((rows[r], normalise(scores)))
        return [dist for _, dist in sorted(out, key=lambda x: x[0])]

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


# Prompt lookup decoding for one-row generation (the live page's stream, a one-prompt batch): where
# the text's last PROMPT_LOOKUP_NGRAM tokens (or, failing that, its last 2; never 1, which matches
# almost anywhere and only wastes the check) occurred before in the prompt or the text so far, up to
# PROMPT_LOOKUP_TOKENS tokens that followed them there are proposed as a draft (ngram_draft), and one
# forward pass checks the whole draft; the model's own choice at the first mismatch is kept. Greedy
# text is therefore the model's own (sampling keeps its distribution: each position is sampled from
# the model's probabilities), and a revision that copies most of the answer it revises, or a
# critique that quotes it, takes a fraction of the forward passes. One-row decoding on the CPU reads
# every weight per step (memory-bound), so checking 20 drafted tokens costs about one step.
# Measured on the default model: docs/benchmarks.md row 8f.
PROMPT_LOOKUP_TOKENS = 20
PROMPT_LOOKUP_NGRAM = 3
MIN_LOOKUP_NGRAM = 2


def ngram_draft(tokens: list[int], max_tokens: int, ngram: int = PROMPT_LOOKUP_NGRAM,
                min_ngram: int = MIN_LOOKUP_NGRAM) -> list[int]:
    """The draft for the next tokens: what followed an earlier occurrence of the text's last n tokens
    (n from `ngram` down to `min_ngram`), at most max_tokens of it - the latest occurrence followed
    by max_tokens, else the one followed by the most (in a loop the latest is followed by only one
    or two); [] when none recurs."""
    for n in range(min(ngram, len(tokens) - 1), min_ngram - 1, -1):
        tail, best = tokens[-n:], []
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                follows = tokens[start + n: start + n + max_tokens]
                if len(follows) == max_tokens:
                    return follows
                best = max(best, follows, key=len)
        if best:
            return best
    return []


def _draft_from_recent_ngrams(model) -> None:
    """Make `model.generate(prompt_lookup_num_tokens=...)` draft with ngram_draft instead of
    transformers' own lookup (the first occurrence of the last 1-3 tokens: a single recurring token
    drafts 20 tokens that are almost never kept, which made novel text 23% slower). transformers
    builds the drafter in GenerationMixin._get_candidate_generator (pinned 5.24); the tests count
    forward passes, so a version that stops calling it fails them instead of running slower."""
    import torch
    from transformers.generation.candidate_generator import CandidateGenerator

    class RecentNgramDrafts(CandidateGenerator):
        def __init__(self, max_tokens: int, max_length: int, eos: list[int]):
            self.max_tokens, self.max_length, self.eos = max_tokens, max_length, set(eos)

        def get_candidates(self, input_ids, **kwargs):
            room = self.max_length - input_ids.shape[1] - 1  # the model writes one token past the draft
            draft = ngram_draft(input_ids[0].tolist(), min(self.max_tokens, room)) if room > 0 else []
            for i, token in enumerate(draft):  # a drafted end token would end the text unchecked
                if token in self.eos:
                    draft = draft[:i]
                    break
            if not draft:
                return input_ids, None
            return torch.cat([input_ids, torch.tensor([draft], device=input_ids.device)], dim=1), None

        def update_candidate_strategy(self, input_ids, scores, num_matches):
            pass

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = target._get_candidate_generator

    def candidate_generator(generation_config, *args, **kwargs):
        if generation_config.prompt_lookup_num_tokens is None or kwargs.get("assistant_model") is not None:
            return own(generation_config, *args, **kwargs)
        eos = generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        return RecentNgramDrafts(generation_config.prompt_lookup_num_tokens, generation_config.max_length, eos)

    target._get_candidate_generator = candidate_generator

MIN_SHARED_PREFIX = 32  # tokens; below this a group's extra forward pass costs more than it saves
MIN_SHARED_GENERATION = 64  # tokens every prompt of a generate call must share to prefill them once


def shared_prefix(prompts: list[list[int]]) -> int:
    """Leading tokens common to all prompts, leaving each at least one token of its own."""
    first = prompts[0]
    shared = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        shared = min(shared, common_prefix_length(first, p))
    return max(0, shared)


def prefix_groups(prompts: list[list[int]], min_shared: int = MIN_SHARED_PREFIX) -> list[tuple[int, list[int]]]:
    """Neighbouring prompts that share at least min_shared leading tokens, as (shared length, indices).

    A group only grows while the newcomer shares the whole group prefix (so the A/B and B/A orders
    of one judged pair group together) and while the pad tokens its members' unequal suffixes need
    stay below the prefix tokens it saves (two different pairs that share only the chat header do
    not group). Every member keeps at least one token of its own: its last prompt token gives the
    first option token's logits. A prompt on its own shares all its tokens but the last with nobody."""
    groups: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(prompts):
        members = [i]
        shared = common_prefix_length(prompts[i], prompts[i + 1]) if i + 1 < len(prompts) else 0
        if shared >= min_shared:
            j = i + 1
            while j < len(prompts) and common_prefix_length(prompts[i], prompts[j]) >= shared:
                cut = min(shared, *(len(prompts[m]) - 1 for m in members + [j]))
                suffixes = [len(prompts[m]) - cut for m in members + [j]]
                if max(suffixes) * len(suffixes) - sum(suffixes) > cut * (len(suffixes) - 1):
                    break
                members.append(j)
                j += 1
        shared = min(shared, *(len(prompts[m]) - 1 for m in members)) if len(members) > 1 else len(prompts[i]) - 1
        groups.append((shared, members))
        i = members[-1] + 1
    return groups


def _chunks(groups: list[tuple[int, list[int]]], prompts: list[list[int]], batch_size: int,
            max_padding: float = 0.3):
    """Whole groups per forward batch (a group bigger than batch_size is split): at most batch_size
    rows, similar lengths together, and a new batch before pad tokens would exceed max_padding of
    the real ones in either pass (shared prefixes, then suffixes) - one long prompt in a batch of
    short ones would otherwise multiply its cost."""
    size = max(1, batch_size)
    parts = [(shared, members[i:i + size]) for shared, members in groups for i in range(0, len(members), size)]
    parts.sort(key=lambda part: max(len(prompts[m]) for m in part[1]))
    chunk: list[tuple[int, list[int]]] = []
    rows = real = widest_prefix = widest_suffix = 0
    for shared, members in parts:
        suffixes = [len(prompts[m]) - shared for m in members]
        part_real = shared + sum(suffixes)
        prefix_w, suffix_w = max(widest_prefix, shared), max(widest_suffix, max(suffixes))
        padded = (len(chunk) + 1) * prefix_w + (rows + len(members)) * suffix_w
        if chunk and (rows + len(members) > size or padded > (1 + max_padding) * (real + part_real)):
            yield chunk
            chunk, rows, real, prefix_w, suffix_w = [], 0, 0, shared, max(suffixes)
        chunk.append((shared, members))
        rows, real, widest_prefix, widest_suffix = rows + len(members), real + part_real, prefix_w, suffix_w
    if chunk:
        yield chunk


def _left_pad(torch, seqs: list[list[int]], pad: int):
    """(ids, mask) with every sequence ending at the last column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        if seq:
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
    return ids, mask
