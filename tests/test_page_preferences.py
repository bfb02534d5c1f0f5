"""Preferences page (AppTest): renders, blind annotation by the keyboard buttons, verdict hidden until answered, override."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cai_core.rlaif.pairs import add_pairs
from cai_core.store import now, open_store
from tests.helpers import ROOT

PAGE = str(ROOT / "pages" / "40_Preferences.py")


@pytest.fixture
def seeded(ws):
    """Seven blind-annotation pairs, each judged by the AI in both orders: A for even items, B for odd."""
    store = open_store(ws)
    pairs = [{"id": str(i), "prompt": f"prompt <b>{i}</b>", "response_a": f"answer A{i}", "response_b": f"answer B{i}"}
             for i in range(7)]
    ids = add_pairs(store, pairs, origin="sampled", batch="b1")
    with store.tx() as conn:
        for i, cid in enumerate(ids):
            p = 0.9 if i % 2 == 0 else 0.2   # AI: A for even items, B for odd ones
            for order in ("AB", "BA"):
                conn.execute(
                    "INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, "
                    "p_a, reasoning, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (cid, "mc|m|v|random|x", "m", "harm", "mc", order, p, "step by step", "ok", now()))
    return store, ids


def label_button(at, label: str):
    """The choice button for `label` of the item shown (its key carries the item's client id)."""
    return next(b for b in at.button if b.key and b.key.startswith(f"label_{label}_"))


def page():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_renders_and_hides_verdict_in_blind_mode(seeded):
    at = page()
    assert at.title[0].value == "Preferences"
    assert any("Hidden in blind mode" in i.value for i in at.info)
    assert not [m for m in at.metric if m.label == "AI label"]
    texts = [t.value for t in at.text]
    assert "prompt <b>1</b>" in texts  # model text rendered as plain text, tags and all; most uncertain first
    assert all(b.disabled for b in at.button if b.key and b.key.startswith("label_"))  # no annotator yet


@pytest.mark.slow
def test_annotate_five_blind_then_override_two(seeded):
    store, ids = seeded
    at = page()
    at.text_input(key="annotator").input("ann").run()
    for n in range(5):
        assert any("Hidden in blind mode" in i.value for i in at.info)
        label_button(at, "B").click().run()
        assert not at.exception, at.exception
        assert any("you said B" in s.value and "AI said" in s.value for s in at.success)
    rows = store.query("SELECT * FROM human_labels ORDER BY id")
    assert len(rows) == 5 and all(r["blind"] == 1 and r["annotator"] == "ann" for r in rows)
    assert len({r["comparison_id"] for r in rows}) == 5
    ai_a = {cid for i, cid in enumerate(ids) if i % 2 == 0}
    assert [r["is_override"] for r in rows] == [int(r["comparison_id"] in ai_a) for r in rows]
    assert sum(r["is_override"] for r in rows) == 2  # uncertain first: the three AI-B items, then two AI-A ones

    # sighted mode: the verdict, its probability and member votes are shown
    at.toggle(key="blind").set_value(False).run()
    assert [m for m in at.metric if m.label == "AI label"]
    assert at.dataframe
    # two deliberate overrides through the override form, with reasons
    for _ in range(2):
        cid = int(next(t.value for t in at.text if t.value.startswith("Item ")).split("comparison ")[1].split(" ")[0])
        ai = store.scalar("SELECT p_a FROM judgments WHERE comparison_id=? LIMIT 1", (cid,))
        other = "B" if ai > 0.5 else "A"
        at.radio(key=f"override_label_{cid}").set_value(other).run()
        at.text_input(key=f"override_reason_{cid}").input("the judge missed the refusal").run()
        at.button(key=f"override_{cid}").click().run()
        assert not at.exception, at.exception
    overrides = store.query("SELECT * FROM human_labels WHERE reason='the judge missed the refusal'")
    assert len(overrides) == 2 and all(r["is_override"] == 1 and r["blind"] == 0 for r in overrides)


@pytest.mark.slow
def test_queue_status_invalid_bucket_and_tabs(seeded):
    at = page()
    at.selectbox(key="queue_status").set_value("invalid").run()
    assert any("queue is empty" in i.value for i in at.info)
    assert [m for m in at.metric if m.label == "Invalid judgments"][0].value == "0"
    assert at.tabs[1].label == "Sample and judge"


@pytest.mark.slow
def test_judge_form_passes_reasoning_length(seeded, monkeypatch):
    """The judge form's reasoning length reaches the job (CoT on a CPU needs short reasoning)."""
    from cai_core import jobs
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution

    save_constitution(seeded[0], Constitution(name="c", principles=[Principle(
        id="harm", name="Harm", critique_request="Harmful?", revision_request="Fix it.",
        comparison_question="Which response is less harmful?")]))
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda store, spec, **kw: started.append(spec.to_argv()) or 1)
    at = page()
    at.selectbox(key="judge_style").set_value("cot")
    at.number_input(key="judge_max_new").set_value(48)
    at.button(key="judge_start").click().run()
    assert not at.exception, at.exception
    assert started, [e.value for e in at.error]
    args = started[0]
    assert args[args.index("--max-new-tokens") + 1] == "48" and args[args.index("--style") + 1] == "cot"


def test_export_tab_shows_export_job_failure_and_exports(seeded):
    """The Export tab shows an export job's state (here a failure) and the exports, with no reload needed."""
    from cai_core.store import dumps

    store = seeded[0]
    store.execute("INSERT INTO jobs(kind, title, status, argv_json, error, created_at) VALUES (?,?,?,?,?,?)",
                  ("export-prefs", "export p1", "failed", dumps([]), "error: nothing to export", now()))
    store.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?)",
                  ("p0", "preference", "/x/p0", dumps({"counts": {"exported": 3, "comparisons": 7}}), now()))
    at = page()
    assert any("nothing to export" in e.value for e in at.tabs[2].error), "shown in the Export tab itself"
    assert any("rows 3 of 7" in t.value for t in at.tabs[2].text)


def test_finished_jobs_show_a_sentence_not_a_field_dump(seeded):
    """A finished job's result reads as a sentence per kind, with no None/False noise."""
    from cai_core.store import dumps

    store = seeded[0]
    results = {
        "judge": {"pairs": 2, "judges": ["k"], "style": "mc", "swap": True, "A": 1, "B": 1, "tie": 0,
                  "no_valid_judgment": 0, "invalid_judgments": 0, "flipped": 2, "disagreements": 0,
                  "stopped": False, "out": None},
        "pairs-sample": {"batch": "b9", "model": "default", "prompts": 3, "pairs_added": 3, "identical_skipped": 0,
                         "prompts_already_done": 0, "pairs_in_batch": 3},
        "export-prefs": {"path": "/x/p1", "comparisons": 7, "exported": 5, "from_human": 1, "from_gold": 0,
                         "from_ai": 4, "human_overrides": 0, "excluded_tie": 2, "excluded_both_bad": 0,
                         "excluded_invalid": 0, "excluded_unjudged": 0},
    }
    for kind, result in results.items():
        store.execute("INSERT INTO jobs(kind, title, status, argv_json, result_json, created_at) VALUES (?,?,?,?,?,?)",
                      (kind, kind, "finished", dumps([]), dumps(result), now()))
    at = page()
    texts = [t.value for t in at.text]
    assert "Judged 2 pair(s) (mc, both orders): A 1, B 1, tie 0; 2 flipped with the order, 0 judge disagreement(s)." \
        in texts
    assert "3 new pair(s) from 3 prompt(s); batch b9 now holds 3 pair(s)." in texts
    assert "Exported 5 of 7 comparison(s) (human 1, gold 0, AI 4); left out: tie 2. Written to /x/p1." in texts
    assert not [t for t in texts if "None" in t or "False" in t]


def test_previous_next_labels_fit_their_column(seeded):
    """The arrow keys show as Streamlit's shortcut badge; repeating "[Left]" in the label cut "Previous" off."""
    at = page()
    at.text_input(key="annotator").input("ann").run()
    for key, label, shortcut in (("queue_prev", "Previous", "Left"), ("queue_next", "Next", "Right")):
        button = at.button(key=key)
        assert button.label == label and button.proto.shortcut.lower() == shortcut.lower()


def test_probability_shows_which_side_of_one_half_decided():
    from ui.preferences import fmt_p

    assert fmt_p(None) == "-" and fmt_p(0.73) == "0.730" and fmt_p(0.5) == "0.500"
    assert fmt_p(0.5003) == "0.5003" and fmt_p(0.49996) == "0.49996"


def test_judge_form_offers_the_newest_batch_first(seeded):
    store, _ = seeded  # batch "b1" was stored just now
    for batch, t in (("aa-older", 200.0), ("zz-oldest", 100.0)):
        ids = add_pairs(store, [{"id": batch, "prompt": f"q {batch}", "response_a": "a", "response_b": "b"}],
                        origin="imported", batch=batch)
        store.execute("UPDATE comparisons SET created_at=? WHERE id=?", (t, ids[0]))
    at = page()
    judge_batch = at.selectbox(key="judge_batch")
    assert judge_batch.options == ["b1", "aa-older", "zz-oldest"] and judge_batch.value == "b1"


def test_a_new_batch_never_changes_the_batch_picked_for_judging(seeded, monkeypatch):
    """Issue 12 item 2: the judge form was on one batch; an evaluation created a newer batch in the
    background, which sorted first; the next rerun moved the pick to it and judged the wrong batch."""
    from cai_core import jobs
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution

    store, _ = seeded
    save_constitution(store, Constitution(name="c", principles=[Principle(
        id="harm", name="Harm", critique_request="Harmful?", revision_request="Fix it.",
        comparison_question="Which response is less harmful?")]))
    add_pairs(store, [{"id": "x", "prompt": "q x", "response_a": "a", "response_b": "b"}], origin="imported",
              batch="pairs-1")
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda store, spec, **kw: started.append(spec) or 1)
    at = page()
    at.selectbox(key="judge_batch").set_value("b1")
    at.button(key="judge_start").click().run()
    add_pairs(store, [{"id": "e", "prompt": "q e", "response_a": "a", "response_b": "b"}], origin="evaluation:e1",
              batch="eval-e1")  # a background evaluation's batch, newest of all
    at.run()
    assert at.selectbox(key="judge_batch").options[0] == "eval-e1"
    assert at.selectbox(key="judge_batch").value == "b1"
    at.button(key="judge_start").click().run()
    assert not at.exception, at.exception
    assert [s.batch for s in started] == ["b1", "b1"]
    from cai_core.constitution.versions import get_constitution

    assert started[0].constitution == f"c@{get_constitution(store, 'c').version}"  # the version is pinned too
    assert started[0].pinned()["constitution"] == started[0].constitution


@pytest.mark.slow
def test_choice_buttons_leave_the_key_to_the_shortcut_badge(seeded):
    at = page()
    labels = {b.key.rsplit("_", 1)[0]: b.label for b in at.button if b.key and b.key.startswith("label_")}
    assert labels["label_A"] == "A is better" and labels["label_both_bad"] == "Both bad"
    assert not any("[" in text for text in labels.values()), labels


def test_judgment_details_show_the_exact_text_sent_as_a_transcript(seeded):
    import json

    store, ids = seeded
    sent = [{"role": "user", "content": "Consider <b>this</b> **conversation**\n(A) x\n(B) y"}]
    store.execute("UPDATE judgments SET prompt_json=? WHERE order_shown='AB'",
                  (json.dumps({"messages": sent, "assistant_prefix": "The answer is: "}),))
    at = page()
    at.text_input(key="annotator").input("ann").run()
    at.toggle(key="blind").set_value(False).run()
    assert not at.exception, at.exception
    texts = [t.value for t in at.text]
    assert sent[0]["content"] in texts   # literally, markup and all
    exact = [json.loads(c.value) for c in at.code if c.language == "json"]
    assert {"messages": sent, "assistant_prefix": "The answer is: "} in exact   # byte for byte, trailing space too
    assert any(e.label.startswith("Transcripts: exact text sent to the judge (2 judgments)") for e in at.expander)
    assert any("Not kept" in c.value for c in at.caption)   # the BA row predates transcripts
