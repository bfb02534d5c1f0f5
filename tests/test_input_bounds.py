"""Issue 15 item 7: prompts are checked against the model's context before any work (a clear error
naming the prompt and both numbers, or truncation the user chose), and uploaded or imported text
files are capped in size before they are read."""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli
from cai_core.errors import CaiError
from cai_core.models.bounds import fit_prompts, pair_text
from cai_core.data.uploads import MAX_TEXT_FILE_BYTES, check_upload, read_user_file

LONG = "word " * 3000  # ~3,000 tokens: over the tiny model's 2,048-token context


def test_a_prompt_over_the_context_is_refused_with_both_numbers(tiny_backend):
    window = tiny_backend.context_window()
    assert window == 2048
    with pytest.raises(CaiError) as err:
        fit_prompts(tiny_backend, ["short", LONG], max_new_tokens=64, truncate=False)  # a caller with the flag
    msg = str(err.value)
    assert "prompt 2 ('word word" in msg and "2,048-token context" in msg and "64 new tokens" in msg
    n = tiny_backend.prompt_tokens([{"role": "user", "content": LONG}])
    assert f"{n:,} tokens" in msg and n > window and "--truncate-prompts" in msg


def test_prompt_and_answer_must_fit_together(tiny_backend):
    n = tiny_backend.prompt_tokens([{"role": "user", "content": "word " * 1000}])
    fit_prompts(tiny_backend, ["word " * 1000], max_new_tokens=2048 - n)  # exactly fits
    with pytest.raises(CaiError, match="does not fit"):
        fit_prompts(tiny_backend, ["word " * 1000], max_new_tokens=2048 - n + 1)
    with pytest.raises(CaiError, match="leave no room"):
        fit_prompts(tiny_backend, ["hi"], max_new_tokens=4096)


def test_truncation_when_chosen_keeps_the_head_and_fits(tiny_backend):
    fitted = fit_prompts(tiny_backend, ["short", LONG], max_new_tokens=64, truncate=True)
    assert fitted.truncated == [1] and fitted.texts[0] == "short"
    cut = fitted.texts[1]
    assert LONG.startswith(cut.strip()[:100]) and len(cut) < len(LONG)
    n = tiny_backend.prompt_tokens([{"role": "user", "content": cut}])
    assert 2048 - 64 - 20 <= n <= 2048 - 64  # cut to fit, not far below


def test_a_pair_is_checked_as_the_judge_reads_it():
    assert pair_text({"prompt": [{"role": "user", "content": "q"}], "response_a": "a", "response_b": "b"}) == "q\n\na\n\nb"


@pytest.mark.slow
def test_revise_and_sampling_refuse_a_long_prompt_before_any_work(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": LONG}) + "\n")
    const = tmp_path / "c.yaml"
    const.write_text("name: c\nprinciples:\n  - id: harm\n    name: Harm\n    critique_request: Harmful?\n    revision_request: Fix.\n")
    res = run_cli("revise", "--model", str(tiny_model_dir), "--constitution", str(const), "--prompts", str(prompts),
                  "--rounds", "1", "--max-new-tokens", "4", "--workspace", str(ws))
    assert res.returncode == 2 and "prompt 2" in res.stderr and "2,048-token context" in res.stderr, res.stderr
    from cai_core.store import open_store

    store = open_store(ws)
    assert store.scalar("SELECT COUNT(*) FROM trajectories") == 0  # nothing written
    res = run_cli("pairs", "sample", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--k", "2",
                  "--batch", "b", "--max-new-tokens", "4", "--workspace", str(ws))
    assert res.returncode == 2 and "prompt 2" in res.stderr, res.stderr
    assert store.scalar("SELECT COUNT(*) FROM comparisons") == 0
    res = run_cli("pairs", "sample", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--k", "2",
                  "--batch", "b", "--max-new-tokens", "4", "--truncate-prompts", "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    assert "1 prompt(s) cut to fit the 2048-token context" in res.stderr


def test_the_live_view_refuses_a_long_prompt_before_the_first_token(store, tiny_backend):
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.supervised.revision import ReviseSettings, stream_revision

    c = Constitution(name="c", principles=[Principle(id="h", name="H", critique_request="Harmful?",
                                                     revision_request="Fix.")])
    with pytest.raises(CaiError, match="prompt 1 .*does not fit"):
        stream_revision(store, tiny_backend, c, LONG, ReviseSettings(rounds=1, max_new_tokens=8), "tiny")
    assert store.scalar("SELECT COUNT(*) FROM trajectories") == 0


def test_an_evaluation_refuses_a_long_prompt_before_answering(store, tiny_model_dir):
    from cai_core.evaluation.answers import generate_answers
    from cai_core.evaluation.policies import parse_policy
    from cai_core.models.backends.base import GenerationParams

    policy = parse_policy(f"tiny={tiny_model_dir}", store)
    with pytest.raises(CaiError, match="prompt 2"):
        generate_answers(store, policy, ["hi", LONG], GenerationParams(max_new_tokens=8))
    assert store.scalar("SELECT COUNT(*) FROM eval_answers") == 0


@pytest.mark.slow
def test_text_uploads_and_imports_are_capped(tmp_path):
    big = b'{"prompt": "x"}\n' * (MAX_TEXT_FILE_BYTES // 16 + 1)
    assert len(big) > MAX_TEXT_FILE_BYTES == 20 * 2**20
    with pytest.raises(CaiError, match=r"prompts\.jsonl: the file is 20 MB, over the 20 MB limit"):
        check_upload("prompts.jsonl", big, ("jsonl",))
    check_upload("prompts.jsonl", big[:MAX_TEXT_FILE_BYTES - 16], ("jsonl",))  # at the limit: fine
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(big)
    with pytest.raises(CaiError, match="over the 20 MB limit"):
        read_user_file(path)


@pytest.mark.slow
def test_a_large_prompt_file_import_is_refused_with_the_sizes(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as fh:  # sparse: 200 MB on paper, nothing on disk
        fh.truncate(200 * 2**20)
    res = run_cli("prompts", "import", str(path), "--name", "huge", "--workspace", str(tmp_path / "ws"))
    assert res.returncode == 2 and "the file is 200 MB, over the 20 MB limit" in res.stderr, res.stderr


def test_weights_keep_their_own_limit():
    import struct

    header = json.dumps({"__metadata__": {}}).encode()
    weights = struct.pack("<Q", len(header)) + header + b"\0" * (MAX_TEXT_FILE_BYTES + 1)
    assert check_upload("w.safetensors", weights) == "safetensors"


@pytest.mark.slow
def test_an_ab_experiment_refuses_a_long_prompt_before_either_arm(store, tiny_model_dir):
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution
    from cai_core.evaluation.experiments import run_ab_experiment
    from cai_core.jobs.specs import ABExperimentSpec
    from cai_core.data.prompt_sets import import_prompt_set

    versions = []
    for text in ("Fix it.", "Rewrite it."):
        c = Constitution(name="c", principles=[Principle(id="h", name="H", critique_request="Harmful?",
                                                         revision_request=text)])
        save_constitution(store, c)
        versions.append(f"c@{c.version}")
    import_prompt_set(store, "long", ["hi", LONG])
    with pytest.raises(CaiError, match="prompt 2 .*does not fit"):
        run_ab_experiment(store, ABExperimentSpec(constitution_a=versions[0], constitution_b=versions[1], prompts="long",
                                                  model=str(tiny_model_dir), max_new_tokens=8))
    assert store.scalar("SELECT COUNT(*) FROM evaluations") == 0
    assert store.scalar("SELECT COUNT(*) FROM trajectories") == 0


@pytest.mark.slow
def test_eval_judge_refuses_a_pair_too_long_for_the_judge(tmp_path, tiny_model_dir):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "1", "prompt": "q", "response_a": "a", "response_b": LONG, "gold_label": "A"})
                    + "\n")
    ws = tmp_path / "ws"
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(gold), "--constitution", "builtin",
                  "--workspace", str(ws))
    assert res.returncode == 2 and "pair 1" in res.stderr and "2,048-token context" in res.stderr, res.stderr
    from cai_core.store import open_store

    assert open_store(ws).scalar("SELECT COUNT(*) FROM comparisons") == 0


@pytest.mark.slow
def test_the_ctranslate2_engine_is_bounded_like_transformers(tiny_model_dir, tiny_backend, tmp_path):
    """CTranslate2 is the CPU default for HF folders: the same context, the same token counts, the same cut."""
    pytest.importorskip("ctranslate2")
    import shutil

    from cai_core.models.backends.ct2 import CT2Backend

    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    ct2 = CT2Backend(model, ct2_dir=tmp_path / "tiny-ct2", quantization="float32")
    assert ct2.context_window() == tiny_backend.context_window() == 2048
    with pytest.raises(CaiError) as err:
        fit_prompts(ct2, ["short", LONG], max_new_tokens=64)
    with pytest.raises(CaiError) as ref:
        fit_prompts(tiny_backend, ["short", LONG], max_new_tokens=64)
    assert str(err.value).replace(ct2.spec, "M") == str(ref.value).replace(tiny_backend.spec, "M")
    assert fit_prompts(ct2, [LONG], max_new_tokens=64, truncate=True).texts == \
        fit_prompts(tiny_backend, [LONG], max_new_tokens=64, truncate=True).texts
