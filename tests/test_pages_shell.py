"""The app shell with AppTest on a fresh workspace: Home and Models render, the sidebar shows and
checks the active model, the Models page loads a model in the background and streams an answer."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_core.models import loader as model_loader
from cai_core.models.specs import unload

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_env(ws, monkeypatch):
    monkeypatch.chdir(Path(APP).parent)
    yield ws
    unload()


def _texts(at) -> str:
    parts = [t.value for t in at.text] + [c.value for c in at.caption] + [m.value for m in at.markdown]
    return "\n".join(str(p) for p in parts)


def _sidebar_texts(at) -> str:
    return "\n".join(str(t.value) for t in at.sidebar.text) + "\n" + "\n".join(str(c.value) for c in at.sidebar.caption)


@pytest.mark.slow
def test_home_renders_with_sidebar_model(app_env):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Constitutional AI workbench"
    sidebar = _sidebar_texts(at)
    assert "SmolLM2-135M-Instruct (embedded)" in sidebar
    assert str(app_env.resolve()) in sidebar


@pytest.mark.slow
def test_models_page_renders(app_env):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/10_Models.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Models"
    assert {"Active model", "Try a prompt", "Local llama.cpp server (fast CPU path)"} <= {s.value for s in at.subheader}


@pytest.mark.slow
def test_sidebar_rejects_missing_path(app_env, tmp_path):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.radio(key="sb_model_source").set_value("Local folder or .gguf").run()
    at.sidebar.text_input(key="sb_model_path").set_value(str(tmp_path / "nope")).run()
    at.sidebar.button(key="sb_use_model").click().run()
    assert not at.exception, at.exception
    assert any("does not exist" in e.value for e in at.sidebar.error)
    assert "SmolLM2-135M-Instruct (embedded)" in _sidebar_texts(at), "a rejected pick leaves the active model"


@pytest.mark.slow
def test_models_page_loads_and_streams(app_env, tiny_model_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.sidebar.radio(key="sb_model_source").set_value("Local folder or .gguf").run()
    at.sidebar.text_input(key="sb_model_path").set_value(str(tiny_model_dir)).run()
    at.sidebar.button(key="sb_use_model").click().run()
    assert not at.exception, at.exception
    spec = str(tiny_model_dir)
    assert spec in _sidebar_texts(at)
    from cai_core.workspace import Workspace

    model_loader.wait(spec, Workspace.open(app_env), timeout=120)  # the pick started a background load
    at.switch_page("pages/10_Models.py").run()
    assert not at.exception, at.exception
    assert r"cpu · float32 · \<1 MB · \<1M params" in _texts(at)  # the tiny model, not "0 MB · 0M params"

    at.text_area(key="models_prompt").set_value("What is the capital of France?")
    at.number_input(key="models_max_tokens").set_value(8)
    at.number_input(key="models_seed").set_value(3)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    answer = [t.value for t in at.main.text if t.value and t.value not in (spec,)]
    assert answer, "the streamed answer is shown as plain text"

    at.button(key="models_unload").click().run()
    assert not at.exception, at.exception
    assert "loads on first use" in _texts(at)


def test_multi_line_error_keeps_its_layout():
    """A YAML parser's message (indented context, a caret) shows its first line, with the "where", as one escaped
    error line and the context verbatim in a code block, so markdown in it cannot reshape the page."""
    def script():
        import yaml

        from cai_core.errors import CaiError
        from ui.common import show_error

        try:
            yaml.safe_load("a: [1\nb: 2\n")
        except yaml.YAMLError as exc:
            show_error(CaiError(f"not valid YAML: {exc}", where="my_file.yaml"))

    at = AppTest.from_function(script, default_timeout=30)
    at.run()
    assert not at.exception
    [err] = at.error
    assert err.value == r"my\_file\.yaml\: not valid YAML\: while parsing a flow sequence"  # ui.markdown.md_escape
    [code] = at.code
    assert "    a: [1\n       ^\n" in code.value  # the caret still points under the column


@pytest.mark.slow
def test_sidebar_engine_pick_is_saved_and_becomes_the_process_default(app_env, monkeypatch):
    from cai_core.models.specs import ENGINE_ENV, default_engine
    from cai_core.settings import get_setting
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    monkeypatch.setenv(ENGINE_ENV, "transformers")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.sidebar.selectbox(key="sb_engine").value == "transformers"
    at.sidebar.selectbox(key="sb_engine").set_value("ctranslate2").run()
    assert not at.exception, at.exception
    assert default_engine() == "ctranslate2"  # what get_backend and the jobs started from here use
    assert get_setting(Store(Workspace.open(app_env)), "engine") == "ctranslate2"
    monkeypatch.setenv(ENGINE_ENV, "transformers")
    AppTest.from_file(APP, default_timeout=60).run()  # a new session applies the workspace's saved engine
    assert default_engine() == "ctranslate2"
