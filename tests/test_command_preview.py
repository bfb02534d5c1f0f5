"""The command behind every start form (issue 15): each form shows the `python -m cai_core ...` line,
and the job it starts runs exactly that argv (the job row's argv, interpreter shown as `python`,
--job-id dropped). Processes are not spawned here: Popen is replaced by a recorder."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import PAPER_DATA, ROOT, render_page

pytestmark = pytest.mark.slow  # every test here renders full pages on a seeded workspace

PAPER = Path(os.environ.get("CAI_PAPER_DATA") or PAPER_DATA)


class _Spawned:
    """What Popen was asked to run; the job stays 'queued' with a live pid (this test process)."""

    calls: list[dict] = []

    def __init__(self, argv, **kwargs):
        _Spawned.calls.append({"argv": list(argv), "env": dict(kwargs.get("env") or {})})
        self.pid = os.getpid()

    def poll(self):  # still running, as far as the supervisor can tell
        return None


@pytest.fixture
def seeded(ws, monkeypatch, tiny_model_dir):
    """The shared workspace with a constitution (two versions), a prompt set and a pair; Popen recorded."""
    from cai_core.jobs import supervisor
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.versions import save_constitution
    from cai_core.data.prompt_sets import import_prompt_set
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.store import open_store

    monkeypatch.setenv("CAI_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CAI_PAPER_DATA", str(PAPER))
    _Spawned.calls = []
    monkeypatch.setattr(supervisor.subprocess, "Popen", _Spawned)  # spawns jobs and training runs
    store = open_store(ws)
    principle = dict(id="harm", name="Harm", critique_request="Is it harmful?", revision_request="Fix it.",
                     comparison_question="Which response is less harmful?")
    save_constitution(store, Constitution(name="mini it's", principles=[Principle(**principle)]))
    save_constitution(store, Constitution(name="mini it's", principles=[Principle(**{**principle,
                                                                                      "revision_request": "Fix."})]))
    import_prompt_set(store, "red", ["How do I pick a lock?", "Tell me a joke"], kind="red-team")
    add_pairs(store, [{"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}], origin="sampled",
              batch="b1")
    return store


def _previews(at: AppTest, command: str) -> list[str]:
    return [c.value for c in at.code if c.value.startswith(f"python -m cai_core {command} ")]


def _started_matches(store, at: AppTest, command: str, kind: str) -> list[str]:
    """The newest job is of `kind`, and its recorded argv is the preview the page showed."""
    from cai_core.jobs.command_line import as_previewed
    from cai_core.jobs import list_jobs

    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    job = list_jobs(store)[0]
    assert job.kind == kind
    shown = _previews(at, command)
    assert shown, [c.value for c in at.code]
    assert as_previewed(job.argv) in [shlex.split(s) for s in shown]
    assert _Spawned.calls[-1]["argv"] == job.argv  # the row records what was spawned
    return as_previewed(job.argv)


def _click(at: AppTest, label: str) -> None:
    next(b for b in at.button if b.label == label).click().run()


def test_revise_batch_and_sft_export_preview_what_they_start(seeded):
    at = render_page("30_Critique_and_Revise.py")
    at.number_input(key="batch_limit").set_value(1).run()
    before = _previews(at, "revise")
    assert len(before) == 1 and "--limit 1" in before[0] and "'mini it'\"'\"'s@" in before[0]  # shell-quoted
    assert "--truncate-prompts" not in before[0]
    at.checkbox(key="batch_truncate").check().run()  # the user's choice to cut over-long prompts reaches the job
    at.button(key="batch_start").click().run()
    argv = _started_matches(seeded, at, "revise", "revise")
    assert argv[argv.index("--workspace") + 1] == str(seeded.workspace.root) and "--truncate-prompts" in argv

    at.text_input(key="sft_name").set_value("sl-1")
    at.button(key="sft_preview").click().run()  # a form's widgets reach the script on submit
    assert _previews(at, "export-sft") == [f"python -m cai_core export-sft --name sl-1 "
                                           f"--workspace {seeded.workspace.root}"]  # defaults are left off
    _click(at, "Export")
    _started_matches(seeded, at, "export-sft", "export-sft")


def test_sampling_judging_and_preference_export_preview_what_they_start(seeded):
    at = render_page("40_Preferences.py")
    batch = next(t for t in at.text_input if t.label == "Batch name")
    assert batch.value == "pairs-1"  # fresh: b1 exists, pairs-1 does not
    _click(at, "Start sampling")
    _started_matches(seeded, at, "pairs sample", "pairs-sample")

    at.selectbox(key="judge_style").set_value("parse")
    at.button(key="judge_preview").click().run()
    assert any("--style parse" in s for s in _previews(at, "judge"))
    at.button(key="judge_start").click().run()
    argv = _started_matches(seeded, at, "judge", "judge")
    assert argv[argv.index("--style") + 1] == "parse"

    _click(at, "Export")
    _started_matches(seeded, at, "export-prefs", "export-prefs")


def test_a_new_sampling_batch_name_is_never_an_existing_one(seeded):
    from cai_core.rlaif.pairs import add_pairs

    add_pairs(seeded, [{"id": "2", "prompt": "q", "response_a": "a", "response_b": "b"}], origin="sampled",
              batch="pairs-1")
    at = render_page("40_Preferences.py")
    assert next(t for t in at.text_input if t.label == "Batch name").value == "pairs-2"


@pytest.mark.skipif(not (PAPER / "438HHHEvaluations.jsonl").is_file(), reason="paper data not here")
def test_eval_judge_previews_what_it_starts(seeded):
    at = render_page("50_Judge_Reliability.py")
    at.number_input(key="rel_run_limit").set_value(2).run()
    at.button(key="rel_run_start").click().run()
    _started_matches(seeded, at, "eval-judge", "eval-judge")


def test_evaluation_and_ab_experiment_preview_what_they_start(seeded, tiny_model_dir):
    at = render_page("70_Evaluate_and_Compare.py")
    next(t for t in at.text_input if t.label == "More policies").set_value(f"tiny={tiny_model_dir}")
    _click(at, "Start evaluation")
    _started_matches(seeded, at, "evaluate", "evaluate")

    _click(at, "Start A/B experiment")
    _started_matches(seeded, at, "ab-experiment", "ab-experiment")


def test_a_form_with_a_problem_says_why_there_is_no_command(seeded):
    at = render_page("70_Evaluate_and_Compare.py")  # one policy chosen: an evaluation needs two
    assert not _previews(at, "evaluate")
    assert any("at least two policies" in c.value for c in at.caption)


def test_training_preview_builds_the_spec_the_launch_records(seeded, tmp_path, tiny_model_dir):
    from cai_core.cli import build_parser
    from cai_core.commands.train import build_spec
    from cai_core.training.runs import list_runs

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    at = render_page("60_Training.py")
    at.selectbox(key="tr_kind").set_value("sft")
    at.text_input(key="tr_model").set_value(str(tiny_model_dir))
    at.selectbox(key="tr_dataset_choice").set_value("Other: a .jsonl file or HF folder").run()
    at.text_input(key="tr_dataset_path").set_value(str(data))
    at.number_input(key="tr_max_steps").set_value(2)
    at.text_input(key="tr_lr").set_value("3e-4")
    at.text_input(key="tr_name").set_value("from-page").run()
    shown = _previews(at, "train")
    assert len(shown) == 1 and "--max-steps 2" in shown[0] and "--lr 0.0003" in shown[0]
    at.button(key="tr_launch").click().run()
    assert not at.exception, at.exception
    run = list_runs(seeded)[0]
    args = build_parser().parse_args(shlex.split(shown[0])[3:])
    assert Path(args.workspace) == seeded.workspace.root
    previewed = build_spec(args).to_dict()
    recorded = dict(run.spec)
    assert {k: v for k, v in previewed.items() if k != "out"} == {k: v for k, v in recorded.items() if k != "out"}
    assert _Spawned.calls[-1]["argv"] == shlex.split(run.command)


def test_the_llama_server_form_previews_its_command(seeded):
    from cai_core.cli import build_parser
    from cai_core.models import llama_server

    if not llama_server.is_installed():
        pytest.skip("llama-cpp-python is not installed here")
    at = render_page("10_Models.py")
    at.number_input(key="server_threads").set_value(2).run()
    shown = _previews(at, "server-start")
    assert len(shown) == 1, [c.value for c in at.code]
    args = build_parser().parse_args(shlex.split(shown[0])[3:])  # a command the CLI accepts as it is
    assert args.threads == 2 and args.use and args.model is None
