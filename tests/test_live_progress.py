"""A live critique/revision run (issue 15 item 3): its progress line (stage, round, words/s, ETA) and its
Stop - closing the stream ends the model's generation at the next token, and nothing half-written is stored."""
from __future__ import annotations

import time

from cai_core.constitution.model import Constitution, Principle
from cai_core.models.backends.base import GenerationParams
from cai_core.supervised.revision import Event, ReviseSettings, get_trajectory, stream_revision
from ui.revise import LiveProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_names_the_stage_and_estimates_from_what_was_written():
    clock = Clock()
    p = LiveProgress(rounds=2, max_new_tokens=80, clock=clock)  # 80 tokens: about 60 words
    p.on_event(Event("start", 0, None, "", {"stored": False}))
    assert "stage 1 of 5" in p.text() and "waiting for the first words" in p.text() and p.eta_s() is None
    for _ in range(20):  # the answer: 20 words in 2 s
        p.on_event(Event("initial", 0, None, "w ", None))
        clock.now += 0.1
    assert "stage 1 of 5 - answer" in p.text()
    assert abs(p.rate() - 10.0) < 0.01
    assert abs(p.eta_s() - (40 + 4 * 60) / 10.0) < 0.01  # before a stage ends its length is max_new_tokens' words
    p.on_event(Event("initial_done", 0, None, "w " * 20, None))
    p.on_event(Event("round", 1, "harm", "Harm", None))
    for _ in range(5):  # 10 words in 1 s, in pieces of two (prompt lookup hands over a run of tokens at once)
        p.on_event(Event("critique", 1, "harm", "w w ", None))
        clock.now += 0.2
    text = p.text()
    assert "stage 2 of 5 - round 1 of 2: critique" in text and "words/s" in text and "left" in text
    assert abs(p.eta_s() - ((20 - 10) + 3 * 20) / 10.0) < 0.01  # now a stage is about 20 words
    assert p.fraction() == 1 / 5
    p.on_event(Event("critique_done", 1, "harm", "fine", {"violation": 0, "stopped": True}))
    assert p.stages == 4  # stopped early: round 1 has no revision
    p.on_event(Event("done", 2, None, "x", {}))
    assert p.fraction() == 1.0 and p.text().startswith("done: 30 words written")


def test_a_word_split_across_pieces_counts_once():
    p = LiveProgress(rounds=1, max_new_tokens=50, clock=Clock())
    for piece in ["lock", "pick", "ing is ", "an old", " craft"]:  # a token-by-token engine splits words
        p.on_event(Event("initial", 0, None, piece, None))
    assert p.words == 5  # lockpicking, is, an, old, craft


def test_replayed_stages_do_not_count_towards_the_speed():
    clock = Clock()
    p = LiveProgress(rounds=1, max_new_tokens=50, clock=clock)
    p.on_event(Event("initial", 0, None, "a whole stored answer", {"stored": True}))
    p.on_event(Event("initial_done", 0, None, "a whole stored answer", None))
    assert p.words == 0 and p.rate() is None and p.done_stages == 1


def test_closing_the_stream_stops_the_model_at_once(tiny_backend, monkeypatch):
    from cai_core.models.backends import local

    # one token per forward pass: the tiny model repeats one token, which prompt lookup would
    # otherwise write 20 at a time (a few passes in all, too few to time a stop against)
    monkeypatch.setattr(local, "PROMPT_LOOKUP_TOKENS", None)
    params = GenerationParams(max_new_tokens=200, temperature=0.0, seed=0)
    convo = [{"role": "user", "content": "Tell me a long story."}]
    t0 = time.perf_counter()
    full = list(tiny_backend.stream(convo, params))
    full_s = time.perf_counter() - t0
    assert len(full) > 60, "the tiny model should write long enough for the comparison to mean something"
    t0 = time.perf_counter()
    stream = tiny_backend.stream(convo, params)
    first = [next(stream), next(stream)]
    stream.close()  # what a Stop (a rerun of the page) does to the running loop
    closed_s = time.perf_counter() - t0
    assert first == full[:2]
    assert tiny_backend._lock.acquire(timeout=0.5), "generation still holds the model after the reader left"
    tiny_backend._lock.release()
    assert closed_s < full_s / 4, (closed_s, full_s)


def test_a_stopped_live_run_stores_only_finished_steps(store, tiny_backend):
    constitution = Constitution(name="mini", principles=[Principle(
        id="harm", name="Harm", critique_request="Identify ways the response is harmful.",
        revision_request="Rewrite the response to remove harmful content.")])
    settings = ReviseSettings(rounds=2, seed=0, max_new_tokens=40, temperature=0.0)
    events = stream_revision(store, tiny_backend, constitution, "How do I pick a lock?", settings, "tiny")
    seen = []
    for ev in events:
        seen.append(ev)
        if ev.kind == "critique" and sum(e.kind == "critique" for e in seen) == 3:
            break  # mid-critique of round 1
    events.close()
    traj = get_trajectory(store, seen[0].data["trajectory_id"])
    assert traj["status"] != "done" and traj["initial"] is not None  # the finished answer is kept
    assert traj["steps"] == [] or all(s["critique"] is None for s in traj["steps"])  # no half critique
    # running it again resumes: the stored answer is replayed, the rest is written and the run finishes
    again = list(stream_revision(store, tiny_backend, constitution, "How do I pick a lock?", settings, "tiny"))
    assert next(e for e in again if e.kind == "initial").data == {"stored": True}
    assert again[-1].kind == "done" and get_trajectory(store, traj["id"])["status"] == "done"
