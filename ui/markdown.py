"""User and model text inside st.markdown: escaped so it renders literally, and word diffs coloured.

Model output and every user-chosen name are data: every markdown-significant character is
backslash-escaped (so `<script>`, `**`, `$$`, `:red[...]`, `:emoji:`, `[l](javascript:...)` all show
literally). Use md_escape for any such string that reaches a Streamlit element which renders
markdown: st.markdown, st.caption, headers, st.info/success/warning/error, st.progress/spinner text,
and the labels of expanders, tabs, metrics, buttons and radio options. (Select box options and
st.text/st.code/st.dataframe cells are plain text already.) Word diffs come from cai_core.data.textdiff
as segments.
"""
from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&\"'=])")


def md_escape(text: str) -> str:
    """Escape every markdown-significant character; newlines become hard line breaks."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text or "")
    return escaped.replace("\r", "").replace("\n", "  \n")


def md_code(text: str) -> str:
    """Text as an inline code span (monospace, shown literally): the fence is longer than any run of
    backticks inside, so the text cannot close it."""
    text = " ".join(str(text or "").split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if text else ""


def segments_markdown(segments) -> str:
    """Word-diff segments as markdown: insertions green, deletions red and struck through, all text
    escaped. Empty string when there is no text."""
    parts = []
    for seg in segments:
        body = seg.text
        if seg.op == "equal":
            parts.append(md_escape(body))
            continue
        if not body.strip():
            parts.append(md_escape(body) if seg.op == "insert" else "")
            continue
        # A markdown directive cannot span a line break: colour each line of a multi-line change alone.
        lines = []
        for line in body.split("\n"):
            lead = line[: len(line) - len(line.lstrip())]
            trail = line[len(line.rstrip()):]
            core = line.strip()
            if not core:
                lines.append(md_escape(line))
            elif seg.op == "insert":
                lines.append(f"{md_escape(lead)}:green-background[{md_escape(core)}]{md_escape(trail)}")
            else:
                lines.append(f"{md_escape(lead)}:red-background[~~{md_escape(core)}~~]{md_escape(trail)}")
        parts.append("  \n".join(lines))
    return "".join(parts)
