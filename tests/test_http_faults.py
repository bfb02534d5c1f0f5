"""Faults at scale (issue 21 item 3, the request side): HttpBackend against the project's own server
(cai_core/models/mock_server.py) answering 503 to some requests, dropping connections, rate
limiting, timing out or offering no log-probs. Transient faults are retried with a capped,
jittered exponential backoff and counted; a request that never succeeds raises RequestFailed
within a bounded time; answers are the same as a fault-free server's."""
from __future__ import annotations

import time

import pytest

from cai_core.errors import CaiError
from cai_core.models.backends import http
from cai_core.models.backends.base import GenerationParams, RequestFailed
from cai_core.models.backends.http import HttpBackend, parse_spec
from cai_core.models.mock_server import MockServer

GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0)
SAMPLED = GenerationParams(max_new_tokens=24, temperature=0.8, seed=7)


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question number {i}: how do I stay safe?"}] for i in range(n)]


@pytest.fixture
def quick_backoff(monkeypatch):
    """Shorter waits, the same policy (the backoff's own bounds are tested below)."""
    monkeypatch.setattr(http, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(http, "BACKOFF_CAP", 0.05)


def texts(out) -> list[list[str]]:
    return [[c.text for c in row] for row in out]


def test_all_requests_succeed_through_503s_and_dropped_connections_and_every_fault_is_counted(quick_backoff):
    with MockServer() as clean:
        expected = texts(HttpBackend(clean.url).generate(convs(150), SAMPLED))
    with MockServer(fail_rate=0.05, drop_rate=0.05, latency=0.01, seed=3) as srv:
        b = HttpBackend(srv.url)
        got = texts(b.generate(convs(150), SAMPLED))
        stats = dict(srv.stats)
    assert got == expected  # every prompt answered, and with the same text as without faults
    faults = b.fault_counts()
    assert stats["failed_503"] > 0 and stats["dropped"] > 0
    assert faults["http_503"] == stats["failed_503"] and faults["connection"] == stats["dropped"]
    assert faults["retries"] == stats["failed_503"] + stats["dropped"] and faults["failed"] == 0
    assert b.info()["faults"] == faults


def test_rate_limits_are_retried_and_counted(quick_backoff):
    with MockServer(rate_limit_rate=0.2, seed=1) as srv:
        b = HttpBackend(srv.url)
        assert len(b.generate(convs(40), GREEDY)) == 40
        assert b.fault_counts()["http_429"] == srv.stats["rate_limited"] > 0


def test_a_request_that_never_succeeds_raises_request_failed_after_bounded_time():
    """Real backoff (not shortened): 3 retries wait at most 0.25 + 0.5 + 1 s."""
    with MockServer() as srv:
        b = HttpBackend(srv.url + "#retries=3")
        b.probe()
        srv.options.fail_rate = 1.0
        start = time.monotonic()
        with pytest.raises(RequestFailed, match=r"answered HTTP 503.*overloaded.*gave up after 4 tries") as err:
            b.generate(convs(1), GREEDY)
        elapsed = time.monotonic() - start
    assert err.value.reason == "HTTP 503" and err.value.attempts == 4 and err.value.code == 503
    assert isinstance(err.value, CaiError)
    assert 0.25 * 0.5 + 0.5 * 0.5 + 1.0 * 0.5 <= elapsed < 4.0  # jitter keeps at least half of each wait
    assert b.fault_counts()["failed"] == 1 and b.fault_counts()["retries"] == 3


def test_dropped_connections_that_never_stop_raise_request_failed(quick_backoff):
    with MockServer() as srv:
        b = HttpBackend(srv.url)
        b.probe()
        srv.options.drop_rate = 1.0
        with pytest.raises(RequestFailed, match=r"cannot reach .*(closed the connection|reset)") as err:
            b.generate(convs(1), GREEDY)
    assert err.value.attempts == http.RETRIES + 1 and b.fault_counts()["connection"] == http.RETRIES + 1


def test_timeouts_are_retried_once_then_fail(quick_backoff):
    with MockServer() as srv:
        b = HttpBackend(srv.url, timeout=0.3)
        b.probe()
        srv.options.latency = 2.0
        start = time.monotonic()
        with pytest.raises(RequestFailed, match="no answer within 0.3 s") as err:
            b.generate(convs(1), GREEDY)
    assert err.value.reason == "timeout" and err.value.attempts == http.TIMEOUT_RETRIES + 1
    assert time.monotonic() - start < 0.3 * (http.TIMEOUT_RETRIES + 1) + 1.5
    assert b.fault_counts()["timeout"] == http.TIMEOUT_RETRIES + 1


def test_the_probe_retries_a_transient_fault_but_not_a_hang(quick_backoff):
    with MockServer(fail_rate=1.0) as srv:
        b = HttpBackend(srv.url)
        with pytest.raises(RequestFailed, match="HTTP 503") as err:
            b.probe()
        assert err.value.attempts == http.PROBE_RETRIES + 1
        srv.options.fail_rate = 0.0
        b.probe()  # the endpoint recovered: the next probe passes
    with MockServer(latency=3.0) as srv:
        b = HttpBackend(srv.url, timeout=0.4)
        start = time.monotonic()
        with pytest.raises(RequestFailed, match="to the first completion request") as err:
            b.probe()
        assert err.value.attempts == 1 and time.monotonic() - start < 2.0


def test_streaming_is_retried_before_its_first_byte(quick_backoff):
    conv = convs(1)[0]
    with MockServer(fail_rate=0.2, drop_rate=0.2, seed=5) as srv:
        b = HttpBackend(srv.url)
        for _ in range(5):
            assert "".join(b.stream(conv, GREEDY)).strip() == b.generate([conv], GREEDY)[0][0].text
        assert b.fault_counts()["retries"] > 0 and b.fault_counts()["failed"] == 0


def test_no_logprobs_is_not_retried(quick_backoff):
    with MockServer(logprobs=False) as srv:
        b = HttpBackend(srv.url)
        assert b.generate(convs(2), GREEDY)[0][0].text
        with pytest.raises(CaiError, match="offers no log-probs"):
            b.choice_logprobs(convs(1), ["(A)", "(B)"], assistant_prefix="The answer is: ")
        assert b.supports_logprobs is False and b.fault_counts()["retries"] == 0


def test_exact_scoring_through_faults_matches_a_clean_server(quick_backoff):
    with MockServer() as clean:
        b = HttpBackend(clean.url)
        assert b.option_scoring() == "exact"
        expected = b.choice_logprobs(convs(12), ["(A)", "(B)"], assistant_prefix="The answer is: ")
    with MockServer(fail_rate=0.1, drop_rate=0.1, seed=2) as srv:
        b = HttpBackend(srv.url)
        got = b.choice_logprobs(convs(12), ["(A)", "(B)"], assistant_prefix="The answer is: ")
        assert b.fault_counts()["retries"] > 0
    assert got == expected


def test_backoff_is_exponential_capped_jittered_and_honours_retry_after():
    b = HttpBackend("http://127.0.0.1:9/v1", check=False)
    fault = http._Fault("http", "x", "HTTP 503")
    for attempt in range(1, 10):
        full = min(http.BACKOFF_CAP, http.BACKOFF_BASE * 2 ** (attempt - 1))
        waits = [b._backoff(attempt, fault) for _ in range(50)]
        assert all(full * 0.5 <= w <= full for w in waits)
        assert len(set(waits)) > 1  # jitter
    assert b._backoff(1, http._Fault("http", "x", "HTTP 429", retry_after=3.0)) >= 3.0
    assert b._backoff(1, http._Fault("http", "x", "HTTP 429", retry_after=999)) == http.BACKOFF_CAP
    total = sum(min(http.BACKOFF_CAP, http.BACKOFF_BASE * 2 ** i) for i in range(http.RETRIES))
    assert total < 30  # the longest a request waits between its tries, all together


def test_retry_and_timeout_settings_in_the_spec():
    assert parse_spec("http://h:1/v1#retries=0&timeout=2.5")[1] == {"retries": 0, "timeout": 2.5}
    b = HttpBackend("http://127.0.0.1:9/v1#retries=2&timeout=5", check=False)
    assert b.retries == 2 and b.timeout == 5.0
    assert HttpBackend("http://127.0.0.1:9/v1", check=False).retries == http.RETRIES
    for bad, msg in (("retries=21", "retries must be"), ("retries=x", "retries must be"),
                     ("timeout=0", "timeout must be"), ("timeout=abc", "timeout must be")):
        with pytest.raises(CaiError, match=msg):
            parse_spec("http://h:1/v1#" + bad)


def _revise(ws, url: str, prompts_file: str) -> list[tuple]:
    from cai_core.cli import main
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    code = main(["revise", "--workspace", str(ws), "--model", url, "--constitution",
                 "sample_data/constitutions/harmless_helpful.yaml", "--prompts", prompts_file, "--rounds", "2",
                 "--batch", "faults"])
    assert code == 0
    store = Store(Workspace.open(ws))
    rows = store.query("SELECT prompt, status, final FROM trajectories ORDER BY prompt")
    store.close()
    return [tuple(r) for r in rows]


@pytest.mark.slow
def test_revise_finishes_every_prompt_once_through_503s_and_dropped_connections(tmp_path, quick_backoff):
    """The whole path (`revise --model URL`, defaults, 2 rounds) against 5% 503s and 5% dropped
    connections: every prompt done exactly once, with the text a fault-free server gives."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "How do I deal with problem {i}?"}}\n' for i in range(12)))
    with MockServer() as clean:
        expected = _revise(tmp_path / "clean", clean.url, str(prompts))
    with MockServer(fail_rate=0.05, drop_rate=0.05, seed=11) as srv:
        got = _revise(tmp_path / "faulty", srv.url, str(prompts))
        injected = srv.stats["failed_503"] + srv.stats["dropped"]
    assert len(got) == 12 and {r[1] for r in got} == {"done"}
    assert got == expected and injected > 0


def test_a_kept_alive_connection_closed_while_idle_is_reopened_uncounted(monkeypatch):
    """Servers close idle keep-alive connections (uvicorn after 5 s): the next request on one is
    sent again on a new connection at once, not counted as a fault."""
    monkeypatch.setattr(http, "STALE_AFTER", 0.0)
    with MockServer() as srv:
        b = HttpBackend(srv.url)
        b.generate(convs(1), GREEDY)
        assert b.replicas[0].idle  # the connection was kept
        srv.stop()  # the server resets every open connection...
        srv2 = MockServer(port=srv.port).start()  # ...and comes back on the same port
        try:
            assert b.generate(convs(1), GREEDY)[0][0].text
            assert b.fault_counts()["retries"] == 0 and b.fault_counts()["connection"] == 0
        finally:
            srv2.stop()


def test_the_mock_server_is_deterministic_and_refuses_bad_options(capsys):
    from cai_core.cli import main

    conv = convs(1)
    with MockServer() as a, MockServer(kind="llamacpp") as b:
        ba, bb = HttpBackend(a.url), HttpBackend(b.url)
        assert texts(ba.generate(conv, SAMPLED)) == texts(bb.generate(conv, SAMPLED))
        other_seed = GenerationParams(max_new_tokens=24, temperature=0.8, seed=8)
        assert texts(ba.generate(conv, other_seed)) != texts(ba.generate(conv, SAMPLED))
        greedy_other_seed = GenerationParams(max_new_tokens=24, temperature=0.0, seed=8)
        assert texts(ba.generate(conv, greedy_other_seed)) == texts(ba.generate(conv, GREEDY))
        assert bb.server_kind == "llama.cpp" and bb.option_scoring() == "exact"  # /apply-template
        assert ba.choice_logprobs(conv, ["(A)", "(B)"]) == bb.choice_logprobs(conv, ["(A)", "(B)"])
    assert main(["serve-mock", "--fail-rate", "0.7", "--drop-rate", "0.7"]) == 2
    assert "must not exceed 1" in capsys.readouterr().err
