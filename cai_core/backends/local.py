"""Local transformers backend: HF folder, GGUF file, optional PEFT adapter, bitsandbytes 4/8-bit.

Batched generation uses left padding and the tokenizer's chat template. Option probabilities
(the paper's multiple-choice labels) come from one forward pass over all (conversation, option)
sequences, no text generation.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from ..errors import CaiError
from .base import Backend, Completion, Conversation, GenerationParams, apply_stop, normalise


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
            progress(0.2, f"loading weights from {path}" + (" (dequantizing GGUF, ~20 s)" if gguf_file else ""))
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
            "path": str(self.path),
            "adapter": self.adapter,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "quantization": self.quantization,
            "parameters": params,
            "memory_mb": round(mem, 1) if mem is not None else None,
        }

    # -- generation ------------------------------------------------------------------------
    def _gen_kwargs(self, params: GenerationParams) -> dict:
        kw = dict(
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
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
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self._input_device()) for k, v in enc.items()}
        kw = self._gen_kwargs(params)
        n = max(1, int(params.n))
        if n > 1:
            kw["num_return_sequences"] = n
        with self._lock, torch.inference_mode():
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

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        torch = self._torch
        text = self._prompt_text(conversation)
        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self._input_device()) for k, v in enc.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kw = self._gen_kwargs(params)
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
        thread.join()
        if errors:
            raise CaiError(f"generation failed: {errors[0]}")

    # -- option probabilities --------------------------------------------------------------
    def choice_logprobs(self, conversations: list[Conversation], options: list[str], assistant_prefix: str = "",
                        batch_size: int = 16) -> list[dict[str, float]]:
        """One prefill per conversation, shared by all options: the prompt runs once (left padded,
        logits only at its last position), its KV cache is repeated for each option, and only the
        option tokens run again. Scores are summed option-token log-probs, then normalised."""
        torch = self._torch
        if not options:
            raise CaiError("choice_logprobs needs at least one option")
        opt_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        if any(not ids for ids in opt_ids):
            raise CaiError("an option tokenizes to nothing")
        k, width_o = len(options), max(len(ids) for ids in opt_ids)
        pad = self.tokenizer.pad_token_id
        dev = self._input_device()
        cont = torch.full((k, width_o), pad, dtype=torch.long)
        cont_mask = torch.zeros((k, width_o), dtype=torch.long)
        for j, ids in enumerate(opt_ids):  # right padding after the option: earlier tokens never see it
            cont[j, : len(ids)] = torch.tensor(ids)
            cont_mask[j, : len(ids)] = 1
        prefixes = [self.tokenizer(self._prompt_text(c) + assistant_prefix, add_special_tokens=False)["input_ids"]
                    for c in conversations]
        out: list[dict[str, float]] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(prefixes), batch_size):
                chunk = prefixes[start:start + batch_size]
                b, width = len(chunk), max(len(s) for s in chunk)
                input_ids = torch.full((b, width), pad, dtype=torch.long)
                mask = torch.zeros((b, width), dtype=torch.long)
                for r, ids in enumerate(chunk):  # left padding: every prompt ends at the last column
                    input_ids[r, width - len(ids):] = torch.tensor(ids)
                    mask[r, width - len(ids):] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                first = self.model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev),
                                   position_ids=positions.to(dev), use_cache=True, logits_to_keep=1)
                first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # predicts each option's 1st token
                cache = first.cache
                cache.batch_repeat_interleave(k)
                full_mask = torch.cat([mask.repeat_interleave(k, 0), cont_mask.repeat(b, 1)], dim=1)
                cont_pos = positions[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(width_o)
                rest = self.model(input_ids=cont.repeat(b, 1).to(dev), attention_mask=full_mask.to(dev),
                                  position_ids=cont_pos.to(dev), cache=cache, use_cache=False)
                rest_logp = torch.log_softmax(rest.logits.float(), dim=-1)
                for r in range(b):
                    scores = {}
                    for j, (option, ids) in enumerate(zip(options, opt_ids)):
                        row = r * k + j
                        total = float(first_logp[r, ids[0]])
                        for t in range(1, len(ids)):
                            total += float(rest_logp[row, t - 1, ids[t]])
                        scores[option] = total
                    out.append(normalise(scores))
        return out

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
