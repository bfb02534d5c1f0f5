"""Human labels (append-only, concurrent), overrides, resolution, queue orders, the TRL export."""
from __future__ import annotations

import json
import threading
import time

import pytest

from cai_core.errors import CaiError
from cai_core.rlaif.pairs import add_pairs
from cai_core.rlaif.preferences import (
    add_label,
    export_preferences,
    label_history,
    override_label,
    prompt_messages,
    queue,
    resolved_label,
    stats,
)
from cai_core.store import Store, now


def make_comparisons(store, n, batch="b"):
    pairs = [{"id": str(i), "prompt": f"prompt {i}", "response_a": f"answer A{i}", "response_b": f"answer B{i}"}
             for i in range(n)]
    return add_pairs(store, pairs, origin="sampled", batch=batch)


def judge(store, cid, p_ab, p_ba=None, key="mc|m|v|random|x", principle="harm", status="ok"):
    rows = [("AB", p_ab)] + ([("BA", p_ba)] if p_ba is not None or status != "ok" else [])
    with store.tx() as conn:
        for order, p in rows:
            conn.execute(
                "INSERT INTO judgments (comparison_id, judge_key, judge_model, constitution_version, principle_id, style, "
                "order_shown, p_a, parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (cid, key, "m", "v", principle, "mc", order, p, status if p is None else "ok", now()))


def test_labels_append_only_from_two_threads(store, workspace):
    [cid] = make_comparisons(store, 1)

    def annotate(name):
        s = Store(workspace)  # each annotator its own connection, as two browser sessions would
        for i in range(15):
            add_label(s, cid, "A" if i % 2 else "B", name, reason=f"{name} {i}")
        s.close()

    threads = [threading.Thread(target=annotate, args=(n,)) for n in ("ann", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = label_history(store, cid)
    assert len(history) == 30
    assert {h["annotator"] for h in history} == {"ann", "bob"}


def test_override_flag_reason_and_resolution(store):
    c1, c2 = make_comparisons(store, 2)
    judge(store, c1, 0.8, 0.7)  # AI says A
    r = add_label(store, c1, "A", "ann", blind=True)
    assert not r["is_override"] and r["ai_label"] == "A"
    r = add_label(store, c1, "B", "bob", reason="A is evasive")
    assert r["is_override"] and r["reason"] == "A is evasive"
    assert resolved_label(store, c1)["label"] == "B" and resolved_label(store, c1)["source"] == "human"
    add_label(store, c1, "skip", "carl")  # a skip never wins
    assert resolved_label(store, c1)["label"] == "B"
    with pytest.raises(CaiError, match="reason"):
        override_label(store, c1, "B", "ann", "")
    with pytest.raises(CaiError, match="another label"):
        override_label(store, c1, "A", "ann", "same as AI")
    with pytest.raises(CaiError, match="no valid AI verdict"):
        override_label(store, c2, "A", "ann", "no verdict")
    assert override_label(store, c1, "tie", "ann", "both fine")["is_override"]
    with pytest.raises(CaiError):
        add_label(store, c1, "maybe", "ann")
    with pytest.raises(CaiError, match="annotator"):
        add_label(store, c1, "A", "  ")
    assert resolved_label(store, c2) == {"label": None, "source": "none", "ai_label": None, "ai_p_a": None}


def test_queue_orders_and_statuses(store):
    ids = make_comparisons(store, 5)
    judge(store, ids[0], 0.9, 0.9)            # sure, no flip
    judge(store, ids[1], 0.55, 0.45)          # flip, p=0.5
    judge(store, ids[2], 0.6, 0.62)           # uncertain-ish
    judge(store, ids[3], 0.9, 0.9)
    judge(store, ids[3], 0.2, 0.2, principle="help")  # ensemble disagreement
    judge(store, ids[4], None, key="parse|m|v|random|y", status="invalid")
    uncertain = [r["id"] for r in queue(store, order="uncertain")["rows"]]
    assert uncertain[:3] == [ids[1], ids[3], ids[2]] and uncertain[-1] == ids[4]
    assert queue(store, order="flips")["rows"][0]["id"] == ids[1]
    top = queue(store, order="disagreement")["rows"][0]
    assert top["id"] == ids[3] and top["disagreement"]
    r1 = queue(store, order="random", seed=1)["rows"]
    assert sorted(r["id"] for r in r1) == sorted(ids)
    assert [r["id"] for r in r1] == [r["id"] for r in queue(store, order="random", seed=1)["rows"]]
    assert [r["id"] for r in queue(store, status="invalid")["rows"]] == [ids[4]]
    add_label(store, ids[1], "A", "ann")
    assert queue(store)["total"] == 4
    assert [r["id"] for r in queue(store, status="labelled")["rows"]] == [ids[1]]
    page = queue(store, order="oldest", limit=2, offset=2)
    assert [r["id"] for r in page["rows"]] == [ids[3], ids[4]] and page["total"] == 4
    s = stats(store)
    assert s["invalid_judgments"] == 2 and s["human_labelled"] == 1 and s["comparisons"] == 5
    with pytest.raises(CaiError):
        queue(store, order="loudest")


@pytest.mark.slow
def test_queue_is_fast_on_10k(store):
    with store.tx() as conn:
        conn.executemany(
            "INSERT INTO comparisons (key, source, batch, prompt, response_a, response_b, created_at) VALUES (?,?,?,?,?,?,?)",
            [(f"k{i}", "sampled", "big", f"p{i}", "a", "b", now()) for i in range(10_000)])
        conn.executemany(
            "INSERT INTO judgments (comparison_id, judge_key, judge_model, principle_id, style, order_shown, p_a, "
            "parse_status, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [(i, "k", "m", "p", "mc", o, (i % 97) / 97, "ok", now()) for i in range(1, 10_001) for o in ("AB", "BA")])
    t = time.time()
    page = queue(store, order="uncertain", batch="big", limit=20, offset=5000)
    assert time.time() - t < 3.0
    assert page["total"] == 10_000 and len(page["rows"]) == 20


def test_prompt_messages_transcript():
    assert prompt_messages("hello") == [{"role": "user", "content": "hello"}]
    msgs = prompt_messages("Human: hi\n\nAssistant: hello\n\nHuman: how are you?")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[-1]["content"] == "how are you?"


@pytest.mark.slow
def test_export_trl_preference_dataset(store, workspace, tiny_model_dir):
    ids = make_comparisons(store, 6)
    judge(store, ids[0], 0.8, 0.7)                # AI A
    judge(store, ids[1], 0.2, 0.3)                # AI B, human overrides to A
    add_label(store, ids[1], "A", "ann", reason="B refuses")
    judge(store, ids[2], 0.5, 0.5)                # AI tie (within the tie margin) -> excluded
    judge(store, ids[3], 0.9, 0.9)
    add_label(store, ids[3], "both_bad", "ann")   # excluded
    judge(store, ids[4], None, key="parse|m|v|random|y", status="invalid")  # invalid -> excluded
    judge(store, ids[5], 0.3, 0.3)
    add_label(store, ids[5], "skip", "ann")       # skip -> falls back to AI (B)
    # both judges judged part of the batch: neither is a complete default, so combine them by name
    card = export_preferences(store, "prefs", batch="b", soft_labels=True, margin=True, judge_keys=["all"])
    c = card["counts"]
    assert (c["exported"], c["human_overrides"], c["excluded_ai_within_margin"], c["excluded_both_bad"],
            c["excluded_invalid"]) == (3, 1, 1, 1, 1)
    assert card["share_human_overrides"] == pytest.approx(1 / 3)
    out = workspace.root / "exports" / "prefs"
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert rows[0]["chosen"][0]["content"] == "answer A0" and rows[0]["p_chosen"] == pytest.approx(0.75)
    assert rows[1]["chosen"][0]["content"] == "answer A1" and rows[1]["p_chosen"] == 1.0  # the human override
    assert rows[2]["chosen"][0]["content"] == "answer B5" and rows[2]["margin"] == pytest.approx(0.4)
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    assert lineage[1]["is_override"] and lineage[1]["override_reason"] == "B refuses"
    assert json.loads((out / "card.json").read_text())["counts"]["exported"] == 3
    assert "human overrides: 1" in (out / "README.md").read_text()
    assert store.one("SELECT kind FROM exports WHERE name='prefs'")["kind"] == "preference"

    from datasets import load_from_disk
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    ds = load_from_disk(str(out / "hf"))
    assert len(ds) == 3 and is_conversational(ds[0])
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    text = maybe_apply_chat_template(ds[0], tok)
    assert "answer A0" in text["chosen"] and "prompt 0" in text["prompt"]
    args = RewardConfig(output_dir=str(workspace.root / "rm"), max_length=256, report_to=[], bf16=False, use_cpu=True)
    prepared = RewardTrainer._prepare_dataset(None, ds, tok, args, "train")
    assert "chosen_ids" in prepared.column_names and len(prepared) == 3

    with pytest.raises(CaiError, match="already exists"):
        export_preferences(store, "prefs", batch="b")
    with pytest.raises(CaiError):
        export_preferences(store, "../escape")
    with pytest.raises(CaiError, match="no comparisons"):
        export_preferences(store, "none", batch="missing")


def test_a_client_id_stores_one_label_however_often_it_arrives(store, tmp_path):
    """Issue 12 item 9: one key press stores at most one label (the store refuses a client id twice)."""
    from cai_core.rlaif.preferences import DuplicateLabel
    from tests.helpers import run_cli

    cid = add_pairs(store, [{"id": "x", "prompt": "q", "response_a": "a", "response_b": "b"}], origin="imported", batch="b")[0]
    first = add_label(store, cid, "A", "ann", client_id="item-7-n1")
    assert first["client_id"] == "item-7-n1"
    with pytest.raises(DuplicateLabel, match="not stored twice"):
        add_label(store, cid, "B", "ann", client_id="item-7-n1")
    add_label(store, cid, "B", "other", client_id="item-7-n1")  # another annotator's answer is their own
    add_label(store, cid, "B", "ann", client_id="item-7-n2")  # a deliberate new answer to the item
    add_label(store, cid, "tie", "ann")  # no client id: append-only as before
    add_label(store, cid, "tie", "ann")
    rows = store.query("SELECT annotator, label, client_id FROM human_labels ORDER BY id")
    assert [(r["annotator"], r["label"], r["client_id"]) for r in rows] == [
        ("ann", "A", "item-7-n1"), ("other", "B", "item-7-n1"), ("ann", "B", "item-7-n2"), ("ann", "tie", None),
        ("ann", "tie", None)]

    ws = str(store.workspace.root)
    ok = run_cli("label", str(cid), "A", "--annotator", "cli", "--client-id", "retry-1", "--workspace", ws)
    assert ok.returncode == 0, ok.stderr
    again = run_cli("label", str(cid), "A", "--annotator", "cli", "--client-id", "retry-1", "--workspace", ws)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "not stored twice" in again.stderr
    assert store.scalar("SELECT COUNT(*) FROM human_labels WHERE annotator='cli'") == 1
