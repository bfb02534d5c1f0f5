"""AI judges: which of two responses is better, as a probability, per the constitution.

A judge = model + constitution version + style + settings (its `judge_key`). Styles:

- "mc": the paper's multiple-choice feedback: one comparison principle (drawn at random with a
  seed, or all of them), options "(A)"/"(B)", P(A) read from the option log-probs after
  "The answer is: " - one forward pass, no text generation;
- "cot": the judge writes step-by-step reasoning first, then the option probabilities are read
  after the reasoning and clamped (default 0.4-0.6, the paper's remedy for over-confident CoT);
- "parse": a generated verdict parsed from text (endpoints without log-probs); an answer that
  cannot be parsed is stored as parse_status="invalid" and counted, never guessed.

Few-shot: the judge is shown the constitution's judge examples first (the paper's
RLMadisonFewShotPrompts for mc and parse, RLMadisonPrecogFewShotPrompts for cot), each as a
user turn asking the same question about the example pair and an assistant turn answering it
the way the judge is scored ("The answer is: (A)"; for cot the reasoning, then the answer).
They are used whenever the constitution has them (JudgeSpec.few_shot=False turns them off), and
their number is part of the judge key (their text is part of the constitution version).

Every judgment keeps the exact messages sent to the model (and, for mc/cot, the assistant text
the options were scored after) in `judgments.prompt_json`: the page shows them as a transcript.

Position bias: every comparison is judged in both orders (AB and BA) by default, each P(A) mapped
back to the original A; the verdict is the mean, and a flip (the preferred answer changed with
the order) is recorded. Ensembles of principles and/or judge models combine by mean probability
or majority vote, keeping every member's vote. Each judgment is one committed row of
`judgments` (unique per comparison, judge, principle and order), so a killed run resumes.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from cai_core.constitution.model import Constitution, JudgeExample, Principle
from cai_core.errors import CaiError
from cai_core.label_rule import is_flipped, label_from_p
from cai_core.models.backends.base import Backend, Conversation, GenerationParams
from cai_core.models.dispatch import Request, run_chains
from cai_core.models.specs import recorded_model
from cai_core.store import Store, dumps, now

STYLES = ("mc", "cot", "parse")
COMBINES = ("mean", "vote")
OPTIONS = ["(A)", "(B)"]
MC_PREFIX = "The answer is: "
COT_SUFFIX = " Therefore, the better response is: "
PAIR_QUESTION_ID = "pair-question"   # principle_id used when a pair carries its own question

Progress = Callable[[int, int, str], None]


APPROX_KEY_SUFFIX = "-approx"  # on the key's style part when the backend's option scoring is approximate


@dataclass
class JudgeSpec:
    """Everything that decides what a judge answers (and so its judge_key)."""
    model: str
    style: str = "mc"                          # mc | cot | parse
    principles: str | list[str] = "random"     # random | all | [principle ids]
    swap: bool = True                          # judge both orders (AB and BA)
    cot_clamp: tuple[float, float] = (0.4, 0.6)
    seed: int = 0
    max_new_tokens: int = 160                  # reasoning (cot) or verdict (parse) length
    constitution_name: str = ""
    constitution_version: str = ""
    batch_size: int | None = None              # judgments in flight (None: what the backend serves)
    scoring: str = "exact"                     # the backend's option_scoring(); set by judge_pairs
    few_shot: bool = True                      # show the constitution's judge examples first
    examples: int = 0                          # judge examples shown (set from the constitution when judging)

    def __post_init__(self):
        if self.style not in STYLES:
            raise CaiError(f"unknown judge style {self.style!r}: use one of {', '.join(STYLES)}")
        if isinstance(self.principles, str) and self.principles not in ("random", "all"):
            self.principles = [p.strip() for p in self.principles.split(",") if p.strip()]
        if isinstance(self.principles, (list, tuple)):
            self.principles = list(self.principles)
            if not self.principles:
                raise CaiError("no principle ids given: use random, all, or a comma-separated list of ids")
        lo, hi = (float(x) for x in self.cot_clamp)
        if not (0.0 <= lo <= 0.5 <= hi <= 1.0):
            raise CaiError(f"cot clamp ({lo}, {hi}) must satisfy 0 <= low <= 0.5 <= high <= 1")
        self.cot_clamp = (lo, hi)
        if self.max_new_tokens < 1:
            raise CaiError("max_new_tokens must be at least 1")

    def settings(self) -> dict:
        """The settings that change a single judgment's output (part of the key)."""
        out = {"principles": self.principles, "seed": self.seed}
        if self.examples:
            out["judge_examples"] = self.examples
        if self.style == "cot":
            out.update(cot_clamp=list(self.cot_clamp), max_new_tokens=self.max_new_tokens)
        if self.style == "parse":
            out.update(max_new_tokens=self.max_new_tokens)
        return out

    @property
    def judge_key(self) -> str:
        """Readable and unique: style[-Nshot]|model|constitution version|principles|settings hash."""
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        principles = self.principles if isinstance(self.principles, str) else f"{len(self.principles)}ids"
        style = f"{self.style}-{self.examples}shot" if self.examples else self.style
        if self.style in ("mc", "cot") and self.scoring != "exact":
            style += APPROX_KEY_SUFFIX  # never silently: "approximate: first-token top-k" (backend.option_scoring)
        parts = [style, self.model, self.constitution_version or "-", principles,
                 hashlib.sha256(blob).hexdigest()[:8]]
        return "|".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cot_clamp"] = list(self.cot_clamp)
        d["judge_key"] = self.judge_key
        return d


@dataclass
class Member:
    """One ensemble member's vote on one pair: a (judge, principle) in one or both orders."""
    judge_key: str
    model: str
    principle_id: str
    p_a: float | None             # mean of the valid orders, mapped to the original A
    p_a_ab: float | None
    p_a_ba: float | None
    label: str | None
    flipped: bool
    invalid: int
    reasoning_ab: str | None = None
    reasoning_ba: str | None = None


@dataclass
class PairVerdict:
    id: str                        # the pair's id (file id, or comparison id as text)
    p_a: float | None              # after debiasing and combining; None when every judgment was invalid
    label: str | None              # A | B | tie | None (no valid judgment)
    p_a_ab: float | None           # P(A) with A shown first (mean over members)
    p_a_ba: float | None           # P(A) with the order swapped, mapped back to the original A
    flipped: bool                  # the preferred answer changed with the order
    disagreement: bool             # ensemble members did not all give the same label
    invalid: int                   # judgments that could not be parsed
    members: list[Member] = field(default_factory=list)
    reasoning: str | None = None
    comparison_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def out_row(self) -> dict:
        """The --out JSONL row of `python -m cai_core judge`."""
        return {"id": self.id, "p_a": self.p_a, "label": self.label, "p_a_ab": self.p_a_ab,
                "p_a_ba": self.p_a_ba, "flipped": self.flipped, "invalid": self.invalid,
                "disagreement": self.disagreement,
                "members": [{"judge_key": m.judge_key, "principle_id": m.principle_id, "p_a": m.p_a,
                             "label": m.label, "flipped": m.flipped} for m in self.members]}


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# -- prompts -----------------------------------------------------------------------------------
def comparison_question(principle: Principle) -> str:
    """The principle's comparison question (paper's trailing 'Options:' dropped). A principle
    without one is refused: a question invented from its name would be judged silently."""
    q = (principle.comparison_question or "").strip()
    if q.endswith("Options:"):
        q = q[: -len("Options:")].strip()
    if not q:
        raise CaiError(f"principle {principle.id!r} has no comparison question, so a judge cannot use it: "
                       "write one on the Constitution page or pick principles that have one")
    return q


def judge_conversation(prompt: str, first: str, second: str, question: str, style: str) -> Conversation:
    """The judge's user turn: the conversation, the question, the two options (shown order)."""
    convo = prompt.strip()
    if not (convo.startswith("Human:") or "\nHuman:" in convo):
        convo = f"Human: {convo}"
    text = (f"Consider the following conversation between a human and an assistant:\n\n{convo}\n\n"
            f"{question}\nOptions:\n(A) {first.strip()}\n(B) {second.strip()}")
    if style == "cot":
        text += "\n\nLet's think step by step about which response is better, then say which one."
    elif style == "parse":
        text += "\n\nWhich response is better? Answer with (A) or (B) only."
    return [{"role": "user", "content": text}]


def example_answer(example: JudgeExample, style: str) -> str:
    """What the judge 'said' in a worked example, in the form its own answer is read."""
    option = OPTIONS[0 if example.answer == "A" else 1]
    if style == "cot":
        return f"{example.reasoning.strip()}{COT_SUFFIX}{option}"
    if style == "mc":
        return f"{MC_PREFIX}{option}"
    return option


def example_turns(examples: list[JudgeExample], question: str, style: str) -> Conversation:
    """The judge examples as prior turns: the example pair asked with its own question (or the
    one being judged), answered. The block depends only on the question, so it is shared."""
    turns: Conversation = []
    for ex in examples:
        turns += judge_conversation(ex.conversation, ex.response_a, ex.response_b, ex.question or question, style)
        turns.append({"role": "assistant", "content": example_answer(ex, style)})
    return turns


_FINAL = re.compile(r"(?:answer|better response|verdict|choice)\s*(?:is|:)?\s*:?\s*\(?\s*([AB])\s*\)?(?![A-Za-z])", re.I)
_PAREN = re.compile(r"\(([AB])\)")
_BARE = re.compile(r"^\W*([AB])\W*$")


def parse_verdict(text: str) -> str | None:
    """"A"/"B" from a generated verdict, or None when it is absent or ambiguous (never guessed)."""
    text = (text or "").strip()
    if not text:
        return None
    bare = _BARE.match(text)
    if bare:
        return bare.group(1).upper()
    finals = [m.upper() for m in _FINAL.findall(text)]
    if finals:
        return finals[-1] if len(set(finals)) == 1 else None
    parens = set(_PAREN.findall(text))
    if len(parens) == 1:
        return parens.pop()
    return None


# -- work items --------------------------------------------------------------------------------
@dataclass
class _Item:
    pair_index: int
    pair_id: str
    comparison_id: int | None
    principle_id: str
    question: str
    order: str                      # AB | BA
    conversation: Conversation


def check_can_judge(constitution: Constitution) -> Constitution:
    """Refuse, before any work, a constitution that has no comparison question to judge with."""
    if not constitution.comparison_principles():
        raise CaiError(f"constitution {constitution.name!r} has no comparison questions, so it cannot judge: add "
                       "some (e.g. constitution import ... --comparisons RLMadisonInstructions.json, or write them "
                       "on the Constitution page), or judge with another constitution")
    return constitution


def choose_principles(spec: JudgeSpec, constitution: Constitution, pair_key: str) -> list[Principle]:
    """The principles a pair is judged on, from the comparison list: one drawn with a per-pair
    seed, all of them, or the listed ids. A constitution without comparison questions is refused."""
    enabled = check_can_judge(constitution).comparison_principles()
    if spec.principles == "all":
        return enabled
    if spec.principles == "random":
        rng = random.Random(f"{spec.seed}:{pair_key}")
        return [enabled[rng.randrange(len(enabled))]]
    return [constitution.principle(pid) for pid in spec.principles]


def validate_pairs(pairs: list[dict]) -> None:
    seen = set()
    for i, pair in enumerate(pairs):
        for key in ("id", "prompt", "response_a", "response_b"):
            if key not in pair or pair[key] is None:
                raise CaiError(f"pair #{i + 1} has no {key!r}")
        for key in ("prompt", "response_a", "response_b"):
            if not isinstance(pair[key], str):
                raise CaiError(f"pair {pair['id']!r}: {key} must be text")
        if str(pair["id"]) in seen:
            raise CaiError(f"duplicate pair id {pair['id']!r}")
        seen.add(str(pair["id"]))


def judge_examples(spec: JudgeSpec, constitution: Constitution | None) -> list[JudgeExample]:
    """The examples this judge is shown: the constitution's, for its style, unless few_shot is off."""
    if constitution is None or not spec.few_shot:
        return []
    return constitution.judge_examples_for(spec.style)


def _items(spec: JudgeSpec, constitution: Constitution | None, pairs: list[dict]) -> list[_Item]:
    items = []
    orders = ["AB", "BA"] if spec.swap else ["AB"]
    examples = judge_examples(spec, constitution)
    for i, pair in enumerate(pairs):
        if pair.get("question"):
            chosen = [(PAIR_QUESTION_ID, str(pair["question"]))]
        else:
            if constitution is None:
                raise CaiError(f"pair {pair['id']!r} needs a constitution (it has no question of its own)")
            key = str(pair.get("key") or pair["id"])
            chosen = [(p.id, comparison_question(p)) for p in choose_principles(spec, constitution, key)]
        for pid, question in chosen:
            for order in orders:
                first, second = ((pair["response_a"], pair["response_b"]) if order == "AB"
                                 else (pair["response_b"], pair["response_a"]))
                items.append(_Item(i, str(pair["id"]), pair.get("comparison_id"), pid, question, order,
                                   example_turns(examples, question, spec.style)
                                   + judge_conversation(pair["prompt"], first, second, question, spec.style)))
    return items


def _map_back(p_shown_a: float, order: str) -> float:
    """P(shown A better) -> P(original A better)."""
    return p_shown_a if order == "AB" else 1.0 - p_shown_a


def _judge_item(spec: JudgeSpec, it: _Item):
    """One judgment's requests (a generator for models/dispatch.run_chains): mc scores the options
    after MC_PREFIX; cot writes its reasoning, then scores the options after it; parse writes a
    verdict and reads it. Returns the judgment record."""
    conv = it.conversation
    reasoning = raw = p = None
    status, scored_after, seconds = "ok", None, 0.0
    if spec.style == "mc":
        req = Request("choice", conv, options=OPTIONS, prefix=MC_PREFIX)
        dist = yield req
        seconds, scored_after = req.seconds, MC_PREFIX
        p, raw = float(dist["(A)"]), json.dumps({"(A)": dist["(A)"], "(B)": dist["(B)"]})
    elif spec.style == "cot":
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=0.0, seed=spec.seed)
        req = Request("generate", conv, params, stage=0)
        out = yield req
        reasoning = out[0].text.strip() if out else ""
        scored_after = (reasoning + COT_SUFFIX) if reasoning else COT_SUFFIX.strip() + " "
        score = Request("choice", conv, options=OPTIONS, prefix=scored_after, stage=1, follow_up=True)
        dist = yield score
        seconds = req.seconds + score.seconds
        lo, hi = spec.cot_clamp
        raw = json.dumps({"(A)": dist["(A)"], "(B)": dist["(B)"]})
        p = min(hi, max(lo, float(dist["(A)"])))
    else:  # parse
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=0.0, seed=spec.seed)
        req = Request("generate", conv, params, stage=0)
        out = yield req
        seconds, raw = req.seconds, out[0].text if out else ""
        verdict = parse_verdict(raw)
        if verdict is None:
            status = "invalid"
        else:
            p = 1.0 if verdict == "A" else 0.0
    return _record(spec, it, p=p, reasoning=reasoning, raw=raw, status=status, seconds=seconds,
                   scored_after=scored_after)


def _record(spec: JudgeSpec, it: _Item, *, p, reasoning, raw, status, seconds, scored_after) -> dict:
    return {
        "pair_index": it.pair_index, "pair_id": it.pair_id, "comparison_id": it.comparison_id,
        "judge_key": spec.judge_key, "judge_model": spec.model,
        "constitution_version": spec.constitution_version or None,
        "principle_id": it.principle_id, "style": spec.style, "order_shown": it.order,
        "p_a": None if p is None else _map_back(p, it.order),
        "reasoning": reasoning, "raw_output": raw, "parse_status": status,
        "latency_s": seconds, "prompt_json": transcript_json(it.conversation, scored_after),
    }


def _failed_record(spec: JudgeSpec, it: _Item, exc: BaseException) -> dict:
    """A judgment whose request still failed after the backend's retries: parse_status 'error' and
    the error as its raw output (a re-run judges it again)."""
    return _record(spec, it, p=None, reasoning=None, raw=f"error: {exc}"[:2000], status="error", seconds=0.0,
                   scored_after=None)


def transcript_json(messages: Conversation, scored_after: str | None) -> str:
    """What was sent to the model, as stored: the messages, and the assistant text after which the
    options were scored (None for parse: the model generated its verdict)."""
    return json.dumps({"messages": messages, "assistant_prefix": scored_after}, ensure_ascii=False)


def judgment_transcript(row: dict) -> dict | None:
    """A stored judgment's transcript ({messages, assistant_prefix}), None for rows stored before
    transcripts were kept."""
    raw = row.get("prompt_json")
    return json.loads(raw) if raw else None


# -- store -------------------------------------------------------------------------------------
JUDGMENT_COLUMNS = ("comparison_id", "judge_key", "judge_model", "constitution_version", "principle_id",
                    "style", "order_shown", "p_a", "reasoning", "raw_output", "parse_status", "latency_s",
                    "prompt_json")


def register_judge(store: Store, spec: JudgeSpec) -> None:
    store.execute(
        "INSERT INTO judges (judge_key, model, constitution_name, constitution_version, style, spec_json, created_at) "
        "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (spec.judge_key, spec.model, spec.constitution_name or None, spec.constitution_version or None,
         spec.style, dumps(spec.to_dict()), now()),
    )


def list_judges(store: Store) -> list[dict]:
    """Every judge with stored judgments: key, model, style, constitution, counts."""
    rows = store.query(
        "SELECT j.judge_key, j.model, j.style, j.constitution_name, j.constitution_version, j.spec_json, "
        "(SELECT COUNT(*) FROM judgments g WHERE g.judge_key=j.judge_key) AS judgments, "
        "(SELECT COUNT(*) FROM judgments g WHERE g.judge_key=j.judge_key AND g.parse_status!='ok') AS invalid "
        "FROM judges j ORDER BY j.created_at")
    return [dict(r) for r in rows]


def _existing(store: Store, judge_key: str, comparison_ids: list[int]) -> dict[tuple, dict]:
    found: dict[tuple, dict] = {}
    for start in range(0, len(comparison_ids), 500):
        chunk = comparison_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.query(f"SELECT * FROM judgments WHERE judge_key=? AND comparison_id IN ({marks}) "
                             "AND parse_status!='error'", (judge_key, *chunk)):  # a failed one is judged again
            found[(r["comparison_id"], r["principle_id"], r["order_shown"])] = dict(r)
    return found


def _save(store: Store, record: dict, job_id: int | None) -> None:
    cols = JUDGMENT_COLUMNS + ("job_id", "created_at")
    values = [record[c] for c in JUDGMENT_COLUMNS] + [job_id, now()]
    updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in ("comparison_id", "judge_key", "principle_id",
                                                                         "order_shown"))
    with store.tx() as conn:  # a judgment stored as an error (its request failed) is replaced; others are kept
        conn.execute(f"INSERT INTO judgments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                     f"ON CONFLICT (comparison_id, judge_key, principle_id, order_shown) DO UPDATE SET {updates} "
                     "WHERE judgments.parse_status='error'", values)


# -- aggregation -------------------------------------------------------------------------------
def aggregate_members(records: list[dict]) -> list[Member]:
    """One pair's judgment records as ensemble members, one per (judge, principle), in the order the
    records first name them: both orders' P(A) and their mean, the label, whether it flipped."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        groups.setdefault((r["judge_key"], r["principle_id"]), {})[r["order_shown"]] = r
    members = []
    for (jkey, pid), by_order in groups.items():
        ab, ba = by_order.get("AB"), by_order.get("BA")
        p_ab = ab["p_a"] if ab and ab["parse_status"] == "ok" else None
        p_ba = ba["p_a"] if ba and ba["parse_status"] == "ok" else None
        invalid = sum(1 for r in by_order.values() if r["parse_status"] != "ok")
        p = _mean([p_ab, p_ba])
        flipped = is_flipped(p_ab, p_ba)
        model = next(iter(by_order.values()))["judge_model"]
        members.append(Member(jkey, model, pid, p, p_ab, p_ba, label_from_p(p), flipped, invalid,
                              ab.get("reasoning") if ab else None, ba.get("reasoning") if ba else None))
    return members


def aggregate(pair_id: str, records: list[dict], combine: str = "mean", comparison_id: int | None = None) -> PairVerdict:
    """Combine one pair's judgment records (any judges, principles, orders) into a verdict."""
    if combine not in COMBINES:
        raise CaiError(f"unknown combine {combine!r}: use mean or vote")
    members = aggregate_members(records)
    invalid_total = sum(m.invalid for m in members)
    valid = [m for m in members if m.p_a is not None]
    p_ab = _mean(m.p_a_ab for m in valid)
    p_ba = _mean(m.p_a_ba for m in valid)
    if combine == "mean":
        p = _mean(m.p_a for m in valid)
        label = label_from_p(p)
    else:
        score = {"A": 1.0, "B": 0.0, "tie": 0.5}
        p = _mean(score[m.label] for m in valid)
        votes_a = sum(m.label == "A" for m in valid)
        votes_b = sum(m.label == "B" for m in valid)
        label = None if not valid else ("A" if votes_a > votes_b else "B" if votes_b > votes_a else "tie")
    flipped = is_flipped(p_ab, p_ba)
    disagreement = len({m.label for m in valid}) > 1
    reasoning = next((m.reasoning_ab or m.reasoning_ba for m in members if m.reasoning_ab or m.reasoning_ba), None)
    return PairVerdict(pair_id, p, label, p_ab, p_ba, flipped, disagreement, invalid_total, members, reasoning,
                       comparison_id)


# -- entry points ------------------------------------------------------------------------------
def judge_ensemble(
    members: list[tuple[Backend, JudgeSpec]],
    constitution: Constitution | None,
    pairs: list[dict],
    store: Store | None = None,
    *,
    combine: str = "mean",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    job_id: int | None = None,
    counts_out: dict | None = None,
) -> list[PairVerdict]:
    """Judge pairs with one or more (backend, spec) judges; returns one combined verdict per pair.

    pairs: dicts with id, prompt, response_a, response_b (optional comparison_id: the stored
    comparison, needed to store judgments; optional question: judged on it instead of the
    constitution's principles). With a store, finished judgments are read back, not redone.
    """
    if combine not in COMBINES:
        raise CaiError(f"unknown combine {combine!r}: use mean or vote")
    validate_pairs(pairs)
    if store is not None and any(p.get("comparison_id") is None for p in pairs):
        raise CaiError("to store judgments every pair needs its comparison_id (see pairs.add_pairs)")
    plans = []
    for backend, spec in members:
        if spec.style in ("mc", "cot") and not backend.supports_logprobs:
            raise CaiError(f"judge {spec.model} gives no log-probs: use the parse style (--style parse)")
        if spec.style in ("mc", "cot"):
            spec.scoring = backend.option_scoring()
        # a judge on other numbers is another judge ("default [int8]" in its key and rows;
        # specs.recorded_model): cot and parse by the numbers they generate with, mc by those it scores
        # with (float32 on the ctranslate2-int8 engine, so its mc judgments stay the transformers ones)
        spec.model = recorded_model(spec.model, backend, scoring=spec.style == "mc")
        if constitution is not None:
            spec.constitution_name = spec.constitution_name or constitution.name
            spec.constitution_version = spec.constitution_version or constitution.version
            spec.examples = len(judge_examples(spec, constitution))
            if isinstance(spec.principles, list):
                for pid in spec.principles:
                    constitution.principle(pid)
        plans.append((backend, spec, _items(spec, constitution, pairs)))
    records: list[dict] = []
    todo: list[tuple[Backend, JudgeSpec, list[_Item]]] = []
    for backend, spec, items in plans:
        if store is not None:
            register_judge(store, spec)
            done = _existing(store, spec.judge_key, sorted({int(p["comparison_id"]) for p in pairs}))
            pending = []
            for it in items:
                row = done.get((it.comparison_id, it.principle_id, it.order))
                if row is None:
                    pending.append(it)
                else:
                    records.append({**row, "pair_index": it.pair_index, "pair_id": it.pair_id})
            items = pending
        todo.append((backend, spec, items))
    total = sum(len(items) for _, _, items in todo)
    counts = {"done": 0, "failed": 0, "skipped": len(records), "total": total + len(records)}
    if progress:
        progress(0, total, f"{len(records)} judgments already stored, {total} to do")
    last = [0.0]
    for backend, spec, items in todo:
        new: dict[int, dict] = {}

        def stored(k: int, rec: dict, _spec=spec) -> None:
            if store is not None:
                _save(store, rec, job_id)
            new[k] = rec
            counts["failed" if rec["parse_status"] == "error" else "done"] += 1
            finished = counts["done"] + counts["failed"]
            if progress and (time.time() - last[0] >= 0.25 or finished == total):
                last[0] = time.time()
                progress(finished, total, f"judged {finished}/{total} ({_spec.model}, {_spec.style})"
                         + (f", {counts['failed']} failed" if counts["failed"] else ""))

        # in flight (models/dispatch.py): as many judgments outstanding as the backend serves
        # (--batch-size overrides); a judgment whose request still fails is stored as an error
        def failed(k: int, exc: BaseException, _spec=spec, _items=items, _backend=backend) -> None:
            if _spec.style in ("mc", "cot") and not _backend.supports_logprobs:
                no_logprobs.append(exc)  # the style cannot work on this endpoint: nothing is stored
                return
            stored(k, _failed_record(_spec, _items[k], exc))

        no_logprobs: list[BaseException] = []
        run_chains(backend, ((k, _judge_item(spec, it)) for k, it in enumerate(items)),
                   in_flight=spec.batch_size, should_stop=lambda: bool(no_logprobs) or bool(should_stop and should_stop()),
                   on_done=stored, on_error=failed, together=store.tx if store is not None else None)
        if no_logprobs:
            raise CaiError(f"judge {spec.model} gives no log-probs ({no_logprobs[0]}): use the parse style "
                           "(--style parse)")
        records += [new[k] for k in sorted(new)]  # item order, whatever order they came back in
    if counts_out is not None:
        counts_out.update(counts)
    by_pair: dict[int, list[dict]] = {}
    for rec in records:
        by_pair.setdefault(rec["pair_index"], []).append(rec)
    return [aggregate(str(p["id"]), by_pair.get(i, []), combine, p.get("comparison_id"))
            for i, p in enumerate(pairs)]


def judge_pairs(backend: Backend, spec: JudgeSpec, constitution: Constitution | None, pairs: list[dict],
                store: Store | None = None, progress: Progress | None = None, **kwargs) -> list[PairVerdict]:
    """One judge model (its principles may still form an ensemble); see judge_ensemble."""
    return judge_ensemble([(backend, spec)], constitution, pairs, store, progress=progress, **kwargs)


# what aggregate() reads of a judgment row (not its transcript, raw output or timings: a verdict needs none)
VERDICT_COLUMNS = ("comparison_id", "judge_key", "judge_model", "principle_id", "order_shown", "p_a", "parse_status",
                   "reasoning")


def stored_verdicts(store: Store, comparison_ids: list[int], judge_keys: list[str] | None = None,
                    combine: str = "mean") -> dict[int, PairVerdict]:
    """Verdicts rebuilt from stored judgments (all judges, or the given keys) per comparison id."""
    return {cid: aggregate(str(cid), recs, combine, cid)
            for cid, recs in _stored_records(store, comparison_ids, judge_keys).items()}


def stored_members(store: Store, comparison_ids: list[int], judge_keys: list[str] | None = None) -> dict[int, list[Member]]:
    """The members of stored_verdicts' verdicts, without combining them (what a per-principle view reads)."""
    return {cid: aggregate_members(recs) for cid, recs in _stored_records(store, comparison_ids, judge_keys).items()}


def _stored_records(store: Store, comparison_ids: list[int], judge_keys: list[str] | None) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    ids = list(comparison_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        sql = (f"SELECT {', '.join(VERDICT_COLUMNS)} FROM judgments"
               f" WHERE comparison_id IN ({','.join('?' * len(chunk))})")
        params: list = list(chunk)
        if judge_keys:
            sql += f" AND judge_key IN ({','.join('?' * len(judge_keys))})"
            params += list(judge_keys)
        for r in store.query(sql, params):
            out.setdefault(r["comparison_id"], []).append(dict(r))
    return out


def judgment_rows(store: Store, comparison_id: int) -> list[dict]:
    """Every stored judgment of one comparison (the page's detail view)."""
    return [dict(r) for r in store.query(
        "SELECT * FROM judgments WHERE comparison_id=? ORDER BY judge_key, principle_id, order_shown", (comparison_id,))]
