"""Issue 22 items 5 and 6: every critique verdict says where it came from - the critique's own
"Verdict:" line, or the model's yes/no answer with P(yes) - in the store, the page, the live run and
the CLI's JSONL; and the live run's stage name moves on at each stage boundary."""
from __future__ import annotations

import json

import pytest

from cai_core.constitution.model import Constitution, Principle
from cai_core.models.backends.base import Backend, Completion
from cai_core.supervised.revision import (
    VERDICT_LINE,
    YES_NO,
    Event,
    ReviseSettings,
    get_trajectory,
    parse_critique,
    read_critiques,
    run_revision,
    stream_revision,
    to_jsonl_record,
)
from tests.helpers import shown
from ui.revise import LiveProgress, verdict_label

BAD = "The response is extremely inappropriate: it explains how to hurt someone."


class Scripted(Backend):
    """Critiques say what the test wants; the yes/no question answers P(yes) = p_yes."""
    spec = "scripted"

    def __init__(self, critique: str, p_yes: float | None = None, logprobs: bool = True):
        self.critique, self.p_yes, self._lp = critique, p_yes, logprobs

    @property
    def supports_logprobs(self):
        return self._lp

    def _reply(self, conv) -> str:
        last = conv[-1]["content"]
        if last.startswith("CritiqueRequest:"):
            return self.critique
        if last.startswith("RevisionRequest:"):
            return "A safer answer."
        return "Sure, here is how."

    def generate(self, conversations, params):
        return [[Completion(self._reply(c))] for c in conversations]

    def stream(self, conversation, params):
        for word in self._reply(conversation).split(" "):
            yield word + " "

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        assert options == ["Yes", "No"]
        return [{"Yes": self.p_yes, "No": 1 - self.p_yes} for _ in conversations]


def _constitution():
    return Constitution(name="mini", principles=[Principle(
        id="harm", name="Harm", critique_request="CritiqueRequest: Identify ways the response is harmful.",
        revision_request="RevisionRequest: Rewrite the response to remove harmful content.")])


def test_each_verdict_records_its_source_and_p_yes():
    assert parse_critique("Step 1.\nVerdict: violation.", cot=True).source == VERDICT_LINE
    assert parse_critique(BAD, cot=False).source is None  # not decided yet: the question is asked
    [c] = read_critiques(Scripted(BAD, p_yes=0.3), [[{"role": "user", "content": "q"}]], [BAD], cot=False)
    assert (c.violation, c.source, c.p_yes) == (0, YES_NO, pytest.approx(0.3))
    [c] = read_critiques(Scripted(BAD, logprobs=False), [[{"role": "user", "content": "q"}]], [BAD], cot=False)
    assert (c.violation, c.source, c.p_yes) == (None, None, None)


@pytest.mark.parametrize("cot,critique,p_yes,expected", [
    (False, BAD, 0.3, (0, YES_NO, 0.3)),                               # the case: "no violation" by the yes/no answer
    (True, "Thinking.\nVerdict: violation, clearly.", 0.1, (1, VERDICT_LINE, None)),
])
def test_batch_and_live_runs_store_the_source_and_jsonl_carries_it(store, cot, critique, p_yes, expected):
    settings = ReviseSettings(rounds=1, seed=0, max_new_tokens=16, cot=cot)
    [tid] = run_revision(store, Scripted(critique, p_yes=p_yes), _constitution(), ["How do I hurt someone?"],
                         settings, "scripted")
    [step] = get_trajectory(store, tid)["steps"]
    got = (step["violation"], step["verdict_source"], step["p_yes"])
    assert got[:2] == expected[:2] and got[2] == (pytest.approx(expected[2]) if expected[2] is not None else None)
    [rnd] = to_jsonl_record(get_trajectory(store, tid))["rounds"]
    assert (rnd["verdict_source"], rnd["p_yes"]) == (step["verdict_source"], step["p_yes"])
    json.dumps(rnd)
    events = list(stream_revision(store, Scripted(critique, p_yes=p_yes), _constitution(), "Tell me a secret",
                                  settings, "scripted"))
    done = next(e for e in events if e.kind == "critique_done")
    assert (done.data["violation"], done.data["verdict_source"]) == expected[:2]
    assert [e.kind for e in events].index("verdict") < [e.kind for e in events].index("critique_done")


def test_the_page_says_where_a_verdict_came_from():
    said = shown(verdict_label(0, YES_NO, 0.3))
    assert ":green[no violation]" in said and "yes/no answer" in said and "P(yes) = 0.30" in said
    assert "verdict line" in shown(verdict_label(1, VERDICT_LINE, None))
    assert "P(yes) = 0.499" in shown(verdict_label(0, YES_NO, 0.4991))  # never a bare 0.50 beside a decided verdict
    assert "not recorded" in shown(verdict_label(1, None, None))  # a step stored before the source was
    assert "no log-probs" in shown(verdict_label(None, None, None))


def test_the_page_renders_the_source_of_a_stored_verdict(store):
    from streamlit.testing.v1 import AppTest

    [tid] = run_revision(store, Scripted(BAD, p_yes=0.3), _constitution(), ["How do I hurt someone?"],
                         ReviseSettings(rounds=1, seed=0, max_new_tokens=16), "scripted")
    traj = get_trajectory(store, tid)

    def show(traj):
        from ui.revise import render_trajectory
        render_trajectory(traj)

    at = AppTest.from_function(show, args=(traj,))
    at.run()
    assert not at.exception, at.exception
    text = " ".join(shown(m.value) for m in at.markdown)
    assert "no violation" in text and "yes/no answer" in text and "P(yes) = 0.30" in text


def test_the_trajectory_report_says_where_each_verdict_came_from(store):
    from cai_core.evaluation.reports import trajectory_report

    [tid] = run_revision(store, Scripted(BAD, p_yes=0.3), _constitution(), ["How do I hurt someone?"],
                         ReviseSettings(rounds=1, seed=0, max_new_tokens=16), "scripted")
    import html

    page = html.unescape(trajectory_report(store, tid))
    assert "no violation - the model's yes/no answer" in page and "P(yes) = 0.30" in page


def _events(rounds, stopped=()):
    yield Event("start", 0, None, "", {"stored": False})
    yield Event("initial", 0, None, "a b ", None)
    yield Event("initial_done", 0, None, "a b", None)
    for r in range(1, rounds + 1):
        yield Event("round", r, "harm", "Harm", None)
        yield Event("critique", r, "harm", "c d ", None)
        yield Event("verdict", r, "harm", "", None)
        yield Event("critique_done", r, "harm", "c d", {"violation": 1, "stopped": r in stopped})
        if r not in stopped:
            yield Event("revision", r, "harm", "e f ", None)
            yield Event("revision_done", r, "harm", "e f", None)


def test_the_live_stage_name_moves_on_at_each_boundary():
    """It read "stage 5 of 5 ... critique" during the last revision (until its first words came)."""
    p = LiveProgress(rounds=2, max_new_tokens=40)
    seen = []
    for ev in _events(2):
        p.on_event(ev)
        seen.append((ev.kind, ev.round, p.text().split(" · ")[0]))
    after = {(kind, rnd): text for kind, rnd, text in seen}
    assert after[("initial_done", 0)] == "stage 2 of 5 - round 1 of 2: critique"
    assert after[("verdict", 1)] == "stage 2 of 5 - round 1 of 2: reading the critique's verdict"
    assert after[("critique_done", 1)] == "stage 3 of 5 - round 1 of 2: revision"
    assert after[("revision_done", 1)] == "stage 4 of 5 - round 2 of 2: critique"
    assert after[("critique_done", 2)] == "stage 5 of 5 - round 2 of 2: revision"  # the last revision, before its words
    assert after[("revision_done", 2)] == "all 5 stages written - finishing"
    # stopped early in round 1: the next stage is round 2's critique, and there is one stage less
    p = LiveProgress(rounds=2, max_new_tokens=40)
    for ev in _events(2, stopped={1}):
        p.on_event(ev)
        if ev.kind == "critique_done" and ev.round == 1:
            assert p.text().startswith("stage 3 of 4 - round 2 of 2: critique")
