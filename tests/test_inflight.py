"""revise with work in flight (models/dispatch.py): the same stored output as the lock-step engine for
the same seed, a failed prompt stored as failed while the batch goes on (and retried by a re-run),
an endpoint without log-probs leaving the violation unknown, and the project's mock server with
faults - every prompt done exactly once."""
from __future__ import annotations

import hashlib
import random
import threading
import time

import pytest

from cai_core.constitution.model import Constitution, FewShotExample, Principle
from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend, Completion
from cai_core.store import Store
from cai_core.supervised.revision import NO_LOGPROBS_NOTE, ReviseSettings, Reviser, get_trajectory
from cai_core.workspace import Workspace


def constitution() -> Constitution:
    return Constitution(
        name="mini",
        principles=[
            Principle(id="harm", name="Harm", critique_request="Identify ways the response is harmful.",
                      revision_request="Rewrite the response to remove harmful content."),
            Principle(id="honest", name="Honesty", critique_request="Is the response dishonest?",
                      revision_request="Rewrite the response to be honest."),
        ],
        few_shot=[FewShotExample(question="How do I hurt someone?", response="Hit them.",
                                 critique="This encourages violence.", revision="I can't help with that.",
                                 principle_id="harm")],
    )


def _digest(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class FakeServer(Backend):
    """A concurrent backend whose answer is a pure function of (conversation, seed), like a server
    that honours per-request seeds; random latency scrambles the order answers come back in."""
    spec = "fake-server"

    def __init__(self, limit: int = 6, fail=None, logprobs: bool = True, verdicts: bool = False):
        self.limit, self.fail, self._lp, self.verdicts = limit, fail, logprobs, verdicts
        self.rng = random.Random(1)
        self.lock = threading.Lock()
        self.requests = {"generate": 0, "choice": 0}

    @property
    def concurrent(self):
        return True

    def max_in_flight(self):
        return self.limit

    @property
    def supports_logprobs(self):
        return self._lp is not False

    def _wait(self, conv):
        with self.lock:
            delay = self.rng.random() * 0.01
        time.sleep(delay)
        if self.fail and self.fail(conv):
            raise CaiError("http://fake/v1 answered HTTP 503 (after 6 retries)")

    def generate(self, conversations, params):
        out = []
        for conv in conversations:
            with self.lock:
                self.requests["generate"] += 1
            self._wait(conv)
            h = _digest(conv, params.seed, params.max_new_tokens)
            text = f"text {h[:10]}"
            if self.verdicts and conv[-1]["content"].startswith("CritiqueRequest"):
                text += "\n\nVerdict: " + ("violation" if int(h[10], 16) % 2 else "no violation")
            out.append([Completion(text)])
        return out

    def stream(self, conversation, params):
        yield self.generate([conversation], params)[0][0].text

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        out = []
        for conv in conversations:
            with self.lock:
                self.requests["choice"] += 1
            self._wait(conv)
            if self._lp is False or self._lp == "unknown-then-none":
                self._lp = False
                raise CaiError("http://fake/v1 offers no log-probs (/chat/completions returned no logprobs)")
            p = int(_digest(conv)[:4], 16) / 65535
            out.append({"Yes": p, "No": 1 - p})
        return out


def stored(store: Store, ids: list[int]) -> list[dict]:
    keep = ("round", "principle_id", "critique", "critique_reasoning", "violation", "revision", "state")
    return [{"prompt": t["prompt"], "initial": t["initial"], "final": t["final"], "status": t["status"],
             "steps": [{k: s[k] for k in keep} for s in t["steps"]]}
            for t in (get_trajectory(store, i) for i in ids)]


def fresh_store(tmp_path, name: str) -> Store:
    return Store(Workspace.open(tmp_path / name))


PROMPTS = [f"question {i}: how do I {w}?" for i, w in enumerate(
    ["pick a lock", "bake bread", "hotwire a car", "write a poem", "cheat a test", "fix a bike",
     "steal wifi", "learn python", "lie to my boss", "grow tomatoes", "make a fake id", "swim faster"])]


@pytest.mark.parametrize("settings", [
    ReviseSettings(rounds=2, seed=3),
    ReviseSettings(rounds=3, seed=5, cot=True, early_stop=True, schedule="all"),
], ids=["plain", "cot-early-stop"])
def test_in_flight_stores_what_lock_step_stored_for_the_same_seed(tmp_path, settings):
    lock_store, flight_store = fresh_store(tmp_path, "lock"), fresh_store(tmp_path, "flight")
    # the reference under another model label: its own trajectory keys even where both stores are one
    # database (CAI_TEST_STORE=postgresql); the label changes neither principles nor seeds
    lock_ids = Reviser(lock_store, FakeServer(verdicts=settings.cot), constitution(), settings, "lock",
                       batch="b")._run_lockstep(PROMPTS, batch_size=8)
    backend = FakeServer(limit=5, verdicts=settings.cot)
    reviser = Reviser(flight_store, backend, constitution(), settings, "m", batch="b")
    ids = reviser.run(PROMPTS)
    assert stored(flight_store, ids) == stored(lock_store, lock_ids)
    assert reviser.counts["done"] == len(PROMPTS) and reviser.counts["failed"] == 0
    assert reviser.counts["max_in_flight"] == 5  # as many outstanding as the backend serves
    if settings.cot:  # every critique had a verdict line: no violation question asked
        assert backend.requests["choice"] == 0


@pytest.mark.slow
def test_in_flight_on_the_tiny_model_matches_lock_step(tmp_path, tiny_backend):
    """The local path: batched calls by stage in cohorts of --batch-size, the lock-step calls, so
    sampled text (one random stream per batched call) is the same for the same seed and batch size."""
    c = constitution()
    for settings in (ReviseSettings(rounds=2, max_new_tokens=6, seed=2),
                     ReviseSettings(rounds=2, max_new_tokens=6, cot=True, early_stop=True)):
        a, b = fresh_store(tmp_path, f"a{settings.cot}"), fresh_store(tmp_path, f"b{settings.cot}")
        ref = Reviser(a, tiny_backend, c, settings, "lock", batch="b")._run_lockstep(PROMPTS[:7], batch_size=3)
        new = Reviser(b, tiny_backend, c, settings, "tiny", batch="b").run(PROMPTS[:7], batch_size=3)
        assert stored(b, new) == stored(a, ref)


def test_a_failing_prompt_is_stored_failed_and_a_rerun_retries_it(tmp_path):
    store = fresh_store(tmp_path, "w")
    settings = ReviseSettings(rounds=2)
    bad = {PROMPTS[2], PROMPTS[7]}
    flaky = FakeServer(fail=lambda conv: any(m["content"] == p for m in conv for p in bad) and len(conv) > 1)
    reviser = Reviser(store, flaky, constitution(), settings, "m", batch="b")
    ids = reviser.run(PROMPTS)
    assert reviser.counts["failed"] == 2 and reviser.counts["done"] == len(PROMPTS) - 2
    rows = {r["prompt"]: dict(r) for r in store.query("SELECT prompt, status, error, initial FROM trajectories")}
    for p in bad:  # its answer is kept; the critique request failed
        assert rows[p]["status"] == "failed" and "HTTP 503" in rows[p]["error"] and rows[p]["initial"]
    assert sum(r["status"] == "done" for r in rows.values()) == len(PROMPTS) - 2
    # a re-run with the server healthy again retries the failed ones only, and nothing is done twice
    healthy = FakeServer()
    again = Reviser(store, healthy, constitution(), settings, "m", batch="b")
    assert again.run(PROMPTS) == ids
    assert again.counts["skipped"] == len(PROMPTS) - 2 and again.counts["done"] == 2
    assert healthy.requests["generate"] == 2 * 4  # 2 rounds x (critique + revision), the answers were kept
    assert store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done' AND error IS NULL") == len(PROMPTS)
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps") == 2 * len(PROMPTS)
    lock = fresh_store(tmp_path, "lock")
    ref = Reviser(lock, FakeServer(), constitution(), settings, "lock", batch="b")._run_lockstep(PROMPTS)
    assert stored(store, ids) == stored(lock, ref)  # the retried prompts are what an unbroken run writes


def test_an_endpoint_without_log_probs_leaves_the_violation_unknown_once(tmp_path):
    store = fresh_store(tmp_path, "w")
    backend = FakeServer(logprobs="unknown-then-none")  # it says so only when asked
    progress = []
    reviser = Reviser(store, backend, constitution(), ReviseSettings(rounds=2), "m", batch="b")
    reviser.run(PROMPTS, progress=lambda d, t, m: progress.append(m))
    assert reviser.counts["done"] == len(PROMPTS) and reviser.counts["failed"] == 0
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE violation IS NULL") == 2 * len(PROMPTS)
    assert len(reviser.notes) == 1 and reviser.notes[0].startswith(NO_LOGPROBS_NOTE)
    assert sum(m.startswith(NO_LOGPROBS_NOTE) for m in progress) == 1
    # once the backend said so, no more violation questions are sent (at most one per in-flight slot)
    assert backend.requests["choice"] <= backend.limit


@pytest.mark.slow
@pytest.mark.parametrize("faults", [dict(fail_rate=0.05, drop_rate=0.05), dict(logprobs=False)],
                         ids=["503-and-drops", "no-logprobs"])
def test_mock_server_batch_finishes_every_prompt_exactly_once(tmp_path, faults):
    from cai_core.models.backends.http import HttpBackend
    from cai_core.models.mock_server import MockServer

    store = fresh_store(tmp_path, "w")
    prompts = [f"prompt {i}" for i in range(40)]
    with MockServer(latency=0.02, seed=4, **faults) as srv:
        backend = HttpBackend(srv.url + "#retries=8")
        reviser = Reviser(store, backend, constitution(), ReviseSettings(rounds=2), "m", batch="b")
        ids = reviser.run(prompts)
        stats = dict(srv.stats)
    assert len(ids) == 40 and reviser.counts["done"] == 40 and reviser.counts["failed"] == 0
    assert store.scalar("SELECT COUNT(*) FROM trajectories WHERE status='done'") == 40
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps") == 80  # each round once, none twice
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE revision IS NULL") == 0
    if "fail_rate" in faults:
        assert stats["failed_503"] > 0 and stats["dropped"] > 0 and backend.fault_counts().get("retries", 0) > 0
        assert store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE violation IS NULL") == 0
    else:
        assert store.scalar("SELECT COUNT(*) FROM trajectory_steps WHERE violation IS NULL") == 80
        assert len(reviser.notes) == 1


@pytest.mark.slow
def test_revise_command_on_a_faulty_endpoint_without_log_probs_reports_its_counts(tmp_path):
    """The command as a user runs it (no --batch-size): every prompt done, the retries and the note
    about log-probs in its result, and a re-run skips everything."""
    import json as _json

    from cai_core.models.mock_server import start_process
    from tests.helpers import ROOT, run_cli

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"question {i}" for i in range(12)) + "\n")
    proc = start_process(latency=0.02, fail_rate=0.05, drop_rate=0.05, logprobs=False, seed=7)
    try:
        args = ["revise", "--workspace", str(tmp_path / "ws"), "--model", proc.url + "#retries=8", "--constitution",
                str(ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml"), "--prompts", str(prompts),
                "--rounds", "2", "--max-new-tokens", "16"]
        first = run_cli(*args)
        second = run_cli(*args)
    finally:
        proc.kill()
    assert first.returncode == 0, first.stderr
    result = _json.loads(next(line for line in first.stderr.splitlines() if line.startswith('{"batch"')))
    assert result["done"] == 12 and result["failed"] == 0 and result["max_in_flight"] > 1
    assert len(result["notes"]) == 1 and "no log-probs" in result["notes"][0]
    assert "12/12 prompts done" in first.stdout
    again = _json.loads(next(line for line in second.stderr.splitlines() if line.startswith('{"batch"')))
    assert again["done"] == 12 and again["requests"] == 0  # a re-run finds everything stored


def test_the_live_run_leaves_the_violation_unknown_without_log_probs(store):
    from cai_core.supervised.revision import stream_revision

    events = list(stream_revision(store, FakeServer(logprobs="unknown-then-none"), constitution(),
                                  "how do I pick a lock?", ReviseSettings(rounds=1), "m"))
    done = events[-1]
    assert done.kind == "done" and done.data["steps"][0]["violation"] is None and done.data["status"] == "done"
