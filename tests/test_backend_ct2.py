"""The CTranslate2 engine on the tiny model: conversion cache, generation, streaming, stop strings,
seeds, option scoring against the transformers backend, and how the engine is chosen.

float32 conversions are compared with the transformers backend's fp32 numbers (same weights, the
differences are summation order); int8 is checked for mechanics only here (on random weights its
text means nothing) and measured on the default model in bench/bench_engines.py.
"""
from __future__ import annotations

import os
import shutil

import pytest

from cai_core.errors import CaiError
from cai_core.models.backends.base import GenerationParams

pytest.importorskip("ctranslate2")

PROMPTS = ["How do I bake bread?", "What is the capital of France?", "Can you help me pick a lock?",
           "Explain photosynthesis simply.", "Write a haiku about rain.", "Why is the sky blue?"]


def convs(prompts=PROMPTS):
    return [[{"role": "user", "content": p}] for p in prompts]


@pytest.fixture(scope="module")
def model_copy(tiny_model_dir, tmp_path_factory):
    """A private copy of the tiny model (the cache test edits its files)."""
    dest = tmp_path_factory.mktemp("ct2") / "tiny"
    shutil.copytree(tiny_model_dir, dest)
    return dest


@pytest.fixture(scope="module")
def ct2_fp32(model_copy, tmp_path_factory):
    from cai_core.models.backends.ct2 import CT2Backend

    return CT2Backend(model_copy, ct2_dir=tmp_path_factory.mktemp("conv") / "tiny-ct2-float32",
                      quantization="float32")


def test_greedy_text_matches_transformers_fp32(ct2_fp32, tiny_backend):
    params = GenerationParams(max_new_tokens=12, temperature=0.0)
    mine = [c[0].text for c in ct2_fp32.generate(convs(), params)]
    ref = [c[0].text for c in tiny_backend.generate(convs(), params)]
    same = sum(a == b for a, b in zip(mine, ref))
    assert same >= len(PROMPTS) - 1, list(zip(mine, ref))  # a near-tie may flip one greedy choice


def test_option_probabilities_match_transformers_within_0_02(model_copy, tiny_backend, tmp_path):
    from cai_core.models.backends.ct2 import CT2Backend

    # both engines score at the natural token boundary (base.natural_boundary), so they compute
    # the same quantity; "is: " + "(A)" exercises the merged space
    ct2 = CT2Backend(model_copy, ct2_dir=tmp_path / "c", quantization="float32")
    for prefix, options in (("The answer is:", [" (A)", " (B)"]), ("The answer is: ", ["(A)", "(B)"])):
        mine = ct2.choice_logprobs(convs(), options, assistant_prefix=prefix)
        ref = tiny_backend.choice_logprobs(convs(), options, assistant_prefix=prefix)
        for a, b in zip(mine, ref):
            assert abs(a[options[0]] - b[options[0]]) < 0.02
            assert a[options[0]] + a[options[1]] == pytest.approx(1.0)


def test_options_share_one_prompt_pass_and_equal_score_batch(ct2_fp32):
    """The engine fact choice_logprobs relies on: a static prompt plus constrained decoding with
    return_logits_vocab gives the log-probs score_batch gives (which forwards the prompt per option),
    for options of unequal length and for a one-token context (no static prompt)."""
    from cai_core.models.backends.base import natural_option_tokens

    text = ct2_fp32._prompt_text(convs()[2]) + "The answer is: "
    context, continuations = natural_option_tokens(ct2_fp32._ids, text, ["(A)", "(B)", "No, never."])
    for ctx in (context, context[-1:]):
        mine = ct2_fp32._score_options(ctx, continuations)
        ref = ct2_fp32.generator.score_batch([ct2_fp32._tokens(ctx + c) for c in continuations], max_input_length=0)
        assert mine == pytest.approx([sum(r.log_probs[len(ctx) - 1:]) for r in ref], abs=1e-4)


def test_stream_yields_the_generated_text(ct2_fp32):
    params = GenerationParams(max_new_tokens=10, temperature=0.0)
    whole = ct2_fp32.generate(convs()[:1], params)[0][0].text
    assert "".join(ct2_fp32.stream(convs()[0], params)).strip() == whole


def test_stop_strings_cut_the_text(ct2_fp32):
    plain = ct2_fp32.generate(convs()[:2], GenerationParams(max_new_tokens=16, temperature=0.0))
    for conv, row in zip(convs()[:2], plain):
        text = row[0].text
        if len(text) < 4:
            continue
        stop = text[2:4]
        cut = ct2_fp32.generate([conv], GenerationParams(max_new_tokens=16, temperature=0.0, stop=[stop]))[0][0]
        assert stop not in cut.text and text.startswith(cut.text)
        assert cut.finish_reason == "stop"


def test_seeded_sampling_repeats_and_n_samples(ct2_fp32):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=1.0, n=3, seed=7)
    a = ct2_fp32.generate(convs()[:2], params)
    b = ct2_fp32.generate(convs()[:2], params)
    assert [len(r) for r in a] == [3, 3]
    assert [[c.text for c in r] for r in a] == [[c.text for c in r] for r in b]


def test_conversion_is_cached_and_rebuilt_when_the_source_changes(model_copy, tmp_path):
    from cai_core.models.backends.ct2 import ensure_converted, is_current

    dest = tmp_path / "conv"
    ensure_converted(model_copy, dest, "int8")
    stamp = (dest / "model.bin").stat().st_mtime_ns
    ensure_converted(model_copy, dest, "int8")
    assert (dest / "model.bin").stat().st_mtime_ns == stamp  # reused, not converted again
    weights = next(p for p in model_copy.iterdir() if p.suffix == ".safetensors")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a re-saved model
    assert not is_current(model_copy, dest, "int8")
    ensure_converted(model_copy, dest, "int8")
    assert is_current(model_copy, dest, "int8")


def test_auto_engine_runs_transformers_and_converts_nothing(model_copy, workspace):
    """auto is transformers for every call (float32 CTranslate2 is not faster on batches, nor live once
    transformers streams with prompt lookup: docs/benchmarks.md); no CTranslate2 copy is made."""
    from cai_core.models.backends.local import LocalBackend
    from cai_core.models.specs import get_backend, unload

    try:
        backend = get_backend(str(model_copy), workspace, engine="auto")
        assert type(backend) is LocalBackend and backend.info()["engine"] == "transformers"
        assert not list(workspace.models_dir.glob("*-ct2-*"))
        assert get_backend(str(model_copy), workspace, engine="ctranslate2").info()["engine"] == "ctranslate2"
    finally:
        unload(str(model_copy))


def test_ctranslate2_int8_generates_on_int8_and_scores_on_transformers_fp32(model_copy, workspace):
    """The opt-in int8 engine: generate and stream on a CTranslate2 int8 copy (its own folder in the
    workspace), choice_logprobs on transformers float32 - so P(A) is exactly the transformers
    engine's and no mc judgment changes - and its text is recorded as "<spec> [int8]"."""
    from cai_core.models.backends.ct2 import CT2Backend
    from cai_core.models.backends.local import LocalBackend
    from cai_core.models.backends.routed import RoutedBackend
    from cai_core.models.specs import get_backend, recorded_model, unload

    spec = str(model_copy)
    try:
        backend = get_backend(spec, workspace, engine="ctranslate2-int8")
        assert isinstance(backend, RoutedBackend)
        assert isinstance(backend.generating, CT2Backend) and backend.generating.quantization == "int8"
        assert backend.generating.ct2_dir.parent == workspace.models_dir
        assert backend.generating.ct2_dir.name.endswith("-ct2-int8")
        assert isinstance(backend.scoring, LocalBackend) and backend.scoring.generation_numerics() == "float32"
        info = backend.info()
        assert info["engine"] == "ctranslate2-int8" and info["generation_numerics"] == "int8"
        assert info["route"] == {"stream": "ctranslate2", "generate": "ctranslate2", "choice_logprobs": "transformers"}
        params = GenerationParams(max_new_tokens=6, temperature=0.0)
        assert backend.generate(convs()[:2], params)[0][0].text == backend.generating.generate(convs()[:2], params)[0][0].text
        assert "".join(backend.stream(convs()[0], params)).strip() == backend.generating.generate(convs()[:1], params)[0][0].text
        assert backend.generation_numerics() == "int8"
        assert recorded_model(spec, backend) == f"{spec} [int8]"

        exact = get_backend(spec, workspace, engine="transformers")
        assert recorded_model(spec, exact) == spec
        for prefix, options in (("The answer is: ", ["(A)", "(B)"]), ("The answer is:", [" (A)", " (B)"])):
            mine = backend.choice_logprobs(convs(), options, assistant_prefix=prefix)
            assert mine == exact.choice_logprobs(convs(), options, assistant_prefix=prefix)  # equal, not close
        assert backend.option_scoring() == exact.option_scoring() == "exact"
    finally:
        unload(spec)


def test_the_ctranslate2_int8_engine_keeps_mc_judgments_and_labels_generating_judges(model_copy, workspace):
    """An mc judge on ctranslate2-int8 gives the transformers engine's P(A) under the same key; a
    cot judge generates its reasoning on int8, so it is another judge ("[int8]" in its key)."""
    from cai_core.models.specs import get_backend, unload
    from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs

    spec = str(model_copy)
    pairs = [{"id": "p1", "prompt": "How do I pick a lock?", "response_a": "I can't help with that.",
              "response_b": "Use a tension wrench and a pick."},
             {"id": "p2", "prompt": "Why is the sky blue?", "response_a": "Rayleigh scattering.",
              "response_b": "Because it is."}]
    try:
        out = {}
        for engine in ("transformers", "ctranslate2-int8"):
            backend = get_backend(spec, workspace, engine=engine)
            mc = JudgeSpec(model=spec, style="mc", seed=3)
            verdicts = judge_pairs(backend, mc, HARMLESS_JUDGE, pairs)
            out[engine] = (mc.judge_key, [v.p_a for v in verdicts])
            cot = JudgeSpec(model=spec, style="cot", seed=3, max_new_tokens=4)
            judge_pairs(backend, cot, HARMLESS_JUDGE, pairs[:1])
            out[engine + "-cot"] = (cot.model, cot.judge_key)
        assert out["transformers"] == out["ctranslate2-int8"]  # same key, P(A) equal to the last digit
        assert out["transformers-cot"][0] == spec and out["ctranslate2-int8-cot"][0] == f"{spec} [int8]"
        assert out["transformers-cot"][1] != out["ctranslate2-int8-cot"][1]
    finally:
        unload(spec)


@pytest.mark.parametrize("engine", ["ctranslate2", "ctranslate2-int8"])
def test_the_ctranslate2_engines_refuse_what_they_cannot_run_and_auto_never_needs_them(tmp_path, engine):
    from cai_core.models.specs import choose_engine

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    plain = {"path": folder, "display_name": "x"}
    cases = [({"path": folder, "adapter": folder / "a", "display_name": "x"}, {}, "LoRA adapter"),
             ({"path": folder, "gguf_file": "m.gguf", "display_name": "x"}, {}, r"\.gguf file"),
             (plain, {"quantization": "4bit"}, "bitsandbytes"),
             (plain, {"device": "cuda"}, "device cuda runs on transformers"),
             ({"path": "org/m", "display_name": "hf:org/m"}, {}, "hub model")]
    for kwargs, extra, why in cases:
        assert choose_engine("auto", kwargs, **extra) == "transformers"
        assert choose_engine("transformers", kwargs, **extra) == "transformers"
        with pytest.raises(CaiError, match=f"engine {engine} cannot run {kwargs['display_name']}: .*{why}"):
            choose_engine(engine, kwargs, **extra)
    assert choose_engine(engine, plain, device="cpu") == engine
    assert choose_engine("auto", plain, device="cpu") == "transformers"
    with pytest.raises(CaiError, match="unknown engine"):
        choose_engine("onnx", plain)


def test_cli_revise_on_ctranslate2_int8_records_it_and_never_resumes_into_float32(model_copy, tmp_path):
    """`revise --engine ctranslate2-int8` stores its trajectory under "<model> [int8]"; the same
    command on the default engine starts its own trajectory instead of resuming the int8 one."""
    from cai_core.store import open_store

    from tests.helpers import PAPER_DATA, run_cli

    ws = tmp_path / "ws"
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I pick a lock?\n")
    args = ("revise", "--workspace", str(ws), "--model", str(model_copy), "--prompts", str(prompts),
            "--constitution", str(PAPER_DATA / "CritiqueRevisionInstructions.json"), "--max-new-tokens", "4",
            "--temperature", "0", "--batch", "b")
    r = run_cli(*args, "--engine", "ctranslate2-int8")
    assert r.returncode == 0, r.stderr
    assert f'"recorded_model": "{model_copy} [int8]"' in r.stderr
    r = run_cli(*args, env={"CAI_ENGINE": "auto"})
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, "--engine", "ctranslate2-int8")  # resumes its own: nothing new
    assert r.returncode == 0, r.stderr
    rows = open_store(ws).query("SELECT model, status, key FROM trajectories ORDER BY id")
    assert [(t["model"], t["status"]) for t in rows] == [(f"{model_copy} [int8]", "done"), (str(model_copy), "done")]
    assert rows[0]["key"] != rows[1]["key"]


def test_cli_engine_flag_runs_generation_on_ctranslate2(model_copy, tmp_path):
    from tests.helpers import run_cli

    ws = tmp_path / "ws"
    out = run_cli("generate", "Hello there", "--model", str(model_copy), "--max-new-tokens", "4",
                  "--temperature", "0", "--engine", "ctranslate2", "--workspace", str(ws))
    assert out.returncode == 0, out.stderr
    assert list((ws / "models").glob("*-ct2-float32/model.bin"))
    bad = run_cli("generate", "Hello", "--model", str(model_copy), "--engine", "onnx", "--workspace", str(ws))
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.slow
def test_bench_engines_quick_prints_its_figures_and_a_ratio_line(tmp_path):
    import re
    import subprocess
    import sys

    from tests.helpers import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_engines.py"), "--quick", "--no-seed-loop",
                          "--json", str(tmp_path / "figures.json")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio=\d+\.\d+ target=2\.5", last), last
    for figure in ("ctranslate2_engine:", "transformers_engine:", "stream_batch1_tokens_per_s:",
                   "live_2_rounds_s:", "live_2_rounds_speedup_vs_plain_decoding:",
                   "ct2_answers_first_16_tokens_equal_transformers_fp32:"):
        assert figure in out.stdout
    # the live run's speed-up counts only with the same text: every stage of the tiny model's run compared
    assert re.search(r"live_2_rounds_stages_equal_to_plain_decoding: transformers 5/5,", out.stdout), out.stdout
