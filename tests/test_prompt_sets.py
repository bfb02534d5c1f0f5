"""Prompt sets: file formats, validation before writing, HF dataset columns, the prompts CLI."""
from __future__ import annotations

import json

import pytest

from cai_core.errors import CaiError
from cai_core.data.prompt_sets import (
    delete_prompt_set,
    get_prompts,
    import_hf_dataset_column,
    import_prompt_set,
    list_prompt_sets,
    load_prompts_file,
)
from tests.helpers import run_cli


def test_jsonl_keeps_category_and_metadata(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "How do I pick a lock?", "category": "theft", "source": "x", "id": 7}\n\n'
                 '{"prompt": "  Tell me a joke  "}\n')
    items = load_prompts_file(f)
    assert items == [{"text": "How do I pick a lock?", "category": "theft", "meta": {"source": "x", "id": 7}},
                     {"text": "Tell me a joke", "category": None, "meta": {}}]


def test_csv_and_txt(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text('prompt,category,note\n"Hello, world",greet,\nSecond,,kept\n')
    assert load_prompts_file(csv) == [{"text": "Hello, world", "category": "greet", "meta": {}},
                                      {"text": "Second", "category": None, "meta": {"note": "kept"}}]
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\n  second  \n")
    assert [p["text"] for p in load_prompts_file(txt)] == ["first", "second"]


@pytest.mark.parametrize("name,content,line", [
    ("broken.jsonl", '{"prompt": "ok"}\n{"prompt": "no end"\n', 2),
    ("nofield.jsonl", '{"prompt": "ok"}\n{"prompt": "ok"}\n{"text2": "x"}\n', 3),
    ("emptyprompt.jsonl", '{"prompt": ""}\n', 1),
    ("notobject.jsonl", '{"prompt": "a"}\n[1, 2]\n', 2),
    ("cols.csv", 'prompt,category\nok,a\ntoo,many,columns\n', 3),
    ("nocol.csv", 'question2,category\nok,a\n', 1),
])
def test_broken_line_names_file_and_line(tmp_path, name, content, line):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(CaiError) as err:
        load_prompts_file(f)
    assert f"{name}:{line}" in str(err.value)


def test_empty_and_unknown_files(tmp_path):
    for name, content in (("e.jsonl", "\n\n"), ("e.txt", ""), ("e.csv", "")):
        (tmp_path / name).write_text(content)
        with pytest.raises(CaiError, match="empty"):
            load_prompts_file(tmp_path / name)
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(CaiError, match="unsupported"):
        load_prompts_file(tmp_path / "p.xlsx")
    with pytest.raises(CaiError, match="not found"):
        load_prompts_file(tmp_path / "missing.jsonl")


def test_import_list_get_delete(store, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"prompt {i}", "category": "c" if i % 2 else None}) for i in range(5)))
    set_id = import_prompt_set(store, "five", f, kind="helpfulness")
    [row] = list_prompt_sets(store)
    assert (row["id"], row["name"], row["kind"], row["prompts"]) == (set_id, "five", "helpfulness", 5)
    prompts = get_prompts(store, "five")
    assert [p["idx"] for p in prompts] == list(range(5))
    assert prompts[1]["text"] == "prompt 1" and prompts[1]["category"] == "c" and prompts[0]["category"] is None
    assert set(prompts[0]) == {"id", "idx", "text", "category", "meta"}

    with pytest.raises(CaiError, match="already exists"):
        import_prompt_set(store, "five", ["other"])
    assert len(get_prompts(store, "five")) == 5
    import_prompt_set(store, "five", ["only one", {"text": "two", "category": "x"}], replace=True)
    assert [p["text"] for p in get_prompts(store, "five")] == ["only one", "two"]

    delete_prompt_set(store, "five")
    assert list_prompt_sets(store) == []
    with pytest.raises(CaiError, match="no prompt set"):
        get_prompts(store, "five")


def test_bad_input_writes_nothing(store, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    with pytest.raises(CaiError, match="bad.jsonl:2"):
        import_prompt_set(store, "bad", f)
    with pytest.raises(CaiError, match="kind"):
        import_prompt_set(store, "bad", ["x"], kind="evil")
    with pytest.raises(CaiError, match="item 2"):
        import_prompt_set(store, "bad", ["x", ""])
    assert list_prompt_sets(store) == []
    assert store.scalar("SELECT COUNT(*) FROM prompts") == 0


def test_hf_dataset_column(store, tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"q": ["a?", "b?", "c?"], "topic": ["x", "y", "x"]}),
        "test": datasets.Dataset.from_dict({"q": ["t?"], "topic": ["z"]}),
    }).save_to_disk(str(folder))
    import_hf_dataset_column(store, "hf", str(folder), "q", category_column="topic", kind="other")
    prompts = get_prompts(store, "hf")
    assert [(p["text"], p["category"]) for p in prompts] == [("a?", "x"), ("b?", "y"), ("c?", "x")]
    import_hf_dataset_column(store, "hf-test", str(folder), "q", split="test", limit=5)
    assert [p["text"] for p in get_prompts(store, "hf-test")] == ["t?"]
    with pytest.raises(CaiError, match="no column 'nope'"):
        import_hf_dataset_column(store, "x", str(folder), "nope")
    with pytest.raises(CaiError, match="no split"):
        import_hf_dataset_column(store, "x", str(folder), "q", split="validation")
    with pytest.raises(CaiError, match="hub is off"):
        import_hf_dataset_column(store, "x", "someone/some-dataset", "q")
    assert {s["name"] for s in list_prompt_sets(store)} == {"hf", "hf-test"}


@pytest.mark.slow
def test_cli_import_show_and_broken_line(tmp_path):
    ws = tmp_path / "ws"
    good = tmp_path / "good.txt"
    good.write_text("one\ntwo\n")
    r = run_cli("prompts", "import", str(good), "--name", "t", "--kind", "other", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    r = run_cli("prompts", "show", "t", "--json", "--workspace", str(ws))
    assert [json.loads(x)["prompt"] for x in r.stdout.splitlines()] == ["one", "two"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b",}\n')
    r = run_cli("prompts", "import", str(bad), "--name", "b", "--workspace", str(ws))
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "bad.jsonl:2" in r.stderr
    r = run_cli("prompts", "list", "--json", "--workspace", str(ws))
    assert [s["name"] for s in json.loads(r.stdout)] == ["t"]


@pytest.mark.parametrize("group, action", [("prompts", "list"), ("constitution", "list")])
def test_a_command_group_without_action_prints_its_help_and_exits_2(capsys, group, action):
    """commands._common.add_group owns the groups: alone it prints help (exit 2); an action runs its own func."""
    from cai_core.cli import build_parser, main

    assert main([group]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and f" {group} [-h] ACTION ..." in out
    args = build_parser().parse_args([group, action])
    assert args.action == action and args.func.__name__ == "cmd_list"
