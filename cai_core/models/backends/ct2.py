"""CTranslate2 backend: fast CPU generation and option scoring from an HF Llama-style folder.

The HF folder (the embedded default model's workspace copy, a merged run output, the tiny test
model) is converted once into a CTranslate2 model (the workbench uses float32: see models.specs) under
workspace/models/<name>-ct2-<quantization>/ and rebuilt when the source changes (see
`source_fingerprint`). Text goes through the HF tokenizer exactly as in the local backend: the
chat template gives the prompt text, the tokenizer gives ids, and CTranslate2 receives the ids'
token *strings* (its vocabulary is the tokenizer's vocabulary in id order).

Engine facts this class relies on (ctranslate2 4.8.5, checked by hand; tests/test_backend_ct2.py pins
the ones results depend on):

- `generate_batch(..., include_prompt_in_result=False)`: `max_length` counts new tokens only
  (the end token included when it is produced). Prompts of unequal length are prefilled up to
  the shortest one; the rest of each longer prompt is fed one token per decoding step, so a
  batch of very unequal prompts costs extra steps (`max_batch_size` sorts by length and chunks).
- The step callback sees generated tokens only (never the forced prompt tokens); its `step` is
  the absolute decoding step and `batch_id` the index in the list we passed. Returning True
  stops that row; the returned sequence still contains the token that triggered the stop.
- Option scoring does not use `score_batch` (it forwards the whole prompt once per option and
  silently truncates inputs to `max_input_length`, default 1024): a `static_prompt` (prefilled
  once per call, shared by the batch rows; `cache_static_prompt=False`, or every judged prompt's
  state would stay in memory) plus constrained decoding of each option with
  `return_logits_vocab` gives the same log-probs with the prompt forwarded once.
- Sampling randomness comes from a `thread_local std::mt19937` seeded from the global seed the
  first time a worker thread samples. `ctranslate2.set_random_seed` therefore has no effect on a
  Generator that has sampled already: a seeded sampling call here runs on a fresh Generator
  built right after `set_random_seed(seed)` (~1 s extra for the 135M model).
- There are no stop strings in the engine: they are checked in the step callback (early stop)
  and cut from the text afterwards with `apply_stop`, like the other backends.

Not covered: GGUF files (use the workspace's safetensors copy), PEFT adapters (merge first),
bitsandbytes; those stay on the local transformers backend.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from cai_core.errors import CaiError
from cai_core.models.backends.base import (
    Backend,
    Completion,
    Conversation,
    GenerationParams,
    apply_stop,
    assistant_prefixes,
    natural_option_tokens,
    normalise,
)

Progress = Callable[[float, str], None]

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32")
# Tokenizer/template files copied next to the converted weights (whichever exist), so a converted
# folder is self-contained even if the source folder is deleted later.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model")
STAMP = "ct2_source.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# -- conversion cache ----------------------------------------------------------------------------

def source_fingerprint(src: str | Path, quantization: str) -> str:
    """A hash that changes whenever a conversion of `src` would differ.

    Small files that define the model (config, generation config, tokenizer, template) are hashed
    by content; weight files (hundreds of MB) by name, size and mtime_ns, which any re-save or
    fine-tune output changes. The ctranslate2 version and the quantization are part of it, so an
    engine upgrade or a different compute type converts again."""
    import ctranslate2

    src = Path(src)
    h = hashlib.sha256()
    h.update(f"ctranslate2={ctranslate2.__version__};quantization={quantization}\n".encode())
    for path in sorted(src.iterdir()):
        if not path.is_file():
            continue
        if path.name == "config.json" or path.name in TOKENIZER_FILES:
            h.update(f"{path.name}:".encode() + hashlib.sha256(path.read_bytes()).digest())
        elif path.suffix in WEIGHT_SUFFIXES or path.name.endswith(".index.json"):
            st = path.stat()
            h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def converted_dir(models_dir: str | Path, name: str, quantization: str = "float32") -> Path:
    """Where the CTranslate2 copy of model `name` lives: workspace/models/<name>-ct2-<quantization>."""
    return Path(models_dir) / f"{name}-ct2-{quantization}"


def is_current(src: str | Path, dest: str | Path, quantization: str) -> bool:
    """True when dest holds a finished conversion of src's current contents."""
    stamp = Path(dest) / STAMP
    if not (stamp.exists() and (Path(dest) / "model.bin").exists()):
        return False
    try:
        return json.loads(stamp.read_text()).get("fingerprint") == source_fingerprint(src, quantization)
    except (OSError, ValueError):
        return False


def ensure_converted(src: str | Path, dest: str | Path, quantization: str = "float32",
                     progress: Progress | None = None) -> Path:
    """Convert the HF folder src into dest unless dest is a current conversion; return dest.

    The converter loads the model with transformers (in the config's dtype; fp32 here) and the
    tokenizer with AutoTokenizer (it needs one: the vocabulary comes from it), so this takes
    2 min on a busy 2-core CPU (load 10; less when idle) and ~1 GB of RAM for the 135M model. It writes into a private temporary folder
    next to dest and renames it into place, so a half-written conversion is never loaded and
    two processes converting at once do not corrupt each other (the later rename wins)."""
    from ctranslate2.converters import TransformersConverter

    src, dest = Path(src), Path(dest)
    if quantization not in QUANTIZATIONS:
        raise CaiError(f"unknown CTranslate2 quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    if not (src / "config.json").exists():
        raise CaiError(f"{src} is not an HF model folder (no config.json); CTranslate2 converts HF folders only")
    if (src / "adapter_config.json").exists():
        raise CaiError(f"{src} is a LoRA adapter; merge it into its base model before converting to CTranslate2")
    if is_current(src, dest, quantization):
        return dest
    if progress:
        progress(0.05, f"converting {src.name} to CTranslate2 {quantization} (once per source; "
                       f"2 min measured for the default model on a busy 2-core CPU, less when idle)")
    fingerprint = source_fingerprint(src, quantization)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".partial-"))
    try:
        copy = [f for f in TOKENIZER_FILES if (src / f).is_file()]
        try:
            TransformersConverter(str(src), copy_files=copy).convert(str(tmp), quantization=quantization, force=True)
        except Exception as exc:  # noqa: BLE001 - any converter failure becomes one clear message
            raise CaiError(f"cannot convert {src} to CTranslate2: {type(exc).__name__}: {exc}") from exc
        _fix_null_special_tokens(tmp / "config.json")
        (tmp / STAMP).write_text(json.dumps({"source": str(src), "quantization": quantization,
                                             "fingerprint": fingerprint}, indent=2))
        old = dest.with_name(dest.name + f".old-{os.getpid()}")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(0.6, "conversion done")
    return dest


def _fix_null_special_tokens(config_path: Path) -> None:
    """A tokenizer without a BOS token (the tiny test model) is written as "bos_token": null, which
    the engine refuses to load ("type must be string, but is null"); "" is what it writes for a
    missing unk token and loads fine."""
    config = json.loads(config_path.read_text())
    fixed = {k: ("" if v is None and k.endswith("_token") else v) for k, v in config.items()}
    if fixed != config:
        config_path.write_text(json.dumps(fixed, indent=2))


# -- backend -------------------------------------------------------------------------------------

class CT2Backend(Backend):
    """Backend on a converted CTranslate2 model (CPU by default).

    path: the HF source folder. ct2_dir: where its conversion lives (default: path's sibling
    `<name>-ct2-<quantization>`, i.e. workspace/models/ for workspace models); it is converted
    or rebuilt when missing or stale. intra_threads: OpenMP threads per generation (0: the
    engine's default, all cores). joint_options: see choice_logprobs."""

    def __init__(self, path: str | Path, *, ct2_dir: str | Path | None = None, quantization: str = "float32",
                 device: str = "cpu", intra_threads: int = 0, max_batch_size: int = 0,
                 joint_options: bool = True, display_name: str | None = None, progress: Progress | None = None):
        import ctranslate2
        from transformers import AutoTokenizer

        self._ct2 = ctranslate2
        self.path = Path(path)
        self.spec = display_name or str(path)
        self.quantization = quantization
        self.device = device
        self.intra_threads = intra_threads
        self.max_batch_size = max_batch_size
        self.joint_options = joint_options
        self._lock = threading.Lock()  # one engine call at a time (the seed is process-global)
        self.ct2_dir = Path(ct2_dir) if ct2_dir else converted_dir(self.path.parent, self.path.name, quantization)
        ensure_converted(self.path, self.ct2_dir, quantization, progress)
        if progress:
            progress(0.7, f"loading {self.ct2_dir.name}")
        tok_dir = self.path if (self.path / "tokenizer_config.json").exists() else self.ct2_dir
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        except Exception as exc:  # noqa: BLE001
            raise CaiError(f"cannot load a tokenizer from {tok_dir}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise CaiError(f"the tokenizer at {tok_dir} has no chat template; the workbench needs a chat model")
        self._check_vocabulary()
        self._end_ids = self._end_token_ids(tok_dir)
        self.generator = self._new_generator()
        if progress:
            progress(1.0, "model ready")

    def _new_generator(self):
        return self._ct2.Generator(str(self.ct2_dir), device=self.device, compute_type=self.quantization,
                                   intra_threads=self.intra_threads)

    def _check_vocabulary(self) -> None:
        """The engine's vocabulary must be the tokenizer's, id for id (a stale or foreign conversion
        would otherwise generate garbage without any error)."""
        vocab = json.loads((self.ct2_dir / "vocabulary.json").read_text())
        mine = self.tokenizer.convert_ids_to_tokens(list(range(min(len(vocab), len(self.tokenizer)))))
        if vocab[: len(mine)] != mine:
            raise CaiError(f"{self.ct2_dir} was converted with a different tokenizer than {self.path}; delete it to rebuild")

    def _end_token_ids(self, folder: Path) -> list[int]:
        """The ids generation stops on: generation_config's eos ids (what transformers' generate
        uses), else the tokenizer's eos."""
        ids: list[int] = []
        gc = folder / "generation_config.json"
        if gc.exists():
            eos = json.loads(gc.read_text()).get("eos_token_id")
            ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids and self.tokenizer.eos_token_id is not None:
            ids = [self.tokenizer.eos_token_id]
        return ids

    # -- helpers -------------------------------------------------------------------------------
    def _prompt_text(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _tokens(self, ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids)

    def _sampling(self, params: GenerationParams) -> dict:
        if params.temperature and params.temperature > 0:
            return dict(sampling_topk=0, sampling_topp=float(params.top_p or 1.0),
                        sampling_temperature=float(params.temperature))
        return dict(sampling_topk=1)  # greedy

    def _engine_for(self, params: GenerationParams):
        """The Generator to use: a fresh one for seeded sampling (see the module notes)."""
        if params.seed is not None and params.temperature and params.temperature > 0:
            self._ct2.set_random_seed(int(params.seed) & 0xFFFFFFFF)
            return self._new_generator()
        return self.generator

    def generation_numerics(self) -> str:
        """The converted copy's compute type: "float32" (agrees with transformers fp32) or "int8" etc."""
        return self.quantization

    def info(self) -> dict:
        size = sum(f.stat().st_size for f in self.ct2_dir.iterdir() if f.is_file())
        config = json.loads((self.path / "config.json").read_text()) if (self.path / "config.json").exists() else {}
        return {"spec": self.spec, "kind": "ct2", "engine": "ctranslate2", "path": str(self.path),
                "ct2_dir": str(self.ct2_dir), "device": self.device, "dtype": self.quantization,
                "quantization": self.quantization, "ctranslate2": self._ct2.__version__,
                "parameters": _parameter_count(config), "memory_mb": round(size / 2**20, 1)}

    # -- input bounds (the same questions the local backend answers) ---------------------------
    def context_window(self) -> int | None:
        config_path = self.path / "config.json"
        if not config_path.exists():
            return None
        return json.loads(config_path.read_text()).get("max_position_embeddings")

    def prompt_tokens(self, conversation: Conversation) -> int | None:
        return len(self._ids(self._prompt_text(conversation)))

    def text_tokens(self, text: str) -> list | None:
        return self._ids(text)

    def detokenize(self, tokens: list) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        if not conversations:
            return []
        n = max(1, int(params.n))
        greedy = not (params.temperature and params.temperature > 0)
        per = 1 if greedy else n  # greedy samples are all the same: decode once, copy
        prompts = [self._tokens(self._ids(self._prompt_text(c))) for c in conversations]
        rows = [p for p in prompts for _ in range(per)]  # n samples = n rows: per-row stop, plain batch ids
        stopper = _StopWatcher(self.tokenizer, params.stop, len(rows)) if params.stop else None
        with self._lock:
            engine = self._engine_for(params)
            results = engine.generate_batch(
                rows, max_length=max(1, int(params.max_new_tokens)), include_prompt_in_result=False,
                end_token=self._end_ids, return_end_token=False, max_batch_size=self.max_batch_size,
                callback=stopper, **self._sampling(params))
        out: list[list[Completion]] = []
        for i in range(len(conversations)):
            row = []
            for j in range(n):
                ids = list(results[i * per + (0 if greedy else j)].sequences_ids[0])
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                text, stopped = apply_stop(text, params.stop)
                finish = "stop" if stopped or len(ids) < params.max_new_tokens else "length"
                row.append(Completion(text=text.strip(), tokens=len(ids), finish_reason=finish))
            out.append(row)
        return out

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        tokens = self._tokens(self._ids(self._prompt_text(conversation)))
        ids: list[int] = []
        produced = ""
        with self._lock:
            engine = self._engine_for(params)
            steps = engine.generate_tokens(tokens, max_length=max(1, int(params.max_new_tokens)),
                                           end_token=self._end_ids, **self._sampling(params))
            try:
                stopped = False
                for step in steps:
                    if step.token_id in self._end_ids:
                        break
                    ids.append(step.token_id)
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    if text.endswith("\ufffd"):
                        continue  # a multi-byte character may still be incomplete: wait for its next byte
                    cut, stopped = apply_stop(text, params.stop)
                    if len(cut) > len(produced):
                        yield cut[len(produced):]
                        produced = cut
                    if stopped:
                        break
                if not stopped:  # whatever was held back (a byte sequence that never completed)
                    cut, _ = apply_stop(self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
                    if len(cut) > len(produced):
                        yield cut[len(produced):]
            finally:
                steps.close()  # tells the engine to stop and waits for it

    # -- option probabilities ------------------------------------------------------------------
    def choice_logprobs(self, conversations: list[Conversation], options: list[str],
                        assistant_prefix: str | list[str] = "") -> list[dict[str, float]]:
        """Summed option-token log-probs per conversation, normalised over the options.

        joint_options=True (default): the natural token boundary of base.natural_boundary, the
        rule every engine shares (prompt+option tokenised as one text). joint_options=False
        tokenises the option on its own and appends it to the prompt's ids (the old, unnatural
        boundary: ':' 'Ġ' '(' 'A'), kept for comparisons.

        The prompt is computed once per conversation, not once per option (see `_score_options`)."""
        if not options:
            raise CaiError("choice_logprobs needs at least one option")
        opt_ids = [self._ids(o) for o in options]
        if any(not ids for ids in opt_ids):
            raise CaiError("an option tokenizes to nothing")
        out = []
        for conv, prefix in zip(conversations, assistant_prefixes(conversations, assistant_prefix)):
            text = self._prompt_text(conv) + prefix
            if self.joint_options:
                context, continuations = natural_option_tokens(self._ids, text, options)
            else:
                context, continuations = self._ids(text), opt_ids
                if not context:
                    raise CaiError("a conversation tokenizes to nothing")
            sums = self._score_options(context, continuations)
            out.append(normalise(dict(zip(options, sums))))
        return out

    def _score_options(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        """log P(continuation | context) summed over its tokens, for each continuation, with the
        context forwarded once.

        `score_batch` would forward context+option once per option (2x the prompt work for a judge,
        which is all prefill). Instead the context but its last token is the `static_prompt` of one
        generate_batch call (prefilled once, its state shared by every row; not cached across calls,
        so memory does not grow with the number of judged items), and each row is the context's
        last token followed by the option's tokens, forced through constrained decoding
        (include_prompt_in_result=True) with `return_logits_vocab`: step k's logits are the
        distribution over the row's token k+1. Equal to score_batch's sums within float rounding
        (tests/test_backend_ct2.py)."""
        import numpy as np

        rows = [self._tokens([context[-1]] + c) for c in continuations]
        static = self._tokens(context[:-1]) if len(context) > 1 else None
        with self._lock:
            results = self.generator.generate_batch(
                rows, static_prompt=static, cache_static_prompt=False, include_prompt_in_result=True,
                max_length=max(len(c) for c in continuations), return_logits_vocab=True, sampling_topk=1)
        sums = []
        for result, continuation in zip(results, continuations):
            steps = result.logits[0]
            if len(steps) < len(continuation):
                raise CaiError(f"CTranslate2 returned {len(steps)} scored steps for a {len(continuation)}-token option")
            total = 0.0
            for token, logits in zip(continuation, steps):
                z = np.asarray(logits, dtype=np.float64).reshape(-1)
                top = z.max()
                total += float(z[token] - top - np.log(np.exp(z - top).sum()))
            sums.append(total)
        return sums

    def close(self) -> None:
        self.generator = None


class _StopWatcher:
    """generate_batch callback: stop a row as soon as its text contains a stop string.

    Only the last few tokens are decoded per step (enough bytes for the longest stop string), so
    the check stays cheap; the final cut is done on the full text with apply_stop."""

    def __init__(self, tokenizer, stop: list[str], rows: int):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.window = max((len(s.encode()) for s in self.stop), default=0) + 2
        self.ids: list[list[int]] = [[] for _ in range(rows)]

    def __call__(self, step) -> bool:
        ids = self.ids[step.batch_id]
        ids.append(step.token_id)
        tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


def _parameter_count(config: dict) -> int | None:
    """Parameters of a Llama-style decoder from its config (the converted weights do not say)."""
    try:
        h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        inter = config["intermediate_size"]
        heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    except KeyError:
        return None
    head_dim = h // heads
    attn = h * h * 2 + 2 * h * kv * head_dim
    per_layer = attn + 3 * h * inter + 2 * h
    embed = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return int(layers * per_layer + embed + h)

