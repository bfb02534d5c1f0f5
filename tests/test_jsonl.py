"""cai_core.jsonl: the one JSONL writer (exports, --out files, labels, run metrics and samples)."""
from __future__ import annotations

import pytest

from cai_core.jsonl import append_jsonl, read_jsonl, write_jsonl


def test_write_keeps_text_as_written_one_object_per_line(tmp_path):
    rows = [{"prompt": "¿Qué? <b>\n</b>", "n": 1}, {"emoji": "🙂", "none": None}]
    path = tmp_path / "data.jsonl"
    assert write_jsonl(path, rows) == 2
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 2 and text.endswith("\n")
    assert "¿Qué?" in text and "🙂" in text and "\\u" not in text  # no ASCII escapes of user text
    assert read_jsonl(path) == rows
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]  # no temporary file left


def test_a_failure_part_way_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"old": True}])

    def rows():
        yield {"new": 1}
        raise RuntimeError("generation stopped")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    with pytest.raises(TypeError):
        write_jsonl(path, [{"new": 1}, {"bad": object()}])
    assert read_jsonl(path) == [{"old": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_append_adds_whole_lines_and_read_skips_blank_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": 1}])
    append_jsonl(path, [{"step": 2}, {"step": 3}])
    append_jsonl(path, [])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_jsonl_rows_skips_blank_lines_and_locates_a_bad_one():
    from cai_core.errors import CaiError
    from cai_core.jsonl import jsonl_rows

    assert list(jsonl_rows('{"a": 1}\n\n  \n"x"\n', "f.jsonl")) == [(1, "f.jsonl:1", {"a": 1}), (4, "f.jsonl:4", "x")]
    with pytest.raises(CaiError, match=r"^f.jsonl:3: not valid JSON \(Expecting value at column 1\)$"):
        list(jsonl_rows('{"a": 1}\n\n}\n', "f.jsonl"))
    with pytest.raises(CaiError, match=r"^f.jsonl:2: line 2 is bad: Expecting value, column 1$"):
        list(jsonl_rows('1\n}', "f.jsonl", "line {line} is bad: {msg}, column {col}"))


@pytest.mark.parametrize("reader, message", [
    ("labels", r"bad.jsonl:2: not valid JSON \(Expecting value at column 1\)"),
    ("paper_eval", r"bad.jsonl:2: not valid JSON \(Expecting value at column 1\)"),
    ("prompts", r"bad.jsonl:2: malformed JSON on line 2 \(Expecting value at column 1\)"),
    ("pairs", r"bad.jsonl:2: malformed JSON: Expecting value \(column 1\)"),
])
def test_every_user_jsonl_reader_names_the_bad_line_in_its_own_words(tmp_path, reader, message):
    """Labels, the paper's evals, prompt sets and pairs files share jsonl_rows; each keeps its wording."""
    from cai_core.errors import CaiError
    from cai_core.data.prompt_sets import load_prompts_file
    from cai_core.reliability.labels import parse_labels
    from cai_core.reliability.paper_evals import load_paper_eval
    from cai_core.rlaif.pairs import load_pairs_file

    path = tmp_path / "bad.jsonl"
    path.write_text("\n}\n", encoding="utf-8")  # line 1 blank (skipped), line 2 not JSON
    read = {"labels": lambda: parse_labels(path.read_text(), str(path)), "prompts": lambda: load_prompts_file(path),
            "pairs": lambda: load_pairs_file(path), "paper_eval": lambda: load_paper_eval(path)}[reader]
    with pytest.raises(CaiError, match=message):
        read()
