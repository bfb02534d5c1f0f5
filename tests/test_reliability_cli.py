"""CLI contract of `reliability` and `eval-judge` (the latter on the tiny model)."""
from __future__ import annotations

import json

import pytest

from tests.helpers import PAPER_DATA, ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here runs `python -m cai_core` in a subprocess, most on a model

HHH = PAPER_DATA / "438HHHEvaluations.jsonl"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reliability_json_contract(tmp_path):
    gold = _write(tmp_path / "gold.jsonl", [{"id": i, "label": "A" if i % 2 else "B"} for i in range(20)]
                  + [{"id": 0, "label": "B", "rater": "second"}])
    judge = _write(tmp_path / "judge.jsonl", [
        {"id": i, "label": "A", "p_a": 0.8, "p_a_ab": 0.9, "p_a_ba": 0.4 if i < 5 else 0.7} for i in range(20)])
    res = run_cli("reliability", "--judgments", str(judge), "--gold", str(gold), "--json", "--n-boot", "200")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("accuracy", "accuracy_ci", "cohen_kappa", "cohen_kappa_ci", "n", "accuracy_no_ties",
                "accuracy_no_ties_ci", "flip_rate", "ece", "brier", "first_position_win_rate", "confusion"):
        assert key in out, key
    assert out["n"] == 20 and out["accuracy"] == 0.5
    assert out["flip_rate"] == 0.25                         # 5 of 20 change their verdict under the swap
    lo, hi = out["accuracy_ci"]
    assert lo < 0.5 < hi
    assert out["cohen_kappa"] == 0.0                        # always "A": no agreement beyond chance
    assert abs(out["brier"] - ((0.8 - 1) ** 2 / 2 + 0.8 ** 2 / 2)) < 1e-9

    table = run_cli("reliability", "--judgments", str(judge), "--gold", str(gold), "--n-boot", "100")
    assert table.returncode == 0 and "accuracy [95% CI]" in table.stdout and "MT-Bench" in table.stdout


def test_reliability_bad_input_exit_2(tmp_path):
    gold = _write(tmp_path / "gold.jsonl", [{"id": 1, "label": "A"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "label": "A"}) + "\n" + '{"id": 2, "label": "maybe"}\n')
    res = run_cli("reliability", "--judgments", str(bad), "--gold", str(gold))
    assert res.returncode == 2 and "bad.jsonl:2" in res.stderr and "label must be" in res.stderr
    other = _write(tmp_path / "other.jsonl", [{"id": 9, "label": "A"}])
    res = run_cli("reliability", "--judgments", str(other), "--gold", str(gold))
    assert res.returncode == 2 and "no id of" in res.stderr
    res = run_cli("reliability", "--judgments", str(tmp_path / "nope.jsonl"), "--gold", str(gold))
    assert res.returncode == 2 and "file not found" in res.stderr


def test_judge_output_against_paper_file(tmp_path, tiny_model_dir):
    """The judge command's --out over a paper eval file matches the same file given as --gold."""
    subset = tmp_path / "hhh4.jsonl"
    subset.write_text("".join(HHH.read_text(encoding="utf-8").splitlines(keepends=True)[:4]))
    out = tmp_path / "judged.jsonl"
    res = run_cli("judge", "--judge-model", str(tiny_model_dir), "--pairs", str(subset), "--constitution",
                  str(ROOT / "sample_data" / "constitutions" / "seed.yaml"), "--out", str(out),
                  "--workspace", str(tmp_path / "ws"))
    assert res.returncode == 0, res.stderr
    res = run_cli("reliability", "--judgments", str(out), "--gold", str(subset), "--json", "--n-boot", "50")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["n"] == 4 and rep["n_unmatched"] == 0 and rep["n_swapped"] == 4
    assert 0.0 <= rep["accuracy"] <= 1.0 and rep["by_principle"]


def test_eval_judge_on_tiny_model(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(HHH), "--limit", "6",
                  "--json", "--n-boot", "200", "--workspace", str(ws), "--out", str(tmp_path / "labels.jsonl"))
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["n"] + rep["no_valid_verdict"] == 6 and rep["items"] == 6
    assert rep["constitution"] == "builtin_hhh" and rep["chance"] == 0.5
    for key in ("accuracy", "accuracy_ci", "cohen_kappa", "cohen_kappa_ci", "flip_rate", "ece", "brier", "judge_key"):
        assert key in rep, key
    assert rep["accuracy_ci"][0] <= rep["accuracy"] <= rep["accuracy_ci"][1]
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == rep["n"]
    # a pairwise paper set is judged on the constitution (here the built-in HHH principle), never on
    # the file's own wording stored with the item
    assert {lab["principle"] for lab in labels} == {"hhh"}
    # its ids are the gold file's, so the file itself scores them the same way
    assert all(lab["id"].startswith("438HHHEvaluations-") and isinstance(lab["comparison_id"], int) for lab in labels)
    (tmp_path / "first6").mkdir()
    head = tmp_path / "first6" / HHH.name  # paper item ids are named after the file: keep its name
    head.write_text("".join(HHH.read_text(encoding="utf-8").splitlines(keepends=True)[:6]))
    again = run_cli("reliability", "--judgments", str(tmp_path / "labels.jsonl"), "--gold", str(head), "--json",
                    "--n-boot", "50")
    assert again.returncode == 0, again.stderr
    scored = json.loads(again.stdout)
    assert scored["n"] == rep["n"] and scored["n_unmatched"] == 0 and scored["accuracy"] == rep["accuracy"]
    # a second run reuses the stored judgments and prints the same accuracy as a table
    text = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(HHH), "--limit", "6",
                   "--n-boot", "200", "--workspace", str(ws))
    assert text.returncode == 0, text.stderr
    assert f"accuracy {rep['accuracy']:.3f}" in text.stdout and "vs chance 0.500" in text.stdout


def test_eval_judge_refuses_bad_gold_before_writing(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    pairs = _write(tmp_path / "pairs.jsonl", [{"id": "p1", "prompt": "hi", "response_a": "a", "response_b": "b"}])
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(pairs), "--workspace", str(ws))
    assert res.returncode == 2 and "no gold_label" in res.stderr
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(HHH), "--limit", "0",
                  "--workspace", str(ws))
    assert res.returncode == 2 and "--limit" in res.stderr
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    assert Store(Workspace.open(ws)).scalar("SELECT COUNT(*) FROM comparisons") == 0


def test_eval_judge_uses_the_given_constitution_on_pairwise_paper_sets(tmp_path, tiny_model_dir):
    """--constitution decides the principles for the 438 HHH items; HarmfulVsEthical keeps its own
    question (its two sides are verdicts, not answers)."""
    from cai_core.store import Store
    from cai_core.workspace import Workspace

    ws = tmp_path / "ws"
    constitution = ROOT / "sample_data" / "constitutions" / "harmless_helpful.yaml"
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(HHH), "--limit", "3",
                  "--constitution", str(constitution), "--principles", "all", "--n-boot", "50", "--workspace", str(ws),
                  "--out", str(tmp_path / "hhh.jsonl"))
    assert res.returncode == 0, res.stderr
    store = Store(Workspace.open(ws))
    used = {r["principle_id"] for r in store.query("SELECT DISTINCT principle_id FROM judgments")}
    from cai_core.constitution.files import load_constitution_file

    assert used == {p.id for p in load_constitution_file(constitution).comparison_principles()}
    hve = PAPER_DATA / "HarmfulVsEthical.jsonl"
    res = run_cli("eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(hve), "--limit", "2",
                  "--constitution", str(constitution), "--n-boot", "50", "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    rows = store.query("SELECT DISTINCT j.principle_id FROM judgments j JOIN comparisons c ON c.id = j.comparison_id "
                       "WHERE c.source LIKE '%HarmfulVsEthical%'")
    assert [r["principle_id"] for r in rows] == ["pair-question"]
    store.close()


def test_one_resamples_flag_with_the_old_spelling_hidden():
    """Every command with CIs takes --n-boot (args.n_boot); --bootstrap still parses but is not listed."""
    from cai_core.cli import build_parser

    parser = build_parser()
    required = {"evaluate": ["--policies", "a", "--prompts", "p", "--judge-model", "m"],
                "ab-experiment": ["--constitution-a", "a", "--constitution-b", "b", "--prompts", "p"],
                "reliability": ["--judgments", "j", "--gold", "g"],
                "eval-judge": ["--judge-model", "m", "--gold", "g"]}
    for command, args in required.items():
        assert parser.parse_args([command, *args]).n_boot == 1000
        assert parser.parse_args([command, *args, "--n-boot", "30"]).n_boot == 30
        assert parser.parse_args([command, *args, "--bootstrap", "20"]).n_boot == 20
        helptext = run_cli(command, "--help").stdout
        assert "--n-boot" in helptext and "--bootstrap" not in helptext


def test_eval_judge_few_shot_and_zero_shot_keys(tmp_path, tiny_model_dir):
    """--few-shot adds the paper's judge examples (a new constitution version and a '-5shot' key);
    --zero-shot hides them again."""
    ws = str(tmp_path / "ws")
    few = str(PAPER_DATA / "RLMadisonFewShotPrompts.json")
    base = ["eval-judge", "--judge-model", str(tiny_model_dir), "--gold", str(HHH), "--limit", "2",
            "--constitution", "builtin", "--n-boot", "0", "--json", "--workspace", ws]
    # the five worked examples push item 1 over the tiny model's 2,048 tokens: the judge cuts it to fit
    shot = run_cli(*base, "--few-shot", few, "--truncate-prompts")
    assert shot.returncode == 0, shot.stderr
    report = json.loads(shot.stdout)
    assert report["judge_examples"] == 5 and report["judge_key"].startswith("mc-5shot|")
    assert report["truncated"] >= 1 and report["context_window"] == 2048
    zero = run_cli(*base, "--few-shot", few, "--zero-shot")
    assert zero.returncode == 0, zero.stderr
    zreport = json.loads(zero.stdout)
    assert zreport["judge_examples"] == 0 and zreport["judge_key"].startswith("mc|")
    bad = run_cli(*base, "--few-shot", few, "--style", "cot")
    assert bad.returncode == 2 and "no judge examples for the cot style" in bad.stderr
