"""The local transformers backend on the tiny model: batching with left padding, n samples, seeds,
stop strings, streaming, option probabilities against a manual forward pass, and a PEFT adapter."""
from __future__ import annotations

import json
import math

import pytest

from cai_core.models.backends.base import GenerationParams
from cai_core.errors import CaiError

SHORT = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "system", "content": "The assistant answers questions helpfully, honestly and harmlessly."},
        {"role": "user", "content": "Please explain photosynthesis in simple terms. Let's think step by step."}]
GREEDY = GenerationParams(max_new_tokens=12, temperature=0)


@pytest.fixture
def text_backend(tiny_backend):
    """The random tiny model's greedy choice is one whitespace token whatever the context; larger
    random weights make greedy text depend on the prompt, so the comparisons below compare something."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in tiny_backend.model.named_parameters():
            if "norm" not in name:
                p.add_(torch.randn_like(p) * 0.5)
    return tiny_backend


@pytest.mark.slow
def test_batch_left_padding_matches_single(text_backend):
    alone = text_backend.generate([SHORT], GREEDY)[0][0]
    batch = text_backend.generate([SHORT, LONG], GREEDY)
    assert text_backend.tokenizer.padding_side == "left"
    assert batch[0][0].text == alone.text, "padding the short prompt on the left must not change its answer"
    assert batch[1][0].text == text_backend.generate([LONG], GREEDY)[0][0].text
    assert len(alone.text) > 5 and alone.tokens > 0 and batch[0][0].text != batch[1][0].text


def test_n_samples_and_seed(tiny_backend):
    p = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=123, n=3)
    a = tiny_backend.generate([SHORT, LONG], p)
    assert [len(row) for row in a] == [3, 3]
    b = tiny_backend.generate([SHORT, LONG], p)
    assert [[c.text for c in row] for row in a] == [[c.text for c in row] for row in b]
    assert len({c.text for c in a[0]}) > 1, "samples of one prompt differ"
    p.seed = 124
    c = tiny_backend.generate([SHORT, LONG], p)
    assert [[x.text for x in row] for row in c] != [[x.text for x in row] for row in a]


def test_max_new_tokens_and_finish_reason(tiny_backend):
    out = tiny_backend.generate([SHORT], GenerationParams(max_new_tokens=3, temperature=0))[0][0]
    assert out.tokens <= 3
    assert out.finish_reason in ("length", "stop")


def test_stop_strings(text_backend):
    full = text_backend.generate([LONG], GenerationParams(max_new_tokens=24, temperature=0))[0][0].text
    assert len(full) > 12
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.find(stop)].strip()
    params = GenerationParams(max_new_tokens=24, temperature=0, stop=[stop])
    got = text_backend.generate([LONG], params)[0][0]
    assert got.text == expected and got.finish_reason == "stop"
    assert "".join(text_backend.stream(LONG, params)).strip() == expected


def test_stream_matches_generate(text_backend):
    pieces = list(text_backend.stream(LONG, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == text_backend.generate([LONG], GREEDY)[0][0].text


def _manual_option_probs(backend, conv, options, prefix=""):
    """The reference: each prompt+option text tokenised as one text and scored as a whole sequence
    with one plain forward pass. The tokens it shares with the other options cancel in the
    normalisation, so this equals scoring from the natural boundary without computing one."""
    import torch

    tok = backend.tokenizer
    scores = {}
    for o in options:
        ids = tok(backend._prompt_text(conv) + prefix + o, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        scores[o] = sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))
    top = max(scores.values())
    z = sum(math.exp(v - top) for v in scores.values())
    return {o: math.exp(v - top) / z for o, v in scores.items()}


def test_options_are_scored_at_the_natural_token_boundary(tiny_backend):
    """The paper writes "The answer is: (A)": ':' 'Ġ(' 'A' ')', not ':' 'Ġ' '(' 'A' ')' (issue 13 item 2)."""
    from cai_core.models.backends.base import natural_boundary, natural_option_tokens

    tok = tiny_backend.tokenizer

    def tokens(text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    context, conts = natural_option_tokens(tokens, "The answer is: ", ["(A)", "(B)"])
    assert context == ["The", "Ġansw", "er", "Ġis", ":"]
    assert conts == [["Ġ(", "A", ")"], ["Ġ(", "B", ")"]]
    # no merge across the boundary: the options' own tokens follow the whole prompt
    context, conts = natural_option_tokens(tokens, "The answer is:", [" (A)", " (B)"])
    assert context == tokens("The answer is:") and conts == [["Ġ(", "A", ")"], ["Ġ(", "B", ")"]]
    with pytest.raises(CaiError, match="adds no tokens"):
        natural_boundary(["a", "b"], [["a", "b"], ["a", "b", "c"]])
    # the same quantity whichever side of the space the prompt ends on
    with_space = tiny_backend.choice_logprobs([SHORT], ["(A)", "(B)"], assistant_prefix="The answer is: ")[0]
    without = tiny_backend.choice_logprobs([SHORT], [" (A)", " (B)"], assistant_prefix="The answer is:")[0]
    assert with_space["(A)"] == pytest.approx(without[" (A)"], abs=1e-5)


def test_choice_logprobs_sum_to_one_and_match_manual(tiny_backend):
    options = ["(A)", "(B)", "no violation found"]
    got = tiny_backend.choice_logprobs([SHORT, LONG], options, assistant_prefix="The answer is: ", batch_size=4)
    for conv, probs in zip([SHORT, LONG], got):
        assert abs(sum(probs.values()) - 1) < 1e-6
        manual = _manual_option_probs(tiny_backend, conv, options, "The answer is: ")
        for o in options:
            assert probs[o] == pytest.approx(manual[o], abs=1e-4)
    with pytest.raises(CaiError):
        tiny_backend.choice_logprobs([SHORT], [])


def test_prefix_groups():
    from cai_core.models.backends.local import prefix_groups

    head = list(range(40))
    ab, ba = head + [1, 2, 3], head + [4, 5]
    other = list(range(100, 140)) + [9]
    assert prefix_groups([ab, ba, other]) == [(40, [0, 1]), (40, [2])]
    # a third prompt that shares less than the group prefix starts its own group
    assert prefix_groups([ab, ba, head[:35] + [7] * 10]) == [(40, [0, 1]), (44, [2])]
    # every member keeps one token of its own, even when one prompt is the other's prefix
    assert prefix_groups([head, head + [1]]) == [(39, [0, 1])]
    assert prefix_groups([[5]]) == [(0, [0])]
    assert prefix_groups([head, head], min_shared=50) == [(39, [0]), (39, [1])]
    # two different pairs behind the same chat header: padding the short one would cost more than
    # the shared header saves, so they stay apart (and the length-sorted batching handles them)
    assert prefix_groups([head + [1] * 250, head + [2] * 120]) == [(289, [0]), (159, [1])]
    assert prefix_groups([head + [1] * 30, head + [2] * 20]) == [(40, [0, 1])]


def test_chunks_bound_padding_and_keep_every_row():
    from cai_core.models.backends.local import _chunks

    prompts = [[0] * n for n in (600, 600, 200, 210, 190, 205, 30)]
    groups = [(599, [0, 1]), (199, [2]), (209, [3]), (189, [4]), (204, [5]), (29, [6])]
    chunks = list(_chunks(groups, prompts, batch_size=4))
    rows = [m for chunk in chunks for _, members in chunk for m in members]
    assert sorted(rows) == list(range(7))
    for chunk in chunks:
        members = [m for _, ms in chunk for m in ms]
        assert len(members) <= 4
        widest, real = max(len(prompts[m]) for m in members), sum(len(prompts[m]) for m in members)
        assert widest * len(members) <= 1.3 * real or len(chunk) == 1
    assert [m for _, ms in chunks[-1] for m in ms] == [0, 1], "the two long prompts are batched on their own"
    # a group bigger than the batch is split, never dropped
    assert [ms for chunk in _chunks([(10, list(range(5)))], [[0] * 12] * 5, 2) for _, ms in chunk] == [
        [0, 1], [2, 3], [4]]


def test_choice_logprobs_shared_prefixes_match_manual(text_backend):
    """A judge's two orders of each pair share the conversation: the grouped prefill gives the same
    probabilities as scoring every (conversation, option) sequence on its own, in the input order,
    also when a batch boundary splits a group."""
    from cai_core.rlaif.judges import judge_conversation

    convo = "Human: " + "How should I store cleaning products safely at home? " * 4
    question = "Which response is more helpful, honest and harmless?"
    answers = [("Keep them high up and locked.", "Mix them all in one bottle."),
               ("Store them in the original containers.", "Put them next to food."),
               ("Away from children and pets.", "I don't know.")]
    convs = []
    for a, b in answers:
        convs += [judge_conversation(convo, a, b, question, "mc"), judge_conversation(convo, b, a, question, "mc")]
    convs.insert(3, SHORT)
    options = ["(A)", "(B)"]
    for batch_size in (16, 3, 1):
        got = text_backend.choice_logprobs(convs, options, assistant_prefix="The answer is: ", batch_size=batch_size)
        assert len(got) == len(convs)
        for conv, probs in zip(convs, got):
            manual = _manual_option_probs(text_backend, conv, options, "The answer is: ")
            for o in options:
                assert probs[o] == pytest.approx(manual[o], abs=1e-4), (batch_size, conv[-1]["content"][-40:])
    assert len({round(p["(A)"], 6) for p in got}) > 2, "the probabilities differ per conversation"


def test_generate_prefills_a_shared_few_shot_prefix_once(text_backend):
    """Prompts behind the same long few-shot block: the block is prefilled once and its KV cache
    copied per row; greedy answers are the ones each prompt gets on its own, and n samples work."""
    from cai_core.models.backends.local import MIN_SHARED_GENERATION, shared_prefix

    few_shot = []
    for i in range(3):
        few_shot += [{"role": "user", "content": f"Example question {i}: how do I fix a flat bicycle tyre quickly?"},
                     {"role": "assistant", "content": f"Example answer {i}: remove the wheel, find the hole, patch it."}]
    convs = [few_shot + [{"role": "user", "content": q}] for q in
             ("What is the capital of France?", "Explain photosynthesis briefly, please.", "Hi")]
    tok = text_backend.tokenizer
    ids = [tok(text_backend._prompt_text(c), add_special_tokens=False)["input_ids"] for c in convs]
    assert shared_prefix(ids) >= MIN_SHARED_GENERATION, "the test must exercise the shared-prefix path"
    calls = []
    forward = text_backend.model.forward

    def counting(*a, **kw):
        calls.append(kw["input_ids"].shape if "input_ids" in kw and kw["input_ids"] is not None else None)
        return forward(*a, **kw)

    text_backend.model.forward = counting
    try:
        batch = text_backend.generate(convs, GREEDY)
    finally:
        text_backend.model.forward = forward
    assert calls[0][0] == 1 and calls[0][1] == shared_prefix(ids), "one prefill of the shared block"
    assert max(shape[1] for shape in calls[1:]) < len(ids[1]), "rows never prefill the block again"
    for conv, got in zip(convs, batch):
        alone = text_backend.generate([conv], GREEDY)[0][0]
        assert got[0].text == alone.text and got[0].tokens == alone.tokens
    assert len({b[0].text for b in batch}) > 1
    sampled = text_backend.generate(convs, GenerationParams(max_new_tokens=6, temperature=1.0, seed=3, n=2))
    assert [len(row) for row in sampled] == [2, 2, 2] and all(c.tokens > 0 for row in sampled for c in row)
    again = text_backend.generate(convs, GenerationParams(max_new_tokens=6, temperature=1.0, seed=3, n=2))
    assert [[c.text for c in row] for row in again] == [[c.text for c in row] for row in sampled], "seeded"


def test_choice_logprobs_one_prefix_per_conversation(text_backend):
    """A CoT judge scores each item after its own reasoning: one batched call with a prefix per
    conversation gives what one call per conversation gives; a count mismatch is a clear error."""
    convs = [SHORT, LONG, SHORT]
    prefixes = ["Paris is big. So the answer is: ", "Plants use light. So the answer is: ", "The answer is: "]
    batched = text_backend.choice_logprobs(convs, ["(A)", "(B)"], assistant_prefix=prefixes)
    for conv, prefix, got in zip(convs, prefixes, batched):
        alone = text_backend.choice_logprobs([conv], ["(A)", "(B)"], assistant_prefix=prefix)[0]
        assert got["(A)"] == pytest.approx(alone["(A)"], abs=1e-4)
    assert batched[0]["(A)"] != pytest.approx(batched[2]["(A)"], abs=1e-6), "the prefix is used"
    with pytest.raises(CaiError, match="2 assistant prefixes for 3 conversations"):
        text_backend.choice_logprobs(convs, ["(A)", "(B)"], assistant_prefix=prefixes[:2])


def test_info(tiny_backend):
    info = tiny_backend.info()
    assert info["kind"] == "local" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["parameters"] > 0 and info["memory_mb"] > 0


@pytest.mark.slow
def test_peft_adapter(tiny_model_dir, tiny_backend, tmp_path, workspace):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cai_core.models.backends.local import LocalBackend
    from cai_core.models.specs import get_backend, unload

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    # the adapter records its base model: the model spec can be the adapter folder alone
    meta = json.loads((adapter_dir / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(meta))

    with_adapter = LocalBackend(tiny_model_dir, adapter=adapter_dir)
    assert with_adapter.info()["adapter"] == str(adapter_dir)
    opts = ["(A)", "(B)"]
    p_base = tiny_backend.choice_logprobs([SHORT], opts)[0]
    p_lora = with_adapter.choice_logprobs([SHORT], opts)[0]
    assert p_lora["(A)"] != pytest.approx(p_base["(A)"], abs=1e-6), "a non-zero LoRA changes the model"
    assert with_adapter.generate([SHORT], GREEDY)[0][0].tokens > 0

    via_spec = get_backend(str(adapter_dir), workspace)
    assert via_spec.info()["adapter"] == str(adapter_dir)
    assert via_spec.choice_logprobs([SHORT], opts)[0]["(A)"] == pytest.approx(p_lora["(A)"], abs=1e-5)
    unload(str(adapter_dir))


@pytest.mark.slow
def test_bad_adapter(tiny_model_dir, tmp_path):
    from cai_core.models.backends.local import LocalBackend

    bad = tmp_path / "bad_adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{}")
    with pytest.raises(CaiError, match="cannot attach the adapter"):
        LocalBackend(tiny_model_dir, adapter=bad)


def _forward_passes(backend, run) -> tuple[object, int]:
    """(what run() returned, how many forward passes the model made meanwhile)."""
    calls = []
    hook = backend.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        return run(), len(calls)
    finally:
        hook.remove()


def test_one_row_generation_drafts_tokens_and_keeps_the_greedy_text(tiny_backend, monkeypatch):
    """Prompt lookup (local.PROMPT_LOOKUP_TOKENS): the stream and a one-prompt batch check drafted
    tokens in one forward pass each, and write what plain decoding writes. The untouched random
    model repeats one token, so its own text holds the drafts."""
    from cai_core.models.backends import local

    params = GenerationParams(max_new_tokens=40, temperature=0)
    drafted, drafted_passes = _forward_passes(tiny_backend, lambda: "".join(tiny_backend.stream(LONG, params)))
    batch_drafted = tiny_backend.generate([LONG], params)[0][0]
    monkeypatch.setattr(local, "PROMPT_LOOKUP_TOKENS", None)  # plain decoding: one pass per token
    plain, plain_passes = _forward_passes(tiny_backend, lambda: "".join(tiny_backend.stream(LONG, params)))
    assert drafted == plain and batch_drafted == tiny_backend.generate([LONG], params)[0][0]
    assert plain_passes == 40 and drafted_passes < 10, (drafted_passes, plain_passes)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_prompt_lookup_changes_no_greedy_text_and_keeps_seeded_samples_reproducible(text_backend, monkeypatch, temperature):
    from cai_core.models.backends import local

    params = GenerationParams(max_new_tokens=30, temperature=temperature, top_p=1.0, seed=7)
    convo = [{"role": "user", "content": "Repeat after me: the cat sat on the mat, the cat sat on the mat."}]
    first = "".join(text_backend.stream(convo, params))
    assert first == "".join(text_backend.stream(convo, params)), "a seeded run repeats itself"
    monkeypatch.setattr(local, "PROMPT_LOOKUP_TOKENS", None)
    if temperature == 0.0:
        assert first == "".join(text_backend.stream(convo, params))


def test_ngram_draft_takes_the_latest_occurrence_and_never_a_single_token():
    from cai_core.models.backends.local import ngram_draft

    #          0  1  2  3  4  5  6  7  8  9 10 11
    tokens = [1, 2, 3, 4, 5, 1, 2, 3, 9, 8, 1, 2, 3]
    assert ngram_draft(tokens, 3) == [9, 8, 1], "after the latest earlier 1 2 3"
    assert ngram_draft(tokens, 5) == [9, 8, 1, 2, 3]
    assert ngram_draft(tokens, 10) == [4, 5, 1, 2, 3, 9, 8, 1, 2, 3], "the occurrence followed by the most"
    assert ngram_draft([0] + [6] * 8, 4) == [6, 6, 6, 6], "in a loop: a full draft, not the 1 token after the latest"
    assert ngram_draft([7, 4, 5, 6, 4, 5], 4) == [6, 4, 5], "a 2-gram when no 3-gram recurs"
    assert ngram_draft([5, 1, 2, 3, 5], 4) == [], "one recurring token drafts nothing"
    assert ngram_draft([1, 2], 4) == []
