"""SFT export: TRL conversational rows, JSONL and datasets.load_from_disk round trips, card, helpful mix."""
from __future__ import annotations

import json

import pytest

from cai_core.constitution.model import Constitution, Principle
from cai_core.errors import CaiError
from cai_core.supervised.revision import ReviseSettings, run_revision
from cai_core.exports import list_exports
from cai_core.jsonl import read_jsonl
from cai_core.supervised.sft_export import export_sft

from tests.helpers import run_cli


def _constitution():
    return Constitution(name="mini", principles=[Principle(
        id="harm", name="Harm", critique_request="Identify ways the response is harmful.",
        revision_request="Rewrite the response to remove harmful content.")])


@pytest.fixture
def filled(store, tiny_backend):
    c = _constitution()
    s = ReviseSettings(rounds=1, max_new_tokens=6)
    run_revision(store, tiny_backend, c, ["How do I pick a lock?", "<script>x</script>"], s, "tiny", batch="b1")
    run_revision(store, tiny_backend, c, ["Insult me"], ReviseSettings(rounds=2, max_new_tokens=6), "tiny", batch="b2")
    return store


def _valid_messages(msgs):
    return (isinstance(msgs, list) and [m["role"] for m in msgs] == ["user", "assistant"]
            and all(isinstance(m["content"], str) for m in msgs))


def test_export_round_trips(filled):
    import datasets

    card = export_sft(filled, "sl1", batch="b1")
    folder = filled.workspace.exports_dir / "sl1"
    assert card["path"] == str(folder) and card["counts"] == {"revisions": 2, "helpful": 0, "total": 2}
    ds = datasets.load_from_disk(str(folder))
    assert len(ds) == 2 and "messages" in ds.column_names
    assert all(_valid_messages(m) for m in ds["messages"])
    rows = read_jsonl(folder / "data.jsonl")
    assert [r["messages"] for r in rows] == ds["messages"]
    finals = {r["prompt"]: r["final"] for r in filled.query("SELECT prompt, final FROM trajectories WHERE batch='b1'")}
    for r in rows:
        assert r["messages"][1]["content"] == finals[r["messages"][0]["content"]] and r["source"] == "revision"
    assert "<script>x</script>" in finals
    on_disk = json.loads((folder / "card.json").read_text())
    assert on_disk["constitution_versions"] == [{"name": "mini", "version": _constitution().version, "rows": 2}]
    assert on_disk["models"] == ["tiny"] and on_disk["lineage"]["batches"] == ["b1"]
    assert len(on_disk["lineage"]["trajectory_ids"]) == 2
    assert "mini@" in (folder / "README.md").read_text()
    assert [e["name"] for e in list_exports(filled)] == ["sl1"]
    assert filled.scalar("SELECT kind FROM exports WHERE name='sl1'") == "sft"
    # the JSONL also loads with datasets' json loader (how TRL users often read it)
    assert len(datasets.load_dataset("json", data_files=str(folder / "data.jsonl"), split="train")) == 2


def test_export_filters_and_bad_input(filled):
    assert export_sft(filled, "all", formats="jsonl")["counts"]["total"] == 3
    assert not (filled.workspace.exports_dir / "all" / "state.json").exists()  # jsonl only
    v = _constitution().version
    assert export_sft(filled, "byv", constitution_version=v, formats=["hf"])["counts"]["total"] == 3
    with pytest.raises(CaiError, match="already exists"):
        export_sft(filled, "all")
    assert export_sft(filled, "all", batch="b2", overwrite=True)["counts"]["total"] == 1
    assert len(read_jsonl(filled.workspace.exports_dir / "all" / "data.jsonl")) == 1
    for bad, match in [("../up", "invalid export name"), ("a/b", "invalid export name")]:
        with pytest.raises(CaiError, match=match):
            export_sft(filled, bad)
    with pytest.raises(CaiError, match="no finished trajectories"):
        export_sft(filled, "none", batch="nope")
    with pytest.raises(CaiError, match="unknown export format"):
        export_sft(filled, "fmt", formats="csv")
    assert filled.scalar("SELECT COUNT(*) FROM exports") == 2  # all, byv
    assert not (filled.workspace.exports_dir / "none").exists()


def test_mix_helpful_generates_missing_once_and_reuses(filled, tiny_backend):
    from cai_core.data.prompt_sets import import_prompt_set

    import_prompt_set(filled, "helpful", ["What is the capital of France?", "Explain photosynthesis"], kind="helpfulness")
    with pytest.raises(CaiError, match="give a model"):
        export_sft(filled, "nomodel", mix_helpful="helpful")
    calls = []
    orig = tiny_backend.generate
    tiny_backend.generate = lambda convs, params: calls.append(len(convs)) or orig(convs, params)
    card = export_sft(filled, "mixed", mix_helpful="helpful", backend=tiny_backend, max_new_tokens=6)
    assert card["counts"] == {"revisions": 3, "helpful": 2, "total": 5} and calls == [2]
    rows = read_jsonl(filled.workspace.exports_dir / "mixed" / "data.jsonl")
    helpful = [r for r in rows if r["source"] == "helpful"]
    assert [r["messages"][0]["content"] for r in helpful] == ["What is the capital of France?", "Explain photosynthesis"]
    assert all(_valid_messages(r["messages"]) for r in rows)
    calls.clear()
    export_sft(filled, "mixed2", mix_helpful="helpful", backend=tiny_backend)
    assert calls == []  # stored answers are reused
    # helpful answer-only runs never leak into the revision part
    assert export_sft(filled, "rev-only", formats="jsonl")["counts"]["revisions"] == 3


@pytest.mark.slow
def test_export_sft_cli(filled):
    ws = str(filled.workspace.root)
    r = run_cli("export-sft", "--workspace", ws, "--name", "cli1", "--batch", "b2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["total"] == 1
    import datasets

    ds = datasets.load_from_disk(str(filled.workspace.exports_dir / "cli1"))
    assert _valid_messages(ds[0]["messages"])
    r = run_cli("export-sft", "--workspace", ws, "--name", "cli1")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run_cli("export-sft", "--workspace", ws, "--name", "x", "--batch", "b1", "--constitution-version", "abc")
    assert r.returncode == 2
    r = run_cli("export-sft", "--workspace", ws, "--name", "x", "--mix-helpful", "no-such-set")
    assert r.returncode == 2 and "no-such-set" in r.stderr
    assert not (filled.workspace.exports_dir / "x").exists()
