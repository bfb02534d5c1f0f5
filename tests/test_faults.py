"""Faults and bad input (issue 9): nothing lost, nothing half-written, every refusal says why.

- malformed constitution / prompt file / pairs dataset / model spec through each CLI: exit code 2,
  one `error: ...` line, and the store and workspace folders exactly as before;
- path safety: user-chosen run and export names never leave the workspace (`Workspace.child_path`,
  and the CLIs and services that take names);
- two writers labelling the same comparison at the same moment: both labels kept;
- kill -9 of the Streamlit server during a training run: the run goes on and a new server shows it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_core.errors import CaiError
from cai_core.store import Store
from cai_core.workspace import Workspace, safe_name
from tests.helpers import ROOT, run_cli

TABLES_SQL = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'"


def snapshot(ws: Path) -> dict:
    """Row count of every table plus every file under the workspace (except the database itself and job logs)."""
    store = Store(Workspace.open(ws))
    counts = {t: store.scalar(f"SELECT COUNT(*) FROM {t}") for (t,) in store.query(TABLES_SQL)}
    store.close()
    files = sorted(str(p.relative_to(ws)) for p in ws.rglob("*")
                   if p.is_file() and not p.name.startswith("cai.sqlite3") and "jobs" not in p.parts)
    return {"rows": counts, "files": files}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD_CONSTITUTION = """name: ok
principles:
  - id: harm
    name: Harm
    critique_request: Identify ways the response is harmful.
    revision_request: Rewrite the response to remove harmful content.
"""
GOOD_PROMPTS = '{"prompt": "How do I bake bread?"}\n{"prompt": "What is the capital of France?"}\n'
GOOD_PAIRS = '{"id": "p1", "prompt": "Hi", "response_a": "Hello", "response_b": "Go away"}\n'


def bad_inputs(tmp_path: Path, model: str, write=write) -> dict[str, tuple[list[str], str]]:
    """name -> (CLI arguments, a word the error message must contain); `write` creates the input files."""
    good_c = write(tmp_path, "good.yaml", GOOD_CONSTITUTION)
    good_p = write(tmp_path, "good.jsonl", GOOD_PROMPTS)
    good_pairs = write(tmp_path, "pairs.jsonl", GOOD_PAIRS)
    broken_yaml = write(tmp_path, "broken.yaml", "name: x\nprinciples: [\n  - id: a\n")
    no_principles = write(tmp_path, "empty.yaml", "name: nothing\nprinciples: []\n")
    bad_var = write(tmp_path, "badvar.yaml", GOOD_CONSTITUTION.replace("harmful.\n", "harmful {nonsense}.\n", 1))
    bad_jsonl = write(tmp_path, "bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n')
    no_field = write(tmp_path, "nofield.jsonl", '{"text_wrong": "x"}\n')
    empty = write(tmp_path, "empty.jsonl", "")
    pairs_missing = write(tmp_path, "pairs_missing.jsonl", '{"id": "p1", "prompt": "Hi", "response_a": "Hello"}\n')
    pairs_broken = write(tmp_path, "pairs_broken.jsonl", GOOD_PAIRS + "{nope\n")
    sft = write(tmp_path, "sft.jsonl", '{"messages": [{"role": "user", "content": "Hi"}, '
                                       '{"role": "assistant", "content": "Hello"}]}\n')
    sft_broken = write(tmp_path, "sft_broken.jsonl", '{"messages": [{"role": "user", "content": "Hi"}\n')
    bad_spec = write(tmp_path, "spec.yaml", f"kind: sft\nmodel: {model}\ndataset: {sft}\nlearning_rat: 0.1\n")
    broken_spec = write(tmp_path, "broken_spec.yaml", "kind: sft\nmodel: [\n")
    return {
        "constitution import: broken YAML": (["constitution", "import", broken_yaml], "broken.yaml"),
        "constitution import: no principles": (["constitution", "import", no_principles], "principle"),
        "constitution import: unknown template variable": (["constitution", "import", bad_var], "nonsense"),
        "constitution import: missing file": (["constitution", "import", str(tmp_path / "nope.yaml")], "nope.yaml"),
        "prompts import: malformed JSONL": (["prompts", "import", bad_jsonl, "--name", "p"], "bad.jsonl:2"),
        "prompts import: no prompt field": (["prompts", "import", no_field, "--name", "p"], "prompt"),
        "prompts import: empty file": (["prompts", "import", empty, "--name", "p"], "empty.jsonl"),
        "revise: malformed constitution": (["revise", "--model", model, "--constitution", broken_yaml,
                                            "--prompts", good_p, "--max-new-tokens", "2"], "broken.yaml"),
        "revise: malformed prompts": (["revise", "--model", model, "--constitution", good_c,
                                       "--prompts", bad_jsonl, "--max-new-tokens", "2"], "bad.jsonl:2"),
        "revise: bad model spec": (["revise", "--model", str(tmp_path / "no-such-model"), "--constitution", good_c,
                                    "--prompts", good_p, "--max-new-tokens", "2"], "no-such-model"),
        "judge: pairs row without response_b": (["judge", "--judge-model", model, "--constitution", good_c,
                                                 "--pairs", pairs_missing], "response_b"),
        "judge: malformed pairs file": (["judge", "--judge-model", model, "--constitution", good_c,
                                         "--pairs", pairs_broken], "pairs_broken.jsonl:2"),
        "judge: hub spec while offline": (["judge", "--judge-model", "hf:someone/model", "--constitution", good_c,
                                           "--pairs", good_pairs], "CAI_ALLOW_HUB"),
        "generate: model path missing": (["generate", "hi", "--model", str(tmp_path / "missing")], "missing"),
        "train: run name escapes": (["train", "sft", "--model", model, "--dataset", sft, "--name", "../escape",
                                     "--max-steps", "1"], "escape"),
        "train: malformed dataset": (["train", "sft", "--model", model, "--dataset", sft_broken, "--name", "t",
                                      "--max-steps", "1"], "sft_broken.jsonl"),
        "train: misspelt spec field": (["train", bad_spec], "learning_rat"),
        "train: broken spec YAML": (["train", broken_spec], "broken_spec.yaml"),
        "train: bad model spec": (["train", "sft", "--model", str(tmp_path / "no-model"), "--dataset", sft,
                                   "--name", "t", "--max-steps", "1"], "no-model"),
        "export-sft: name escapes": (["export-sft", "--name", "../escape"], "escape"),
        "export-sft: name with a slash": (["export-sft", "--name", "a/b"], "a/b"),
    }


# Known violations of "validate first, then write", reported to their owners; strict, so a fix shows up.
KNOWN: dict[str, str] = {}
CASES = [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN[c], strict=True)) if c in KNOWN else c
         for c in bad_inputs(Path("/unused"), "m", write=lambda d, name, text: str(d / name))]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(case, ws, tmp_path, tiny_model_dir):
    args, needle = bad_inputs(tmp_path, str(tiny_model_dir))[case]
    before = snapshot(ws)
    proc = run_cli(*args, "--workspace", str(ws), env={"CAI_ALLOW_HUB": "0"}, timeout=300)
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    err = proc.stderr.strip()
    assert any(line.startswith("error: ") for line in err.splitlines()) and needle in err, \
        f"{case}: unclear message {err[-800:]!r}"
    assert "Traceback" not in proc.stderr
    assert snapshot(ws) == before, f"{case}: something was written"
    assert not (ROOT / "workspace" / "exports" / "escape").exists()


# -- path safety --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "..", "a/../../b", "/etc/passwd", "a/b", "a\\..\\b", "", ".hidden",
                                  "x" * 200, "name\x00", "..\\x", "~root"])
def test_child_path_refuses_names_that_could_escape(name, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    for area in ("runs", "exports", "reports"):
        with pytest.raises(CaiError):
            ws.child_path(area, name)


def test_child_path_refuses_a_symlink_out_of_the_workspace(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.runs_dir / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CaiError, match="leave the workspace"):
        ws.child_path("runs", "link")
    assert ws.child_path("runs", "my-run_1.2") == ws.runs_dir / "my-run_1.2"
    assert safe_name("sft-2024.01") == "sft-2024.01"


@pytest.mark.parametrize("text, fallback, expected", [
    ("hh-red.team_1", "x", "hh-red.team_1"),          # a safe name stays as it is
    ("/tmp/my prompts/red team.txt", "x", "tmp-my-prompts-red-team.txt"),  # runs of others -> one '-'
    ("..//../evil", "x", "evil"),                     # no '..', no leading separators
    ("_café??", "x", "caf"),                          # ASCII only, the start is a letter or digit
    ("a..b.", "x", "a.b"),
    ("???", "prompts", "prompts"),                    # nothing left: the fallback
    ("a" * 300, "x", "a" * 100),
])
def test_slug_always_makes_a_safe_name(text, fallback, expected):
    from cai_core.supervised.revision import default_batch_name
    from cai_core.workspace import slug

    assert slug(text, fallback) == expected
    assert safe_name(slug(text, fallback)) == expected
    assert default_batch_name(text, "0123456789abcdef") == f"{slug(text, 'prompts')}-01234567"


def test_services_refuse_escaping_export_names(store, tmp_path):
    from cai_core.rlaif.preferences import export_preferences
    from cai_core.supervised.sft_export import export_sft

    for name in ("../evil", "a/b", "/tmp/evil"):
        with pytest.raises(CaiError):
            export_sft(store, name)
        with pytest.raises(CaiError):
            export_preferences(store, name)
    assert not (store.workspace.root.parent / "evil").exists()
    assert store.scalar("SELECT COUNT(*) FROM exports") == 0


# -- two writers --------------------------------------------------------------------------------
WRITER = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from cai_core.store import open_store
from cai_core.rlaif.preferences import add_label
store = open_store({ws!r})
while not os.path.exists({go!r}):
    time.sleep(0.005)
for i in range({n}):
    add_label(store, {cid}, "A" if i % 2 else "B", {who!r}, reason=f"{who} #{{i}}")
print("ok")
"""


@pytest.mark.slow
def test_two_writers_labelling_the_same_comparison_both_kept(store, tmp_path):
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.rlaif.preferences import label_history

    [cid] = add_pairs(store, [{"id": "c1", "prompt": "Hi", "response_a": "Hello", "response_b": "Go away"}],
                      origin="imported", batch="two-writers")
    go, n = tmp_path / "go", 25
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), ws=str(store.workspace.root),
                                                                    go=str(go), n=n, cid=cid, who=who)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for who in ("alice", "bob")]
    time.sleep(1.0)  # both have imported and opened the store; now release them together
    go.write_text("go")
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    history = label_history(store, cid)
    assert len(history) == 2 * n
    by_who = {who: sorted(int(h["reason"].split("#")[1]) for h in history if h["annotator"] == who)
              for who in ("alice", "bob")}
    assert by_who == {"alice": list(range(n)), "bob": list(range(n))}


# -- kill -9 the app while a run trains -----------------------------------------------------------
SFT_ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in [
    ("How do I bake bread?", "Here is how you can stay safe."),
    ("What is the capital of France?", "The answer is: Paris."),
]] * 2

APP_SESSION = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({page!r}, default_timeout=120)
at.run()
at.text_input(key="tr_name").set_value("long-run")
at.number_input(key="tr_max_steps").set_value(100000)
at.number_input(key="tr_maxlen").set_value(64)
at.number_input(key="tr_probe_steps").set_value(0)
at.number_input(key="tr_save").set_value(1000)
at.run()
assert not at.exception, at.exception
at.button(key="tr_launch").click().run()
assert not at.exception, at.exception
from cai_core.store import open_store
from cai_core.training.runs import list_runs
print("launched", [r.name for r in list_runs(open_store(os.environ["CAI_WORKSPACE"]))], flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_kill9_app_during_training_run_goes_on_and_a_new_server_shows_it(tmp_path, tiny_model_dir):
    """The Training page launches a run inside an app process; that process group is killed with SIGKILL;
    the run keeps training, and a freshly started server (and its Training page) shows it running."""
    from streamlit.testing.v1 import AppTest

    from cai_core.store import dumps, now
    from cai_core.training.runs import get_run, read_metrics, refresh, stop_run
    from tests.browser.helpers import AppServer

    root = tmp_path / "ws"
    store = Store(Workspace.open(root))
    export = store.workspace.exports_dir / "revisions"
    export.mkdir()
    (export / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    store.execute("INSERT INTO exports (name, kind, path, card_json, created_at) VALUES (?,?,?,?,?)",
                  ("revisions", "sft", str(export), dumps({"counts": {"total": len(SFT_ROWS)}}), now()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAI_WORKSPACE": str(root), "CAI_MODEL": str(tiny_model_dir),
           "OMP_NUM_THREADS": "1"}
    page = str(ROOT / "pages" / "60_Training.py")
    app_log = tmp_path / "app-session.log"
    with open(app_log, "wb") as log:
        app = subprocess.Popen([sys.executable, "-c", APP_SESSION.format(root=str(ROOT), page=page)], env=env,
                               cwd=str(ROOT), stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    server = None
    try:
        line = app.stdout.readline()
        assert line.startswith("launched") and "long-run" in line, line + app_log.read_text()[-3000:]
        run = get_run(store, "long-run")

        def steps() -> int:
            return max((m["step"] for m in read_metrics(store, run.id)), default=0)

        deadline = time.time() + 240
        while steps() < 1:
            assert time.time() < deadline, "the run logged no step:\n" + run.paths.log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(app.pid, signal.SIGKILL)  # the whole app process group, as a crash or `kill -9` would
        app.wait(timeout=30)
        before = steps()
        deadline = time.time() + 240
        while steps() <= before:  # still training after the app died
            assert time.time() < deadline, "the run stopped with the app:\n" + run.paths.log.read_text()[-3000:]
            time.sleep(0.5)
        refresh(store)
        assert get_run(store, run.id).status == "running"

        server = AppServer(root, Path(tiny_model_dir)).start()  # a new app comes up fine while the run trains
        os.environ["CAI_WORKSPACE"] = str(root)
        try:
            at = AppTest.from_file(page, default_timeout=60)
            at.run()
        finally:
            os.environ.pop("CAI_WORKSPACE", None)
        assert not at.exception, at.exception
        table = at.dataframe[0].value  # the run table: the one place the page lists each run's status
        assert table.loc[table["run"] == "long-run", "status"].tolist() == ["running"]
        assert any("long-run" in str(o) for o in at.selectbox(key="tr_pick").options)
        assert len(at.get("plotly_chart")) >= 1  # its charts
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
        if server is not None:
            server.stop()
        try:
            stop_run(store, "long-run")
            pid = get_run(store, "long-run").pid
            deadline = time.time() + 30
            while pid and time.time() < deadline:
                try:
                    os.kill(pid, 0)
                    time.sleep(0.5)
                except ProcessLookupError:
                    break
            else:
                if pid:
                    os.killpg(pid, signal.SIGKILL)
        except (CaiError, ProcessLookupError):
            pass
        store.close()


def test_killed_job_says_it_was_killed_not_a_progress_line(store, tmp_path):
    """A job whose process vanished (kill -9) without an exception in its log is reported as killed,
    with its last output, not as if the last progress-bar line were the error."""
    from cai_core.jobs import get_job, refresh
    from cai_core.store import dumps, now

    log = tmp_path / "job.log"
    log.write_text("revise:  24%|##4       | 12/50 [00:35<01:51, 2.94s/step, round 1 revisions]\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is gone
    job_id = store.execute("INSERT INTO jobs(kind, status, argv_json, pid, log_path, created_at) VALUES (?,?,?,?,?,?)",
                           ("revise", "running", dumps([]), proc.pid, str(log), now())).lastrowid
    refresh(store)
    job = get_job(store, job_id)
    assert job.status == "failed"
    assert job.error.startswith(f"the job's process {proc.pid} ended without finishing"), job.error
    assert "12/50" in job.error
