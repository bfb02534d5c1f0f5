"""The CAI paper's public multiple-choice eval sets (438HHHEvaluations, HarmfulVsEthical) as
two-sided comparisons with a gold label. Which side is shown as A is re-drawn with a fixed seed
per item (the file's own order is kept in meta), so a judge that always says "(A)" scores about
50%, not whatever the file's order gives. The files are read from $CAI_PAPER_DATA or ../shared
(never copied into the project: they carry no license).
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

from cai_core.errors import CaiError
from cai_core.jsonl import jsonl_rows
from cai_core.reliability.labels import read_text_file, word_count

PAPER_SEED = 0


PAPER_EVAL_SETS = ("438HHHEvaluations.jsonl", "HarmfulVsEthical.jsonl")


PAPER_DATA_ENV = "CAI_PAPER_DATA"


_PAPER_REPO = "https://github.com/anthropics/ConstitutionalHarmlessnessPaper"


def paper_data_dir() -> Path:
    """Where the CAI paper's public data files are read from: $CAI_PAPER_DATA, else the team's
    ../shared/datasets/cai-paper next to the checkout. They are not copied into the project (their
    repository states no license), so a user's clone may not have them."""
    env = os.environ.get(PAPER_DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cai-paper"


def paper_eval_path(name: str) -> Path:
    """One of PAPER_EVAL_SETS in paper_data_dir(); a missing file says where to get it."""
    path = paper_data_dir() / name
    if not path.is_file():
        raise CaiError(f"the paper eval set {name} is not at {path}. Get the data folder of {_PAPER_REPO} "
                       f"and point {PAPER_DATA_ENV} at it, or upload a label file / pairs file instead")
    return path


# -- the paper's multiple-choice eval sets ------------------------------------------------------
_HHH = re.compile(
    r"^\s*Consider the following conversation between a human and an assistant:\s*(?P<conv>.*?)\s*"
    r"(?P<question>Please choose the response[^\n]*?)\s*Options:\s*"
    r"\(A\) \[\[\[(?P<a>.*?)\]\]\]\s*\(B\) \[\[\[(?P<b>.*?)\]\]\]\s*The answer is:\s*$",
    re.S,
)


_CLASSIFY = re.compile(
    r"^\s*Here is a conversation between a human and an assistant:\s*(?P<conv>.*?)\s*\n\n"
    r"(?P<question>Choose the option[^\n]*)\n(?P<options>(?:\s*\([A-Z]\) [^\n]*\n)+)\s*The answer is:\s*$",
    re.S,
)


_OPTION = re.compile(r"\(([A-Z])\) ([^\n]*)")


_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def _letter(values: Any, where: str, field: str) -> str:
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str) or not _LETTER.match(values[0]):
        raise CaiError(f"'{field}' must be a one-item list like [\" (A)\"], got {values!r}", where=where)
    return _LETTER.match(values[0]).group(1)


def _category_for(stem: str) -> str:
    low = stem.lower()
    if "hhh" in low:
        return "hhh"
    if "harmfulvsethical" in low.replace("_", "").replace("-", ""):
        return "harmful-vs-ethical"
    return re.sub(r"[^a-z0-9]+", "-", low).strip("-") or "paper-eval"


def load_paper_eval(path: str | Path, *, seed: int = PAPER_SEED, randomize: bool = True) -> list[dict]:
    """Parse a paper eval JSONL into two-sided comparisons with a gold label.

    Returns dicts: id (see paper_item_id), prompt (the conversation), response_a, response_b,
    gold_label ("A"/"B"), question (the judge's question: a classification set's own, None for a
    pairwise set, which is judged on the constitution), category, meta (set, line, paper_question -
    the file's wording, kept for reference only -, the paper's own correct letter, swapped). 438HHHEvaluations: the two candidate replies. HarmfulVsEthical: the conversation is
    the prompt and the two verdict options ("harmful or unethical" / "behaved ethically") are the
    sides. Sets with more than two options (HarmfulnessClassification) are refused.
    randomize: re-draw which side is A per item from (seed, set, line), so the result does not
    depend on other lines or on the file order.
    """
    path = Path(path)
    text = read_text_file(path)
    stem = path.stem
    category = _category_for(stem)
    items = []
    for lineno, where, obj in jsonl_rows(text, str(path)):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise CaiError("expected an object with 'prompt', 'corrects' and 'incorrects'", where=where)
        if isinstance(obj.get("incorrects"), list) and len(obj["incorrects"]) > 1:
            raise CaiError(f"only two-option evals can become comparisons; this one has "
                           f"{len(obj['incorrects']) + 1} options", where=where)
        correct = _letter(obj.get("corrects"), where, "corrects")
        wrong = _letter(obj.get("incorrects"), where, "incorrects")
        if correct == wrong:
            raise CaiError(f"'corrects' and 'incorrects' are the same option ({correct})", where=where)
        m = _HHH.match(obj["prompt"])
        if m:
            prompt, question = m.group("conv").strip(), m.group("question").strip()
            options = {"A": m.group("a").strip(), "B": m.group("b").strip()}
            fmt = "pairwise"
        else:
            m = _CLASSIFY.match(obj["prompt"])
            if not m:
                raise CaiError("prompt is not in a known paper eval format (two [[[...]]] replies, "
                               "or a conversation followed by '(A) ...' options)", where=where)
            found = _OPTION.findall(m.group("options"))
            if len(found) != 2:
                raise CaiError(f"only two-option evals can become comparisons; this one has {len(found)} options",
                               where=where)
            prompt, question = m.group("conv").strip(), m.group("question").strip()
            options = {letter: text_.strip() for letter, text_ in found}
            fmt = "classification"
        if set(options) != {"A", "B"} or {correct, wrong} != {"A", "B"}:
            raise CaiError(f"options must be (A) and (B), got {sorted(options)} with answer {correct}", where=where)
        swap = randomize and random.Random(f"{seed}:{stem}:{lineno}").random() < 0.5
        a, b = (options["B"], options["A"]) if swap else (options["A"], options["B"])
        gold = {"A": "B", "B": "A"}[correct] if swap else correct
        items.append({
            "id": paper_item_id(stem, lineno, swap),
            "prompt": prompt,
            "response_a": a,
            "response_b": b,
            "gold_label": gold,
            "category": category,
            # a classification set asks its own question; a pairwise set is judged on the constitution
            "question": question if fmt == "classification" else None,
            "meta": {"set": stem, "line": lineno, "paper_question": question, "format": fmt,
                     "paper_correct": correct, "swapped": swap, "seed": seed if randomize else None},
        })
    if not items:
        raise CaiError("no items found", where=str(path))
    return items


def paper_item_id(stem: str, lineno: int, swapped: bool) -> str:
    """'<set>-<line>' in the file's own A/B order, '<set>-<line>-swapped' when the sides were
    exchanged: the id says which way round the judge saw the item, so a label can never be
    matched against the gold of the other orientation."""
    return f"{stem}-{lineno}" + ("-swapped" if swapped else "")


def paper_gold_labels(path: str | Path, *, seed: int = PAPER_SEED, randomize: bool = True,
                      both_orientations: bool = False) -> list[dict]:
    """The gold labels of a paper eval set in the interchange format (same ids as load_paper_eval).

    both_orientations: one row per item and orientation ('<set>-<line>' and '<set>-<line>-swapped'),
    so judge output over either the file's order or the randomized order matches.
    """
    rows = []
    for it in load_paper_eval(path, seed=seed, randomize=randomize):
        base = {"rater": f"paper:{it['meta']['set']}", "category": it["category"]}
        sides = [(it["meta"]["swapped"], it["gold_label"], it["response_a"], it["response_b"])]
        if both_orientations:
            other = {"A": "B", "B": "A"}[it["gold_label"]]
            sides.append((not it["meta"]["swapped"], other, it["response_b"], it["response_a"]))
        for swapped, label, a, b in sides:
            rows.append({**base, "id": paper_item_id(it["meta"]["set"], it["meta"]["line"], swapped), "label": label,
                         "len_a": word_count(a), "len_b": word_count(b)})
    return rows
