"""Training page (AppTest): empty state, a finished run's charts and samples, launching a run from the form."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "60_Training.py")
ROWS = [{"messages": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "The answer is: Paris."}]}] * 4


@pytest.fixture
def ws_env(ws):
    from cai_core.store import open_store

    return open_store(ws)


def _page():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _fake_finished_run(store, tmp_path, kind="ppo"):
    """A recorded run with metrics and samples (as a worker leaves them), without training."""
    from cai_core.store import dumps
    from cai_core.training.runs import record_metrics
    from cai_core.training.specs import new_spec

    run_dir = tmp_path / "done"
    run_dir.mkdir()
    spec = new_spec(kind, name="done", dataset="d", reward_model="r")
    run_dir.joinpath("spec.yaml").write_text("kind: ppo\n")
    cur = store.execute("INSERT INTO runs (name, kind, spec_json, status, run_dir, created_at, started_at, ended_at, "
                        "final_metrics_json) VALUES (?,?,?,?,?,?,?,?,?)",
                        ("done", kind, dumps(spec.to_dict()), "finished", str(run_dir), time.time(), time.time() - 60,
                         time.time(), dumps({"objective/kl": 25.0})))
    run_id = cur.lastrowid
    for step in range(1, 4):
        record_metrics(store, run_id, run_dir, step, {"objective/kl": 8.0 * step, "objective/scores": 0.1 * step,
                                                      "loss/value_avg": 1 / step, "lr": 1e-5})
    (run_dir / "samples.jsonl").write_text("".join(json.dumps({"step": s, "prompt": "p", "text": f"answer {s}"}) + "\n"
                                                   for s in (0, 2)))
    return run_id


def test_empty_state_invites_a_first_run(ws_env):
    at = _page()
    assert any("No runs yet - start one here" in i.value for i in at.info)
    assert any(b.label == "Launch run" for b in at.button)
    assert at.button(key="tr_launch").disabled  # no dataset chosen yet: the problem is listed
    assert any("dataset is empty" in w.value for w in at.warning)


def test_finished_run_shows_charts_kl_warning_and_samples(ws_env, tmp_path):
    _fake_finished_run(ws_env, tmp_path)
    at = _page()
    assert len(at.get("plotly_chart")) >= 4  # loss/lr, reward, KL, value loss, memory...
    assert any("KL is exploding" in w.value for w in at.warning)
    # probe answers in full (plain text), newest step first
    answers = [t.value for t in at.text if t.value.startswith("answer ")]
    assert answers == ["answer 2", "answer 0"]
    assert "done" in list(at.dataframe[0].value["run"])


@pytest.mark.slow
def test_launch_from_the_form_creates_a_background_run(ws_env, tmp_path, tiny_model_dir):
    from cai_core.training.runs import get_run, kill_run, list_runs

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    _fake_finished_run(ws_env, tmp_path)  # an earlier run: the form is in the "New run" tab
    at = _page()
    at.selectbox(key="tr_kind").set_value("sft")
    at.text_input(key="tr_model").set_value(str(tiny_model_dir))
    at.selectbox(key="tr_dataset_choice").set_value("Other: a .jsonl file or HF folder").run()
    at.text_input(key="tr_dataset_path").set_value(str(data))
    at.number_input(key="tr_max_steps").set_value(2)
    at.number_input(key="tr_maxlen").set_value(64)
    at.text_input(key="tr_name").set_value("from-page").run()
    assert not at.exception, at.exception
    assert not at.button(key="tr_launch").disabled, [w.value for w in at.warning]
    at.button(key="tr_launch").click().run()
    assert not at.exception, at.exception
    runs = list_runs(ws_env)
    assert [r.name for r in runs] == ["from-page", "done"]
    run = get_run(ws_env, "from-page")
    assert run.pid and run.spec["max_steps"] == 2 and run.spec["model"] == str(tiny_model_dir)
    assert any("started" in s.value for s in at.success)
    # the page shows the new run at once (Runs tab, run picked), not the empty state it was drawn with
    assert not any("No runs yet" in i.value for i in at.info)
    assert at.selectbox(key="tr_pick").value == run.id
    if run.active:
        kill_run(ws_env, run.id)  # the point was the launch; don't leave a process behind


def test_curves_of_very_different_size_get_their_own_axis():
    from ui.training import metric_figure

    metrics = [{"step": s, "sys/steps_per_s": 0.2, "sys/tokens_per_s": 150.0 + s, "loss": 1.0 / s} for s in (1, 2, 3)]
    fig = metric_figure(metrics, "Throughput", ["sys/steps_per_s", "sys/tokens_per_s"])
    assert [t.yaxis for t in fig.data] == ["y", "y2"]  # steps/s would be a flat line at 0 on the tokens/s axis
    fig = metric_figure(metrics, "Loss", ["loss"])
    assert [t.yaxis for t in fig.data] == ["y"]


def test_memory_estimate_of_a_small_model_keeps_its_digits(ws_env, tiny_model_dir):
    """The tiny model has ~35 K parameters (16 K trainable with LoRA): not '0.0 M' next to '0.02 M'."""
    at = _page()
    at.text_input(key="tr_model").set_value(str(tiny_model_dir)).run()
    assert not at.exception, at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Parameters"].endswith(" K") and values["Trainable"].endswith(" K"), values
    assert float(values["Parameters"][:-2]) > float(values["Trainable"][:-2]), values


@pytest.mark.slow
def test_a_whitespace_only_probe_answer_says_so(ws_env, tmp_path):
    _fake_finished_run(ws_env, tmp_path)
    (tmp_path / "done" / "samples.jsonl").write_text(json.dumps({"step": 0, "prompt": "p", "text": "\n\n\n"}) + "\n")
    at = _page()
    assert not at.exception, at.exception
    assert any("empty answer: 3 whitespace characters" in c.value for c in at.caption), [c.value for c in at.caption]
