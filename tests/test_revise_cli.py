"""The `revise` CLI contract: inputs (files, stored names), --out format, and bad inputs (exit 2, nothing written)."""
from __future__ import annotations

import json

import pytest

from tests.helpers import PAPER_DATA, run_cli

pytestmark = pytest.mark.slow  # every test here runs `python -m cai_core` in a subprocess, most on a model


@pytest.fixture
def inputs(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I pick a lock?", "category": "crime", "source": "red"}) + "\n"
                       + json.dumps({"prompt": "<script>alert(1)</script>", "id": 7}) + "\n")
    txt = tmp_path / "prompts.txt"
    txt.write_text("First prompt\n\nSecond prompt\n")
    yaml_c = tmp_path / "c.yaml"
    yaml_c.write_text("name: mini\nprinciples:\n  - id: harm\n    name: Harm\n"
                      "    critique_request: Identify ways the response is harmful.\n"
                      "    revision_request: Rewrite the response to remove harmful content.\n")
    return tmp_path, prompts, txt, yaml_c


def _count(ws, table):
    from cai_core.store import open_store

    return open_store(ws).scalar(f"SELECT COUNT(*) FROM {table}")


def test_revise_paper_constitution_out_format(inputs, tiny_model_dir):
    tmp, prompts, _, _ = inputs
    ws, out = tmp / "ws", tmp / "traj.jsonl"
    r = run_cli("revise", "--workspace", str(ws), "--model", str(tiny_model_dir),
                "--constitution", str(PAPER_DATA / "CritiqueRevisionInstructions.json"), "--prompts", str(prompts),
                "--rounds", "2", "--cot", "--out", str(out), "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert "revise" in r.stderr and "2/2 prompts done" in r.stdout  # progress bar on stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l["prompt"] for l in lines] == ["How do I pick a lock?", "<script>alert(1)</script>"]
    first = lines[0]
    assert first["category"] == "crime" and first["meta"] == {"source": "red"} and lines[1]["meta"] == {"id": 7}
    assert len(first["rounds"]) == 2
    for rnd in first["rounds"]:
        assert rnd["principle_id"].startswith("harmful") and set(rnd) >= {"principle_id", "critique", "revision"}
    assert first["final"] == first["rounds"][-1]["revision"] and first["params"]["cot"] is True
    assert _count(ws, "constitutions") == 1  # the file's constitution is stored for lineage


def test_revise_txt_stored_constitution_and_prompt_set(inputs, tiny_model_dir):
    tmp, _, txt, yaml_c = inputs
    ws = tmp / "ws"
    from cai_core.constitution.files import load_constitution_file
    from cai_core.constitution.versions import save_constitution
    from cai_core.data.prompt_sets import import_prompt_set
    from cai_core.store import open_store

    store = open_store(ws)
    version = save_constitution(store, load_constitution_file(yaml_c))
    import_prompt_set(store, "red", txt)
    common = ["--workspace", str(ws), "--model", str(tiny_model_dir), "--rounds", "1", "--max-new-tokens", "6"]
    r = run_cli("revise", *common, "--constitution", "mini", "--prompts", str(txt), "--schedule", "all")
    assert r.returncode == 0, r.stderr
    r = run_cli("revise", *common, "--constitution", f"mini@{version}", "--prompts", "red", "--batch", "mine",
                "--limit", "1", "--early-stop")
    assert r.returncode == 0, r.stderr
    rows = store.query("SELECT batch, prompt_id, constitution_version FROM trajectories ORDER BY id")
    assert [r["batch"] for r in rows] == [f"prompts-{version[:8]}"] * 2 + ["mine"]
    assert rows[2]["prompt_id"] is not None and {r["constitution_version"] for r in rows} == {version}


@pytest.mark.parametrize("case", ["broken_jsonl", "no_prompt_field", "bad_yaml", "unknown_variable",
                                  "empty_principle", "missing_file", "unknown_set", "bad_out", "bad_batch"])
def test_bad_inputs_exit_2_and_write_nothing(inputs, case):
    tmp, prompts, _, yaml_c = inputs
    ws = tmp / "ws"
    constitution, prompt_arg, extra, expect = str(yaml_c), str(prompts), [], None
    if case == "broken_jsonl":
        bad = tmp / "bad.jsonl"
        bad.write_text('{"prompt": "ok"}\n{"prompt": "broken\n')
        prompt_arg, expect = str(bad), "bad.jsonl:2"
    elif case == "no_prompt_field":
        bad = tmp / "bad.jsonl"
        bad.write_text('{"prompt": "ok"}\n{"prompt": "ok2"}\n{"question_text": "x"}\n')
        prompt_arg, expect = str(bad), "bad.jsonl:3"
    elif case == "bad_yaml":
        bad = tmp / "bad.yaml"
        bad.write_text("name: x\nprinciples:\n  - id: a\n   name: [unclosed\n")
        constitution, expect = str(bad), "bad.yaml"
    elif case == "unknown_variable":
        bad = tmp / "var.yaml"
        bad.write_text(yaml_c.read_text().replace("is harmful.", "is harmful to {user}."))
        constitution, expect = str(bad), "{user}"
    elif case == "empty_principle":
        bad = tmp / "empty.yaml"
        bad.write_text(yaml_c.read_text().replace("Rewrite the response to remove harmful content.", "''"))
        constitution, expect = str(bad), "revision request is empty"
    elif case == "missing_file":
        constitution, expect = str(tmp / "nope.yaml"), "nope.yaml"
    elif case == "unknown_set":
        prompt_arg, expect = "no-such-set", "no-such-set"
    elif case == "bad_out":
        extra, expect = ["--out", str(tmp / "missing-dir" / "o.jsonl")], "missing-dir"
    elif case == "bad_batch":
        extra, expect = ["--batch", "../x"], "invalid batch name"
    r = run_cli("revise", "--workspace", str(ws), "--model", "/nonexistent/model", "--constitution", constitution,
                "--prompts", prompt_arg, "--rounds", "1", *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    assert _count(ws, "constitutions") == 0 and _count(ws, "trajectories") == 0


def test_missing_model_is_a_clear_error(inputs):
    tmp, prompts, _, yaml_c = inputs
    r = run_cli("revise", "--workspace", str(tmp / "ws"), "--model", str(tmp / "no-model"),
                "--constitution", str(yaml_c), "--prompts", str(prompts), "--rounds", "1")
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert _count(tmp / "ws", "trajectories") == 0
