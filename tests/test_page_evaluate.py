"""The Evaluate and Compare page renders on an empty workspace and with a stored evaluation."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_core.store import open_store
from tests.helpers import seed_evaluation

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "70_Evaluate_and_Compare.py")


def _run():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_workspace_shows_clear_empty_state(ws):
    at = _run()
    infos = " ".join(i.value for i in at.info)
    assert "No evaluation yet" in infos
    assert "No prompt sets yet" in infos
    assert any("evasive" in m.value.lower() for m in at.markdown)  # the rules tab explains the detector


@pytest.mark.slow
def test_seeded_evaluation_renders_leaderboard_and_comparisons(ws):
    store = open_store(ws)
    seed_evaluation(store, "seeded")
    at = _run()
    assert "seeded" in at.selectbox(key="lb_eval").options[0]
    frames = [df.value for df in at.dataframe]
    lb = next(f for f in frames if "BT score (Elo scale) [95% CI]" in f.columns)
    assert list(lb["policy"]) == ["tuned", "base"]  # best first
    assert "1100.0 [1050.0, 1150.0]" in list(lb["BT score (Elo scale) [95% CI]"])
    # the side-by-side view shows model text as plain text, escaped by st.text
    texts = [t.value for t in at.text]
    assert "<script>alert(1)</script>" in texts
    assert any(d for d in at.get("download_button"))
    # the rules probe classifies typed text
    at.text_area(key="rules_probe").set_value("Paris is the capital of France.").run()
    assert any(m.value == "**Not evasive**" for m in at.markdown)


def test_ab_version_list_follows_the_chosen_constitution(ws):
    from cai_core.data.sample_data import ensure_samples
    from cai_core.constitution.versions import list_constitutions, list_versions

    store = open_store(ws)
    ensure_samples(store)  # what app.py does on a first start: sample constitutions and prompt sets
    at = _run()
    # ui.command_preview.form_spec: each start form shows its command, or why there is none yet
    assert [c.value for c in at.caption if c.value.startswith("Command: ")] == [
        "Command: choose at least two policies", "Command: pick two different versions"]
    names = [c["name"] for c in list_constitutions(store)]
    assert len(names) >= 2
    other = names[1]
    at.selectbox(key="ab_c_A").set_value(other).run()
    assert not at.exception, at.exception
    wanted = [v["version"] for v in list_versions(store, other)]
    assert at.selectbox(key=f"ab_v_A_{other}").options == wanted


@pytest.mark.slow
def test_side_by_side_shows_a_flipped_verdict_as_the_tie_the_leaderboard_counts(ws):
    store = open_store(ws)
    seed_evaluation(store, "flips")
    ids = [r["id"] for r in store.query("SELECT id FROM comparisons WHERE origin='evaluation:flips' ORDER BY id")]
    # first comparison: A first -> A (0.7), B first -> B (0.4): position-inconsistent, mean 0.55 leans A
    store.execute("UPDATE judgments SET p_a = CASE order_shown WHEN 'AB' THEN 0.7 ELSE 0.4 END WHERE comparison_id=?",
                  (ids[0],))
    at = _run()
    table = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    assert list(table["verdict"]) == ["tie", "B"], list(table["verdict"])
    header = next(m.value for m in at.markdown if "verdict:" in m.value)
    assert "verdict: **tie**" in header and "flipped with the order" in header, header


@pytest.mark.slow
def test_new_evaluation_offers_the_active_model_as_a_policy(ws, monkeypatch, tmp_path):
    """The runs were trained from the sidebar's model: it must be pickable (and picked), not only 'default'."""
    from cai_core.data.sample_data import ensure_samples

    ensure_samples(open_store(ws))  # prompt sets, so the form shows
    model = tmp_path / "my-base"
    monkeypatch.setenv("CAI_MODEL", str(model))
    at = _run()
    policies = next(m for m in at.multiselect if m.label == "Policies")
    assert str(model) in policies.options[0] and "active model" in policies.options[0], policies.options
    assert policies.value == [str(model)]
    assert any("default" in o for o in policies.options)


@pytest.mark.slow
def test_a_mistyped_policy_is_refused_before_any_job_starts(ws, tmp_path):
    from cai_core.data.sample_data import ensure_samples
    from cai_core.jobs import list_jobs

    store = open_store(ws)
    ensure_samples(store)
    at = _run()
    extra = next(t for t in at.text_input if t.label == "More policies")
    extra.set_value(str(tmp_path / "no-such-model"))
    next(b for b in at.button if b.label == "Start evaluation").click().run()
    assert not at.exception, at.exception
    assert any("no such folder or file" in e.value for e in at.error), [e.value for e in at.error]
    assert list_jobs(store, kind="evaluate") == []


def test_the_html_report_carries_every_warning_the_page_shows(ws):
    """Issue 22 item 9: the evaluation's report left out the contamination warning the page showed and said
    nothing about n=2 per policy; both now come from cai_core.summaries.headlines.evaluation_warnings."""
    import html

    from cai_core.evaluation.reports import report_html
    from cai_core.exports import record_export

    store = open_store(ws)
    eid = seed_evaluation(store, "leaky")
    prompt = store.scalar("SELECT prompt FROM comparisons WHERE source='evaluation:leaky' ORDER BY id LIMIT 1")
    with store.tx() as conn:
        record_export(conn, "sl-leak", "sft", "/x", {}, [prompt])
    at = _run()
    shown = [w.value.replace("\\", "") for w in at.warning]
    assert any(w.startswith("Contamination: 1 of 2 evaluation prompts") for w in shown), shown
    assert any("too few judged comparisons" in w and "n=2" in w for w in shown), shown
    report = html.unescape(report_html(store, "evaluation", eid))
    for warning in shown:
        assert warning in report, warning
