"""judge, pairs sample and evaluate's answers in flight (models/dispatch.py): the same judgments as
one batched call per cohort, as many requests outstanding as the server serves, a failed judgment
stored as an error and judged again by a re-run, and the mock server with faults."""
from __future__ import annotations

import threading
import time

import pytest

from cai_core.constitution.model import Constitution, Principle
from cai_core.errors import CaiError
from cai_core.evaluation.answers import generate_answers
from cai_core.evaluation.policies import Policy
from cai_core.models.backends.base import Backend, Completion, GenerationParams
from cai_core.rlaif.judges import JudgeSpec, judge_pairs, stored_verdicts
from cai_core.rlaif.pairs import add_pairs, sample_pairs


def constitution() -> Constitution:
    return Constitution(name="j", principles=[
        Principle(id="harm", name="Harm", critique_request="c", revision_request="r",
                  comparison_question="Which response is less harmful?"),
        Principle(id="help", name="Help", critique_request="c", revision_request="r",
                  comparison_question="Which response is more helpful?")])


class Server(Backend):
    """Concurrent; P(shown A) from the shown texts' lengths; counts requests at once."""
    spec = "server"

    def __init__(self, limit=4, fail=lambda conv: False, logprobs=True):
        self.limit, self.fail, self._lp = limit, fail, logprobs
        self.lock = threading.Lock()
        self.now = self.peak = self.requests = 0

    @property
    def concurrent(self):
        return True

    def max_in_flight(self):
        return self.limit

    @property
    def supports_logprobs(self):
        return self._lp is not False

    def _enter(self, conv):
        with self.lock:
            self.now += 1
            self.requests += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.005)
        with self.lock:
            self.now -= 1
        if self.fail(conv):
            raise CaiError("http://fake/v1 answered HTTP 503 (after 6 retries)")

    def generate(self, conversations, params):
        out = []
        for c in conversations:
            self._enter(c)
            out.append([Completion(f"sample {params.seed} {j} of {c[-1]['content'][-12:]}") for j in range(params.n)])
        return out

    def stream(self, conversation, params):
        yield ""

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        out = []
        for c in conversations:
            self._enter(c)
            if self._lp == "none-when-asked":
                self._lp = False
            if self._lp is False:
                raise CaiError("http://fake/v1 offers no log-probs")
            text = c[-1]["content"]
            p = (len(text) % 7 + 1) / 9
            out.append({options[0]: p, options[1]: 1 - p})
        return out


def _pairs(store, n=10):
    pairs = [{"id": f"p{i}", "prompt": f"question {i}", "response_a": "yes " * (i + 1), "response_b": "no " * (7 - i % 5)}
             for i in range(n)]
    add_pairs(store, pairs, origin="imported", batch="b")
    return pairs


def _p(verdicts):
    return [(v.id, round(v.p_a, 9) if v.p_a is not None else None, v.invalid) for v in verdicts]


@pytest.mark.parametrize("style", ["mc", "cot", "parse"])
def test_judging_in_flight_matches_judging_in_batched_calls(store, style):
    pairs = _pairs(store)
    server = Server(limit=5)
    flight = judge_pairs(server, JudgeSpec("m", style=style, principles="all"), constitution(), pairs)
    batched = type("Local", (Server,), {"concurrent": property(lambda self: False)})(limit=5)
    local = judge_pairs(batched, JudgeSpec("m", style=style, principles="all"), constitution(), pairs)
    assert _p(flight) == _p(local) and len(flight) == 10
    assert server.peak == 5 and batched.peak == 1  # the server kept at its concurrency; local: one batched call at a time


def test_a_failed_judgment_is_stored_as_error_and_judged_again(store):
    pairs = _pairs(store, 6)
    bad = "question 2"
    flaky = Server(fail=lambda conv: bad in conv[-1]["content"])
    counts = {}
    verdicts = judge_pairs(flaky, JudgeSpec("m", style="mc"), constitution(), pairs, store=store, counts_out=counts)
    assert counts["failed"] == 2 and counts["done"] == 10  # both orders of pair 2 failed; the rest went on
    errors = store.query("SELECT raw_output FROM judgments WHERE parse_status='error'")
    assert len(errors) == 2 and all("HTTP 503" in r["raw_output"] for r in errors)
    assert [v.p_a is None for v in verdicts] == [i == 2 for i in range(6)]
    healthy = Server()
    again = {}
    judge_pairs(healthy, JudgeSpec("m", style="mc"), constitution(), pairs, store=store, counts_out=again)
    assert again == {"done": 2, "failed": 0, "skipped": 10, "total": 12} and healthy.requests == 2
    assert store.scalar("SELECT COUNT(*) FROM judgments") == 12
    assert store.scalar("SELECT COUNT(*) FROM judgments WHERE parse_status='error'") == 0
    assert stored_verdicts(store, [pairs[2]["comparison_id"]])[pairs[2]["comparison_id"]].p_a is not None


def test_an_mc_judge_on_an_endpoint_without_log_probs_stops_with_a_clear_error(store):
    pairs = _pairs(store, 4)
    with pytest.raises(CaiError, match="parse style"):
        judge_pairs(Server(logprobs="none-when-asked"), JudgeSpec("m", style="mc"), constitution(), pairs, store=store)
    assert store.scalar("SELECT COUNT(*) FROM judgments") == 0  # nothing half-stored


def test_pairs_sample_and_answers_in_flight(store):
    server = Server(limit=6)
    prompts = [{"text": f"prompt {i}"} for i in range(9)]
    out = sample_pairs(store, server, "m", prompts, batch="s", k=3)
    assert out["pairs_added"] == 27 and out["counts"] == {"total": 9, "done": 9, "failed": 0, "skipped": 0}
    assert server.peak == 2  # 2 prompts of 3 samples each fill the 6 slots
    again = sample_pairs(store, server, "m", prompts, batch="s", k=3)
    assert again["counts"]["skipped"] == 9 and again["pairs_added"] == 0
    flaky = Server(limit=6, fail=lambda conv: conv[-1]["content"] == "prompt 4")
    errors: list[str] = []
    answers = generate_answers(store, Policy("p", "m", "endpoint"), [p["text"] for p in prompts], GenerationParams(seed=1),
                               backend=flaky, errors=errors)
    assert [a is None for a in answers] == [i == 4 for i in range(9)] and len(errors) == 1
    assert generate_answers(store, Policy("p", "m", "endpoint"), [p["text"] for p in prompts], GenerationParams(seed=1),
                            backend=Server())[4] is not None  # a re-run answers only the missing one


@pytest.mark.slow
def test_judge_against_the_mock_server_with_faults_judges_every_pair_once(store):
    from cai_core.models.backends.http import HttpBackend
    from cai_core.models.mock_server import MockServer

    pairs = _pairs(store, 20)
    with MockServer(latency=0.02, fail_rate=0.05, drop_rate=0.05, seed=3) as srv:
        backend = HttpBackend(srv.url + "#retries=8")
        counts = {}
        verdicts = judge_pairs(backend, JudgeSpec("mock", style="mc"), constitution(), pairs, store=store,
                               counts_out=counts)
        stats = dict(srv.stats)
    assert counts["done"] == 40 and counts["failed"] == 0 and all(v.p_a is not None for v in verdicts)
    assert store.scalar("SELECT COUNT(*) FROM judgments") == 40
    assert stats["failed_503"] + stats["dropped"] > 0
