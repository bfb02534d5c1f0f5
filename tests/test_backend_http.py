"""The HTTP backend against a REAL llama.cpp server (embedded GGUF on 127.0.0.1), plus failure modes
(refused port, HTTP 500, timeout, no log-probs) against tiny stdlib servers."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from cai_core.models.backends.base import GenerationParams
from cai_core.models.backends.http import HttpBackend, parse_spec
from cai_core.errors import CaiError

QUESTION = [{"role": "user", "content": "Reply with one letter, A or B. Which number is larger: (A) 3 or (B) 7?"}]
STORY = [{"role": "user", "content": "Tell me a short story about a lighthouse."}]
DECOY = [{"role": "user", "content": "Name a colour."}]


def _same_cache_state(backend):
    """llama.cpp reuses the KV cache of the previous request's longest common prefix, and evaluating a
    prompt's tail in one batch or token by token changes logits by float noise - enough to flip a
    near-tie in greedy decoding. A one-token request on an unrelated prompt first leaves every compared
    request sharing only the chat header with the cache, so each evaluates its prompt the same way."""
    backend.generate([DECOY], GenerationParams(max_new_tokens=1, temperature=0))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cai_core.models import llama_server
    from cai_core.workspace import Workspace

    if not llama_server.is_installed():
        pytest.skip("llama-cpp-python[server] is not installed (make install-server): no real server to test against")
    ws = Workspace.open(tmp_path_factory.mktemp("llama") / "ws")
    state = llama_server.start(ws, threads=1, wait=90)
    yield {"ws": ws, **state}
    llama_server.stop(ws)


@pytest.fixture(scope="module")
def backend(server):
    return HttpBackend(server["spec"])


def test_server_status_and_spec(server):
    from cai_core.models import llama_server

    st = llama_server.status(server["ws"])
    assert st["running"] and st["ready"] and st["host"] == "127.0.0.1"
    assert st["spec"] == f"http://127.0.0.1:{st['port']}/v1"


def test_second_start_refused(server):
    from cai_core.models import llama_server

    with pytest.raises(CaiError, match="already running"):
        llama_server.start(server["ws"])


def test_generate_batch_and_n(backend):
    out = backend.generate([QUESTION, STORY], GenerationParams(max_new_tokens=8, temperature=0.9, seed=1, n=2))
    assert [len(row) for row in out] == [2, 2]
    for row in out:
        for c in row:
            assert c.text and 0 < c.tokens <= 8
    assert out[1][0].finish_reason == "length"


def test_seed_sent_per_sample(fake_server):
    """Sample j of a prompt uses seed+j, so a seeded run asks the server for the same samples again
    (llama.cpp's prompt cache can still change late tokens by float noise, so compare requests)."""
    url = fake_server("nologprobs")
    b = HttpBackend(url)
    b.generate([STORY, QUESTION], GenerationParams(max_new_tokens=5, temperature=0.8, top_p=0.9, seed=7, n=2,
                                                   stop=["\n\n"]))
    sent = [r for r in _Handler.requests if r.get("messages") and r.get("max_tokens") == 5]  # not the probe
    assert sorted((r["messages"][0]["content"][:4], r["seed"]) for r in sent) == [
        ("Repl", 7), ("Repl", 8), ("Tell", 7), ("Tell", 8)]
    assert all(r["temperature"] == 0.8 and r["top_p"] == 0.9 and r["max_tokens"] == 5 and r["stop"] == ["\n\n"]
               and r["model"] == "fake" for r in sent)


def test_stream_matches_generate(backend):
    p = GenerationParams(max_new_tokens=12, temperature=0)
    _same_cache_state(backend)
    pieces = list(backend.stream(STORY, p))
    assert len(pieces) > 3, "streams token by token"
    _same_cache_state(backend)
    assert "".join(pieces).strip() == backend.generate([STORY], p)[0][0].text


def test_stop_strings(backend):
    p = GenerationParams(max_new_tokens=16, temperature=0)
    _same_cache_state(backend)
    full = backend.generate([STORY], p)[0][0].text
    words = full.split()
    assert len(words) > 3
    stop = " " + words[2]
    expected = full[: full.find(stop)].strip()
    p.stop = [stop]
    _same_cache_state(backend)
    assert backend.generate([STORY], p)[0][0].text == expected
    _same_cache_state(backend)
    assert "".join(backend.stream(STORY, p)).strip() == expected


def test_choice_logprobs_exact_matches_first_token(backend):
    exact = backend.choice_logprobs([QUESTION, STORY], ["A", "B"])
    for probs in exact:
        assert set(probs) == {"A", "B"} and abs(sum(probs.values()) - 1) < 1e-9
    assert backend._template is not None, "the server's model is a local .gguf: its chat template is used"
    assert backend.supports_logprobs
    # single-token options: exact scoring and the chat endpoint's first-token top_logprobs measure the same thing
    chat_only = HttpBackend(backend.spec)
    chat_only._template_resolved, chat_only._server_template = True, False
    first = chat_only.choice_logprobs([QUESTION], ["A", "B"])[0]
    assert first["A"] == pytest.approx(exact[0]["A"], abs=0.03)


def test_choice_logprobs_multitoken_options_and_prefix(backend):
    probs = backend.choice_logprobs([QUESTION], ["(A)", "(B)"], assistant_prefix="The answer is ")[0]
    assert abs(sum(probs.values()) - 1) < 1e-9 and all(0 < v < 1 for v in probs.values())
    # one prefix per conversation (a CoT judge's reasoning), scored in one call
    both = backend.choice_logprobs([QUESTION, QUESTION], ["(A)", "(B)"],
                                   assistant_prefix=["The answer is ", "7 is larger, so the answer is "])
    assert both[0]["(A)"] == pytest.approx(probs["(A)"], abs=0.02)
    assert both[1]["(B)"] != pytest.approx(both[0]["(B)"], abs=1e-6)


def test_info(backend):
    info = backend.info()
    assert info["kind"] == "http" and info["model"].endswith(".gguf") and info["api_key"] in ("set", "none")


def test_get_backend_http_through_models(server, workspace):
    from cai_core.models.specs import get_backend, loaded_backends, unload

    b = get_backend(server["spec"], workspace)
    assert get_backend(server["spec"], workspace) is b
    assert any(i["spec"] == server["spec"] for i in loaded_backends())
    assert unload(server["spec"]) == 1


# -- failure modes ----------------------------------------------------------------------------------

def test_bad_spec():
    with pytest.raises(CaiError, match="not an http"):
        parse_spec("http:/nohost")
    with pytest.raises(CaiError, match="unknown setting"):
        parse_spec("http://127.0.0.1:1/v1#foo=1")
    assert parse_spec("http://h:1/v1/#model=m") == ("http://h:1/v1", {"model": "m"})


def test_refused_port():
    from cai_core.models.llama_server import free_port

    port = free_port()
    with pytest.raises(CaiError, match=rf"127\.0\.0\.1:{port}.*connection refused"):
        HttpBackend(f"http://127.0.0.1:{port}/v1")


BOS = "\u00a7"  # the fake echo server's BOS token (one character = one token there)


def _fake_logprob(token: str) -> float:
    return -0.01 * (ord(token) % 50) - 0.01


def _generated_logprob(prompt: str) -> float:
    """The generated token's log-prob depends on the prompt (as a real model's does)."""
    return -9.0 if prompt.endswith("(A)") else -1.0


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *a):
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.server.mode == "badjson":
            data = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        owner = {"vllm": "vllm", "llamapy": "me", "llamaecho": "me"}.get(self.server.mode, "someone")
        model = "/models/x.gguf" if self.server.mode in ("llamapy", "llamaecho") else "fake"
        self._reply(200, {"data": [{"id": model, "owned_by": owner}]})

    def do_POST(self):
        _Handler.requests.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"))
        if self.server.mode == "500":
            self._reply(500, {"error": "model crashed"})
        elif self.server.mode == "slow":
            time.sleep(3)
            self._reply(200, {})
        elif self.server.mode == "hang":
            time.sleep(8)
            self._reply(200, {})
        elif self.server.mode == "toplogprobs":  # chat logprobs only, no template: first-token top-k
            if self.path.endswith("/chat/completions"):
                top = [{"token": "A", "logprob": -0.5}, {"token": "B", "logprob": -1.2}]
                self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "A"},
                                               "logprobs": {"content": [{"token": "A", "top_logprobs": top}]}}]})
            else:
                self._reply(404, {"error": "not found"})
        elif self.server.mode == "llamaecho":  # llama-cpp-python's echo, one character per token
            body = _Handler.requests[-1]
            if self.path.endswith("/apply-template"):
                self._reply(200, {"prompt": "".join(BOS + m["content"] + "\n" for m in body["messages"])})
            elif self.path.endswith("/chat/completions"):  # the health probe
                self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "A"},
                                               "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})
            else:  # the BOS "token" is left out of the echoed list, as llama-cpp-python does
                listed = [c for c in body["prompt"] if c != BOS] + ["!"]  # then one generated token
                values = [None] + [_fake_logprob(c) for c in listed[1:-1]] + [_generated_logprob(body["prompt"])]
                self._reply(200, {"choices": [{"text": body["prompt"] + "!", "index": 0,
                                               "logprobs": {"tokens": listed, "token_logprobs": values}}],
                                  "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": 1}})
        elif self.path.endswith("/apply-template"):
            self._reply(404, {"error": "not found"})
        else:  # a chat server without log-probs
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"}],
                              "usage": {"completion_tokens": 1}})


@pytest.fixture
def fake_server():
    servers = []

    _Handler.requests.clear()

    def make(mode):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.mode = mode
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_exact_scoring_reads_the_prompt_part_of_an_echo_that_leaves_out_bos_tokens(fake_server):
    """llama-cpp-python's echo leaves out the tokens whose id is the model's BOS (SmolLM2's BOS is
    <|im_start|>, in every turn), so its usage.prompt_tokens counts more tokens than the list holds:
    the prompt part ends where the generated token(s) start. Counting by prompt_tokens scored the
    generated token as part of the option (P(A) off by up to 0.24 on the default model)."""
    import math

    b = HttpBackend(fake_server("llamaecho"))
    conv = [{"role": "user", "content": "Which is better?"}]
    assert b.option_scoring() == "exact"
    got = b.choice_logprobs([conv], ["(A)", "(B)"], assistant_prefix="The answer is: ")[0]
    scores = {o: sum(_fake_logprob(c) for c in o) for o in ("(A)", "(B)")}
    top = max(scores.values())
    total = sum(math.exp(v - top) for v in scores.values())
    assert got["(A)"] == pytest.approx(math.exp(scores["(A)"] - top) / total, abs=1e-12)


def test_http_500_is_one_clear_error(fake_server):
    url = fake_server("500")
    b = HttpBackend(url)
    assert b.model == "fake"
    with pytest.raises(CaiError, match=rf"{url}/chat/completions answered HTTP 500.*model crashed"):
        b.generate([STORY], GenerationParams(max_new_tokens=4))
    with pytest.raises(CaiError, match="HTTP 500"):
        list(b.stream(STORY, GenerationParams(max_new_tokens=4)))


def test_timeout_is_one_clear_error(fake_server):
    url = fake_server("slow")
    b = HttpBackend(url, timeout=0.5)
    with pytest.raises(CaiError, match=rf"cannot reach {url}/chat/completions: no answer within"):
        b.generate([STORY], GenerationParams(max_new_tokens=4))


def test_no_logprobs_server(fake_server):
    b = HttpBackend(fake_server("nologprobs"))
    assert b.generate([STORY], GenerationParams(max_new_tokens=4))[0][0].text == "A"
    with pytest.raises(CaiError, match="offers no log-probs"):
        b.choice_logprobs([QUESTION], ["A", "B"])
    assert b.supports_logprobs is False


def test_api_key_from_env_sent_not_stored(fake_server, monkeypatch):
    monkeypatch.setenv("CAI_API_KEY", "sk-test")
    b = HttpBackend(fake_server("nologprobs"))
    assert b.info()["api_key"] == "set" and "sk-test" not in json.dumps(b.info())


def test_server_cli_bad_input_writes_nothing(workspace, tmp_path, monkeypatch):
    from tests.helpers import run_cli

    from cai_core.models import llama_server

    if not llama_server.is_installed():
        pytest.skip("llama-cpp-python[server] is not installed (make install-server)")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    r = run_cli("server-start", "--model", str(fake), "--workspace", str(workspace.root))
    assert r.returncode == 2 and "not a valid GGUF" in r.stderr
    monkeypatch.delenv("CAI_API_KEY", raising=False)
    r = run_cli("server-start", "--host", "0.0.0.0", "--workspace", str(workspace.root))
    assert r.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in r.stderr
    assert llama_server.read_state(workspace) is None
    r = run_cli("server-status", "--workspace", str(workspace.root))
    assert r.returncode == 0 and '"running": false' in r.stdout


# -- endpoint faults (issue 15 item 8) ------------------------------------------------------------

def test_models_answering_invalid_json_is_an_error_not_ready(fake_server, workspace):
    from cai_core.models.specs import check_spec

    url = fake_server("badjson")
    with pytest.raises(CaiError, match=r"/models answered with invalid JSON.*not json"):
        HttpBackend(url)
    with pytest.raises(CaiError, match="invalid JSON"):
        check_spec(url, workspace)


def test_hung_completions_fail_fast_with_the_cause(fake_server, monkeypatch):
    """/models answers but completions hang: the first request gives up after the short
    first-request timeout, not the long per-request one, and says why."""
    from cai_core.models.backends import http

    monkeypatch.setattr(http, "FIRST_REQUEST_TIMEOUT", 0.5)
    b = HttpBackend(fake_server("hang"))  # the normal timeout stays 120 s
    start = time.monotonic()
    with pytest.raises(CaiError, match=r"no answer within 0\.5 s to the first completion request.*lists models"):
        b.probe()
    with pytest.raises(CaiError, match="first completion request"):
        list(b.stream(STORY, GenerationParams(max_new_tokens=4)))
    assert time.monotonic() - start < 5


def test_get_backend_probes_before_anything_is_stored(fake_server, workspace, monkeypatch):
    """Loading an endpoint runs one completion; a hung server fails there, so a job that loads its
    model before writing (every job does) stores no row for it."""
    from cai_core.models.backends import http
    from cai_core.models.specs import get_backend, loaded_backends

    monkeypatch.setattr(http, "FIRST_REQUEST_TIMEOUT", 0.5)
    url = fake_server("hang")
    with pytest.raises(CaiError, match="first completion request"):
        get_backend(url, workspace)
    assert url not in [b["spec"] for b in loaded_backends()]
    ok = fake_server("nologprobs")
    assert get_backend(ok, workspace).info()["spec"] == ok


def test_concurrency_is_set_by_the_endpoint_and_the_spec_overrides(fake_server):
    assert HttpBackend(fake_server("vllm")).concurrency == 128
    assert HttpBackend(fake_server("llamapy")).concurrency == 1
    assert HttpBackend(fake_server("nologprobs")).concurrency == 4  # unknown kind: a small default
    url = fake_server("vllm")
    b = HttpBackend(url + "#concurrency=3")
    assert b.concurrency == 3 and b.info()["server_kind"] == "vllm" and b.info()["concurrency"] == 3
    assert parse_spec(url + "#concurrency=8&model=m")[1] == {"concurrency": 8, "model": "m"}
    for bad in ("0", "x", "-2"):
        with pytest.raises(CaiError, match="concurrency must be a whole number"):
            parse_spec(url + "#concurrency=" + bad)


def test_concurrency_bounds_requests_in_flight(fake_server):
    """At most `concurrency` requests reach the server at once."""
    url = fake_server("slowish")
    in_flight, peak, lock = [0], [0], threading.Lock()
    real = HttpBackend._one

    def counting(self, *a):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            time.sleep(0.05)
            return real(self, *a)
        finally:
            with lock:
                in_flight[0] -= 1

    b = HttpBackend(url + "#concurrency=2")
    b._one = counting.__get__(b)
    b.generate([STORY] * 8, GenerationParams(max_new_tokens=2))
    assert peak[0] == 2


def test_approximate_scoring_is_reported_and_in_the_judge_key(fake_server):
    from cai_core.models.backends.http import APPROXIMATE_SCORING
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs

    b = HttpBackend(fake_server("toplogprobs"))
    assert b.option_scoring() == APPROXIMATE_SCORING == "approximate: first-token top-k"
    probs = b.choice_logprobs([QUESTION], ["(A)", "(B)"])[0]
    assert probs["(A)"] > probs["(B)"]
    spec = JudgeSpec(model="fake", principles="all")
    exact_key = spec.judge_key
    judge_pairs(b, spec, None, [{"id": "p1", "prompt": "Hi", "response_a": "Hello", "response_b": "Go away",
                                 "question": "Which is kinder?"}])
    assert spec.scoring == APPROXIMATE_SCORING and spec.judge_key == exact_key.replace("mc|", "mc-approx|", 1)
    from ui.reliability import judge_words

    words = judge_words(None, spec.judge_key)
    assert "approximate: first-token top-k" in words and "fake" in words
    assert "approximate" not in judge_words(None, exact_key)


def test_revise_against_a_hung_endpoint_fails_fast_and_stores_nothing(fake_server, ws, monkeypatch, capsys):
    """The whole path: `revise --model URL` on a server that lists models but never completes exits 2
    with the cause within seconds, and no trajectory, prompt set or job row was written for it."""
    from cai_core.cli import main
    from cai_core.models.backends import http
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    monkeypatch.setattr(http, "FIRST_REQUEST_TIMEOUT", 0.5)
    url = fake_server("hang")
    store = Store(Workspace.open(ws))
    before = {t: store.scalar(f"SELECT COUNT(*) FROM {t}") for t in ("trajectories", "prompts", "prompt_sets")}
    start = time.monotonic()
    code = main(["revise", "--workspace", str(ws), "--model", url, "--constitution", "sample_data/constitutions/seed.yaml",
                 "--prompts", "sample_data/prompts/red_team.jsonl", "--limit", "2", "--max-new-tokens", "4"])
    assert code == 2 and time.monotonic() - start < 6
    assert "first completion request" in capsys.readouterr().err
    assert {t: store.scalar(f"SELECT COUNT(*) FROM {t}") for t in before} == before
