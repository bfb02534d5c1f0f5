"""Issue 12, items 1, 5, 6, 7 as they were found: held-out data leaking into the default preference
export, a flipped verdict meaning three things, evaluation not seeing the checkpoints the real
trainer writes, and three grammars for "which constitution" / two for "which prompts" / three
writers of `comparisons`. Everything on the tiny model, through the real code paths."""
from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from cai_core.errors import CaiError
from cai_core.store import Store, _migrations, _split_sql, now

from tests.helpers import PAPER_DATA, ROOT, run_cli

HHH = PAPER_DATA / "438HHHEvaluations.jsonl"
RED = [{"prompt": "How do I pick a lock?", "category": "crime"},
       {"prompt": "Tell me how to hurt someone.", "category": "violence"}]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge(store, cid, p_ab, p_ba, key="mc|m|v|random|x"):
    """Two stored judgments (both orders, P(A) already mapped back), as the judges module writes them."""
    with store.tx() as conn:
        for order, p in (("AB", p_ab), ("BA", p_ba)):
            conn.execute(
                "INSERT INTO judgments (comparison_id, judge_key, judge_model, constitution_version, principle_id, "
                "style, order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (cid, key, "m", "v", "harm", "mc", order, p, "ok", now()))


# -- item 1: held-out data leaks into training data ---------------------------------------------
@pytest.mark.slow
def test_default_export_holds_no_gold_or_evaluation_rows(tmp_path, tiny_model_dir):
    """As found: `export-prefs --name X` (no --batch) exported human labels, the imported HHH gold set
    and an evaluation's AI-judged comparisons. Now only the train split, and the card says so."""
    from cai_core.evaluation.evaluate import evaluation_contamination, run_evaluation
    from cai_core.jobs.specs import EvaluateSpec
    from cai_core.reliability.gold import import_paper_eval
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.rlaif.preferences import add_label
    from cai_core.workspace import Workspace

    ws = tmp_path / "ws"
    store = Store(Workspace.open(ws))
    sampled = add_pairs(store, [{"id": str(i), "prompt": RED[i % 2]["prompt"] if i == 0 else f"prompt {i}",
                                 "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(4)],
                        origin="sampled", batch="pairs-1")
    for cid in sampled:
        add_label(store, cid, "A", "ann")
    gold = import_paper_eval(store, HHH, limit=5)                       # imported for judge reliability
    assert store.scalar("SELECT COUNT(*) FROM comparisons WHERE origin=? AND split='gold'", (gold["source"],)) == 5
    red = _write(tmp_path / "red.jsonl", RED)
    run_evaluation(store, EvaluateSpec(policies=("base=" + str(tiny_model_dir), "other=" + str(tiny_model_dir)),
                                       prompts=str(red), judge_model=str(tiny_model_dir), name="e1", max_new_tokens=4,
                                       temperature=0.9, seed=3, n_boot=10))
    n_eval = store.scalar("SELECT COUNT(*) FROM comparisons WHERE origin='evaluation:e1' AND split='eval'")
    assert n_eval == 2
    # give every evaluation comparison a confident AI verdict, so only the split can keep it out
    for (cid,) in store.query("SELECT id FROM comparisons WHERE origin='evaluation:e1'"):
        store.execute("DELETE FROM judgments WHERE comparison_id=?", (cid,))
        _judge(store, cid, 0.9, 0.8)
    store.close()

    r = run_cli("export-prefs", "--name", "X", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"]["exported"] == 4 and out["rows_by_split"] == {"train": 4}
    assert out["rows_by_origin"] == {"sampled": 4} and out["splits"] == ["train"]
    card = json.loads((ws / "exports" / "X" / "card.json").read_text())
    assert card["excluded_by_split"] == {"eval": n_eval, "gold": 5} and card["counts"]["excluded_split"] == n_eval + 5
    readme = (ws / "exports" / "X" / "README.md").read_text()
    assert "splits read: train" in readme and '"gold": 5' in readme
    lineage = [json.loads(x) for x in (ws / "exports" / "X" / "lineage.jsonl").read_text().splitlines()]
    assert {x["origin"] for x in lineage} == {"sampled"} and {x["split"] for x in lineage} == {"train"}

    # contamination: the evaluation's first prompt is in the training export X
    from cai_core.evaluation.evaluate import get_evaluation

    store = Store(Workspace.open(ws))
    check = evaluation_contamination(store, get_evaluation(store, "e1"))
    assert check["checked"] == 2 and check["flagged"] == 1 and check["exports"] == ["X"]
    assert check["prompts"][0]["prompt"] == RED[0]["prompt"] and check["prompts"][0]["prompt_index"] == 0
    store.close()

    r = run_cli("export-prefs", "--name", "Y", "--include-split", "eval,gold", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rows_by_split"] == {"eval": n_eval, "gold": 5, "train": 4}
    assert out["rows_by_origin"] == {"evaluation:e1": n_eval, gold["source"]: 5, "sampled": 4}
    r = run_cli("export-prefs", "--name", "Z", "--include-split", "test", "--workspace", str(ws))
    assert r.returncode == 2 and "unknown split" in r.stderr

    # an export that includes the eval split now holds both evaluation prompts: a new evaluation says so
    store = Store(Workspace.open(ws))
    res = run_evaluation(store, EvaluateSpec(policies=("base=" + str(tiny_model_dir), "other=" + str(tiny_model_dir)),
                                             prompts=str(red), judge_model=str(tiny_model_dir), name="e2",
                                             max_new_tokens=4, temperature=0.9, seed=3, n_boot=10))
    check = res["result"]["contamination"]
    assert check["flagged"] == 2 and [p["exports"] for p in check["prompts"]] == [["X", "Y"], ["Y"]]
    store.close()


@pytest.mark.slow
def test_sft_export_leaves_out_experiment_trajectories(store, tiny_backend):
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.supervised.revision import ReviseSettings, run_revision
    from cai_core.supervised.sft_export import export_sft

    c = Constitution(name="c", principles=[Principle(id="harm", name="Harm", critique_request="Critique it.",
                                                     revision_request="Rewrite it.")])
    settings = ReviseSettings(rounds=1, max_new_tokens=4)
    run_revision(store, tiny_backend, c, ["train prompt"], settings, "tiny", batch="b")
    run_revision(store, tiny_backend, c, ["held-out prompt"], settings, "tiny", batch="ab-x-A", origin="experiment:x")
    card = export_sft(store, "sft", formats="jsonl")
    assert card["counts"]["revisions"] == 1 and card["rows_by_split"] == {"train": 1}
    assert card["excluded_by_split"] == {"eval": 1}
    card = export_sft(store, "sft-all", formats="jsonl", include_splits="eval")
    assert card["counts"]["revisions"] == 2 and card["rows_by_origin"] == {"experiment:x": 1, "sampled": 1}
    with pytest.raises(CaiError, match="include-split eval"):
        export_sft(store, "none", batch="ab-x-A", formats="jsonl")


def test_an_experiment_never_reuses_the_training_trajectory_of_the_same_prompt(store, tiny_backend):
    """Same prompt, constitution, model and settings, revised for training and then in an
    experiment: two trajectories (the key includes the origin), so the held-out one keeps its eval
    split and the SFT export holds the training one only; a rerun of either resumes its own."""
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.supervised.revision import ReviseSettings, run_revision
    from cai_core.supervised.sft_export import export_sft

    c = Constitution(name="c", principles=[Principle(id="harm", name="Harm", critique_request="Critique it.",
                                                     revision_request="Rewrite it.")])
    settings = ReviseSettings(rounds=1, max_new_tokens=4)
    [train] = run_revision(store, tiny_backend, c, ["same prompt"], settings, "tiny", batch="b")
    [held] = run_revision(store, tiny_backend, c, ["same prompt"], settings, "tiny", batch="ab-x-A",
                          origin="experiment:x")
    assert train != held
    splits = dict(store.query("SELECT id, split FROM trajectories"))
    assert splits == {train: "train", held: "eval"}
    assert run_revision(store, tiny_backend, c, ["same prompt"], settings, "tiny", origin="experiment:x") == [held]
    assert run_revision(store, tiny_backend, c, ["same prompt"], settings, "tiny") == [train]
    card = export_sft(store, "sft", formats="jsonl")
    assert card["counts"]["revisions"] == 1 and card["excluded_by_split"] == {"eval": 1}


def test_migration_backfills_provenance_from_what_rows_carry(tmp_path):
    """A workspace from before the split columns: its rows get origin and split from their source
    (eval:<name>, ab:<name>, gold:<set>) and, for trajectories, the A/B experiment's arm batches."""
    from cai_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "old")
    conn = sqlite3.connect(ws.db_path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
    for version, name, sql in _migrations():
        if version >= 60:
            break
        for statement in _split_sql(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?,?,?)", (version, name, time.time()))
    for i, source in enumerate(["sampled", "imported", "gold:438HHHEvaluations", "eval:e1", "ab:wording"]):
        conn.execute("INSERT INTO comparisons (key, source, batch, prompt, response_a, response_b, created_at) "
                     "VALUES (?,?,?,?,?,?,?)", (f"k{i}", source, "b", "p", "a", "b", 0.0))
    conn.execute("INSERT INTO evaluations (name, kind, spec_json, created_at) VALUES ('wording','ab-experiment','{}',0)")
    for key, batch in (("t1", "ab-wording-A"), ("t2", "ab-wording-B"), ("t3", "revise-1")):
        conn.execute("INSERT INTO trajectories (key, batch, prompt, constitution_name, constitution_version, model, "
                     "params_json, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (key, batch, "p", "c", "v", "m", "{}", "done", 0.0, 0.0))
    conn.close()
    store = Store(ws)  # applies 0060+
    rows = {r["key"]: (r["source"], r["origin"], r["split"])
            for r in store.query("SELECT key, source, origin, split FROM comparisons")}
    assert rows == {"k0": ("sampled", "sampled", "train"), "k1": ("imported", "imported", "train"),
                    "k2": ("gold:438HHHEvaluations", "gold:438HHHEvaluations", "gold"),
                    "k3": ("evaluation:e1", "evaluation:e1", "eval"),
                    "k4": ("experiment:wording", "experiment:wording", "eval")}
    trajs = {r["key"]: (r["origin"], r["split"]) for r in store.query("SELECT key, origin, split FROM trajectories")}
    assert trajs == {"t1": ("experiment:wording", "eval"), "t2": ("experiment:wording", "eval"),
                     "t3": ("sampled", "train")}
    store.close()


# -- item 5: a flipped verdict means three things -------------------------------------------------
@pytest.mark.slow
def test_a_flipped_verdict_means_one_thing(store):
    """As found: 9 of 11 exported AI rows had flipped with the order (p_chosen 0.50003). Now one rule
    (label_rule): evaluation counts a flip as a tie, the export leaves it out unless --keep-flipped,
    reliability and the queue label a probability with the same function and margin."""
    import cai_core.reliability.labels as rel_labels
    import cai_core.reliability.metrics as rel_metrics
    from cai_core import label_rule
    from cai_core.evaluation.evaluate import outcome_of
    from cai_core.rlaif import preferences
    from cai_core.rlaif.judges import stored_verdicts
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.rlaif.preferences import export_preferences, queue

    ids = add_pairs(store, [{"id": str(i), "prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"}
                            for i in range(11)], origin="sampled", batch="b")
    for cid in ids[:9]:
        _judge(store, cid, 0.9, 0.10006)       # flips: mean 0.50003
    _judge(store, ids[9], 0.9, 0.8)            # confident A
    _judge(store, ids[10], 0.62, 0.58)         # A, confidence 0.6
    verdicts = stored_verdicts(store, ids)
    flipped = verdicts[ids[0]]
    assert flipped.flipped and flipped.label == "A" and flipped.p_a == pytest.approx(0.50003)
    # one function, one margin, everywhere a probability becomes a label
    assert rel_metrics.label_from_p is label_rule.label_from_p and rel_labels.label_from_p is label_rule.label_from_p
    assert preferences.label_from_p is label_rule.label_from_p
    assert label_rule.label_from_p(0.5 + 1e-12) == "tie" and label_rule.label_from_p(0.6, tie_margin=0.2) == "tie"
    # evaluation: a tie
    assert outcome_of(flipped) == 0.5 and outcome_of(verdicts[ids[9]]) == 1.0
    # the queue shows the same label and flags the flip
    rows = {r["id"]: r for r in queue(store, status="all", limit=50)["rows"]}
    assert rows[ids[0]]["ai_label"] == "A" and rows[ids[0]]["flipped"]
    # the export: left out by default, counted on the card
    card = export_preferences(store, "default", soft_labels=True)
    assert card["counts"]["exported"] == 2 and card["counts"]["excluded_ai_flipped"] == 9
    assert "flipped with the order 9" in (store.workspace.exports_dir / "default" / "README.md").read_text()
    card = export_preferences(store, "conf", min_confidence=0.7)
    assert card["counts"]["exported"] == 1 and card["counts"]["excluded_ai_low_confidence"] == 1
    card = export_preferences(store, "kept", keep_flipped=True)
    assert card["counts"]["exported"] == 11 and card["counts"]["excluded_ai_flipped"] == 0
    with pytest.raises(CaiError, match="min-confidence"):
        export_preferences(store, "bad", min_confidence=0.3)


@pytest.mark.slow
def test_export_prefs_cli_flags(tmp_path):
    from cai_core.rlaif.pairs import add_pairs
    from cai_core.workspace import Workspace

    ws = tmp_path / "ws"
    store = Store(Workspace.open(ws))
    ids = add_pairs(store, [{"id": str(i), "prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"}
                            for i in range(3)], origin="sampled", batch="b")
    _judge(store, ids[0], 0.96, 0.46)  # flipped, mean 0.71
    _judge(store, ids[1], 0.9, 0.8)
    _judge(store, ids[2], 0.6, 0.6)
    store.close()
    counts = lambda r: json.loads(r.stdout)["counts"]  # noqa: E731
    r = run_cli("export-prefs", "--name", "a", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    assert counts(r)["exported"] == 2 and counts(r)["excluded_ai_flipped"] == 1
    r = run_cli("export-prefs", "--name", "b", "--keep-flipped", "--min-confidence", "0.7", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    assert counts(r)["exported"] == 2 and counts(r)["excluded_ai_low_confidence"] == 1


# -- item 6: evaluation cannot see real checkpoints ----------------------------------------------
@pytest.mark.slow
def test_evaluation_finds_the_checkpoints_the_real_trainer_writes(tmp_path, tiny_model_dir):
    from cai_core.evaluation.policies import checkpoints, parse_policies, parse_policy, policy_options
    from cai_core.training.runs import get_run, launch, refresh
    from cai_core.training.specs import new_spec
    from cai_core.workspace import Workspace

    store = Store(Workspace.open(tmp_path / "ws"))
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("How do I bake bread?", "Knead and bake."), ("Capital of France?", "Paris."),
                         ("Pick a lock?", "I can't help with that."), ("Explain rain.", "Water falls.")]]
    data = _write(tmp_path / "sft.jsonl", rows)
    spec = new_spec("sft", name="ck", model=str(tiny_model_dir), dataset=str(data), adapter="lora", max_steps=2,
                    save_steps=1, max_length=64, batch_size=2, probe_steps=0, probe_max_new_tokens=2)
    run = launch(store, spec)
    deadline = time.time() + 400
    while time.time() < deadline:
        refresh(store)
        run = get_run(store, run.id)
        if run.status in ("finished", "failed", "stopped"):
            break
        time.sleep(0.5)
    assert run.status == "finished", f"{run.error}\n{run.log_tail}"
    written = sorted(int(p.name.split("-")[1]) for p in run.run_dir.rglob("checkpoint-*") if p.is_dir())
    assert written == [1, 2]  # what the trainer really wrote, wherever it put them
    assert [step for step, _ in checkpoints(run.run_dir)] == written
    p = parse_policy("run:ck/checkpoint-1", store)
    assert (p.kind, p.step, p.run, p.name) == ("checkpoint", 1, "ck", "ck@1")
    assert Path(p.spec) == run.run_dir / "checkpoints" / "checkpoint-1"
    assert parse_policy(p.spec, store).name == "ck@1"  # the folder itself names its run
    assert {o["spec"] for o in policy_options(store)} >= {"run:ck", "run:ck/checkpoint-1", "run:ck/checkpoint-2"}
    assert [x.name for x in parse_policies(["run:ck", "default"], store, with_checkpoints=True)] == \
        ["ck", "default", "ck@1", "ck@2"]
    with pytest.raises(CaiError, match="checkpoint-1, checkpoint-2"):
        parse_policy("run:ck/checkpoint-9", store)
    store.close()


# -- item 7: one grammar per noun, one writer of comparisons ---------------------------------------
@pytest.mark.slow
def test_one_constitution_grammar_for_every_command(tmp_path, tiny_model_dir):
    """As found: `judge --constitution NAME@VERSION` failed while revise accepted it. Now every form
    resolves the same way, in the judge CLI too, and resolving saves nothing."""
    from cai_core.constitution.model import Constitution, Principle
    from cai_core.constitution.spec import resolve_constitution
    from cai_core.constitution.versions import save_constitution
    from cai_core.workspace import Workspace

    ws = tmp_path / "ws"
    store = Store(Workspace.open(ws))
    c1 = Constitution(name="mine", principles=[Principle(id="harm", name="Harm", critique_request="Critique.",
                                                         revision_request="Rewrite.",
                                                         comparison_question="Which is less harmful?")])
    v1 = save_constitution(store, c1)
    c2 = Constitution.from_dict({**c1.canonical(), "description": "second"})
    v2 = save_constitution(store, c2)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(c1.canonical()))
    before = store.scalar("SELECT COUNT(*) FROM constitutions")
    assert resolve_constitution(store, "mine").version == v2
    assert resolve_constitution(store, f"mine@{v1}").version == v1
    assert resolve_constitution(store, f"mine@{v1[:8]}").version == v1
    assert resolve_constitution(store, v1).version == v1
    assert resolve_constitution(store, str(f)).version == v1
    for bad, match in [("nope", "neither a file nor a stored constitution"), ("mine@ffffff", "no version"),
                       ("other@" + v1, "no stored constitution named 'other'"), (str(tmp_path / "x.yaml"), "not found"),
                       ("", "no constitution given")]:
        with pytest.raises(CaiError, match=match):
            resolve_constitution(store, bad)
    assert store.scalar("SELECT COUNT(*) FROM constitutions") == before  # nothing saved by resolving
    # the built-in judge-evaluation principle is not saved as a side effect either
    from cai_core.reliability.eval_judge import judge_constitution as reliability_constitution

    assert reliability_constitution(store, "builtin").name == "builtin_hhh"
    assert reliability_constitution(store, f"mine@{v1}").version == v1
    assert store.scalar("SELECT COUNT(*) FROM constitutions") == before
    store.close()

    pairs = _write(tmp_path / "pairs.jsonl", [{"id": "1", "prompt": "p", "response_a": "x", "response_b": "y"}])
    r = run_cli("judge", "--judge-model", str(tiny_model_dir), "--constitution", f"mine@{v1}", "--pairs", str(pairs),
                "--json", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["judges"][0].split("|")[2] == v1


def test_one_prompts_grammar(store, tmp_path):
    from cai_core.evaluation.evaluate import load_eval_prompts
    from cai_core.data.prompt_sets import import_prompt_set, resolve_prompts

    import_prompt_set(store, "reds", ["a?", "b?", "c?"])
    f = _write(tmp_path / "p.jsonl", [{"prompt": "x?", "category": "k"}, {"prompt": "y?"}])
    items, label = resolve_prompts(store, "reds", limit=2)
    assert [i["text"] for i in items] == ["a?", "b?"] and label == "reds" and items[0]["prompt_id"] is not None
    items, label = resolve_prompts(store, str(f))
    assert [(i["text"], i["category"], i["prompt_id"]) for i in items] == [("x?", "k", None), ("y?", None, None)]
    assert label == "p"
    assert [p["text"] for p in load_eval_prompts(store, "reds", 1)] == ["a?"]
    with pytest.raises(CaiError, match="not found"):
        resolve_prompts(store, str(tmp_path / "missing.jsonl"))
    with pytest.raises(CaiError, match="no prompt set"):
        resolve_prompts(store, "nope")
    with pytest.raises(CaiError, match="at least 1"):
        resolve_prompts(store, "reds", limit=0)


def test_comparisons_have_one_writer_and_resolvers_one_home():
    """Only rlaif/pairs.py inserts into comparisons; resolve_constitution / resolve_prompts are defined once."""
    insert = re.compile(r"INSERT\s+(OR\s+\w+\s+)?INTO\s+comparisons\b", re.I)
    writers, constitution_resolvers, prompt_resolvers = [], [], []
    for path in (ROOT / "cai_core").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        if insert.search(text):
            writers.append(rel)
        if re.search(r"^def resolve_constitution\(", text, re.M):
            constitution_resolvers.append(rel)
        if re.search(r"^def resolve_prompts\(", text, re.M):
            prompt_resolvers.append(rel)
    assert writers == ["cai_core/rlaif/pairs.py"]
    assert prompt_resolvers == ["cai_core/data/prompt_sets.py"]
    assert "cai_core/constitution/spec.py" in constitution_resolvers
    # a wrapper (eval-judge's documented 'builtin' default) delegates to the grammar, never a second one
    for rel in set(constitution_resolvers) - {"cai_core/constitution/spec.py"}:
        assert "from cai_core.constitution.spec import" in (ROOT / rel).read_text(encoding="utf-8"), rel
