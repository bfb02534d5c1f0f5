"""SFT on a chat template without {% generation %} markers (the embedded SmolLM2's ChatML template
mentions add_generation_prompt but has no markers): the last assistant turn must become a
prompt/completion pair instead of asking TRL to patch a template it cannot patch."""
import json

from transformers import AutoTokenizer

from cai_core.training.sources import resolve_dataset
from cai_core.training.specs import new_spec
from cai_core.training.worker import build_dataset

SMOL_STYLE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _rows(path):
    with open(path, "w") as fh:
        for i in range(4):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                              {"role": "assistant", "content": f"a{i}"}]}) + "\n")
    return path


def test_template_without_markers_uses_prompt_completion(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = SMOL_STYLE
    spec = new_spec("sft", model=str(tiny_model_dir), dataset=str(_rows(tmp_path / "d.jsonl")), eval_split=0.0)
    train, _ = build_dataset(spec, resolve_dataset(None, spec.dataset), tok)
    assert set(train.column_names) == {"prompt", "completion"}
    assert train[0]["completion"] == [{"role": "assistant", "content": "a0"}]


def test_template_with_markers_keeps_messages(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    spec = new_spec("sft", model=str(tiny_model_dir), dataset=str(_rows(tmp_path / "d.jsonl")), eval_split=0.0)
    train, _ = build_dataset(spec, resolve_dataset(None, spec.dataset), tok)
    assert train.column_names == ["messages"]
