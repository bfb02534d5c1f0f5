"""Reward training on soft labels (`train reward --soft-labels`): the soft-target loss
BCE(sigmoid(r_chosen - r_rejected), p_chosen) learns the judge's probabilities on a toy set, where
hard labels (every pair certain) push every pair towards 1; the flag is checked, recorded in the
run spec and charted."""
from __future__ import annotations

import json
import math
import os

import pytest

from cai_core.errors import CaiError
from cai_core.training import metrics as training_metrics
from cai_core.training.sources import check_spec_sources
from cai_core.training.specs import new_spec
from tests.helpers import run_cli

TARGETS = {"Say hello to me.": 0.8, "Tell me goodbye.": 0.3}
ROWS = [{"prompt": [{"role": "user", "content": "Say hello to me."}],
         "chosen": [{"role": "assistant", "content": "Hello there, friend!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}], "p_chosen": 0.8},
        {"prompt": [{"role": "user", "content": "Tell me goodbye."}],
         "chosen": [{"role": "assistant", "content": "Bye."}],
         "rejected": [{"role": "assistant", "content": "See you later, take care!"}], "p_chosen": 0.3}] * 4


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _p_chosen(model_dir) -> dict[str, float]:
    """sigmoid(r_chosen - r_rejected) per toy prompt, from the saved reward model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out = {}
    for row in ROWS[:2]:
        scores = []
        for side in ("chosen", "rejected"):
            ids = tok.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True,
                                          return_tensors="pt")
            with torch.no_grad():
                scores.append(model(**ids).logits[0, 0].item())
        out[row["prompt"][0]["content"]] = 1 / (1 + math.exp(-(scores[0] - scores[1])))
    return out


def _train(tmp_path, tiny_model_dir, soft: bool):
    from cai_core.training.worker import train

    data = _write(tmp_path / "prefs.jsonl", ROWS)
    spec = new_spec("reward", name=f"rm-{'soft' if soft else 'hard'}", model=str(tiny_model_dir), dataset=str(data),
                    adapter="full", max_steps=60, batch_size=8, learning_rate=3e-3, eval_split=0.0,
                    max_length=64, save_steps=1000, logging_steps=10, seed=0, device="cpu", precision="fp32",
                    warmup_ratio=0, soft_labels=soft, out=str(tmp_path / f"run-{'soft' if soft else 'hard'}"))
    assert train(spec.validate(), None, None) == "finished"
    return spec


@pytest.mark.slow
def test_soft_labels_learn_the_target_probabilities_and_differ_from_hard(tmp_path, tiny_model_dir):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    soft = _train(tmp_path, tiny_model_dir, soft=True)
    hard = _train(tmp_path, tiny_model_dir, soft=False)
    p_soft, p_hard = _p_chosen(soft.out), _p_chosen(hard.out)
    for prompt, target in TARGETS.items():
        assert abs(p_soft[prompt] - target) < 0.1, (p_soft, TARGETS)     # learns the judge's probability
        assert p_hard[prompt] > 0.9, p_hard                              # hard labels: chosen is certain
    assert p_soft["Tell me goodbye."] < 0.5 < p_hard["Tell me goodbye."]
    logged = [json.loads(line) for line in (tmp_path / "run-soft" / "metrics.jsonl").read_text().splitlines()]
    assert any("soft_error" in m and "soft_target" in m for m in logged)
    assert not any("soft_error" in m for m in
                   (json.loads(line) for line in (tmp_path / "run-hard" / "metrics.jsonl").read_text().splitlines()))
    charted = [keys for _, keys in training_metrics.chart_groups("reward")]
    assert any("soft_error" in keys for keys in charted)


def test_soft_label_loss_is_the_bce_against_p_chosen(tiny_model_dir):
    """One batch through the trainer's loss equals BCE(sigmoid(margin), p_chosen) computed by hand,
    and differs from TRL's hard-label loss on the same rows."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig

    from cai_core.training.worker import soft_label_reward_trainer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh head scores every answer about the same; spread the rewards apart
        model.score.weight.normal_(0.0, 30.0)
    from datasets import Dataset

    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected", "p_chosen")} for r in ROWS[:2]])
    trainer = soft_label_reward_trainer()(model=model, args=RewardConfig(output_dir="/tmp/unused-soft", report_to=[],
                                                                           use_cpu=True, max_length=64),
                                          train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["p_chosen"].tolist() == pytest.approx([0.8, 0.3])
    model.train()
    soft_loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    margin = r[:2] - r[2:]
    p = torch.tensor([0.8, 0.3])
    expected = -(p * torch.nn.functional.logsigmoid(margin) + (1 - p) * torch.nn.functional.logsigmoid(-margin)).mean()
    hard = -torch.nn.functional.logsigmoid(margin).mean()
    assert margin.abs().min().item() > 0.05
    assert soft_loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert abs(soft_loss.item() - hard.item()) > 1e-2


def test_soft_labels_need_p_chosen_and_are_recorded(tmp_path, tiny_model_dir):
    no_p = _write(tmp_path / "hard.jsonl", [{k: v for k, v in r.items() if k != "p_chosen"} for r in ROWS])
    spec = new_spec("reward", model=str(tiny_model_dir), dataset=str(no_p), soft_labels=True).validate()
    with pytest.raises(CaiError, match="no p_chosen column"):
        check_spec_sources(None, spec)
    bad = _write(tmp_path / "bad.jsonl", [{**ROWS[0], "p_chosen": 1.7}])
    with pytest.raises(CaiError, match="p_chosen must be a probability"):
        check_spec_sources(None, new_spec("reward", model=str(tiny_model_dir), dataset=str(bad), soft_labels=True))
    good = _write(tmp_path / "soft.jsonl", ROWS)
    r = run_cli("train", "reward", "--model", str(tiny_model_dir), "--dataset", str(good), "--soft-labels",
                "--print-spec", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 0, r.stderr
    assert "soft_labels: true" in r.stdout
    r = run_cli("train", "reward", "--model", str(tiny_model_dir), "--dataset", str(no_p), "--soft-labels",
                "--print-spec", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2 and "p_chosen" in r.stderr
