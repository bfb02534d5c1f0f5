from cai_core.data.textdiff import change_ratio, edit_distance_words, word_diff


def test_word_diff_segments_rebuild_both_texts():
    old, new = "I can help you hack it.", "I can't help you with that."
    segs = word_diff(old, new)
    assert "".join(s.text for s in segs if s.op != "insert") == old
    assert "".join(s.text for s in segs if s.op != "delete") == new
    assert {s.op for s in segs} == {"equal", "insert", "delete"}


def test_edit_size_and_ratio():
    assert edit_distance_words("a b c", "a b c") == 0
    assert edit_distance_words("a b c", "a x c") == 2
    assert change_ratio("", "") == 0.0
    assert change_ratio("a b", "c d") == 1.0
