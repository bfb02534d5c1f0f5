"""Bounds that help (issue 21 item 5): judge and eval-judge accept --truncate-prompts and cut over-long
pairs to fit the judge model's context, counting them; no error advises a flag its command lacks."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from cai_core.errors import CaiError
from cai_core.models.bounds import CUT_MARK, TRUNCATE_FLAG, fit_prompts, shares
from tests.helpers import PAPER_DATA, ROOT

LONG = "word " * 3000  # ~3,000 tokens: over the tiny model's 2,048-token context
HHH = PAPER_DATA / "438HHHEvaluations.jsonl"


def _commands() -> dict[str, "object"]:
    """Every command's parser by its words ('judge', 'pairs sample', ...)."""
    import argparse

    from cai_core.cli import build_parser

    out = {}

    def walk(parser, words):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if words:
            out[" ".join(words)] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, words + [name])

    walk(build_parser(), [])
    return out


def _flags(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


# -- the message builder -------------------------------------------------------------------------
def test_the_flag_is_advised_only_to_callers_that_offer_it(tiny_backend):
    with pytest.raises(CaiError) as offered:
        fit_prompts(tiny_backend, [LONG], max_new_tokens=16, truncate=False)
    with pytest.raises(CaiError) as not_offered:
        fit_prompts(tiny_backend, [LONG], max_new_tokens=16)
    assert TRUNCATE_FLAG in str(offered.value)
    assert TRUNCATE_FLAG not in str(not_offered.value) and "Shorten it" in str(not_offered.value)
    assert "2,048-token context" in str(not_offered.value)


def test_water_filling_keeps_short_parts_whole():
    assert shares([10, 500, 900], 400) == [10, 195, 195]
    assert shares([10, 20, 30], 100) == [10, 20, 30]
    assert sum(shares([1000, 1000, 1000], 301)) <= 301


# -- every command -------------------------------------------------------------------------------
def test_every_command_whose_errors_name_truncate_prompts_accepts_it():
    """Walk every command: the ones whose code can raise the bounds error with the flag advised (a call
    of fit_prompts / fit_pairs with truncate=<args or spec>.truncate_prompts) must accept the flag, and
    every call without it passes no truncate (so its error does not advise the flag)."""
    calls: dict[str, list[str]] = {}
    for path in list((ROOT / "cai_core").rglob("*.py")) + list((ROOT / "pages").glob("*.py")) + list((ROOT / "ui").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("fit_prompts", "fit_pairs"):
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("truncate")
                rel = str(path.relative_to(ROOT))
                if value is None:
                    continue
                # the flag's value, never a constant True/False that would advise a flag the caller lacks
                assert isinstance(value, ast.Attribute) and value.attr == "truncate_prompts", \
                    f"{rel}:{node.lineno} passes truncate={ast.unparse(value)}"
                calls.setdefault(rel, []).append(ast.unparse(value))
    assert calls, "no caller offers truncation"
    commands = _commands()
    have = {name for name, parser in commands.items() if TRUNCATE_FLAG in _flags(parser)}
    assert {"revise", "pairs sample", "judge", "eval-judge"} <= have
    # the job specs whose service reads spec.truncate_prompts are exactly those of commands with the flag
    from cai_core.jobs.specs import SPECS

    for spec in SPECS.values():
        if "truncate_prompts" in spec.__dataclass_fields__:
            assert " ".join(spec.COMMAND) in have, spec.KIND
    # a command module that passes args.truncate_prompts registers the flag on its own parser
    for rel, values in calls.items():
        if rel.startswith("cai_core/commands/") and any(v.startswith("args.") for v in values):
            assert "TRUNCATE_FLAG" in (ROOT / rel).read_text(), rel


def test_no_command_error_names_a_flag_the_command_does_not_have():
    """Each command module's CaiError messages name only flags one of its commands (or every command) has."""
    commands = _commands()
    common = {"--workspace", "--engine", "--job-id", "-h", "--help"}
    by_module: dict[str, set[str]] = {}
    for name, parser in commands.items():
        func = parser.get_default("func")
        if func is not None and not func.__module__.endswith("._common"):  # _common: the groups' help
            by_module.setdefault(func.__module__, set()).update(_flags(parser))
    bad = []
    for module, flags in by_module.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CaiError" and node.args:
                text = " ".join(c.value for c in ast.walk(node.args[0])
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text):
                    if flag not in flags | common:
                        bad.append(f"{module}:{node.lineno} names {flag}")
    assert not bad, bad


# -- judge ---------------------------------------------------------------------------------------
def _long_pairs(tmp_path: Path) -> Path:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "short", "prompt": "How do I bake bread?", "response_a": "Knead it.",
                                 "response_b": "Bake it."}) + "\n"
                     + json.dumps({"id": "long", "prompt": "Explain. " + LONG, "response_a": "A " + LONG,
                                   "response_b": "B is short."}) + "\n")
    return pairs


def _constitution(tmp_path: Path) -> Path:
    const = tmp_path / "c.json"
    const.write_text(json.dumps({"name": "c", "principles": [{"id": "p1", "name": "better", "critique_request": "Is it harmful?",
                                                               "revision_request": "Rewrite it.",
                                                               "comparison_question": "Which response is better?"}]}))
    return const


def test_judge_refuses_a_long_pair_and_advises_the_flag_it_has(tmp_path, tiny_model_dir, capsys):
    from cai_core.cli import main
    from cai_core.store import open_store

    ws = tmp_path / "ws"
    rc = main(["judge", "--judge-model", str(tiny_model_dir), "--pairs", str(_long_pairs(tmp_path)),
               "--constitution", str(_constitution(tmp_path)), "--no-swap", "--workspace", str(ws)])
    err = capsys.readouterr().err
    assert rc == 2 and "pair long" in err and TRUNCATE_FLAG in err and "2,048-token context" in err, err
    assert open_store(ws).scalar("SELECT COUNT(*) FROM comparisons") == 0


def test_judge_truncate_prompts_cuts_the_long_pair_and_counts_it(tmp_path, tiny_model_dir, capsys):
    from cai_core.cli import main
    from cai_core.store import open_store

    ws = tmp_path / "ws"
    rc = main(["judge", "--judge-model", str(tiny_model_dir), "--pairs", str(_long_pairs(tmp_path)),
               "--constitution", str(_constitution(tmp_path)), "--truncate-prompts", "--json", "--workspace", str(ws)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["pairs"] == 2 and summary["truncated"] == 1 and summary["no_valid_judgment"] == 0
    store = open_store(ws)
    # the store keeps the full pair; the judgments' transcripts show the cut one, and it fits
    full = store.one("SELECT prompt, response_a, response_b FROM comparisons WHERE prompt LIKE 'Explain.%'")
    assert full["prompt"] == "Explain. " + LONG
    from cai_core.models.backends.local import LocalBackend

    backend = LocalBackend(tiny_model_dir)
    rows = store.query("SELECT j.prompt_json, c.prompt FROM judgments j JOIN comparisons c ON c.id=j.comparison_id")
    assert len(rows) == 4  # 2 pairs x 2 orders
    for row in rows:
        messages = json.loads(row["prompt_json"])["messages"]
        text = messages[-1]["content"]
        if row["prompt"].startswith("Explain."):
            assert CUT_MARK.strip() in text and "B is short." in text  # the short answer is kept whole
            assert backend.prompt_tokens(messages) < backend.context_window()
        else:
            assert CUT_MARK.strip() not in text and "How do I bake bread?" in text


# -- eval-judge: the paper's 438 on a 2,048-token model ------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not HHH.exists(), reason="the paper's eval sets are not in ../shared/datasets")
def test_eval_judge_truncate_prompts_judges_all_438_hhh_items_on_the_tiny_model(store, tiny_model_dir, tiny_backend):
    """The tiny model's context is 2,048 tokens (its config); item 13 alone is over it with the real
    tokenizer. With --truncate-prompts every item is judged, exactly the items whose full judge prompt is
    over the context are cut (measured here independently), and every judged prompt fits."""
    from cai_core.jobs.specs import EvalJudgeSpec
    from cai_core.reliability.eval_judge import judge_constitution, run_eval_judge
    from cai_core.reliability.gold import comparison_meta
    from cai_core.rlaif.judges import MC_PREFIX, judge_conversation
    from cai_core.rlaif.pairs import comparisons_for

    window = tiny_backend.context_window()
    assert window == 2048
    spec = EvalJudgeSpec(judge_model=str(tiny_model_dir), gold=str(HHH), constitution="builtin", no_swap=True,
                         n_boot=0, truncate_prompts=True)
    with pytest.raises(CaiError, match=re.escape(TRUNCATE_FLAG)):  # without the flag: refused, the flag advised
        run_eval_judge(store, EvalJudgeSpec(judge_model=str(tiny_model_dir), gold=str(HHH), constitution="builtin",
                                            no_swap=True, n_boot=0))
    assert store.scalar("SELECT COUNT(*) FROM comparisons") == 0
    result = run_eval_judge(store, spec)
    report = result.report
    assert report["items"] == 438 and report["n"] == 438 and report["no_valid_verdict"] == 0
    assert report["context_window"] == 2048
    # which items are over the context, measured from the stored (full) comparisons
    question = judge_constitution(store, "builtin").comparison_principles()[0].comparison_question
    question = question.strip().removesuffix("Options:").strip()
    tail = len(tiny_backend.text_tokens(MC_PREFIX)) + max(len(tiny_backend.text_tokens(o)) for o in ("(A)", "(B)"))
    over = set()
    stored = comparisons_for(store, source="gold:438HHHEvaluations")
    assert len(stored) == 438
    for pair in stored:
        n = tiny_backend.prompt_tokens(judge_conversation(pair["prompt"], pair["response_a"], pair["response_b"],
                                                          question, "mc"))
        if n + tail > window:
            over.add(str(pair["comparison_id"]))
    assert over and set(report["truncated_ids"]) == over and report["truncated"] == len(over)
    metas = comparison_meta(store, [str(p["comparison_id"]) for p in stored])
    gold13 = [cid for cid, m in metas.items() if re.fullmatch(r"438HHHEvaluations-13(-swapped)?", str(m["meta"].get("gold_id")))]
    assert len(gold13) == 1 and gold13[0] in over  # the example (2,291 tokens with the real tokenizer)
    # every judged prompt fits; only the cut ones carry the cut mark
    for row in store.query("SELECT comparison_id, prompt_json FROM judgments"):
        messages = json.loads(row["prompt_json"])["messages"]
        assert tiny_backend.prompt_tokens(messages) + tail <= window
        assert (CUT_MARK.strip() in messages[-1]["content"]) == (str(row["comparison_id"]) in over)


# -- the page ------------------------------------------------------------------------------------
def test_the_eval_judge_form_offers_truncation_and_says_an_endpoints_numerics_are_the_servers(ws):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "50_Judge_Reliability.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.checkbox(key="rel_run_truncate").check().run()
    assert not at.exception, [e.value for e in at.exception]
    commands = [c.value for c in at.code if "eval-judge" in c.value]
    assert commands and TRUNCATE_FLAG in commands[-1], commands  # the previewed command carries the flag
    assert not any("numerics are the server's" in c.value for c in at.caption)
    at.text_input(key="rel_run_model").set_value("http://127.0.0.1:9/v1").run()
    assert any("numerics are the server's" in c.value and "--dtype float32" in c.value for c in at.caption)
