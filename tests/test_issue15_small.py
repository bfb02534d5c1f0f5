"""Issue 15 item 10, the small ones: a resumed run probes each step once, a killed run's message says
it was killed and quotes its last output as output, a duplicate principle id names its line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.helpers import SFT_ROWS, wait_run as wait

YAML_DUP = """name: dup
principles:
  - id: harm
    name: Harm
    critique_request: Harmful?
    revision_request: Fix.
  - id: honest
    name: Honest
    critique_request: Honest?
    revision_request: Fix.
  - id: harm
    name: Harm again
    critique_request: Harmful?
    revision_request: Fix it.
"""


def test_a_duplicate_principle_id_names_its_line_and_the_first_one(tmp_path):
    from cai_core.constitution.files import build_import, load_constitution_file
    from cai_core.errors import CaiError

    path = tmp_path / "dup.yaml"
    path.write_text(YAML_DUP)
    with pytest.raises(CaiError) as err:
        load_constitution_file(path)
    assert str(err.value) == f"{path}:11: duplicate principle id 'harm' (first used at line 3)"
    with pytest.raises(CaiError, match=r"^dup\.yaml:11: duplicate principle id 'harm' \(first used at line 3\)$"):
        build_import(YAML_DUP, "dup.yaml", where="dup.yaml")  # the page's upload path


def test_a_killed_run_says_killed_and_quotes_its_last_output(store, tmp_path):
    from cai_core.store import dumps, now
    from cai_core.training.runs import get_run, refresh

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = "{'loss': 2.31, 'grad_norm': 1.7, 'learning_rate': 0.0002, 'epoch': 0.5}"
    (run_dir / "train.log").write_text(f"[run] training\n{metrics}\n")
    proc = subprocess.Popen(["sleep", "60"])  # a child of this process: its exit status is known
    store.execute("INSERT INTO runs (name, kind, spec_json, status, run_dir, pid, created_at) VALUES (?,?,?,?,?,?,?)",
                  ("k", "sft", dumps({"kind": "sft"}), "running", str(run_dir), proc.pid, now()))
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.3)
    assert refresh(store)
    error = get_run(store, "k").error
    assert error == (f"the training process {proc.pid} ended unexpectedly (killed by signal 9); "
                     f"last output: {metrics}")


def test_a_crashed_run_names_its_error_not_its_last_line():
    from cai_core.training.runs import death_reason

    tail = "Traceback (most recent call last):\nValueError: bad shape\n{'loss': 1.0}"
    assert death_reason(7, 1, tail) == "the training process 7 ended unexpectedly (exit code 1): ValueError: bad shape"
    assert death_reason(7, None, "{'loss': 1.0}") == ("the training process 7 ended unexpectedly (gone without an "
                                                      "error message: killed?); last output: {'loss': 1.0}")
    assert death_reason(7, -9, "") == "the training process 7 ended unexpectedly (killed by signal 9)"


@pytest.mark.slow
def test_resuming_from_a_checkpoint_probes_each_step_once(store, tmp_path, tiny_model_dir):
    """The real trainer: 2 steps (checkpoint-2, probed at 0 and 2), then resumed to 4. Step 2 used to be
    recorded twice on the first run (step end + final probe) and again when the resumed run began."""
    from cai_core.training.runs import launch, resume_run
    from cai_core.training.specs import new_spec

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    spec = new_spec("sft", name="probe-once", model=str(tiny_model_dir), dataset=str(data), adapter="lora",
                    max_steps=2, max_length=64, batch_size=2, probe_max_new_tokens=4, probe_steps=2, save_steps=2,
                    probe_prompts=["How do I bake bread?", "Tell me a joke"])
    run = wait(store, launch(store, spec).id)
    assert run.status == "finished", run.error
    run = wait(store, resume_run(store, run.id, max_steps=4).id)
    assert run.status == "finished", run.error
    rows = [json.loads(line) for line in run.paths.samples.read_text().splitlines()]
    counts = Counter((r["step"], r["prompt"]) for r in rows)
    assert sorted({s for s, _ in counts}) == [0, 2, 4]
    assert set(counts.values()) == {1}, counts
