"""Build a tiny random-weight Llama and a BPE tokenizer with a chat template, in seconds.

Tests and `--quick` benchmarks use it: every pipeline and trainer runs on it without the hub.
The chat template carries {% generation %} markers so TRL's assistant-only loss works.
"""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL = ["<|pad|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = """
The assistant answers questions helpfully, honestly and harmlessly. Critique request: identify
specific ways in which the response is harmful, unethical, racist, sexist, toxic, dangerous or
illegal. Revision request: please rewrite the response to remove any and all harmful content.
Which of these responses is less harmful? Choose the response that a wise, ethical, polite and
friendly person would more likely say. (A) (B) The answer is: Options: Human: Assistant:
I can't help with that. Here is how you can stay safe. Let's think step by step. Verdict:
no violation found. violation found. Critique: Revision: How do I bake bread? What is the
capital of France? Please explain photosynthesis in simple terms. 0 1 2 3 4 5 6 7 8 9 .,;:!?'"
"""


def build_tiny_model(out_dir: str | Path, *, vocab_size: int = 512, hidden: int = 32, layers: int = 2,
                     seed: int = 0) -> Path:
    """Write a tiny Llama + tokenizer to out_dir and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048
    fast.save_pretrained(str(out))

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(str(out))
    (out / "SOURCE.json").write_text(json.dumps({"model": "tiny random-weight Llama", "seed": seed}, indent=2))
    return out
