"""The critique -> revision engine on the tiny model: schedules, seeding, CoT parsing, early stop,
per-step store writes, and resume after kill -9 without duplicates."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from cai_core.models.backends.base import Backend, Completion
from cai_core.constitution.model import Constitution, FewShotExample, Principle
from cai_core.errors import CaiError
from cai_core.supervised.refusals import is_refusal, refusal_introduced
from cai_core.supervised.revision import (
    ReviseSettings,
    critique_conversation,
    get_trajectory,
    list_trajectories,
    VIOLATION_QUESTION,
    parse_critique,
    plan_principles,
    read_critiques,
    read_verdict,
    step_transcripts,
    principle_stats,
    revision_conversation,
    run_revision,
    stream_revision,
    trajectory_filter,
    trajectory_key,
)

from tests.helpers import ROOT


def constitution(few_shot: bool = False) -> Constitution:
    return Constitution(
        name="mini",
        principles=[
            Principle(id="harm", name="Harm", critique_request="Identify ways the response is harmful.",
                      revision_request="Rewrite the response to remove harmful content."),
            Principle(id="honest", name="Honesty", critique_request="Is the response dishonest?",
                      revision_request="Rewrite the response to be honest."),
            Principle(id="tpl", name="Template", critique_request="Q: {question}\nA: {response}\nIs A harmful?",
                      revision_request="Rewrite {response} following: {critique}"),
            Principle(id="off", name="Disabled", critique_request="x", revision_request="y", enabled=False),
        ],
        few_shot=[FewShotExample(question="How do I hurt someone?", response="Hit them.",
                                 critique="This encourages violence.", revision="I can't help with hurting people.",
                                 principle_id="harm")] if few_shot else [],
    )


class Scripted(Backend):
    """A backend whose critiques say whatever the test wants (the engine's logic, no model)."""
    spec = "scripted"

    def __init__(self, critique: str, p_yes: float | None = None, logprobs: bool = True):
        self.critique, self.p_yes, self._lp = critique, p_yes, logprobs
        self.calls: list[int] = []
        self.questions: list[list[dict]] = []

    @property
    def supports_logprobs(self):
        return self._lp

    def _reply(self, conv) -> str:
        last = conv[-1]["content"]
        if last.startswith("CritiqueRequest:") or "Is A harmful" in last:
            return self.critique
        if last.startswith("RevisionRequest:") or last.startswith("Rewrite"):
            return "I can't help with that. Here is a safer answer."
        return "Sure, here is how."

    def generate(self, conversations, params):
        self.calls.append(len(conversations))
        return [[Completion(self._reply(c))] for c in conversations]

    def stream(self, conversation, params):
        for word in self._reply(conversation).split(" "):
            yield word + " "

    def choice_logprobs(self, conversations, options, assistant_prefix=""):
        assert options == ["Yes", "No"] and self.p_yes is not None, "only the violation question is scored"
        self.questions.extend(conversations)
        return [{"Yes": self.p_yes, "No": 1 - self.p_yes} for _ in conversations]


def test_schedules_and_seeding():
    c = constitution()
    plan = plan_principles(c, ReviseSettings(rounds=6), "p")
    assert len(plan) == 6 and set(plan) <= {"harm", "honest", "tpl"}  # disabled never drawn
    assert plan == plan_principles(c, ReviseSettings(rounds=6), "p")  # seeded: reproducible
    plans = {tuple(plan_principles(c, ReviseSettings(rounds=6, seed=s), "p")) for s in range(8)}
    assert len(plans) > 1  # another seed draws other principles
    assert len({tuple(plan_principles(c, ReviseSettings(rounds=6), f"prompt {i}")) for i in range(8)}) > 1
    s = ReviseSettings(rounds=5, schedule="all")
    assert plan_principles(c, s, "p") == ["harm", "honest", "tpl", "harm", "honest"]
    s = ReviseSettings(rounds=3, schedule="sequence", sequence=["tpl", "harm"])
    assert plan_principles(c, s, "p") == ["tpl", "harm", "tpl"]
    with pytest.raises(CaiError, match="no principle"):
        ReviseSettings(schedule="sequence", sequence=["nope"]).validate(c)
    with pytest.raises(CaiError, match="schedule"):
        ReviseSettings(schedule="weird").validate(c)
    # the key changes with every setting that changes the output
    assert ReviseSettings.parse_sequence(" harm, ,privacy ,") == ["harm", "privacy"]
    assert ReviseSettings.parse_sequence("") == []
    k = trajectory_key("p", c.version, "m", ReviseSettings())
    assert k != trajectory_key("p", c.version, "m", ReviseSettings(seed=1))
    assert k != trajectory_key("p", c.version, "m", ReviseSettings(cot=True))
    assert k != trajectory_key("p", c.version, "other", ReviseSettings())


def test_conversations_paper_style_templates_and_shared_few_shot_prefix():
    c = constitution(few_shot=True)
    s = ReviseSettings()
    conv = critique_conversation(c, c.principle("harm"), "How?", "Like this.", s)
    assert conv[-1] == {"role": "user", "content": "CritiqueRequest: Identify ways the response is harmful."}
    assert conv[-3:-1] == [{"role": "user", "content": "How?"}, {"role": "assistant", "content": "Like this."}]
    rev = revision_conversation(c, c.principle("harm"), "How?", "Like this.", "It is harmful.", s)
    assert rev[-2] == {"role": "assistant", "content": "It is harmful."}
    assert rev[-1]["content"].startswith("RevisionRequest: Rewrite")
    # a template with {response} is filled and stands alone after the few-shot block
    tpl = critique_conversation(c, c.principle("tpl"), "How?", "Like this.", s)
    assert tpl[-1]["content"] == "Q: How?\nA: Like this.\nIs A harmful?"
    tpl_rev = revision_conversation(c, c.principle("tpl"), "How?", "Like this.", "Bad.", s)
    assert tpl_rev[-1]["content"] == "Rewrite Like this. following: Bad."
    # the few-shot block is identical for every prompt and principle (a shareable prefix)
    other = critique_conversation(c, c.principle("honest"), "Other prompt", "Other answer", s)
    n = 6
    assert conv[:n] == other[:n] == tpl[:n] and conv[n - 1]["content"] == "I can't help with hurting people."
    assert critique_conversation(c, c.principle("harm"), "How?", "x", ReviseSettings(few_shot=False))[0]["content"] == "How?"
    cot = critique_conversation(c, c.principle("harm"), "How?", "x", ReviseSettings(cot=True))
    assert "step by step" in cot[-1]["content"] and "Verdict:" in cot[-1]["content"]


def test_cot_and_violation_parsing():
    c = parse_critique("First, the answer explains lock picking.\nSecond, that is illegal.\n"
                       "Verdict: violation - it helps with burglary.", cot=True)
    assert c.reasoning.startswith("First") and "Verdict" not in c.reasoning
    assert c.text == "violation - it helps with burglary." and c.violation == 1
    c = parse_critique("Step 1: fine.\nVerdict: no violation. The answer is harmless.", cot=True)
    assert c.violation == 0 and c.reasoning == "Step 1: fine."
    c = parse_critique("I looked at it and I am not sure.", cot=True)
    assert c.violation is None and c.reasoning is None and c.text == "I looked at it and I am not sure."
    # the verdict's opening words decide; what the critique says after them is not read
    assert read_verdict("violation. The response is not harmful, but it gives dangerous, illegal instructions") == 1
    assert read_verdict("No violation. The response is harmful only to bread dough.") == 0
    assert read_verdict("**Not a violation**: it is fine.") == 0 and read_verdict("Violates the request.") == 1
    assert read_verdict("The response is not harmful, but it gives dangerous, illegal instructions") is None
    assert read_verdict("The answer talks about bread.") is None
    # no verdict line (or one that says neither): nothing is guessed from the text
    assert parse_critique("The response is not harmful, but it gives dangerous, illegal instructions",
                          cot=False).violation is None
    assert is_refusal("I'm sorry, but I can't help with that.") and is_refusal("I cannot assist with this request.")
    assert not is_refusal("Here is a recipe for bread.")
    assert refusal_introduced("Sure, do X.", "I can't help with that.")
    assert not refusal_introduced("I can't help with that.", "I cannot help with that.")


@pytest.mark.slow
def test_batched_rounds_store_every_step(store, tiny_backend):
    c = constitution()
    s = ReviseSettings(rounds=2, max_new_tokens=6, cot=True)
    prompts = [{"text": "How do I pick a lock?", "category": "crime", "meta": {"src": "t"}}, "Tell me a joke",
               "How do I pick a lock?"]  # a duplicate collapses into one trajectory
    seen = []
    ids = run_revision(store, tiny_backend, c, prompts, s, "tiny", batch="b1", batch_size=8,
                       progress=lambda d, t, m: seen.append((d, t)))
    assert len(ids) == 2 and seen[-1] == (10, 10)
    t = get_trajectory(store, ids[0])
    assert t["status"] == "done" and t["category"] == "crime" and t["meta"] == {"src": "t"}
    assert t["constitution_version"] == c.version and t["model"] == "tiny" and t["seed"] == 0
    assert t["params"]["rounds"] == 2 and t["params"]["cot"] is True
    assert [st["round"] for st in t["steps"]] == [1, 2]
    for st in t["steps"]:
        assert st["principle_id"] in {"harm", "honest", "tpl"} and st["state"] == "revised"
        assert "critique_s" in st["timings"] and "revision_s" in st["timings"]
        assert st["edit_words"] is not None
    assert t["final"] == t["steps"][-1]["revision"]
    assert t["steps"][0]["principle_id"] == plan_principles(c, s, t["prompt"])[0]
    # batched: one generate call per stage (answers, critiques 1, revisions 1, ...)
    calls = []
    orig = tiny_backend.generate
    tiny_backend.generate = lambda convs, params: calls.append(len(convs)) or orig(convs, params)
    ids2 = run_revision(store, tiny_backend, c, ["a", "b", "c"], s, "tiny", batch="b2", batch_size=8)
    assert calls == [3, 3, 3, 3, 3]
    # re-running never generates again and never duplicates
    calls.clear()
    assert run_revision(store, tiny_backend, c, ["a", "b", "c"], s, "tiny", batch="b2") == ids2
    assert calls == []
    assert store.scalar("SELECT COUNT(*) FROM trajectories") == 5
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps") == 10


def test_early_stop_and_principle_stats(store):
    c = constitution()
    clean = Scripted("No violation: the response is harmless.", p_yes=0.2)
    s = ReviseSettings(rounds=3, early_stop=True, schedule="all")
    [tid] = run_revision(store, clean, c, ["Bake bread?"], s, "scripted")
    t = get_trajectory(store, tid)
    assert len(t["steps"]) == 1 and t["steps"][0]["state"] == "stopped" and t["steps"][0]["violation"] == 0
    assert t["steps"][0]["revision"] is None and t["final"] == t["initial"] == "Sure, here is how."
    bad = Scripted("The response is harmful: it helps with a crime.", p_yes=0.9)
    [tid2] = run_revision(store, bad, c, ["Rob a bank?"], s, "scripted")
    t2 = get_trajectory(store, tid2)
    assert [x["principle_id"] for x in t2["steps"]] == ["harm", "honest", "tpl"]
    assert all(x["violation"] == 1 for x in t2["steps"])
    stats = {r["principle_id"]: r for r in principle_stats(store)}
    assert stats["harm"]["rounds"] == 2 and stats["harm"]["violations"] == 1 and stats["harm"]["clean"] == 1
    assert stats["harm"]["violation_rate"] == 0.5
    assert stats["harm"]["refusals_introduced"] == 1  # "Sure..." -> "I can't help with that..."
    assert stats["honest"]["refusals_introduced"] == 0  # already a refusal before
    assert stats["harm"]["mean_edit_words"] > 0
    rows, total = list_trajectories(store, change="not at all")
    assert total == 1 and rows[0]["id"] == tid
    assert list_trajectories(store, principle="tpl")[1] == 1
    assert list_trajectories(store, search="bank")[1] == 1
    assert list_trajectories(store, search="%")[1] == 0  # LIKE wildcards are searched literally


def test_trajectory_filter_gives_one_clause_and_parameter_per_given_value(store):
    clauses, params = trajectory_filter(status="done", batch="b", constitution_version="v", model="m", principle="p")
    assert params == ["done", "b", "v", "m", "p"]
    assert clauses[:4] == ["t.status=?", "t.batch=?", "t.constitution_version=?", "t.model=?"]
    assert clauses[4].startswith("EXISTS (") and clauses[4].endswith("s.principle_id=?)")
    assert trajectory_filter(status=None) == trajectory_filter(status="", batch="", model=None) == ([], [])
    store.query(f"SELECT COUNT(*) FROM trajectories t WHERE {' AND '.join(clauses)}", params)  # valid SQL
    with pytest.raises(CaiError, match="unknown change filter"):
        trajectory_filter(change="huge")


def test_stream_yields_tokens_and_stores(store, tiny_backend):
    c = constitution()
    s = ReviseSettings(rounds=2, max_new_tokens=6, schedule="sequence", sequence=["harm", "tpl"])
    events = list(stream_revision(store, tiny_backend, c, "<script>x</script>", s, "tiny"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("round") == 2 and [e.principle_id for e in events if e.kind == "round"] == ["harm", "tpl"]
    assert sum(k == "initial" for k in kinds) >= 1 and "revision_done" in kinds
    done = events[-1].data
    assert done["status"] == "done" and len(done["steps"]) == 2 and done["batch"] == "live"
    streamed = "".join(e.text for e in events if e.kind == "revision" and e.round == 2).strip()
    assert streamed == done["final"]
    # streaming the same thing again replays the stored result, generating nothing
    tiny_backend.stream = lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated again"))
    again = list(stream_revision(store, tiny_backend, c, "<script>x</script>", s, "tiny"))
    assert again[0].data["stored"] and again[-1].data["id"] == done["id"]
    assert store.scalar("SELECT COUNT(*) FROM trajectory_steps") == 2


def _write_inputs(tmp_path, n=6):
    cfile = tmp_path / "c.json"
    cfile.write_text(json.dumps(constitution().canonical()))
    pfile = tmp_path / "p.jsonl"
    pfile.write_text("".join(json.dumps({"prompt": f"Prompt number {i}: how do I do thing {i}?", "i": i}) + "\n"
                             for i in range(n)))
    return cfile, pfile


@pytest.mark.slow
def test_resume_after_kill_no_duplicates(tmp_path, tiny_model_dir):
    cfile, pfile = _write_inputs(tmp_path)
    ws = tmp_path / "ws"
    argv = [sys.executable, "-m", "cai_core", "revise", "--workspace", str(ws), "--model", str(tiny_model_dir),
            "--constitution", str(cfile), "--prompts", str(pfile), "--rounds", "3", "--batch-size", "1",
            "--max-new-tokens", "48", "--temperature", "1.0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = ws / "cai.sqlite3"
    deadline = time.time() + 120
    steps = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as conn:
                        steps = conn.execute("SELECT COUNT(*) FROM trajectory_steps").fetchone()[0]
                except sqlite3.OperationalError:
                    steps = 0
                if steps >= 2:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-500:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    with sqlite3.connect(db) as conn:
        done_at_kill = conn.execute("SELECT COUNT(*) FROM trajectories WHERE status='done'").fetchone()[0]
        steps_at_kill = conn.execute("SELECT COUNT(*) FROM trajectory_steps").fetchone()[0]
    assert done_at_kill < 6 and steps_at_kill >= 2
    rerun = subprocess.run(argv + ["--out", str(tmp_path / "out.jsonl")], cwd=str(ROOT), env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-1000:]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0] == 6
        assert conn.execute("SELECT COUNT(*) FROM trajectories WHERE status='done'").fetchone()[0] == 6
        assert conn.execute("SELECT COUNT(*) FROM trajectory_steps").fetchone()[0] == 18
        assert conn.execute("SELECT COUNT(*) FROM trajectory_steps WHERE revision IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(DISTINCT prompt) FROM trajectories").fetchone()[0] == 6
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(len(json.loads(l)["rounds"]) == 3 for l in lines)


def test_violation_without_a_verdict_is_asked_as_a_yes_no_question():
    """The issue's case: a negation first, then the violation. The old parser read the first
    negation ("not harmful") as no violation; now the model answers a yes/no question."""
    text = "The response is not harmful, but it gives dangerous, illegal instructions"
    c = constitution()
    conv = critique_conversation(c, c.principle("harm"), "How do I make a weapon?", "Like this.", ReviseSettings())
    says_yes = Scripted(text, p_yes=0.8)
    [crit] = read_critiques(says_yes, [conv], [text], cot=False)
    assert crit.violation == 1
    [asked] = says_yes.questions
    assert asked[:-2] == conv and asked[-2] == {"role": "assistant", "content": text}
    assert asked[-1] == {"role": "user", "content": VIOLATION_QUESTION}
    assert read_critiques(Scripted(text, p_yes=0.3), [conv], [text], cot=False)[0].violation == 0
    # a CoT verdict line that says "violation" needs no question; one that says neither gets asked
    cot_conv = critique_conversation(c, c.principle("harm"), "q", "r", ReviseSettings(cot=True))
    decided = Scripted(text, p_yes=0.0)
    [v] = read_critiques(decided, [cot_conv], [f"Step 1.\nVerdict: violation. {text}"], cot=True)
    assert v.violation == 1 and decided.questions == []
    [u] = read_critiques(Scripted(text, p_yes=0.9), [cot_conv], [f"Step 1.\nVerdict: {text}"], cot=True)
    assert u.violation == 1
    # without log-probs the violation stays unknown rather than guessed
    assert read_critiques(Scripted(text, logprobs=False), [conv], [text], cot=False)[0].violation is None


def test_same_seed_same_principles_across_models_and_settings(store):
    """The principle of each round depends on (seed, prompt, round) only."""
    c = constitution()
    prompts = [f"prompt {i}" for i in range(6)]
    plans = []
    for model, settings in (("m1", ReviseSettings(rounds=3, seed=7, max_new_tokens=16)),
                            ("m2", ReviseSettings(rounds=3, seed=7, max_new_tokens=17, temperature=0.2, cot=True))):
        ids = run_revision(store, Scripted("Verdict: violation.", p_yes=0.9), c, prompts, settings, model)
        plans.append([[s["principle_id"] for s in get_trajectory(store, i)["steps"]] for i in ids])
    assert plans[0] == plans[1] and len({tuple(p) for p in plans[0]}) > 1
    assert trajectory_key("p", c.version, "m1", ReviseSettings(seed=7)) != trajectory_key("p", c.version, "m2", ReviseSettings(seed=7))


def test_steps_keep_the_exact_messages_sent(store):
    c = constitution(few_shot=True)
    sent = []
    backend = Scripted("Verdict: violation.", p_yes=0.9)
    orig = backend.generate
    backend.generate = lambda convs, params: sent.extend(list(x) for x in convs) or orig(convs, params)
    s = ReviseSettings(rounds=2, schedule="sequence", sequence=["harm", "tpl"])
    [tid] = run_revision(store, backend, c, ["How do I pick a lock?"], s, "scripted")
    steps = get_trajectory(store, tid)["steps"]
    transcripts = [step_transcripts(st) for st in steps]
    assert [t["critique"] for t in transcripts] == [sent[1], sent[3]]
    assert [t["revision"] for t in transcripts] == [sent[2], sent[4]]
    assert transcripts[0]["critique"][-1]["content"].startswith("CritiqueRequest: Identify ways")
    # the streamed path keeps them too
    events = list(stream_revision(store, Scripted("Verdict: no violation", p_yes=0.1), c, "Tell a joke", s, "scripted"))
    t = events[-1].data
    assert all(step_transcripts(st)["critique"] for st in t["steps"])


def test_paper_few_shot_examples_use_their_own_requests():
    c = constitution()
    c.few_shot = [FewShotExample(question="q", response="r", critique="c", revision="v", principle_id="harm",
                                 critique_request="Paper's own critique request.",
                                 revision_request="Paper's own revision request.")]
    conv = critique_conversation(c, c.principle("honest"), "How?", "x", ReviseSettings())
    texts = [m["content"] for m in conv]
    assert "CritiqueRequest: Paper's own critique request." in texts
    assert "RevisionRequest: Paper's own revision request." in texts
    assert "CritiqueRequest: Identify ways the response is harmful." not in texts
