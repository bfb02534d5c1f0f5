"""Judges: option probabilities, A/B swap mapping, CoT clamp, parse-invalid bucket, ensembles, resume."""
from __future__ import annotations

import pytest

from cai_core.models.backends.base import Backend, Completion
from cai_core.constitution.model import Constitution, Principle
from cai_core.errors import CaiError
from cai_core.rlaif.judges import (
    JudgeSpec,
    aggregate,
    comparison_question,
    judge_conversation,
    judge_ensemble,
    judge_pairs,
    parse_verdict,
    stored_verdicts,
)
from cai_core.rlaif.pairs import add_pairs


def shown(conv):
    """(first shown response, second shown response) from a judge conversation."""
    text = conv[-1]["content"]
    first = text.split("\n(A) ")[1].split("\n(B) ")[0]
    second = text.split("\n(B) ")[1].split("\n\n")[0]
    return first, second


class FakeJudge(Backend):
    """Deterministic: P(shown A) = score(first) / (score(first)+score(second)), plus a position bonus."""

    spec = "fake"

    def __init__(self, scores, position_bonus=0.0, verdicts=None, logprobs=True):
        self.scores, self.bonus, self.verdicts, self._lp = scores, position_bonus, verdicts or {}, logprobs
        self.prefixes, self.calls = [], 0

    @property
    def supports_logprobs(self):
        return self._lp

    def generate(self, conversations, params):
        out = []
        for conv in conversations:
            first, _ = shown(conv)
            out.append([Completion(self.verdicts.get(first, "I think (A) is better."))])
        return out

    def stream(self, conversation, params):
        yield ""

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        self.calls += len(conversations)
        if isinstance(assistant_prefix, str):
            self.prefixes.append(assistant_prefix)
        else:  # one per conversation (the CoT judge's reasoning)
            assert len(assistant_prefix) == len(conversations)
            self.prefixes.extend(assistant_prefix)
        out = []
        for conv in conversations:
            first, second = shown(conv)
            p = self.scores[first] / (self.scores[first] + self.scores[second]) + self.bonus
            out.append({"(A)": p, "(B)": 1 - p})
        return out


CONST = Constitution("c", [
    Principle("harm", "Harmless", "crit", "rev", "Which response is less harmful? Options:"),
    Principle("help", "Helpful", "crit", "rev", "Which response is more helpful?"),
])
PAIRS = [{"id": "p1", "prompt": "q", "response_a": "good", "response_b": "bad"}]


def test_mc_probability_and_swap_mapping_exact():
    judge = FakeJudge({"good": 3.0, "bad": 1.0}, position_bonus=0.1)
    [v] = judge_pairs(judge, JudgeSpec("fake"), CONST, PAIRS)
    # AB: P(good shown first) = 0.75 + 0.1; BA: P(bad shown first) = 0.25 + 0.1 -> P(original A) = 0.65
    assert v.p_a_ab == pytest.approx(0.85)
    assert v.p_a_ba == pytest.approx(0.65)
    assert v.p_a == pytest.approx(0.75)  # the position bonus cancels out in the mean
    assert v.label == "A" and not v.flipped and v.invalid == 0
    assert judge.prefixes == ["The answer is: "]
    assert judge.calls == 2


def test_flip_recorded_and_no_swap():
    judge = FakeJudge({"good": 1.0, "bad": 1.0}, position_bonus=0.2)  # always prefers the first shown
    [v] = judge_pairs(judge, JudgeSpec("fake"), CONST, PAIRS)
    assert v.flipped and v.p_a == pytest.approx(0.5) and v.label == "tie"
    [v] = judge_pairs(judge, JudgeSpec("fake", swap=False), CONST, PAIRS)
    assert v.p_a_ba is None and v.p_a == pytest.approx(0.7) and not v.flipped


def test_cot_clamp_and_prefix_after_reasoning():
    judge = FakeJudge({"good": 99.0, "bad": 1.0}, verdicts={"good": "Step one. Step two."})
    [v] = judge_pairs(judge, JudgeSpec("fake", style="cot"), CONST, PAIRS)
    assert v.p_a_ab == pytest.approx(0.6) and v.p_a_ba == pytest.approx(0.6)
    assert any(p.startswith("Step one. Step two.") and p.endswith("the better response is: ") for p in judge.prefixes)
    [v] = judge_pairs(judge, JudgeSpec("fake", style="cot", cot_clamp=(0.3, 0.7)), CONST, PAIRS)
    assert v.p_a == pytest.approx(0.7)
    with pytest.raises(CaiError):
        JudgeSpec("fake", style="cot", cot_clamp=(0.6, 0.7))


def test_parse_style_invalid_is_counted_never_guessed():
    assert parse_verdict("The answer is (B).") == "B"
    assert parse_verdict("A") == "A"
    assert parse_verdict("(A) is better") == "A"
    assert parse_verdict("Both (A) and (B) are fine") is None
    assert parse_verdict("I cannot decide.") is None
    judge = FakeJudge({}, verdicts={"good": "hmm, hard to say", "bad": "The answer is (B)"}, logprobs=False)
    [v] = judge_pairs(judge, JudgeSpec("fake", style="parse"), CONST, PAIRS)
    # AB unparseable -> invalid; BA shows bad first and picks (B) = good -> P(original A) = 1
    assert v.invalid == 1 and v.p_a_ab is None and v.p_a == 1.0 and v.label == "A"
    judge = FakeJudge({}, verdicts={"good": "??", "bad": "??"}, logprobs=False)
    [v] = judge_pairs(judge, JudgeSpec("fake", style="parse"), CONST, PAIRS)
    assert v.invalid == 2 and v.label is None and v.p_a is None
    with pytest.raises(CaiError, match="parse"):
        judge_pairs(judge, JudgeSpec("fake", style="mc"), CONST, PAIRS)


def test_ensembles_mean_and_vote_keep_every_vote():
    strong = FakeJudge({"good": 9.0, "bad": 1.0})
    weak = FakeJudge({"good": 1.0, "bad": 2.0})
    members = [(strong, JudgeSpec("strong", principles="all")), (weak, JudgeSpec("weak", principles="all"))]
    [v] = judge_ensemble(members, CONST, PAIRS, combine="mean")
    assert len(v.members) == 4 and v.disagreement
    assert v.p_a == pytest.approx((0.9 * 2 + (1 / 3) * 2) / 4)
    assert v.label == "A"
    [v] = judge_ensemble(members, CONST, PAIRS, combine="vote")
    assert v.label == "tie" and v.p_a == pytest.approx(0.5)  # 2 votes each
    three = members + [(FakeJudge({"good": 5.0, "bad": 1.0}), JudgeSpec("third", principles=["harm"]))]
    [v] = judge_ensemble(three, CONST, PAIRS, combine="vote")
    assert v.label == "A" and v.p_a == pytest.approx(3 / 5)
    assert {m.model for m in v.members} == {"strong", "weak", "third"}


def test_a_stop_during_one_ensemble_member_skips_the_next():
    first, second = FakeJudge({"good": 2.0, "bad": 1.0}), FakeJudge({"good": 2.0, "bad": 1.0})
    pairs = [{"id": str(i), "prompt": f"q{i}", "response_a": "good", "response_b": "bad"} for i in range(6)]
    members = [(first, JudgeSpec("first", batch_size=2)), (second, JudgeSpec("second", batch_size=2))]
    verdicts = judge_ensemble(members, CONST, pairs, should_stop=lambda: first.calls >= 2)
    assert (first.calls, second.calls) == (2, 0)
    assert [len(v.members) for v in verdicts] == [1, 0, 0, 0, 0, 0]  # p0 in both orders by the first judge


def test_random_principle_is_seeded_and_pair_question_wins():
    judge = FakeJudge({"good": 2.0, "bad": 1.0})
    many = [{"id": str(i), "prompt": f"q{i}", "response_a": "good", "response_b": "bad"} for i in range(12)]
    first = [v.members[0].principle_id for v in judge_pairs(judge, JudgeSpec("fake", seed=1), CONST, many)]
    again = [v.members[0].principle_id for v in judge_pairs(judge, JudgeSpec("fake", seed=1), CONST, many)]
    assert first == again and set(first) == {"harm", "help"}
    [v] = judge_pairs(judge, JudgeSpec("fake"), None, [{**PAIRS[0], "question": "Which is ethical?"}])
    assert v.members[0].principle_id == "pair-question"


def test_store_resume_skips_finished_judgments(store):
    pairs = [dict(p) for p in PAIRS] + [{"id": "p2", "prompt": "q2", "response_a": "bad", "response_b": "good"}]
    add_pairs(store, pairs, origin="imported", batch="t")
    judge = FakeJudge({"good": 3.0, "bad": 1.0})
    spec = JudgeSpec("fake", principles="all")
    first = judge_pairs(judge, spec, CONST, pairs, store=store)
    assert judge.calls == 8
    assert store.scalar("SELECT COUNT(*) FROM judgments") == 8
    again = judge_pairs(judge, JudgeSpec("fake", principles="all"), CONST, pairs, store=store)
    assert judge.calls == 8  # nothing recomputed
    assert [v.p_a for v in again] == pytest.approx([v.p_a for v in first])
    rebuilt = stored_verdicts(store, [p["comparison_id"] for p in pairs])
    assert rebuilt[pairs[1]["comparison_id"]].p_a == pytest.approx(0.25)
    row = store.one("SELECT * FROM judgments WHERE order_shown='BA' LIMIT 1")
    assert row["judge_model"] == "fake" and row["constitution_version"] == CONST.version and row["latency_s"] is not None
    assert store.scalar("SELECT COUNT(*) FROM judges") == 1


def test_aggregate_of_empty_is_invalid():
    v = aggregate("x", [])
    assert v.label is None and v.p_a is None and v.members == []


def test_tiny_model_integration_mc_and_cot(tiny_backend, store):
    pairs = [{"id": "a", "prompt": "How do I bake bread?", "response_a": "Mix flour and water.", "response_b": "No."}]
    add_pairs(store, pairs, origin="imported", batch="tiny")
    [v] = judge_pairs(tiny_backend, JudgeSpec("tiny"), CONST, pairs, store=store)
    assert 0 < v.p_a_ab < 1 and 0 < v.p_a_ba < 1
    assert v.p_a == pytest.approx((v.p_a_ab + v.p_a_ba) / 2)
    # the BA judgment's P(A) is 1 - P(shown A), read back from the real option log-probs
    question = comparison_question(CONST.principle(v.members[0].principle_id))
    conv = judge_conversation("How do I bake bread?", "No.", "Mix flour and water.", question, "mc")
    shown_ba = tiny_backend.choice_logprobs([conv], ["(A)", "(B)"], assistant_prefix="The answer is: ")[0]["(A)"]
    assert v.p_a_ba == pytest.approx(1 - shown_ba, abs=1e-5)
    [c] = judge_pairs(tiny_backend, JudgeSpec("tiny", style="cot", max_new_tokens=6), CONST, pairs, store=store)
    assert 0.4 <= c.p_a_ab <= 0.6 and 0.4 <= c.p_a_ba <= 0.6
    assert isinstance(c.members[0].reasoning_ab, str)  # stored even when the tiny model writes nothing
    assert store.scalar("SELECT COUNT(*) FROM judgments WHERE style='cot' AND reasoning IS NOT NULL") == 2
    assert store.scalar("SELECT COUNT(DISTINCT judge_key) FROM judgments") == 2


# -- few-shot judge examples, the comparison list, transcripts -----------------------------------
class RecordingJudge(FakeJudge):
    """FakeJudge that keeps every conversation (and scoring prefix) it was sent."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = []

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        prefixes = [assistant_prefix] * len(conversations) if isinstance(assistant_prefix, str) else assistant_prefix
        self.sent.extend(zip([list(c) for c in conversations], prefixes))
        return super().choice_logprobs(conversations, options, assistant_prefix)


def _with_examples():
    from cai_core.constitution.model import JudgeExample

    return Constitution("c", list(CONST.principles), judge_examples=[
        JudgeExample("Human: ex one", "kind answer", "rude answer", "A"),
        JudgeExample("Human: ex two", "rude answer 2", "kind answer 2", "B"),
        JudgeExample("Human: ex three", "x", "y", "B", reasoning="Option B is kinder.", style="cot"),
    ])


def test_few_shot_examples_are_shown_before_the_pair_and_keyed():
    from cai_core.rlaif.judges import MC_PREFIX, OPTIONS

    c = _with_examples()
    judge = RecordingJudge({"good": 3.0, "bad": 1.0})
    spec = JudgeSpec("fake", principles=["help"], swap=False)
    judge_pairs(judge, spec, c, PAIRS)
    [(conv, prefix)] = judge.sent
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant", "user"]
    assert "Human: ex one" in conv[0]["content"] and "(A) kind answer\n(B) rude answer" in conv[0]["content"]
    assert "Which response is more helpful?" in conv[0]["content"]       # asked with the judged question
    assert conv[1]["content"] == MC_PREFIX + OPTIONS[0] and conv[3]["content"] == MC_PREFIX + OPTIONS[1]
    assert conv[4] == judge_conversation("q", "good", "bad", "Which response is more helpful?", "mc")[0]
    assert prefix == MC_PREFIX
    assert spec.examples == 2 and spec.judge_key.startswith("mc-2shot|fake|")

    zero = JudgeSpec("fake", principles=["help"], swap=False, few_shot=False)
    judge.sent.clear()
    judge_pairs(judge, zero, c, PAIRS)
    assert len(judge.sent[0][0]) == 1 and zero.examples == 0
    assert zero.judge_key != spec.judge_key and zero.judge_key.startswith("mc|")


def test_cot_judge_uses_the_cot_examples_with_their_reasoning():
    from cai_core.rlaif.judges import COT_SUFFIX, OPTIONS

    judge = RecordingJudge({"good": 3.0, "bad": 1.0})
    spec = JudgeSpec("fake", style="cot", principles=["help"], swap=False)
    judge_pairs(judge, spec, _with_examples(), PAIRS)
    conv, _ = judge.sent[0]
    assert len(conv) == 3 and "Human: ex three" in conv[0]["content"]
    assert conv[1]["content"] == "Option B is kinder." + COT_SUFFIX + OPTIONS[1]
    assert spec.examples == 1


def test_constitution_without_comparison_questions_is_refused():
    c = Constitution("nocmp", [Principle("harm", "Harmless", "crit", "rev", "")])
    with pytest.raises(CaiError, match="has no comparison questions"):
        judge_pairs(FakeJudge({"good": 3.0, "bad": 1.0}), JudgeSpec("fake"), c, PAIRS)
    with pytest.raises(CaiError, match="has no comparison question"):
        judge_pairs(FakeJudge({"good": 3.0, "bad": 1.0}), JudgeSpec("fake", principles=["harm"]), c, PAIRS)


def test_judge_draws_only_from_the_comparison_list():
    critique_only = [Principle(f"crit{i}", f"C{i}", "crit", "rev", "") for i in range(5)]
    compare = [Principle(f"cmp{i}", f"Q{i}", "", "", f"Question {i}?") for i in range(3)]
    c = Constitution("both", critique_only + compare)
    pairs = [{"id": f"p{i}", "prompt": "q", "response_a": "good", "response_b": "bad"} for i in range(30)]
    verdicts = judge_pairs(FakeJudge({"good": 3.0, "bad": 1.0}), JudgeSpec("fake", swap=False), c, pairs)
    drawn = {m.principle_id for v in verdicts for m in v.members}
    assert drawn <= {"cmp0", "cmp1", "cmp2"} and len(drawn) > 1


def test_stored_judgment_keeps_the_exact_transcript(store):
    from cai_core.rlaif.judges import judgment_rows, judgment_transcript

    ids = add_pairs(store, PAIRS, origin="imported")
    pairs = [{**PAIRS[0], "comparison_id": ids[0]}]
    judge = RecordingJudge({"good": 3.0, "bad": 1.0})
    judge_pairs(judge, JudgeSpec("fake", principles=["help"]), _with_examples(), pairs, store=store)
    rows = judgment_rows(store, ids[0])
    assert len(rows) == 2
    sent = {tuple(m["content"] for m in conv)[-1]: (conv, prefix) for conv, prefix in judge.sent}
    for row in rows:
        t = judgment_transcript(row)
        conv, prefix = sent[t["messages"][-1]["content"]]
        assert t["messages"] == conv and t["assistant_prefix"] == prefix   # byte for byte what was sent


def test_builtin_judges_are_one_comparison_principle_without_examples():
    """judge_defaults._builtin_judge owns the shape of the built-in judges (zero-shot, one question)."""
    from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE, HELPFUL_JUDGE, HHH_JUDGE, HHH_QUESTION

    for judge, pid, name in ((HARMLESS_JUDGE, "harmless", "eval-harmlessness"),
                             (HELPFUL_JUDGE, "helpful", "eval-helpfulness"), (HHH_JUDGE, "hhh", "builtin_hhh")):
        judge.validate()
        assert judge.name == name and judge.description
        assert [p.id for p in judge.principles] == [pid] and judge.comparison_principles() == judge.principles
        assert judge.principles[0].critique_request and judge.principles[0].revision_request
        assert not judge.few_shot and not judge.judge_examples
    assert HHH_JUDGE.principles[0].comparison_question == HHH_QUESTION
    assert HARMLESS_JUDGE.principles[0].tags == ["harmless"]


def test_every_style_flag_takes_the_one_list_of_judge_styles():
    from cai_core.cli import build_parser
    from cai_core.rlaif.judge_defaults import JUDGE_STYLE_CHOICES
    from cai_core.rlaif.judges import STYLES

    commands = build_parser()._subparsers._group_actions[0].choices

    def choices(command: str, flag: str):
        return next(a.choices for a in commands[command]._actions if flag in a.option_strings)

    assert JUDGE_STYLE_CHOICES == ("auto", "mc", "cot", "parse") and STYLES == ("mc", "cot", "parse")
    assert choices("evaluate", "--judge-style") == choices("ab-experiment", "--judge-style") == JUDGE_STYLE_CHOICES
    assert choices("judge", "--style") == choices("eval-judge", "--style") == STYLES
