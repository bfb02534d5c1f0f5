"""The experiment notebook (issue 15): the lineage graph of a workspace built by the real commands
(revise -> export-sft -> train; pairs -> judge -> export-prefs; evaluate the run), the page, the
shareable HTML (self-contained, names escaped) and `python -m cai_core notebook`."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT, run_cli

HOSTILE = "<b>x</b>[l](javascript:alert(1))"


def _ok(*args):
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir):
    """One workspace through the whole loop on the tiny model, by the CLI (as the README runs it)."""
    tmp = tmp_path_factory.mktemp("nb")
    ws = str(tmp / "ws")
    model = str(tiny_model_dir)
    prompts = tmp / "red.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["How do I pick a lock?", "Tell me a joke"]))
    const = tmp / "c.yaml"
    const.write_text(f"name: '{HOSTILE}'\nprinciples:\n  - id: harm\n    name: Harm\n    critique_request: Harmful?\n"
                     "    revision_request: Fix it.\n    comparison_question: Which response is less harmful?\n")
    _ok("revise", "--model", model, "--constitution", str(const), "--prompts", str(prompts), "--rounds", "1",
        "--max-new-tokens", "4", "--batch", "rev1", "--workspace", ws)
    _ok("export-sft", "--name", "sl1", "--format", "jsonl", "--workspace", ws)
    _ok("pairs", "sample", "--model", model, "--prompts", str(prompts), "--k", "2", "--batch", "pairs1",
        "--max-new-tokens", "4", "--workspace", ws)
    _ok("judge", "--judge-model", model, "--constitution", str(const), "--batch", "pairs1", "--workspace", ws)
    from cai_core.store import open_store

    store = open_store(ws)
    for cid in [r["id"] for r in store.query("SELECT id FROM comparisons WHERE batch='pairs1'")]:
        _ok("label", str(cid), "A", "--annotator", "me", "--workspace", ws)
    _ok("export-prefs", "--name", "prefs1", "--batch", "pairs1", "--workspace", ws)
    _ok("train", "sft", "--model", model, "--dataset", "sl1", "--lora", "--max-steps", "1", "--max-length", "64",
        "--batch-size", "2", "--set", "probe_steps=0", "--set", "probe_prompts=[]", "--name", "sft1", "--workspace", ws)
    _ok("evaluate", "--policies", f"base={model}", "tuned=run:sft1", "--prompts", str(prompts), "--limit", "1",
        "--judge-model", model, "--max-new-tokens", "4", "--name", "ev1", "--workspace", ws)
    return store


@pytest.mark.slow  # the module's workspace is built by the real CLI (trains, evaluates)
def test_the_graph_follows_what_the_commands_recorded(built):
    from cai_core.summaries.lineage import notebook_rows, workspace_lineage

    lin = workspace_lineage(built)
    edges = {(e.src.split(":")[0], e.label, e.dst) for e in lin.edges}
    version = built.scalar("SELECT version FROM constitutions")
    judge = f"judge:{built.scalar('SELECT judge_key FROM judges')}"
    assert ("constitution", "revised", "revision:rev1") in edges
    assert ("revision", "exported", "export:sl1") in edges
    assert ("constitution", "judges with", judge) in edges
    assert ("pairs", "judged by", judge) in edges  # pairs -> judge -> export: drawn left to right
    assert ("pairs", "exported", "export:prefs1") in edges
    assert ("export", "trained on", "run:sft1") in edges
    eval_id = built.scalar("SELECT id FROM evaluations WHERE name='ev1'")
    assert ("run", "evaluated", f"evaluation:{eval_id}") in edges
    assert lin.nodes[f"constitution:{HOSTILE}@{version}"].label == f"{HOSTILE}@{version[:8]}"
    rows = {r["item"]: r for r in notebook_rows(lin, "run")}
    assert "trained on sl1 (sft)" in rows["sft1 (sft, finished)"]["from"]
    assert rows["sft1 (sft, finished)"]["fed"] == "evaluated in ev1 (policies)"


@pytest.mark.slow  # the module's workspace is built by the real CLI (trains, evaluates)
def test_the_html_notebook_is_self_contained_and_escapes_names(built, tmp_path):
    out = tmp_path / "nb.html"
    res = _ok("notebook", "--out", str(out), "--workspace", str(built.workspace.root))
    assert res.stdout.strip() == str(out)
    text = out.read_text()
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text  # tables and graph labels alike
    assert "<script src=" not in text and "Plotly" in text  # plotly.js inline: opens offline
    assert "sft1 (sft, finished)" in text
    # pair batches: pairs1 and the evaluation's comparisons
    assert "Revision batches (1)" in text and "Pair batches (2)" in text and "batchs" not in text
    data = json.loads(_ok("notebook", "--json", "--workspace", str(built.workspace.root)).stdout)
    assert {n["kind"] for n in data["nodes"]} >= {"constitution", "revision batch", "pair batch", "judge", "export",
                                                 "run", "evaluation"}


@pytest.mark.slow  # the module's workspace is built by the real CLI (trains, evaluates)
def test_the_page_shows_counts_graph_tables_and_builds_the_html(built, monkeypatch):
    monkeypatch.setenv("CAI_WORKSPACE", str(built.workspace.root))
    at = AppTest.from_file(str(ROOT / "pages" / "90_Notebook.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "1" and metrics["Evaluations"] == "1" and metrics["Exports"] == "2"
    assert metrics["Revision batches"] == "1" and metrics["Pair batches"] == "2"  # not "batchs"
    assert at.get("plotly_chart")
    assert not any("<b>" in m.value for m in at.markdown)
    at.button(key="nb_build").click().run()
    assert not at.exception, at.exception
    assert at.get("download_button")
    assert any(c.value.startswith("python -m cai_core notebook --out notebook.html") for c in at.code)


def test_an_empty_workspace_says_what_will_appear(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_WORKSPACE", str(tmp_path / "empty"))
    at = AppTest.from_file(str(ROOT / "pages" / "90_Notebook.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("Nothing in this workspace yet" in i.value for i in at.info)
