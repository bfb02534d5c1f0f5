"""ui/markdown: the one escaper leaves no markdown-active character bare, and md_code cannot be closed early."""
from __future__ import annotations

import re

from ui.markdown import md_code, md_escape

HOSTILE = r":red[X] $$\LaTeX$$ **B** [l](javascript:alert(1)) <b>t</b> :material/home: # h `c` ~~s~~ | a |"


def test_every_active_character_is_escaped():
    escaped = md_escape(HOSTILE)
    bare = re.sub(r"\\.", "", escaped)  # drop every escaped pair: what is left must be inert text
    assert not set(bare) & set("\\`*_{}[]()#+-.!|~<>$:&\"'="), bare
    assert re.sub(r"\\(.)", r"\1", escaped) == HOSTILE  # and nothing is lost


def test_newlines_become_hard_breaks():
    assert md_escape("a\r\nb") == "a  \nb"


def test_code_span_fence_outruns_backticks_inside():
    assert md_code("plain") == "` plain `"
    assert md_code("a `b` c") == "`` a `b` c ``"
    assert md_code("x ``` y") == "```` x ``` y ````"
    assert md_code("two\nlines") == "` two lines `" and md_code("") == ""
