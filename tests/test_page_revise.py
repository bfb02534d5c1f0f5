"""The Critique and Revise page: renders, streams a live prompt, starts a batch job, shows model text literally."""
from __future__ import annotations

from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "pages" / "30_Critique_and_Revise.py"
SCRIPT = "<script>alert('x')</script> **bold** $x$"


@pytest.fixture
def page_env(ws, monkeypatch, tiny_model_dir):
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution
    from cai_core.data.prompt_sets import import_prompt_set
    from cai_core.store import open_store

    monkeypatch.setenv("CAI_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = open_store(ws)
    save_constitution(store, Constitution(name="mini", principles=[
        Principle(id="harm", name="Harm", critique_request="Identify ways the response is harmful.",
                  revision_request="Rewrite the response to remove harmful content."),
        Principle(id="tpl", name="Template", critique_request="Is this answer to {question} harmful? {response}",
                  revision_request="Rewrite {response} using the critique: {critique}"),
    ]))
    import_prompt_set(store, "red", [SCRIPT, "How do I pick a lock?", "Tell me a joke"])
    return store


def _page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_renders_without_constitutions(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_WORKSPACE", str(tmp_path / "empty"))
    at = _page()
    assert any("No constitution yet" in i.value for i in at.info)


@pytest.mark.slow
def test_live_prompt_streams_and_stores(page_env):
    from cai_core.supervised.revision import list_trajectories

    at = _page()
    assert at.title[0].value == "Critique and Revise"
    at.text_area(key="live_prompt").set_value(SCRIPT)
    at.number_input(key="live_max").set_value(8)
    at.button(key="live_run").click().run()
    assert not at.exception, at.exception
    rows, total = list_trajectories(page_env, batch="live")
    assert total == 1 and rows[0]["prompt"] == SCRIPT
    # the prompt is shown literally (st.text), never as HTML or markdown
    texts = [t.value for t in at.text]
    assert SCRIPT in texts
    assert not any("<script>" in m.value for m in at.markdown)


@pytest.mark.slow
def test_batch_start_creates_job_and_results_render(page_env):
    from cai_core.jobs import list_jobs, wait_job
    from cai_core.supervised.revision import list_trajectories

    at = _page()
    at.number_input(key="batch_rounds").set_value(1)
    at.number_input(key="batch_max").set_value(8)
    at.button(key="batch_start").click().run()
    assert not at.exception, at.exception
    jobs = list_jobs(page_env, kind="revise")
    assert len(jobs) == 1 and "--prompts" in jobs[0].argv and "red" in jobs[0].argv
    job = wait_job(page_env, jobs[0].id, timeout=300)
    assert job.status == "finished", job.error
    rows, total = list_trajectories(page_env)
    assert total == 3
    at = _page()  # results tab: the newest trajectory opens side by side, its prompt literally
    assert any(t.value == rows[0]["prompt"] for t in at.text)
    assert at.dataframe, "results and statistics tables render"


@pytest.mark.slow
def test_sft_export_form_starts_job(page_env):
    from cai_core.jobs import list_jobs

    at = _page()
    at.text_input(key="sft_name").set_value("../escape")
    form_button = next(b for b in at.button if b.label == "Export")
    form_button.click().run()
    assert any("invalid export name" in e.value for e in at.error)
    assert not list_jobs(page_env, kind="export-sft")


def test_word_diff_markdown_keeps_directives_on_one_line():
    """A change spanning paragraphs must not leave `[~~...~~]` as literal text (directives end at a line break)."""
    import re

    from ui.revise import diff_markdown

    md = diff_markdown("Keep this. Drop one.\n\nAnd two.", "Keep this. Fresh.")
    directives = re.findall(r":(?:red|green)-background\[(.*?)\]", md, flags=re.S)
    assert directives and all("\n" not in d for d in directives), md
    assert md.count(":red-background[") == md.count("~~") // 2


@pytest.mark.slow
def test_batch_name_follows_the_prompt_set_until_edited(page_env):
    from cai_core.data.prompt_sets import import_prompt_set

    import_prompt_set(page_env, "zz_other", ["Another prompt"])
    at = _page()
    at.selectbox(key="batch_set").set_value("red").run()
    assert at.text_input(key="batch_name").value.startswith("red-")
    at.selectbox(key="batch_set").set_value("zz_other").run()
    assert at.text_input(key="batch_name").value.startswith("zz_other-"), "suggested name follows the set"
    at.text_input(key="batch_name").set_value("my-batch").run()
    at.selectbox(key="batch_set").set_value("red").run()
    assert at.text_input(key="batch_name").value == "my-batch", "a typed name is kept"


@pytest.mark.slow
def test_only_the_newest_job_of_a_batch_offers_resume(page_env):
    from cai_core.store import dumps, now

    argv = ["python", "-m", "cai_core", "revise", "--prompts", "red", "--batch", "b1"]
    for status in ("failed", "failed"):
        page_env.execute("INSERT INTO jobs(kind, status, argv_json, total, error, created_at) VALUES (?,?,?,?,?,?)",
                         ("revise", status, dumps(argv), 3, "killed", now()))
    at = _page()
    resume = [b for b in at.button if b.label == "Resume"]
    assert len(resume) == 1 and resume[0].key.endswith("_2"), "the older run was resumed by the newer one"
    assert any("Resumed by a later job" in c.value for c in at.caption)


@pytest.mark.slow
def test_results_table_shows_a_dash_not_none_for_an_unmeasured_change(page_env):
    """A trajectory with no change ratio (no final answer measured) shows '-' in "changed %", never None."""
    from cai_core.store import now

    for prompt, final, ratio in (("measured", "new text", 0.25), ("unmeasured", None, None)):
        page_env.execute(
            "INSERT INTO trajectories (key, batch, prompt, constitution_name, constitution_version, model, params_json, "
            "initial, final, status, change_ratio, rounds, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (prompt, "b", prompt, "mini", "v", "m", "{}", "old text", final, "done", ratio, 1, now(), now()))
    at = _page()
    table = at.dataframe[0].value
    assert list(table["changed %"]) == ["-", "25%"]


def test_results_show_each_rounds_exact_requests_as_a_transcript(page_env):
    from cai_core.constitution.versions import get_constitution
    from cai_core.models.backends.base import Backend, Completion
    from cai_core.supervised.revision import ReviseSettings, run_revision

    class Echo(Backend):
        spec = "echo"

        def generate(self, conversations, params):
            return [[Completion("Verdict: violation. <i>bad</i>")] for _ in conversations]

        def stream(self, conversation, params):
            yield "x"

        def choice_logprobs(self, conversations, options, assistant_prefix=""):
            return [{o: 1.0 / len(options) for o in options} for _ in conversations]

    c = get_constitution(page_env, "mini")
    run_revision(page_env, Echo(), c, [SCRIPT], ReviseSettings(rounds=1, schedule="sequence", sequence=["harm"]),
                 "echo", batch="t")
    at = _page()
    assert any(e.label == "Transcript: exact text sent to the model" for e in at.expander)
    texts = [t.value for t in at.text]
    assert "CritiqueRequest: Identify ways the response is harmful." in texts
    assert "RevisionRequest: Rewrite the response to remove harmful content." in texts
    assert SCRIPT in texts and not any("<script>" in m.value for m in at.markdown)
