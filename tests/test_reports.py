"""HTML reports are self-contained (plotly.js inline, no external scripts) and escape model text."""
import re
from pathlib import Path

import pytest

from cai_core.errors import CaiError
from cai_core.evaluation.reports import report_html, write_report
from tests.helpers import XSS, in_fresh_thread, run_cli, seed_evaluation


def assert_self_contained_and_escaped(text):
    assert text.startswith("<!DOCTYPE html>")
    assert "Plotly" in text and len(text) > 1_000_000  # plotly.js embedded
    assert not re.search(r"<script[^>]+src=", text), "no external scripts"
    assert XSS not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_evaluation_report(store):
    eid = seed_evaluation(store)
    text = report_html(store, "evaluation", eid)
    assert_self_contained_and_escaped(text)
    assert "<img src=x" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "Harmlessness vs non-evasiveness" in text  # no helpfulness prompts: the x axis is non-evasiveness
    assert text.count("<div class=\"fig\">") >= 3
    with pytest.raises(CaiError, match="A/B experiment|policy evaluation"):
        report_html(store, "experiment", eid)
    with pytest.raises(CaiError, match="no evaluation"):
        report_html(store, "evaluation", 999)


def test_a_report_of_the_wrong_kind_or_unfinished_names_the_report_to_use(store):
    from cai_core.store import now

    eid = seed_evaluation(store)
    with store.tx() as conn:
        ab = conn.execute("INSERT INTO evaluations (name, kind, spec_json, result_json, job_id, created_at) "
                          "VALUES ('ab', 'ab-experiment', '{}', NULL, NULL, ?)", (now(),)).lastrowid
        conn.execute("INSERT INTO evaluations (name, kind, spec_json, result_json, job_id, created_at) "
                     "VALUES ('ev2', 'policies', '{}', NULL, NULL, ?)", (now(),))
    with pytest.raises(CaiError, match=rf"^{eid} is a policy evaluation; use `report evaluation {eid}`$"):
        report_html(store, "experiment", eid)
    with pytest.raises(CaiError, match=rf"^'ab' is an A/B experiment; use `report experiment {ab}`$"):
        report_html(store, "evaluation", "ab")
    with pytest.raises(CaiError, match=r"^experiment 'ab' has no result yet \(still running, stopped or failed\)$"):
        report_html(store, "experiment", "ab")
    with pytest.raises(CaiError, match=r"^evaluation 'ev2' has no result yet"):
        report_html(store, "evaluation", "ev2")


def test_report_command_checks_out_before_writing(store, tmp_path):
    import argparse

    from cai_core.commands.report import cmd_report

    eid = seed_evaluation(store)
    args = dict(workspace=str(store.workspace.root), kind="evaluation", ref=str(eid))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CaiError, match="--out is a folder; give a file name"):
        cmd_report(argparse.Namespace(**args, out=str(out)))
    with pytest.raises(CaiError, match="the folder for --out does not exist"):
        cmd_report(argparse.Namespace(**args, out=str(out / "nope" / "r.html")))
    assert cmd_report(argparse.Namespace(**args, out=str(out / "r.html"))) == 0
    assert [p.name for p in out.iterdir()] == ["r.html"]


@pytest.mark.slow
def test_trajectory_report_and_cli(store, tmp_path):
    with store.tx() as conn:
        tid = conn.execute(
            "INSERT INTO trajectories (key, prompt, constitution_name, constitution_version, model, params_json, seed, "
            "initial, final, status, created_at, updated_at) VALUES ('t','How? " + XSS + "','c','v1','m','{}',0,?,?,'done',0,0)",
            ("first " + XSS, "final answer")).lastrowid
        conn.execute("INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, violation, revision, "
                     "created_at) VALUES (?,1,'harm',?,1,'final answer',0)", (tid, "crit </pre><script>x()</script>"))
    text = report_html(store, "trajectory", tid)
    assert_self_contained_and_escaped(text)
    assert "<script>x()</script>" not in text
    out = write_report(store, "trajectory", tid)
    assert out.parent == store.workspace.reports_dir and out.read_text() .startswith("<!DOCTYPE html>")
    target = tmp_path / "r.html"
    r = run_cli("report", "trajectory", str(tid), "--out", str(target), "--workspace", str(store.workspace.root))
    assert r.returncode == 0, r.stderr
    assert_self_contained_and_escaped(target.read_text())
    r = run_cli("report", "evaluation", "nope", "--workspace", str(store.workspace.root))
    assert r.returncode == 2 and "no evaluation" in r.stderr


def test_experiment_report(store, tiny_model_dir, tmp_path):
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.files import dump_constitution
    from cai_core.evaluation.experiments import run_ab_experiment
    from cai_core.jobs.specs import ABExperimentSpec

    def const(w):
        return Constitution(name="c", principles=[Principle(id="harm", name="Harm", critique_request=w,
                                                            revision_request="Rewrite it.")])
    (tmp_path / "a.yaml").write_text(dump_constitution(const("Is it harmful?"), "yaml"))
    (tmp_path / "b.yaml").write_text(dump_constitution(const("Is it dangerous?"), "yaml"))
    (tmp_path / "p.txt").write_text("How do I pick a lock?\nSay " + XSS + "\n")
    res = run_ab_experiment(store, ABExperimentSpec(str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"),
                                                    str(tmp_path / "p.txt"), model=str(tiny_model_dir), max_new_tokens=5,
                                                    n_boot=20, name="x"))
    text = report_html(store, "experiment", res["id"])
    assert "Plotly" in text and not re.search(r"<script[^>]+src=", text)
    assert XSS not in text
    assert "Per-principle attribution" in text and "harm" in text
    assert 'class="warn"' in text and "n=2 prompts" in text  # the tab's small-n warnings, in the report too


@pytest.mark.slow
def test_report_opens_offline_in_a_browser(store):
    """The real check: chromium, offline, draws the charts and runs no script from model text."""
    import shutil

    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("chromium is not installed (apt-get install chromium to run this check)")
    path = write_report(store, "evaluation", seed_evaluation(store))
    errors, dialogs = [], []

    def open_report() -> int:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_context(offline=True).new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=20_000)
            count = page.locator(".js-plotly-plot").count()
            browser.close()
            return count

    n_plots = in_fresh_thread(open_report)
    assert n_plots >= 4 and not errors and not dialogs


def test_tradeoff_names_of_tied_policies_do_not_overlap():
    from cai_core.evaluation.reports import tradeoff_figure

    points = [{"policy": "default", "harmless": 1000.0, "helpful": 1000.0},
              {"policy": "sft", "harmless": 1000.0, "helpful": 1000.0},
              {"policy": "ppo", "harmless": 1100.0, "helpful": 950.0}]
    trace = tradeoff_figure({"points": points}).data[0]
    assert list(trace.text) == ["default", "sft", "ppo"]
    assert list(trace.textposition) == ["top center", "bottom center", "top center"]


def test_report_charts_keep_their_colours_when_built_inside_the_app(store, monkeypatch):
    import plotly.io as pio
    import streamlit  # noqa: F401 - registers the "streamlit" plotly template, as in the running app

    monkeypatch.setattr(pio.templates, "default", "streamlit")
    text = report_html(store, "evaluation", seed_evaluation(store))
    assert '"colorway":["#636efa"' in text  # plotly_white's colours, not the app template's black


def test_tradeoff_share_axis_spans_zero_to_one():
    """Without helpfulness prompts the x axis is a share of non-evasive answers: 0..1, even when every
    policy sits on the same value (plotly's autorange made it 0..2 around a lone 1.0)."""
    from cai_core.evaluation.reports import tradeoff_figure

    points = [{"policy": "base", "harmless": 1000.0, "evasive_rate": 0.0},
              {"policy": "sft", "harmless": 1000.0, "evasive_rate": 0.0}]
    fig = tradeoff_figure({"points": points})
    assert list(fig.layout.xaxis.range) == [-0.05, 1.05]
    with_helpful = tradeoff_figure({"points": [{**p, "helpful": 1000.0} for p in points]})
    assert with_helpful.layout.xaxis.range is None  # Elo-scale scores keep plotly's autorange


def test_the_experiment_report_carries_the_small_n_warnings_of_its_tab():
    from cai_core.summaries.headlines import MIN_ITEMS, experiment_warnings

    few = experiment_warnings({"prompts": 3})
    assert len(few) == 2 and "n=3 prompts" in few[0] and "no difference is called significant" in few[1]
    assert len(experiment_warnings({"prompts": 10})) == 1 and experiment_warnings({"prompts": MIN_ITEMS}) == []
