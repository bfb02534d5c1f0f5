"""The Judge reliability page renders every chart on the tiny model's judgments, and the spot check works."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import PAPER_DATA, ROOT, shown

PAGE = str(ROOT / "pages" / "50_Judge_Reliability.py")


@pytest.fixture
def seeded(ws, tiny_model_dir, tiny_backend):
    """A workspace with 5 paper HHH comparisons, two tiny-model judges and human labels from two people."""
    from cai_core.constitution.files import load_constitution_file
    from cai_core.reliability.gold import import_paper_eval
    from cai_core.rlaif.judges import JudgeSpec, judge_pairs
    from cai_core.rlaif.pairs import comparisons_for
    from cai_core.rlaif.preferences import add_label
    from cai_core.store import open_store

    store = open_store(ws)
    ids = import_paper_eval(store, PAPER_DATA / "438HHHEvaluations.jsonl", limit=5)["ids"]
    constitution = load_constitution_file(ROOT / "sample_data" / "constitutions" / "seed.yaml")
    pairs = comparisons_for(store, ids=ids)
    judge_pairs(tiny_backend, JudgeSpec(model=str(tiny_model_dir), principles="all"), constitution, pairs, store)
    judge_pairs(tiny_backend, JudgeSpec(model=str(tiny_model_dir), principles=["hhh"], seed=1), constitution, pairs, store)
    add_label(store, ids[0], "A", "ann")
    add_label(store, ids[0], "B", "bob")
    add_label(store, ids[1], "B", "ann")
    yield store, ids
    store.close()


@pytest.mark.slow
def test_dashboard_renders_all_charts(seeded):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # the gold set the most judged items cover (5 paper items), not the 2 human-labelled ones listed first
    assert at.selectbox(key="rel_gold").value == "gold:438HHHEvaluations"
    assert at.selectbox(key="rel_gold").options[0].startswith("human-labels")
    assert any("Too few items for a conclusion: n=5 judged gold items, fewer than 30" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)
    # each card's n is the denominator its own number was computed over (issue 22: "Longer answer wins
    # 55.6% ... n=20" was 5 of 9 verdicts)
    report = at.session_state["rel_report"]
    assert captions.count("n=5 judged gold items") >= 2, captions  # accuracy and kappa
    assert f"n={report['n_swapped']} pairs judged in both orders" in captions
    assert f"n={report['n_longer_decided']} non-tie verdicts on unequal-length pairs" in captions
    assert f"n={report['n_calibrated']} items with P(A) and a gold A/B" in captions
    longer = next(m for m in at.metric if m.label == "Longer answer wins")
    if report["n_longer_decided"]:  # k of n: the shown share times its n is a whole count (to display rounding)
        k = float(longer.value.rstrip("%")) / 100 * report["n_longer_decided"]
        assert abs(k - round(k)) <= 0.0005 * report["n_longer_decided"], (longer.value, report["n_longer_decided"])
    # judges named in words (model, style, principles, constitution@version); the raw keys on hover
    judges = at.multiselect(key="rel_judges_gold:438HHHEvaluations")
    words = [judges.format_func(k) for k in judges.value]
    assert words and all("multiple choice (log-probs)" in w and "constitution" in w for w in words), words
    assert any("every principle" in w for w in words) and any("1 chosen principle(s)" in w for w in words)
    assert all(k in judges.help for k in judges.value)
    assert at.title[0].value == "Judge Reliability"  # as the menu spells it
    charts = at.get("plotly_chart")
    # accuracy with reference lines, calibration, confusion matrix, per-principle bars
    assert len(charts) >= 4
    [calibration] = [json.loads(c.proto.spec) for c in charts if "perfect calibration" in c.proto.spec]
    # long judge keys in a side legend squeezed the plot in its half-width column to a few pixels
    assert calibration["layout"]["legend"]["orientation"] == "h"
    assert any("Accuracy vs gold" in m.label for m in at.metric)
    assert len(at.dataframe) >= 3          # agreement, the two judges' paired difference, consistency
    assert "Which judge is more accurate?" in [h.value for h in at.subheader]
    texts = [t.value for t in at.text]
    assert texts, "the disagreement browser shows the pairs with st.text"
    assert not at.error


@pytest.mark.slow
def test_spot_check_blind_labels_and_agreement(seeded):
    store, ids = seeded
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.number_input(key="rel_spot_n").set_value(2)
    at.text_input(key="rel_spot_annotator").set_value("tester")
    at.button(key="rel_spot_draw").click().run()
    for _ in range(2):
        radio = next(r for r in at.radio if r.label == "Which response is better?")
        radio.set_value("A").run()
        at.button(key="rel_spot_save").click().run()
        assert not at.exception, [e.value for e in at.exception]
    assert any("Agreement with your blind labels" in s.value for s in at.success)
    assert store.scalar("SELECT COUNT(*) FROM human_labels WHERE annotator='tester' AND blind=1") == 2


@pytest.mark.slow
def test_two_judge_disagreements_and_background_eval(seeded, tiny_model_dir):
    from cai_core.jobs import list_jobs, wait_job

    store, _ = seeded
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.radio(key="rel_dis_mode").set_value("two judges").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="rel_dis_j1").value != at.selectbox(key="rel_dis_j2").value
    at.text_input(key="rel_run_model").set_value(str(tiny_model_dir))
    at.number_input(key="rel_run_limit").set_value(2)
    at.selectbox(key="rel_run_constitution").set_value("builtin")
    at.button(key="rel_run_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    jobs = list_jobs(store, kind="eval-judge")
    assert len(jobs) == 1 and "--limit" in jobs[0].argv
    job = wait_job(store, jobs[0].id, timeout=300)
    assert job.status == "finished", job.error
    assert job.result["n"] + job.result["no_valid_verdict"] == 2 and job.result["accuracy_ci"]
    # a longer run reuses the 2 stored items; its progress still ends at total, not past it
    at.number_input(key="rel_run_limit").set_value(3)
    at.button(key="rel_run_start").click().run()
    job = wait_job(store, list_jobs(store, kind="eval-judge")[0].id, timeout=300)
    assert job.status == "finished", job.error
    assert job.done == job.total == 6


@pytest.mark.slow
def test_missing_paper_data_is_explained_and_import_refused(ws, tmp_path, monkeypatch):
    """A user's clone has no ../shared: the page says where to get the paper's eval sets, and Import
    and Start give one clear error instead of a traceback; nothing is written."""
    from cai_core.reliability.gold import gold_sets
    from cai_core.store import open_store

    monkeypatch.setenv("CAI_PAPER_DATA", str(tmp_path / "no-such-folder"))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("CAI_PAPER_DATA" in i.value and "ConstitutionalHarmlessnessPaper" in i.value for i in at.info)
    at.button(key="rel_import").click().run()
    assert any("438HHHEvaluations.jsonl is not at" in shown(e.value) for e in at.error), [e.value for e in at.error]
    at.button(key="rel_run_start").click().run()
    assert not at.exception
    assert sum("is not at" in e.value for e in at.error) >= 1
    store = open_store(ws)
    assert gold_sets(store) == [] or all(g["name"] == "human-labels" for g in gold_sets(store))
    store.close()


def test_paper_data_env_points_elsewhere(tmp_path, monkeypatch):
    import shutil

    from cai_core.reliability.paper_evals import paper_data_dir, paper_eval_path

    copy = tmp_path / "paper"
    copy.mkdir()
    shutil.copy(PAPER_DATA / "HarmfulVsEthical.jsonl", copy)
    monkeypatch.setenv("CAI_PAPER_DATA", str(copy))
    assert paper_data_dir() == copy
    assert paper_eval_path("HarmfulVsEthical.jsonl") == copy / "HarmfulVsEthical.jsonl"
    monkeypatch.delenv("CAI_PAPER_DATA")
    assert paper_data_dir().resolve() == PAPER_DATA.resolve()
