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
