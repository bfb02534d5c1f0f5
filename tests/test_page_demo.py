"""The demo page walks through every step, on an empty workspace and on seeded data."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_core.constitution.model import Constitution, Principle
from cai_core.constitution.versions import save_constitution
from cai_core.store import now, open_store
from tests.helpers import XSS, seed_evaluation

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "80_Demo.py")


def walk(at):
    """Render every step with Next; return (titles, infos, texts) seen along the way."""
    titles, infos, texts = [], [], []
    at.run()
    for _ in range(7):
        assert not at.exception, at.exception
        titles.append(at.title[0].value)
        infos += [i.value for i in at.info]
        texts += [t.value for t in at.text]
        if at.button(key="demo_next").disabled:
            break
        at.button(key="demo_next").click().run()
    return titles, infos, texts


@pytest.mark.slow
def test_demo_empty_workspace(ws):
    at = AppTest.from_file(PAGE, default_timeout=60)
    titles, infos, _ = walk(at)
    assert titles[0] == "Constitutional AI in one minute" and titles[-1] == "What we learned" and len(titles) == 7
    joined = " ".join(infos)
    for msg in ("No constitution", "No AI judgments yet", "No judge has been checked", "No evaluation yet"):
        assert msg in joined
    at.button(key="demo_back").click().run()
    assert at.title[0].value == "Before and after training"
    assert not [w for w in at.get("text_input")] and not [w for w in at.get("selectbox")]  # no configuration widgets


@pytest.mark.slow
def test_demo_with_stored_results(ws):
    store = open_store(ws)
    save_constitution(store, Constitution(name="demo", principles=[
        Principle(id="harm", name="Harm", critique_request="Is the answer harmful?", revision_request="Fix it.")]))
    with store.tx() as conn:
        tid = conn.execute(
            "INSERT INTO trajectories (key, prompt, constitution_name, constitution_version, model, params_json, seed, "
            "initial, final, status, rounds, created_at, updated_at) VALUES ('t','Red-team prompt','demo','v','m','{}',0,?,?,"
            "'done',1,0,0)", ("Initial " + XSS, "Revised safe answer")).lastrowid
        conn.execute("INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, revision, "
                     "created_at) VALUES (?,1,'harm','It is harmful.',1,'Revised safe answer',0)", (tid,))
        gid = conn.execute(
            "INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
            "VALUES ('g1','gold:test','Gold prompt','good','bad','A',?)", (now(),)).lastrowid
        for order, p in (("AB", 0.8), ("BA", 0.7)):
            conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, "
                         "p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                         (gid, "mc|j", "j", "harmless", "mc", order, p, "ok", now()))
    seed_evaluation(store, "demo-eval")
    at = AppTest.from_file(PAGE, default_timeout=60)
    titles, infos, texts = walk(at)
    assert len(titles) == 7 and not infos, infos
    assert "Is the answer harmful?" in texts
    assert "Initial " + XSS in texts  # model text shown literally
    assert "Revised safe answer" in texts
    # step 4 (judge reliability) and step 6 (evaluation) rendered metrics on the way
    at.session_state["demo_step"] = 4
    at.run()
    vals = {m.label: m.value for m in at.metric}
    assert vals["Judge accuracy"] == "100.0%" and vals["Chance"] == "50%"
    at.session_state["demo_step"] = 5
    at.run()
    vals = {m.label: m.value for m in at.metric}
    assert vals["Harmlessness score"] == "1100" and vals["Evasive answers"] == "50%"
    at.session_state["demo_step"] = 2
    at.run()
    at.button(key="demo_play").click().run()
    assert not at.exception and "Revised safe answer" in [t.value for t in at.text]


@pytest.mark.slow
def test_demo_live_run_on_tiny_model(ws, tiny_model_dir, monkeypatch):
    """With nothing stored, the critique/revision step streams live through the engine."""
    monkeypatch.setenv("CAI_MODEL", str(tiny_model_dir))
    store = open_store(ws)
    save_constitution(store, Constitution(name="demo", principles=[
        Principle(id="harm", name="Harm", critique_request="Is the answer harmful?", revision_request="Fix it.")]))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["demo_step"] = 2
    at.run()
    assert not at.exception, at.exception
    at.button(key="demo_live").click().run()
    assert not at.exception, at.exception
    assert store.scalar("SELECT COUNT(*) FROM trajectories WHERE batch='demo' AND status='done'") == 1
    at.run()  # next time the stored trajectory is replayed
    assert "Stored trajectory" in " ".join(c.value for c in at.caption)


def test_demo_reliability_shows_the_largest_measurement(ws):
    from ui.demo import demo_reliability

    store = open_store(ws)
    with store.tx() as conn:
        for source, n in (("gold:a-small", 1), ("gold:b-big", 3)):
            for k in range(n):
                cid = conn.execute(
                    "INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
                    "VALUES (?,?,?,?,?,?,?)", (f"{source}{k}", source, "p", "a", "b", "A", now())).lastrowid
                for order in ("AB", "BA"):
                    conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                                 "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                 (cid, "mc|j", "j", "harmless", "mc", order, 0.8, "ok", now()))
    rel = demo_reliability(store)
    assert rel["gold"] == "gold:b-big" and rel["report"]["n"] == 3


def test_demo_before_after_uses_the_untrained_model_as_base(ws):
    """A base model given as a folder (kind 'folder') listed after the trained run is still the 'before'."""
    import json

    store = open_store(ws)
    eid = seed_evaluation(store, "folder-base")
    result = json.loads(store.scalar("SELECT result_json FROM evaluations WHERE id=?", (eid,)))
    base, tuned = result["policies"]
    base["kind"], base["spec"] = "folder", "/models/tiny"
    result["policies"] = [tuned, base]  # the run first, as when it was picked before the typed base folder
    store.execute("UPDATE evaluations SET result_json=? WHERE id=?", (json.dumps(result), eid))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 5
    at.run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert "tuned: wins / ties / losses" in labels, labels
    assert any("vs base" in str(m.delta) for m in at.metric if m.label == "Harmlessness score")


def test_demo_preference_near_half_shows_which_side_decided(ws):
    """A verdict of B at P(A) = 0.4998 must not read '50%' next to 'Preferred B'."""
    store = open_store(ws)
    seed_evaluation(store, "near-half")
    cid = store.scalar("SELECT MAX(id) FROM comparisons")
    store.execute("UPDATE judgments SET p_a = CASE order_shown WHEN 'AB' THEN 0.6 ELSE 0.3996 END "
                  "WHERE comparison_id=?", (cid,))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 3
    at.run()
    assert not at.exception, at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Preferred"] == "B", values
    assert values["P(A is better)"] == "49.98%", values


def test_demo_prefers_plain_batches_and_sampled_pairs_over_ab_experiments(ws):
    """An A/B experiment's arms and final-answer comparisons are stored like any other, but the demo
    shows a plain batch's trajectory and a sampled pair when there is one, even if older."""
    from cai_core.rlaif.pairs import add_pairs
    from ui.demo import demo_preference, demo_trajectory

    store = open_store(ws)
    with store.tx() as conn:
        for key, batch, t in (("plain", "rt-batch", 1.0), ("arm", "ab-exp-a", 2.0)):
            tid = conn.execute(
                "INSERT INTO trajectories (key, prompt, constitution_name, constitution_version, model, params_json, "
                "seed, initial, final, status, rounds, batch, created_at, updated_at) VALUES (?,?,'c','v','m','{}',0,"
                "'first','final','done',1,?,?,?)", (key, f"prompt {key}", batch, t, t)).lastrowid
            conn.execute("INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, "
                         "revision, created_at) VALUES (?,1,'harm','crit',1,'rev',?)", (tid, t))
    assert demo_trajectory(store)["prompt"] == "prompt plain"
    sampled = add_pairs(store, [{"id": "s", "prompt": "sampled q", "response_a": "a", "response_b": "b"}], origin="sampled")
    ab = add_pairs(store, [{"id": "x", "prompt": "ab q", "response_a": "a", "response_b": "b"}], origin="experiment:exp")
    with store.tx() as conn:
        for cid in sampled + ab:
            for order in ("AB", "BA"):
                conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                             "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                             (cid, "mc|m|v|random|x", "m", "harm", "mc", order, 0.8, "ok", now()))
    assert demo_preference(store)["comparison"]["prompt"] == "sampled q"


def _last_step(at):
    at.session_state["demo_step"] = 6
    at.run()
    assert not at.exception, at.exception
    return " ".join(m.value for m in at.markdown), [b.label for b in at.button]


def test_the_last_step_claims_nothing_that_did_not_happen(ws):
    """Issue 15: step 6 said 'No evaluation yet' while step 7 claimed a comparison with confidence intervals."""
    store = open_store(ws)
    save_constitution(store, Constitution(name="demo", principles=[
        Principle(id="harm", name="Harm", critique_request="Is the answer harmful?", revision_request="Fix it.")]))
    text, buttons = _last_step(AppTest.from_file(PAGE, default_timeout=60))
    plain = text.replace("\\", "")
    assert "The constitution demo@" in plain and "1 enabled principle" in plain
    for missing in ("No critique and revision stored yet", "No AI preferences yet", "The judge has not been checked",
                    "No training run has finished yet", "No evaluation yet"):
        assert f"Not yet: {missing}" in plain, plain
    assert "compared with" not in plain and "confidence" not in plain and "95% CI" not in plain
    for action in ("Critique and revise a prompt", "Sample and judge pairs", "Check the judge", "Train a model",
                   "Evaluate the policies"):
        assert action in buttons, buttons


def test_the_last_step_reports_the_stored_evaluation_with_its_numbers(ws):
    store = open_store(ws)
    seed_evaluation(store, "demo-eval")
    plain = _last_step(AppTest.from_file(PAGE, default_timeout=60))[0].replace("\\", "")
    assert ("The trained policy tuned was compared with the others: 2 wins, 0 ties, 0 losses in 2 judged "
            "comparison(s) (win rate 100.0%, a tie counts as half a win; 95% CI 100.0-100.0%); harmlessness score "
            "+200 vs base, evasive in 50% of its answers. Too few items for a conclusion: n=2 judged comparisons") \
        in plain, plain
    assert "Not yet: No evaluation yet" not in plain


def test_an_evaluation_without_a_trained_policy_is_not_called_before_and_after(ws):
    import json

    store = open_store(ws)
    eid = seed_evaluation(store, "untrained")
    result = json.loads(store.scalar("SELECT result_json FROM evaluations WHERE id=?", (eid,)))
    result["policies"][1]["kind"] = "folder"  # two untrained models
    store.execute("UPDATE evaluations SET result_json=? WHERE id=?", (json.dumps(result), eid))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 5
    at.run()
    assert any("has no trained policy" in w.value for w in at.warning)
    assert "Before and after training, on the same prompt" not in [s.value for s in at.subheader]
    plain = _last_step(at)[0].replace("\\", "")
    assert "Not yet: The latest evaluation compared base, tuned, none of them a trained run." in plain


def test_reliability_step_shows_n_and_says_when_it_is_too_few(ws):
    store = open_store(ws)
    with store.tx() as conn:
        cid = conn.execute("INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
                           "VALUES ('g','gold:t','p','a','b','A',?)", (now(),)).lastrowid
        for order in ("AB", "BA"):
            conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, "
                         "p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                         (cid, "mc|j|-|random|abcd1234", "j", "harmless", "mc", order, 0.8, "ok", now()))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 4
    at.run()
    assert {m.label: m.value for m in at.metric}["Items (n)"] == "1"
    assert any("Too few items for a conclusion" in w.value for w in at.warning)
    caption = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "judge j · multiple choice (log-probs) · one random principle per pair · no constitution" in caption


def _seed_work(store):
    """Work done with one constitution version; a newer, never-used constitution created after it."""
    used = Constitution(name="redteam", principles=[
        Principle(id="harm", name="Harm", critique_request="Is the answer harmful?", revision_request="Fix it.")])
    version = save_constitution(store, used)
    with store.tx() as conn:
        tid = conn.execute(
            "INSERT INTO trajectories (key, prompt, constitution_name, constitution_version, model, params_json, seed, "
            "initial, final, status, rounds, batch, created_at, updated_at) VALUES ('t','Red-team prompt','redteam',?,"
            "'the-model','{}',0,'first','final','done',1,'rev1',0,0)", (version,)).lastrowid
        conn.execute("INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, revision, "
                     "created_at) VALUES (?,1,'harm','It is harmful.',1,'final',0)", (tid,))
    save_constitution(store, Constitution(name="zz-newest-unused", principles=[
        Principle(id="a", name="A", critique_request="A?", revision_request="A."),
        Principle(id="b", name="B", critique_request="B?", revision_request="B.")]))
    return version


def test_demo_describes_the_constitution_and_model_that_produced_the_work(ws):
    """Issue 22 item 8: the demo showed the newest-created constitution (2 principles, never used)."""
    store = open_store(ws)
    version = _seed_work(store)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 1
    at.run()
    assert not at.exception, at.exception
    assert at.header[0].value == "1 principles"
    shown = " ".join(c.value for c in at.caption) + " ".join(m.value for m in at.markdown)
    assert f"redteam · version {version}" in shown and "zz-newest-unused" not in shown
    assert "the-model" in shown.replace("\\", "")
    plain = _last_step(at)[0].replace("\\", "")
    assert f"The constitution redteam@{version}" in plain and "zz-newest-unused" not in plain


def test_demo_names_no_constitution_the_constitution_page_does_not_list(ws):
    """The evaluation's built-in judge constitution (a hash the store does not hold) is named in words, and the
    demo's AI preference comes from a judge of the workspace's own constitution."""
    from cai_core.constitution.versions import list_constitutions
    from cai_core.rlaif.judge_defaults import HARMLESS_JUDGE
    from cai_core.rlaif.pairs import add_pairs

    store = open_store(ws)
    version = _seed_work(store)
    own = add_pairs(store, [{"id": "s", "prompt": "sampled q", "response_a": "a", "response_b": "b"}], origin="sampled")
    ev = add_pairs(store, [{"id": "e", "prompt": "eval q", "response_a": "a", "response_b": "b"}],
                   origin="evaluation:ev1")
    with store.tx() as conn:
        for cid, key in ((own[0], f"mc|m|{version}|random|x"), (ev[0], f"mc|m|{HARMLESS_JUDGE.version}|all|y")):
            for order in ("AB", "BA"):
                conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                             "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                             (cid, key, "m", "harm", "mc", order, 0.8, "ok", now()))
    listed = {c["name"] for c in list_constitutions(store)}
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 3
    at.run()
    assert not at.exception, at.exception
    judge_caption = next(c.value for c in at.caption if c.value.startswith("Judge: "))
    assert f"redteam@{version}" in judge_caption.replace("\\", "") and "redteam" in listed
    from ui.reliability import judge_words

    words = judge_words(store, f"mc|m|{HARMLESS_JUDGE.version}|all|y")
    assert HARMLESS_JUDGE.version not in words and "built-in eval-harmlessness question" in words


def test_demo_judge_figure_is_the_dashboards_figure(ws):
    """Issue 22 item 8: the demo's CI for the judge (30-70%) differed from the dashboard's (30.0-75.0%)."""
    from cai_core.summaries.headlines import HEADLINE_N_BOOT, reliability_headlines
    from cai_core.reliability.gold import judge_vs_gold, load_gold

    store = open_store(ws)
    with store.tx() as conn:
        for k in range(20):
            cid = conn.execute(
                "INSERT INTO comparisons (key, source, prompt, response_a, response_b, gold_label, created_at) "
                "VALUES (?,?,?,?,?,?,?)", (f"g{k}", "gold:hhh", f"p{k}", "a", "b", "A", now())).lastrowid
            p = 0.8 if k % 2 else 0.3
            for order in ("AB", "BA"):
                conn.execute("INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, "
                             "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                             (cid, "mc|j|-|random|s", "j", "harm", "mc", order, p, "ok", now()))
    dashboard = reliability_headlines(judge_vs_gold(store, ["mc|j|-|random|s"], load_gold(store, "gold:hhh"),
                                                    n_boot=HEADLINE_N_BOOT))["accuracy"]
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 4
    at.run()
    assert not at.exception, at.exception
    vals = {m.label: m.value for m in at.metric}
    assert vals["Judge accuracy"] == dashboard.value_text == "50.0%"
    assert vals["95% CI"] == dashboard.ci_text and vals["Items (n)"] == "20"
    assert any("Too few items for a conclusion: n=20" in w.value for w in at.warning)


def test_demo_says_wins_ties_losses_and_cautions_a_score_gap_at_small_n(ws):
    """Issue 22 item 8: 'sft1 wins vs others 67%' for 1 win and 2 ties; '+102 vs default' at n=3."""
    import json

    store = open_store(ws)
    eid = seed_evaluation(store, "small")
    result = json.loads(store.scalar("SELECT result_json FROM evaluations WHERE id=?", (eid,)))
    result["axes"]["harmless"]["policies"]["tuned"].update(n=3, wins=1, ties=2, losses=0, win=1 / 3, tie=2 / 3,
                                                           loss=0.0, win_rate=2 / 3, win_rate_ci=[0.5, 1.0], bt=1002.0)
    result["axes"]["harmless"]["policies"]["base"]["bt"] = 900.0
    store.execute("UPDATE evaluations SET result_json=? WHERE id=?", (json.dumps(result), eid))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["demo_step"] = 5
    at.run()
    assert not at.exception, at.exception
    metric = next(m for m in at.metric if m.label == "tuned: wins / ties / losses")
    assert metric.value == "1 / 2 / 0"
    assert any("1 win, 2 ties, 0 losses; win rate 66.7% (a tie counts as half a win) - n=3" in c.value
               for c in at.caption)
    score = next(m for m in at.metric if m.label == "Harmlessness score")
    assert score.delta == "+102 vs base"
    assert any("Not a conclusion: +102 vs base (n=3, only 3 judged comparison(s)" in w.value.replace("\\", "")
               for w in at.warning)
