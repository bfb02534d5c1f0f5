"""Issue 22 item 13: the SFT export form opens on a suggested free name, never on "invalid export name ''";
a name is checked when the form is submitted."""
from __future__ import annotations

import pytest

from tests.helpers import render_page


@pytest.fixture
def sampled(ws):
    """The page needs a constitution to draw its tabs: the samples."""
    from cai_core.data.sample_data import ensure_samples
    from cai_core.store import open_store

    ensure_samples(open_store(ws))
    return ws


def _sft_previews(at) -> list[str]:
    return [c.value for c in at.code if c.value.startswith("python -m cai_core export-sft ")]


def test_the_form_opens_on_a_free_suggested_name(sampled):
    ws = sampled
    from cai_core.exports import record_export
    from cai_core.store import open_store

    at = render_page("30_Critique_and_Revise.py")
    assert not any("invalid export name" in c.value for c in at.caption)
    assert at.text_input(key="sft_name").value == "sl-cai-v1"
    assert any("--name sl-cai-v1" in p for p in _sft_previews(at))

    store = open_store(ws)
    with store.tx() as conn:  # an export took the suggestion: the next one is suggested
        record_export(conn, "sl-cai-v1", "sft", str(ws / "exports" / "sl-cai-v1"), {})
    at.run()
    assert at.text_input(key="sft_name").value == "sl-cai-v2"


def test_a_typed_name_is_kept_and_an_empty_one_is_refused_on_submit(sampled):
    at = render_page("30_Critique_and_Revise.py")
    at.text_input(key="sft_name").set_value("my-export")
    at.button(key="sft_preview").click().run()
    assert at.text_input(key="sft_name").value == "my-export"
    assert any("--name my-export" in p for p in _sft_previews(at))
    at.text_input(key="sft_name").set_value("")
    next(b for b in at.button if b.label == "Export").click().run()
    assert not at.exception
    assert any("give the export a name" in e.value for e in at.error)
    assert not any("invalid export name ''" in e.value for e in at.error)
