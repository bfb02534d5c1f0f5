"""Several replicas as one model (issue 21 item 2): a spec naming several endpoints spreads requests
by outstanding load, keeps each replica's own concurrency, and when a replica dies its requests are
retried on the others; the answers are the ones one healthy server gives."""
from __future__ import annotations

import threading
import time

import pytest

from cai_core.errors import CaiError
from cai_core.models.backends import http
from cai_core.models.backends.base import GenerationParams, RequestFailed
from cai_core.models.backends.http import HttpBackend, parse_replicas
from cai_core.models.llama_server import free_port
from cai_core.models.mock_server import MockServer, start_process

GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0)


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Prompt {i}: tell me something"}] for i in range(n)]


def texts(out) -> list[str]:
    return [row[0].text for row in out]


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(http, "BACKOFF_CAP", 0.05)


@pytest.fixture(scope="module")
def expected():
    with MockServer() as srv:
        return texts(HttpBackend(srv.url).generate(convs(200), GREEDY))


def test_replica_spec_syntax():
    one, shared = parse_replicas("http://a:1/v1")
    assert one == [("http://a:1/v1", {"concurrency": None})] and shared == {}
    reps, shared = parse_replicas("http://a:1/v1, http://b:2/v1#concurrency=8&model=m")
    assert reps == [("http://a:1/v1", {"concurrency": 8}), ("http://b:2/v1", {"concurrency": 8})]
    assert shared == {"model": "m"}
    reps, _ = parse_replicas("http://a:1/v1#concurrency=2,http://b:2/v1#concurrency=8")
    assert [c["concurrency"] for _, c in reps] == [2, 8]
    reps, _ = parse_replicas("http://a:1/v1#concurrency=2,http://b:2/v1")
    assert [c["concurrency"] for _, c in reps] == [2, None]
    with pytest.raises(CaiError, match="disagree on model"):
        parse_replicas("http://a:1/v1#model=x,http://b:2/v1#model=y")
    with pytest.raises(CaiError, match="named twice"):
        parse_replicas("http://a:1/v1,http://a:1/v1")
    with pytest.raises(CaiError, match="not an http"):
        parse_replicas("http://a:1/v1,http://")
    with pytest.raises(CaiError, match="several endpoints"):
        http.parse_spec("http://a:1/v1,http://b:2/v1")


def test_requests_spread_over_replicas_and_concurrency_adds_up(expected):
    with MockServer(latency=0.02) as a, MockServer(latency=0.02) as b:
        backend = HttpBackend(f"{a.url},{b.url}")
        assert backend.max_in_flight() == 2 * http.CONCURRENCY["vllm"] == backend.info()["concurrency"]
        assert texts(backend.generate(convs(200), GREEDY)) == expected
        na, nb = a.stats["by_path"]["/v1/chat/completions"], b.stats["by_path"].get("/v1/chat/completions", 0)
        assert na + nb == 201 and min(na, nb) >= 60  # the probe + 200; both busy
        assert [r["up"] for r in backend.info()["replicas"]] == [True, True]


def test_least_outstanding_respects_each_replicas_concurrency():
    with MockServer(latency=0.05) as a, MockServer(latency=0.05) as b:
        backend = HttpBackend(f"{a.url}#concurrency=1,{b.url}#concurrency=5")
        assert backend.max_in_flight() == 6
        backend.generate(convs(60), GREEDY)
        assert a.stats["peak_in_flight"] == 1 and b.stats["peak_in_flight"] == 5
        # by load: the 5-slot replica takes most of the work
        assert b.stats["by_path"]["/v1/chat/completions"] > 3 * a.stats["by_path"].get("/v1/chat/completions", 0)


def test_kind_decides_concurrency_per_replica():
    with MockServer(kind="vllm") as a, MockServer(kind="other") as b:
        backend = HttpBackend(f"{a.url},{b.url}")
        assert [r.concurrency for r in backend.replicas] == [http.CONCURRENCY["vllm"], http.DEFAULT_CONCURRENCY]
        assert backend.max_in_flight() == http.CONCURRENCY["vllm"] + http.DEFAULT_CONCURRENCY


def test_a_replica_that_dies_mid_run_has_its_requests_finished_on_the_other(expected):
    """Replica a stops after 40 requests, resetting those in flight; everything finishes on b."""
    with MockServer(latency=0.02, die_after=40) as a, MockServer(latency=0.02) as b:
        backend = HttpBackend(f"{a.url},{b.url}")
        assert texts(backend.generate(convs(200), GREEDY)) == expected
        assert a.stats["dead"]
        faults = backend.fault_counts()
        assert faults["replica_down"] >= 1 and faults["connection"] >= 1 and faults["failed"] == 0
        assert b.stats["answered"] >= 200 - 40
        assert [r["up"] for r in backend.info()["replicas"]][1] is True


def test_a_replica_stopped_from_outside_mid_run(expected):
    with MockServer(latency=0.2) as a, MockServer(latency=0.2) as b:
        backend = HttpBackend(f"{a.url},{b.url}")
        backend.probe()
        threading.Timer(0.1, a.stop).start()  # the run takes >= 2 x 0.2 s: a dies with requests in flight
        assert texts(backend.generate(convs(200), GREEDY)) == expected
        faults = backend.fault_counts()
        assert faults["failed"] == 0 and faults["replica_down"] >= 1 and faults["connection"] >= 1


def test_a_replica_down_at_load_time_is_left_out(expected):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with MockServer() as b:
        backend = HttpBackend(f"{dead},{b.url}")
        assert backend.server_kind == "vllm" and backend.fault_counts()["replica_down"] == 1
        assert texts(backend.generate(convs(200), GREEDY)) == expected
        assert backend.fault_counts()["failed"] == 0
    with pytest.raises(CaiError, match="connection refused"):
        HttpBackend(f"{dead},http://127.0.0.1:{free_port()}/v1")


def test_all_replicas_dead_raises_request_failed_in_bounded_time(quick_backoff, monkeypatch):
    monkeypatch.setattr(http, "REPLICA_COOLDOWN", 0.1)
    with MockServer() as a, MockServer() as b:
        backend = HttpBackend(f"{a.url},{b.url}#retries=4")
        backend.probe()
        a.stop()
        b.stop()
        start = time.monotonic()
        with pytest.raises(RequestFailed, match="connection refused|reset|closed"):
            backend.generate(convs(1), GREEDY)
        # each replica is left out for REPLICA_COOLDOWN s after a refusal: bounded by a few of those
        assert time.monotonic() - start < 4 * http.REPLICA_COOLDOWN + 2


@pytest.mark.slow
def test_kill_9_of_a_replica_process_mid_run(expected):
    """Two server processes; one is SIGKILLed while requests are in flight."""
    a, b = start_process(latency=0.3), start_process(latency=0.3)
    try:
        backend = HttpBackend(f"{a.url},{b.url}")
        backend.probe()
        threading.Timer(0.15, a.kill).start()  # the run takes >= 2 x 0.3 s: a dies with requests in flight
        assert texts(backend.generate(convs(200), GREEDY)) == expected
        faults = backend.fault_counts()
        assert faults["failed"] == 0 and faults["connection"] >= 1
        assert a.proc.poll() is not None
    finally:
        a.kill()
        b.kill()


def test_a_replica_spec_loads_through_the_model_specs(workspace):
    from cai_core.models.specs import check_spec, get_backend, unload

    with MockServer() as a, MockServer() as b:
        spec = f"{a.url},{b.url}#concurrency=3"
        assert check_spec(spec, workspace) == spec
        backend = get_backend(spec, workspace)
        assert isinstance(backend, HttpBackend) and backend.max_in_flight() == 6
        assert backend.info()["url"] == f"{a.url},{b.url}" and len(backend.info()["replicas"]) == 2
        assert unload(spec) == 1
