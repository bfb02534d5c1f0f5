"""models/dispatch.py: chains of requests kept in flight (a server) or batched by stage (a local model)."""
from __future__ import annotations

import threading
import time

import pytest

from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend, Completion, GenerationParams
from cai_core.models.dispatch import Request, in_flight_for, map_requests, run_chains


class Server(Backend):
    """A fake concurrent backend: answers after `delay(conv)` seconds; records what ran at once."""
    spec = "fake-server"

    def __init__(self, delay=lambda conv: 0.01, limit: int = 4, fail=lambda conv: False):
        self.delay, self.limit, self.fail = delay, limit, fail
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.log: list[tuple[str, str]] = []   # (event, text) in the order it happened

    @property
    def concurrent(self):
        return True

    def max_in_flight(self):
        return self.limit

    def _one(self, conv):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.log.append(("start", conv[-1]["content"]))
        try:
            time.sleep(self.delay(conv))
            if self.fail(conv):
                raise CaiError(f"answered HTTP 503 for {conv[-1]['content']}")
            return conv[-1]["content"].upper()
        finally:
            with self.lock:
                self.now -= 1

    def generate(self, conversations, params):
        return [[Completion(self._one(c))] for c in conversations]

    def stream(self, conversation, params):
        yield self._one(conversation)

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        return [{o: 1.0 / len(options) for o in options} for _ in conversations]


def chain(name: str, steps: int = 2):
    """answer -> follow-up ... : each step asks about the previous answer."""
    text = name
    for k in range(steps):
        out = yield Request("generate", [{"role": "user", "content": f"{text}/{k}"}], GenerationParams(seed=k), stage=k)
        text = out[0].text
    return text


def test_concurrent_keeps_the_limit_in_flight_and_each_chain_moves_on_its_own():
    # prompt "slow" answers in 0.3 s, the others in 0.02 s: the fast ones finish both steps meanwhile
    backend = Server(delay=lambda c: 0.3 if c[-1]["content"].startswith("slow") else 0.02, limit=4)
    results = {}
    names = ["slow"] + [f"p{i}" for i in range(11)]
    counts = run_chains(backend, ((n, chain(n)) for n in names), on_done=lambda k, v: results.__setitem__(k, v))
    assert counts.done == 12 and counts.failed == 0 and counts.requests == 24
    assert backend.peak == 4 == counts.max_in_flight  # as many in flight as the backend serves, never more
    assert results["p3"] == "P3/0/1" and results["slow"] == "SLOW/0/1"
    starts = [text for event, text in backend.log if event == "start"]
    # p0's second step went out before the slow prompt's answer came back (no lock-step)
    assert starts.index("P0/0/1") < starts.index("SLOW/0/1")


def test_a_failing_item_fails_alone_and_the_batch_goes_on():
    backend = Server(fail=lambda c: c[-1]["content"] == "P2/0/1", limit=3)
    failed, done = {}, {}
    counts = run_chains(backend, ((n, chain(n)) for n in [f"p{i}" for i in range(6)]),
                        on_done=done.__setitem__, on_error=failed.__setitem__)
    assert counts.done == 5 and counts.failed == 1 and set(failed) == {"p2"}
    assert "HTTP 503" in str(failed["p2"]) and "p2" in counts.errors[0]


def test_a_chain_may_handle_its_request_error():
    backend = Server(fail=lambda c: True, limit=2)

    def tolerant():
        try:
            yield Request("generate", [{"role": "user", "content": "x"}], GenerationParams())
        except CaiError:
            return "unknown"

    out = {}
    counts = run_chains(backend, [("a", tolerant())], on_done=out.__setitem__)
    assert counts.done == 1 and out == {"a": "unknown"}


def test_stop_sends_no_new_requests():
    backend = Server(limit=2)
    calls = []
    stop = lambda: len(calls) >= 3  # noqa: E731
    orig = backend.generate
    backend.generate = lambda convs, params: calls.append(1) or orig(convs, params)
    counts = run_chains(backend, ((n, chain(n, steps=3)) for n in "abcdef"), should_stop=stop)
    assert counts.stopped >= 1 and counts.done < 6 and len(calls) <= 3 + 2  # what was in flight finishes


class Local(Server):
    """A fake in-process backend: one call at a time; records each batched call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, int, int]] = []   # (op, stage seed, rows)

    @property
    def concurrent(self):
        return False

    def generate(self, conversations, params):
        self.calls.append(("generate", params.seed, len(conversations)))
        return super().generate(conversations, params)

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        self.calls.append(("choice", None, len(conversations)))
        return super().choice_logprobs(conversations, options, assistant_prefix)


def test_batched_runs_the_lock_step_calls_cohort_by_cohort():
    backend = Local(delay=lambda c: 0.0, limit=4)
    out = {}
    counts = run_chains(backend, ((n, chain(n)) for n in [f"p{i}" for i in range(10)]), on_done=out.__setitem__)
    assert counts.done == 10 and out["p7"] == "P7/0/1"
    # cohorts of 4, 4, 2; each stage one batched call of the cohort (what lock-step chunks did)
    assert backend.calls == [("generate", 0, 4), ("generate", 1, 4), ("generate", 0, 4), ("generate", 1, 4),
                             ("generate", 0, 2), ("generate", 1, 2)]


def test_a_failed_batched_call_is_retried_item_by_item_and_only_the_bad_item_fails():
    backend = Local(delay=lambda c: 0.0, limit=2, fail=lambda c: c[-1]["content"] == "b/0")
    failed, done = {}, {}
    counts = run_chains(backend, ((n, chain(n)) for n in "abcd"), on_error=failed.__setitem__, on_done=done.__setitem__)
    assert set(failed) == {"b"} and counts.done == 3 and counts.failed == 1 and done["a"] == "A/0/1"
    # the cohort's batched call failed, then a and b alone; a went on with its next step
    assert backend.calls[:4] == [("generate", 0, 2), ("generate", 0, 1), ("generate", 0, 1), ("generate", 1, 1)]


def test_map_requests_and_in_flight_override():
    backend = Server(limit=3)
    reqs = [Request("generate", [{"role": "user", "content": w}], GenerationParams()) for w in ["x", "y", "z", "w"]]
    outs = map_requests(backend, reqs)
    assert [o[0].text for o in outs] == ["X", "Y", "Z", "W"]
    assert in_flight_for(backend) == 3 and in_flight_for(backend, 7) == 7
    with pytest.raises(CaiError, match="at least 1"):
        in_flight_for(backend, 0)
