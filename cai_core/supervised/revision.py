"""The supervised phase of CAI: answer -> (critique -> revision) x N, batched, resumable.

For each prompt the model answers, then for each round a principle is picked (paper default: a
fresh one at random, drawn from (seed, prompt, round) only, so the same seed gives the same
principle sequence whatever the model or generation settings), the model critiques its latest answer against that principle's
critique request (plain, or chain-of-thought ending in a verdict) and revises it following the
revision request. Work is in flight (models/dispatch.py): each prompt's chain of requests advances
as soon as its own last request returns, with as much outstanding as the backend serves (an
endpoint's concurrency; a local model gets batched calls by stage, the lock-step calls), and every
step is committed to the store as soon as it is generated (a prompt whose request still fails is
stored as failed with its error; the batch goes on and a re-run retries it): a trajectory's key
is a hash of prompt + constitution version + model + settings + seed, so a killed batch resumes
where it stopped and a re-run never redoes a stored step.

Whether a critique found a violation (early stop, per-principle violation rates) is read from a
verdict, never from the first negation in free text: with chain-of-thought the prompt asks for a
"Verdict: violation | no violation" line, and that line's opening words decide; otherwise (or
when the verdict line says neither) the model is asked a yes/no question about its own critique
and its log-probs of "Yes" and "No" decide (one scoring request; without early stop it goes out
beside the revision, which never reads it). A backend without log-probs leaves it unknown (NULL),
said once per batch, never stopping it.

Every step keeps the exact messages sent for its critique and its revision
(trajectory_steps.critique_prompt_json / revision_prompt_json): the page shows them as a transcript.

`stream_revision` runs the same steps for one prompt token by token (the live page).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from cai_core.constitution.model import Constitution, Principle, template_variables
from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend, Conversation, GenerationParams
from cai_core.models.bounds import fit_prompts
from cai_core.models.dispatch import Request, in_flight_for, run_chains
from cai_core.models.specs import recorded_model
from cai_core.provenance import check_origin, split_of
from cai_core.store import Store, dumps, loads, now
from cai_core.jobs.supervisor import alive as pid_alive
from cai_core.supervised.refusals import refusal_introduced
from cai_core.data.textdiff import change_ratio, edit_distance_words
from cai_core.workspace import slug

SCHEDULES = ("random", "sequence", "all")
COT_INSTRUCTION = (
    "Let's think step by step. Check the response against the request above, one point at a time. "
    "Then write a final paragraph that starts with \"Verdict:\" and says \"violation\" or \"no violation\", "
    "followed by your critique."
)
PROGRESS_EVERY_S = 0.25  # a batch reports progress at most this often (and at its start and end)
NO_LOGPROBS_NOTE = ("the endpoint offers no log-probs: the violation of critiques without a verdict line "
                    "is left unknown (use --cot for a verdict line read from the text)")
CRITIQUE_PREFIX = "CritiqueRequest: "
REVISION_PREFIX = "RevisionRequest: "


# -- settings and identity ---------------------------------------------------------------------
@dataclass
class ReviseSettings:
    """Everything that changes what the engine writes (part of every trajectory's key)."""
    rounds: int = 1
    schedule: str = "random"            # random | sequence | all
    sequence: list[str] = field(default_factory=list)  # principle ids for schedule "sequence"
    cot: bool = False
    early_stop: bool = False
    few_shot: bool = True               # the constitution's few-shot examples as prior turns
    seed: int = 0
    max_new_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.95

    @staticmethod
    def parse_sequence(text: str) -> list[str]:
        """--sequence as given on the command line and in job specs: comma-separated principle ids."""
        return [s.strip() for s in (text or "").split(",") if s.strip()]

    def key_params(self) -> dict:
        data = asdict(self)
        data.pop("seed")
        return data

    def params(self, stage: int) -> GenerationParams:
        """Generation params for one stage (0 = answer, 2r-1 = critique r, 2r = revision r)."""
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, seed=self.seed * 1000 + stage)

    def validate(self, constitution: Constitution) -> "ReviseSettings":
        if self.schedule not in SCHEDULES:
            raise CaiError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if not isinstance(self.rounds, int) or self.rounds < 0 or self.rounds > 50:
            raise CaiError(f"rounds must be between 0 and 50 (got {self.rounds})")
        if self.max_new_tokens < 1:
            raise CaiError("max new tokens must be at least 1")
        if self.temperature < 0:
            raise CaiError("temperature must be >= 0")
        if self.schedule == "sequence":
            if not self.sequence:
                raise CaiError("schedule 'sequence' needs a list of principle ids")
            ids = {p.id for p in constitution.principles}
            unknown = [s for s in self.sequence if s not in ids]
            if unknown:
                raise CaiError(f"constitution {constitution.name!r} has no principle(s) {', '.join(unknown)}")
        if not constitution.critique_principles():
            raise CaiError(f"constitution {constitution.name!r} has no enabled principle with a critique request")
        return self


def trajectory_key(prompt: str, constitution_version: str, model: str, settings: ReviseSettings,
                   origin: str = "sampled") -> str:
    """What makes two runs the same trajectory (a rerun resumes it instead of starting another).
    The origin is part of it, so an experiment's held-out (eval) trajectory is never the training
    trajectory of the same prompt and settings; "sampled" adds nothing, so the keys stored before
    provenance existed still resume."""
    parts = [prompt, constitution_version, model, settings.key_params(), settings.seed]
    if origin != "sampled":
        parts.append(origin)
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def draw_principle(enabled: list[str], seed: int, prompt: str, rnd: int) -> str:
    """One round's principle under the 'random' schedule, from (seed, prompt, round) only: the
    same seed draws the same principles for two models, token limits or temperatures."""
    digest = hashlib.sha256(json.dumps([seed, prompt, rnd], ensure_ascii=False).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).choice(enabled)


def plan_principles(constitution: Constitution, settings: ReviseSettings, prompt: str) -> list[str]:
    """The principle id of each round: 'random' draws each round from (seed, prompt, round)
    (draw_principle), 'all' cycles the critique principles, 'sequence' cycles the given ids."""
    enabled = [p.id for p in constitution.critique_principles()]
    if settings.schedule == "random":
        return [draw_principle(enabled, settings.seed, prompt, rnd) for rnd in range(1, settings.rounds + 1)]
    cycle = settings.sequence if settings.schedule == "sequence" else enabled
    return [cycle[i % len(cycle)] for i in range(settings.rounds)]


# -- prompts as conversations -------------------------------------------------------------------
def _fill(template: str, question: str, response: str, critique: str = "") -> str:
    return template.format_map({"question": question, "response": response, "critique": critique})


def _self_contained(template: str) -> bool:
    """A template that quotes {response} carries the dialogue itself; others are asked after it."""
    return "response" in template_variables(template)


def _critique_turns(principle: Principle, question: str, response: str, cot: bool) -> Conversation:
    request = _fill(principle.critique_request, question, response)
    if cot:
        request = f"{request}\n\n{COT_INSTRUCTION}"
    if _self_contained(principle.critique_request):
        return [{"role": "user", "content": request}]
    return [{"role": "user", "content": question}, {"role": "assistant", "content": response},
            {"role": "user", "content": CRITIQUE_PREFIX + request}]


def _revision_turns(principle: Principle, question: str, response: str, critique: str, cot: bool) -> Conversation:
    request = _fill(principle.revision_request, question, response, critique)
    if _self_contained(principle.revision_request):
        return [{"role": "user", "content": request}]
    return _critique_turns(principle, question, response, cot) + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": REVISION_PREFIX + request},
    ]


def few_shot_turns(constitution: Constitution) -> Conversation:
    """The few-shot examples as prior turns, each with its own request texts when it has them (the
    paper's examples do), else its principle's. The block is the same for every prompt and round,
    so a backend can reuse the shared prefix."""
    turns: Conversation = []
    enabled = constitution.critique_principles()
    for ex in constitution.few_shot:
        if (ex.critique_request or "").strip():
            principle = Principle(id=ex.principle_id or "few-shot", name="few-shot example",
                                  critique_request=ex.critique_request, revision_request=ex.revision_request)
        else:
            try:
                principle = constitution.principle(ex.principle_id) if ex.principle_id else enabled[0]
            except CaiError:
                principle = enabled[0]
        turns += _revision_turns(principle, ex.question, ex.response, ex.critique, cot=False)
        turns.append({"role": "assistant", "content": ex.revision})
    return turns


def answer_conversation(prompt: str) -> Conversation:
    return [{"role": "user", "content": prompt}]


def critique_conversation(constitution: Constitution, principle: Principle, prompt: str, response: str,
                          settings: ReviseSettings) -> Conversation:
    prefix = few_shot_turns(constitution) if settings.few_shot else []
    return prefix + _critique_turns(principle, prompt, response, settings.cot)


def revision_conversation(constitution: Constitution, principle: Principle, prompt: str, response: str,
                          critique_output: str, settings: ReviseSettings) -> Conversation:
    """The revision request follows the critique as the model wrote it (CoT reasoning included)."""
    prefix = few_shot_turns(constitution) if settings.few_shot else []
    return prefix + _revision_turns(principle, prompt, response, critique_output, settings.cot)


# -- reading critiques -------------------------------------------------------------------------
_VERDICT = re.compile(r"verdict\s*\**\s*[:\-]", re.IGNORECASE)
_VERDICT_NONE = re.compile(r"^\W*(?:no\s+violations?|not\s+a\s+violation|none|no)\b", re.IGNORECASE)
_VERDICT_FOUND = re.compile(r"^\W*(?:violations?|violated|violates|yes)\b", re.IGNORECASE)
VIOLATION_QUESTION = ("Does your critique above find that the response violates the request? "
                      "Answer Yes or No.")
VIOLATION_OPTIONS = ["Yes", "No"]


def read_verdict(verdict: str | None) -> int | None:
    """1 / 0 from the opening words of a verdict ("violation ..." / "no violation ..."), None when
    they say neither (what follows - the critique - is not read: it may say anything)."""
    text = (verdict or "").strip()
    if _VERDICT_NONE.match(text):
        return 0
    if _VERDICT_FOUND.match(text):
        return 1
    return None


def violation_question(critique_conv: Conversation, critique_output: str) -> Conversation:
    """The yes/no question asked after a critique that gave no readable verdict."""
    return list(critique_conv) + [{"role": "assistant", "content": critique_output},
                                  {"role": "user", "content": VIOLATION_QUESTION}]


def ask_violations(backend: Backend, critique_convs: list[Conversation], outputs: list[str]) -> list[int | None]:
    """Violation per critique from the model's log-probs of Yes/No (None without log-probs)."""
    if not critique_convs:
        return []
    if not backend.supports_logprobs:
        return [None] * len(critique_convs)
    return [v for v, _ in ask_violation_answers(backend, critique_convs, outputs)]


# where a stored verdict came from (trajectory_steps.verdict_source)
VERDICT_LINE, YES_NO = "verdict_line", "yes_no"


def verdict_words(violation: int | None, source: str | None, p_yes: float | None) -> str:
    """A stored verdict and where it came from, in words (the page, the trajectory report):
    'no violation - the model's yes/no answer to "did the response violate the principle?", P(yes) = 0.30'."""
    verdict = {1: "violation found", 0: "no violation"}.get(violation, "verdict unclear")
    return f"{verdict} - {verdict_source_words(violation, source, p_yes)}"


def verdict_source_words(violation: int | None, source: str | None, p_yes: float | None) -> str:
    """Where a verdict came from, in words (see verdict_words)."""
    if violation is None:
        return "no verdict line, and no yes/no answer (the model gives no log-probs)"
    if source == VERDICT_LINE:
        return "from the critique's verdict line"
    if source == YES_NO:
        p = "" if p_yes is None else f", P(yes) = {_beside_half(float(p_yes))}"
        return f"the model's yes/no answer to \"did the response violate the principle?\"{p}"
    return "where this verdict came from was not recorded (stored before it was)"


def _beside_half(p: float, digits: int = 2, most: int = 6) -> str:
    """p with more decimals while rounding would read 0.50 beside a decided verdict."""
    while digits < most and p != 0.5 and f"{p:.{digits}f}" == f"{0.5:.{digits}f}":
        digits += 1
    return f"{p:.{digits}f}"


def yes_no_verdict(dist: dict) -> tuple[int, float]:
    """(violation 1/0, P(yes) normalised over Yes/No) from the yes/no question's option probabilities."""
    yes, no = float(dist["Yes"]), float(dist["No"])
    return (1 if yes > no else 0), (yes / (yes + no) if yes + no > 0 else 0.5)


def ask_violation_answers(backend: Backend, critique_convs: list[Conversation],
                          outputs: list[str]) -> list[tuple[int | None, float | None]]:
    """(violation, P(yes)) per critique from the model's yes/no answer ((None, None) without log-probs)."""
    if not critique_convs:
        return []
    if not backend.supports_logprobs:
        return [(None, None)] * len(critique_convs)
    try:
        dists = backend.choice_logprobs([violation_question(c, o) for c, o in zip(critique_convs, outputs)],
                                        VIOLATION_OPTIONS)
    except CaiError:
        if backend.supports_logprobs:
            raise
        return [(None, None)] * len(critique_convs)  # the endpoint turned out to offer none: unknown, not an error
    return [yes_no_verdict(d) for d in dists]


@dataclass
class Critique:
    text: str                   # the critique proper (the verdict part for CoT)
    reasoning: str | None       # chain of thought, kept apart from the verdict
    violation: int | None       # from the verdict line; None = not stated there (ask the model)
    raw: str                    # what the model wrote, as fed to the revision request
    source: str | None = None   # VERDICT_LINE | YES_NO (the model's yes/no answer) | None (unknown)
    p_yes: float | None = None  # P(yes) of the yes/no answer (YES_NO only)


def parse_critique(raw: str, cot: bool) -> Critique:
    raw = (raw or "").strip()
    if not cot:
        return Critique(text=raw, reasoning=None, violation=None, raw=raw)
    matches = list(_VERDICT.finditer(raw))
    if not matches:  # no verdict line: the whole output is the critique, the violation is unknown
        return Critique(text=raw, reasoning=None, violation=None, raw=raw)
    last = matches[-1]
    reasoning = raw[: last.start()].strip()
    verdict = raw[last.end():].strip()
    violation = read_verdict(verdict)
    return Critique(text=verdict, reasoning=reasoning, violation=violation, raw=raw,
                    source=VERDICT_LINE if violation is not None else None)


def read_critiques(backend: Backend, critique_convs: list[Conversation], outputs: list[str], cot: bool) -> list[Critique]:
    """Parse critiques, then ask the yes/no question for those whose verdict said nothing."""
    critiques = [parse_critique(o, cot) for o in outputs]
    unknown = [k for k, c in enumerate(critiques) if c.violation is None]
    answers = ask_violation_answers(backend, [critique_convs[k] for k in unknown], [critiques[k].raw for k in unknown])
    for k, (v, p) in zip(unknown, answers):
        critiques[k].violation, critiques[k].p_yes = v, p
        critiques[k].source = YES_NO if v is not None else None
    return critiques


# -- in-memory state of one trajectory ----------------------------------------------------------
@dataclass
class _Step:
    round: int
    principle_id: str
    critique: str | None = None
    reasoning: str | None = None
    violation: int | None = None
    revision: str | None = None
    state: str = "critiqued"     # critiqued | revised | stopped
    raw: str | None = None
    verdict_source: str | None = None  # VERDICT_LINE | YES_NO | None
    p_yes: float | None = None


@dataclass
class _Traj:
    id: int
    key: str
    prompt: str
    plan: list[str]
    initial: str | None
    status: str
    steps: dict[int, _Step] = field(default_factory=dict)

    def response_before(self, rnd: int) -> str:
        """The text a round critiques: the previous round's revision, else the initial answer."""
        for r in range(rnd - 1, 0, -1):
            s = self.steps.get(r)
            if s is not None and s.revision is not None:
                return s.revision
        return self.initial or ""

    def stopped_before(self, rnd: int) -> bool:
        return any(s.state == "stopped" for r, s in self.steps.items() if r < rnd)

    def final(self) -> str:
        return self.response_before(len(self.plan) + 1)


@dataclass
class PromptItem:
    text: str
    category: str | None = None
    meta: dict = field(default_factory=dict)
    prompt_id: int | None = None


def as_prompt_items(items: Iterable) -> list[PromptItem]:
    out = []
    for it in items:
        if isinstance(it, PromptItem):
            out.append(it)
        elif isinstance(it, str):
            out.append(PromptItem(it))
        else:
            out.append(PromptItem(it["text"], it.get("category"), dict(it.get("meta") or {}),
                                  it.get("prompt_id", it.get("id"))))
    return out


# -- claims: one live process per trajectory -------------------------------------------------------
CLAIM_STALE_S = 900.0  # a claim from another host not refreshed for this long is taken over
CLAIM_WAIT_S = 0.5  # how often a process waiting for another one's prompts looks again
CLAIM_REFRESH_S = 60.0  # how often a writer refreshes all its claims (the one it saves: on every save)


def new_writer_id(job_id: int | None = None) -> str:
    """host:pid:job:token - who claims and writes a trajectory (the token tells two Revisers of one process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{job_id or '-'}:{secrets.token_hex(4)}"


def claim_is_live(claimed_by: str | None, claimed_at: float | None, *, at: float | None = None) -> bool:
    """Whether a claim still holds: its process runs (same host), or it was refreshed lately (another host)."""
    if not claimed_by:
        return False
    host, _, rest = claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        return pid_alive(int(pid))
    return (at or now()) - (claimed_at or 0) < CLAIM_STALE_S


class ClaimLost(Exception):
    """Another process took this trajectory over (our claim went stale); what we generated is dropped."""


# -- the engine --------------------------------------------------------------------------------
class Reviser:
    """Runs (or resumes) trajectories for one constitution version, model and settings."""

    def __init__(self, store: Store, backend: Backend, constitution: Constitution, settings: ReviseSettings,
                 model: str, *, batch: str | None = None, job_id: int | None = None, origin: str = "sampled"):
        self.store = store
        self.origin = check_origin(origin)  # provenance: sampled, or experiment:<name> (split eval)
        self.backend = backend
        self.constitution = constitution.validate()
        self.settings = settings.validate(constitution)
        # the label rows store and the trajectory key hashes: "default [int8]" for int8 text, so it never
        # resumes into float32 trajectories (specs.recorded_model)
        self.model = recorded_model(model, backend)
        self.batch = batch
        self.job_id = job_id
        self.version = constitution.version
        self.writer = new_writer_id(job_id)
        self.notes: list[str] = []      # things said once per run (an endpoint without log-probs)
        self.counts: dict = {}          # the last run's done / failed / skipped / stopped prompts
        self._report = None
        self._claims_refreshed = 0.0

    # -- store ---------------------------------------------------------------------------------
    def _load_or_create(self, item: PromptItem) -> _Traj:
        key = trajectory_key(item.text, self.version, self.model, self.settings, self.origin)
        plan = plan_principles(self.constitution, self.settings, item.text)
        row = self.store.one("SELECT id, initial, status FROM trajectories WHERE key=?", (key,))
        if row is None:
            with self.store.tx() as conn:
                conn.execute(
                    "INSERT INTO trajectories (key, job_id, batch, prompt_id, prompt, category, "
                    "constitution_name, constitution_version, model, params_json, seed, status, meta_json, rounds, "
                    "origin, split, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    (key, self.job_id, self.batch, item.prompt_id, item.text, item.category, self.constitution.name,
                     self.version, self.model, dumps(self.settings.key_params()), self.settings.seed, "pending",
                     dumps(item.meta) if item.meta else None, self.settings.rounds, self.origin,
                     split_of(self.origin), now(), now()),
                )
            row = self.store.one("SELECT id, initial, status FROM trajectories WHERE key=?", (key,))
        traj = _Traj(id=row["id"], key=key, prompt=item.text, plan=plan, initial=row["initial"], status=row["status"])
        return self._reload(traj)

    def _reload(self, t: _Traj) -> _Traj:
        """Read the trajectory's stored state again (another process may have worked on it)."""
        row = self.store.one("SELECT initial, status FROM trajectories WHERE id=?", (t.id,))
        t.initial, t.status, t.steps = row["initial"], row["status"], {}
        for s in self.store.query("SELECT * FROM trajectory_steps WHERE trajectory_id=? ORDER BY round", (t.id,)):
            t.steps[s["round"]] = _Step(round=s["round"], principle_id=s["principle_id"], critique=s["critique"],
                                        reasoning=s["critique_reasoning"], violation=s["violation"],
                                        revision=s["revision"], state=s["state"],
                                        verdict_source=s["verdict_source"], p_yes=s["p_yes"])
        return t

    # -- claims --------------------------------------------------------------------------------
    def _claim(self, t: _Traj) -> bool:
        """Take the trajectory for this process unless another live process holds it (then False)."""
        with self.store.tx() as conn:
            row = conn.execute("SELECT status, claimed_by, claimed_at FROM trajectories WHERE id=?" + self.store.for_update(),
                               (t.id,)).fetchone()
            if row is None:  # PostgreSQL: another process's transaction holds the row (SKIP LOCKED): taken
                return False
            if row["status"] == "done":
                return False
            if row["claimed_by"] != self.writer and claim_is_live(row["claimed_by"], row["claimed_at"]):
                return False
            conn.execute("UPDATE trajectories SET claimed_by=?, claimed_at=? WHERE id=?", (self.writer, now(), t.id))
        self._reload(t)
        return t.status != "done"

    def _release(self, trajs: list[_Traj]) -> None:
        """Give back the claims on trajectories this process did not finish (stopped early)."""
        ids = [t.id for t in trajs if t.status != "done"]
        for start in range(0, len(ids), 500):  # 100k prompts would pass SQLite's limit on parameters
            chunk = ids[start:start + 500]
            self.store.execute(
                f"UPDATE trajectories SET claimed_by=NULL, claimed_at=NULL WHERE claimed_by=? AND status!='done' "
                f"AND id IN ({','.join('?' * len(chunk))})", (self.writer, *chunk))

    def _holding(self, conn, t: _Traj) -> None:
        """Inside a save's transaction: refuse to write unless this process still holds the claim."""
        row = conn.execute("SELECT claimed_by FROM trajectories WHERE id=?" + self.store.for_update().replace(" SKIP LOCKED", ""),
                           (t.id,)).fetchone()
        if row is None or row["claimed_by"] != self.writer:
            raise ClaimLost(f"trajectory {t.id} is now claimed by {row['claimed_by'] if row else 'nobody'}")
        conn.execute("UPDATE trajectories SET claimed_at=? WHERE id=?", (now(), t.id))
        if time.time() - self._claims_refreshed >= CLAIM_REFRESH_S:  # the claims still waiting their turn
            # (not on every save: that rewrote every row this run had claimed, O(batch) per save)
            conn.execute("UPDATE trajectories SET claimed_at=? WHERE claimed_by=? AND status!='done'",
                         (now(), self.writer))
            self._claims_refreshed = time.time()

    def _save_initial(self, t: _Traj, text: str, seconds: float) -> None:
        with self.store.tx() as conn:
            self._holding(conn, t)
            conn.execute("UPDATE trajectories SET initial=?, initial_writer=?, timings_json=?, updated_at=? WHERE id=?",
                         (text, self.writer, dumps({"answer_s": round(seconds, 4)}), now(), t.id))
        t.initial = text

    def _save_critique(self, t: _Traj, rnd: int, c: Critique, seconds: float, conv: Conversation) -> _Step:
        stop = self.settings.early_stop and c.violation == 0
        step = _Step(round=rnd, principle_id=t.plan[rnd - 1], critique=c.text, reasoning=c.reasoning,
                     violation=c.violation, state="stopped" if stop else "critiqued", raw=c.raw,
                     verdict_source=c.source if c.violation is not None else None, p_yes=c.p_yes)
        with self.store.tx() as conn:
            self._holding(conn, t)
            conn.execute(
                "INSERT INTO trajectory_steps (trajectory_id, round, principle_id, critique, critique_reasoning, "
                "violation, state, timings_json, critique_writer, critique_prompt_json, verdict_source, p_yes, "
                "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (t.id, rnd, step.principle_id, c.text, c.reasoning, c.violation, step.state,
                 dumps({"critique_s": round(seconds, 4)}), self.writer, transcript_json(conv), step.verdict_source,
                 step.p_yes, now()),
            )
        t.steps[rnd] = step
        return step

    def _critique_batch(self, trajs: list[_Traj], rnd: int) -> None:
        """One round's critiques for a batch: generate, read verdicts (asking where needed), save."""
        convs = [self._critique_conv(t, rnd) for t in trajs]
        t0 = time.time()
        outs = self.backend.generate(convs, self.settings.params(2 * rnd - 1))
        texts = [out[0].text if out else "" for out in outs]
        critiques = read_critiques(self.backend, convs, texts, self.settings.cot)
        per_item = (time.time() - t0) / max(1, len(trajs))
        for t, c, conv in zip(trajs, critiques, convs):
            self._save_or_drop(lambda: self._save_critique(t, rnd, c, per_item, conv), t)

    def _save_revision(self, t: _Traj, rnd: int, text: str, seconds: float, conv: Conversation | None = None) -> None:
        step = t.steps[rnd]
        before = t.response_before(rnd)
        with self.store.tx() as conn:
            self._holding(conn, t)
            row = conn.execute("SELECT timings_json FROM trajectory_steps WHERE trajectory_id=? AND round=?",
                               (t.id, rnd)).fetchone()
            timings = {**loads(row["timings_json"] if row else None, {}), "revision_s": round(seconds, 4)}
            conn.execute(
                "UPDATE trajectory_steps SET revision=?, state='revised', edit_words=?, refusal_introduced=?, "
                "timings_json=?, revision_writer=?, revision_prompt_json=? WHERE trajectory_id=? AND round=?",
                (text, edit_distance_words(before, text), int(refusal_introduced(before, text)), dumps(timings),
                 self.writer, transcript_json(conv) if conv is not None else None, t.id, rnd),
            )
        step.revision, step.state = text, "revised"

    def _finish(self, t: _Traj) -> None:
        final = t.final()
        with self.store.tx() as conn:
            self._holding(conn, t)
            conn.execute(
                "UPDATE trajectories SET final=?, status='done', error=NULL, change_ratio=?, updated_at=? WHERE id=?",
                (final, change_ratio(t.initial or "", final), now(), t.id),
            )
        t.status = "done"

    def _needs_critique(self, t: _Traj, rnd: int) -> bool:
        return t.status not in ("done", "lost") and rnd <= len(t.plan) and rnd not in t.steps and not t.stopped_before(rnd)

    def _needs_revision(self, t: _Traj, rnd: int) -> bool:
        s = t.steps.get(rnd)
        return t.status not in ("done", "lost") and s is not None and s.state == "critiqued" and s.revision is None

    def _critique_conv(self, t: _Traj, rnd: int) -> Conversation:
        principle = self.constitution.principle(t.plan[rnd - 1])
        return critique_conversation(self.constitution, principle, t.prompt, t.response_before(rnd), self.settings)

    def _revision_conv(self, t: _Traj, rnd: int) -> Conversation:
        principle = self.constitution.principle(t.plan[rnd - 1])
        step = t.steps[rnd]
        critique_text = step.raw if step.raw is not None else _stored_critique_output(step, self.settings.cot)
        return revision_conversation(self.constitution, principle, t.prompt, t.response_before(rnd),
                                     critique_text, self.settings)

    # -- batch ---------------------------------------------------------------------------------
    def prepare(self, items: Iterable) -> list[_Traj]:
        """Create (or find) the trajectory rows for these prompts; duplicates collapse into one."""
        seen, out = set(), []
        for item in as_prompt_items(items):
            t = self._load_or_create(item)
            if t.key not in seen:
                seen.add(t.key)
                out.append(t)
        return out

    def steps_total(self, trajs: list[_Traj]) -> int:
        return len(trajs) * (1 + 2 * self.settings.rounds)

    @staticmethod
    def steps_done(t: _Traj) -> int:
        if t.status == "done":
            return 1 + 2 * len(t.plan)
        n = int(t.initial is not None)
        for s in t.steps.values():
            n += 2 if s.state in ("revised", "stopped") else 1
        return n

    def run(self, items: Iterable, *, batch_size: int | None = None,
            progress: Callable[[int, int, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[int]:
        """Run every prompt to the end (skipping stored steps); returns trajectory ids in input order.

        Work in flight (models/dispatch.py): each prompt's chain - answer, then per round critique,
        [violation question], revision - advances as soon as its own last request returns, with as
        much outstanding as the backend serves (batch_size overrides Backend.max_in_flight()). Every
        result is stored as it returns. A prompt whose request still fails (after the backend's
        retries) is stored as failed with its error and the batch goes on; a re-run retries it.
        Stops sending requests when should_stop() says so (the rest resumes later). self.counts:
        done / failed / skipped (done before this run) / stopped prompts.

        Each trajectory is claimed before its first request: prompts another live process is working
        on are left to it (two processes on one batch split the work), and this one waits at the end
        until they are done; a trajectory is never written by two live processes."""
        trajs = self.prepare(items)
        total = self.steps_total(trajs)
        in_flight = in_flight_for(self.backend, batch_size)
        self._steps = {t.id: self.steps_done(t) for t in trajs}
        self._steps_sum = sum(self._steps.values())
        self.counts = {"prompts": len(trajs), "done": 0, "failed": 0,
                       "skipped": sum(t.status == "done" for t in trajs), "stopped": 0,
                       "requests": 0, "in_flight": in_flight, "max_in_flight": 0}
        last = [0.0]

        def report(msg: str | None = None, force: bool = False) -> None:
            if progress and (force or time.time() - last[0] >= PROGRESS_EVERY_S):
                last[0] = time.time()
                c = self.counts
                progress(self._steps_sum, total, msg or (f"{c['done']} done, {c['failed']} failed, "
                                                         f"{c['skipped']} stored before, of {c['prompts']} prompts"))

        self._report = report

        def stopping() -> bool:
            return bool(should_stop and should_stop())

        report("starting", force=True)
        pending = [t for t in trajs if t.status != "done"]
        busy: list[_Traj] = []

        def ended(t: _Traj, outcome) -> None:
            if outcome == "busy":
                busy.append(t)
            elif outcome == "done":
                self.counts["done"] += 1
            report()

        def failed(t: _Traj, exc: BaseException) -> None:
            self._fail(t, exc)
            self.counts["failed"] += 1
            report()

        try:
            while pending:
                busy.clear()
                # answers that come back together are stored in one transaction (one commit, not one each)
                result = run_chains(self.backend, ((t, self._chain(t)) for t in pending), in_flight=in_flight,
                                    should_stop=stopping, on_done=ended, on_error=failed, together=self.store.tx)
                self.counts["requests"] += result.requests
                self.counts["stopped"] += result.stopped
                self.counts["max_in_flight"] = max(self.counts["max_in_flight"], result.max_in_flight)
                if not busy or stopping():
                    break
                # every prompt left is another process's: wait for it to finish or die
                report(f"waiting for {len(busy)} prompt(s) another process is generating", force=True)
                time.sleep(CLAIM_WAIT_S)
                for t in busy:
                    self._reload(t)
                pending = [t for t in busy if t.status != "done"]
        finally:
            self._release(trajs)
        if self.notes:
            self.counts["notes"] = list(self.notes)
        report(force=True)
        return [t.id for t in trajs]

    def _chain(self, t: _Traj):
        """One prompt's requests (a generator for models/dispatch.run_chains): answer, then per round
        critique, the violation question where the critique gave no verdict, and revision; each
        result is stored as it returns. Returns "done", "busy" (another live process holds it) or
        "lost" (our claim was taken over meanwhile)."""
        if t.status == "done":
            return "done"
        if not self._claim(t):
            return "done" if t.status == "done" else "busy"
        params = self.settings.params
        if t.initial is None:
            req = Request("generate", answer_conversation(t.prompt), params(0), stage=0)
            out = yield req
            self._save_or_drop(lambda: self._save_initial(t, _text(out), req.seconds), t)
            if self._progressed(t):
                return "lost"
        for rnd in range(1, self.settings.rounds + 1):
            if self._needs_critique(t, rnd):
                conv = self._critique_conv(t, rnd)
                req = Request("generate", conv, params(2 * rnd - 1), stage=2 * rnd - 1)
                out = yield req
                seconds = req.seconds
                critique = parse_critique(_text(out), self.settings.cot)
                if critique.violation is None and not self.settings.early_stop and self.backend.supports_logprobs:
                    # the revision does not wait for the verdict (only early stop reads it): the
                    # violation question and the revision go out together
                    yield from self._critique_and_revision(t, rnd, conv, critique, seconds)
                    if self._progressed(t):
                        return "lost"
                    continue
                if critique.violation is None:
                    critique.violation, critique.p_yes = yield from self._violation(conv, critique.raw, 2 * rnd - 0.5)
                    critique.source = YES_NO if critique.violation is not None else None
                self._save_or_drop(lambda: self._save_critique(t, rnd, critique, seconds, conv), t)
                if self._progressed(t):
                    return "lost"
            if self._needs_revision(t, rnd):
                conv = self._revision_conv(t, rnd)
                req = Request("generate", conv, params(2 * rnd), stage=2 * rnd)
                out = yield req
                self._save_or_drop(lambda: self._save_revision(t, rnd, _text(out), req.seconds, conv), t)
                if self._progressed(t):
                    return "lost"
        self._save_or_drop(lambda: self._finish(t), t)
        return "lost" if self._progressed(t) else "done"

    def _critique_and_revision(self, t: _Traj, rnd: int, conv: Conversation, critique: Critique, seconds: float):
        """A generator step of _chain without early stop: the violation question and the revision at
        once; the critique is stored with its verdict, then the revision. An endpoint found to offer
        no log-probs leaves the violation unknown (said once)."""
        principle = self.constitution.principle(t.plan[rnd - 1])
        rev_conv = revision_conversation(self.constitution, principle, t.prompt, t.response_before(rnd), critique.raw,
                                         self.settings)
        question = Request("choice", violation_question(conv, critique.raw), options=VIOLATION_OPTIONS,
                           stage=2 * rnd - 0.5, follow_up=True)
        revision = Request("generate", rev_conv, self.settings.params(2 * rnd), stage=2 * rnd)
        dist, out = yield [question, revision]
        if isinstance(dist, BaseException):
            if self.backend.supports_logprobs:
                raise dist
            self._note(f"{NO_LOGPROBS_NOTE} ({_why(dist)})")
            critique.violation = None
        else:
            critique.violation, critique.p_yes = yes_no_verdict(dist)
            critique.source = YES_NO
        self._save_or_drop(lambda: self._save_critique(t, rnd, critique, seconds, conv), t)
        if isinstance(out, BaseException):
            raise out
        if t.status != "lost":
            self._save_or_drop(lambda: self._save_revision(t, rnd, _text(out), revision.seconds, rev_conv), t)

    def _violation(self, conv: Conversation, raw: str, stage: float):
        """The yes/no question after a critique without a verdict (a generator step of _chain):
        (1 / 0, P(yes)) from the log-probs of Yes and No; (None, None) - said once, never stopping the
        batch - where the backend offers no log-probs."""
        if not self.backend.supports_logprobs:
            self._note(NO_LOGPROBS_NOTE)
            return None, None
        try:
            dist = yield Request("choice", violation_question(conv, raw), options=VIOLATION_OPTIONS, stage=stage,
                                follow_up=True)
        except Exception as exc:  # noqa: BLE001 - only "no log-probs" is handled here; others fail the prompt
            if self.backend.supports_logprobs:
                raise
            self._note(f"{NO_LOGPROBS_NOTE} ({_why(exc)})")
            return None, None
        return yes_no_verdict(dist)

    def _note(self, text: str) -> None:
        """Say something once per run (the command prints it; the job's result keeps it)."""
        if not any(n.startswith(text[:40]) for n in self.notes):
            self.notes.append(text)
            if self._report:
                self._report(text, force=True)

    def _progressed(self, t: _Traj) -> bool:
        """Count the trajectory's newly stored steps toward progress; True when it was lost."""
        n = self.steps_done(t)
        self._steps_sum += n - self._steps.get(t.id, 0)
        self._steps[t.id] = n
        return t.status == "lost"

    def _fail(self, t: _Traj, exc: BaseException) -> None:
        """Store the prompt as failed with its error (a re-run retries it); its stored steps stay."""
        error = str(exc) or type(exc).__name__
        self.store.execute("UPDATE trajectories SET status='failed', error=?, updated_at=? WHERE id=? AND claimed_by=? "
                           "AND status!='done'", (error[:2000], now(), t.id, self.writer))
        t.status = "failed"

    def _run_lockstep(self, items: Iterable, *, batch_size: int = 8) -> list[int]:
        """The engine before work in flight, kept as the reference the tests compare against: chunks
        of batch_size prompts, each stage a batched call that waits for the chunk's slowest request."""
        trajs = self.prepare(items)
        pending = [t for t in trajs if t.status != "done"]
        try:
            for start in range(0, len(pending), max(1, int(batch_size))):
                chunk = [t for t in pending[start:start + batch_size] if self._claim(t)]
                if chunk:
                    self._run_chunk(chunk, "", lambda msg: None, lambda: False)
        finally:
            self._release(trajs)
        return [t.id for t in trajs]

    def _run_chunk(self, chunk: list[_Traj], label: str, report, stopping) -> bool:
        """Answer, then critique and revise each round, for claimed trajectories; False when stopped."""
        todo = [t for t in chunk if t.initial is None]
        if todo:
            if stopping():
                return False
            self._generate(todo, [answer_conversation(t.prompt) for t in todo], 0,
                           lambda t, text, s, conv: self._save_initial(t, text, s))
            report(f"{label}: answers")
        for rnd in range(1, self.settings.rounds + 1):
            todo = [t for t in chunk if self._needs_critique(t, rnd)]
            if todo:
                if stopping():
                    return False
                self._critique_batch(todo, rnd)
                report(f"{label}: round {rnd} critiques")
            todo = [t for t in chunk if self._needs_revision(t, rnd)]
            if todo:
                if stopping():
                    return False
                self._generate(todo, [self._revision_conv(t, rnd) for t in todo], 2 * rnd,
                               lambda t, text, s, conv, r=rnd: self._save_revision(t, r, text, s, conv))
                report(f"{label}: round {rnd} revisions")
        for t in chunk:
            if t.status != "lost":
                self._save_or_drop(lambda: self._finish(t), t)
        report(f"{label}: done")
        return True

    def _generate(self, trajs: list[_Traj], convs: list[Conversation], stage: int, save) -> None:
        t0 = time.time()
        outs = self.backend.generate(convs, self.settings.params(stage))
        per_item = (time.time() - t0) / max(1, len(trajs))
        for t, out, conv in zip(trajs, outs, convs):
            self._save_or_drop(lambda: save(t, out[0].text if out else "", per_item, conv), t)

    def _save_or_drop(self, save: Callable[[], None], t: _Traj) -> None:
        """Store one result; when the claim was lost meanwhile, drop it and leave the trajectory to its new owner."""
        try:
            save()
        except ClaimLost:
            self._reload(t)
            t.status = "lost"  # not ours any more: nothing more of it is generated here

    # -- single prompt, streamed ---------------------------------------------------------------
    def stream(self, item) -> Iterator["Event"]:
        """Run one prompt, yielding events as tokens arrive; stored steps are replayed whole."""
        t = self.prepare([item])[0]
        if t.status != "done" and not self._claim(t) and t.status != "done":
            raise CaiError("another process is generating this prompt with the same constitution version, model, "
                           "settings and seed right now; try again when it is done, or change the seed")
        try:
            yield from self._stream(t)
        finally:
            self._release([t])

    def _stream(self, t: _Traj) -> Iterator["Event"]:
        yield Event("start", 0, None, "", {"trajectory_id": t.id, "plan": t.plan, "stored": t.status == "done"})
        params = self.settings.params
        if t.initial is None:
            t0, buf = time.time(), []
            for piece in self.backend.stream(answer_conversation(t.prompt), params(0)):
                buf.append(piece)
                yield Event("initial", 0, None, piece, None)
            self._save_initial(t, "".join(buf).strip(), time.time() - t0)
        else:
            yield Event("initial", 0, None, t.initial, {"stored": True})
        yield Event("initial_done", 0, None, t.initial, None)
        for rnd in range(1, len(t.plan) + 1):
            pid = t.plan[rnd - 1]
            if t.stopped_before(rnd):
                break
            yield Event("round", rnd, pid, self.constitution.principle(pid).name, None)
            if rnd not in t.steps:
                t0, buf = time.time(), []
                conv = self._critique_conv(t, rnd)
                for piece in self.backend.stream(conv, params(2 * rnd - 1)):
                    buf.append(piece)
                    yield Event("critique", rnd, pid, piece, None)
                yield Event("verdict", rnd, pid, "", None)  # the critique is written; its verdict is read now
                [critique] = read_critiques(self.backend, [conv], ["".join(buf)], self.settings.cot)
                self._save_critique(t, rnd, critique, time.time() - t0, conv)
            else:
                yield Event("critique", rnd, pid, _stored_critique_output(t.steps[rnd], self.settings.cot), {"stored": True})
            s = t.steps[rnd]
            yield Event("critique_done", rnd, pid, s.critique or "",
                        {"reasoning": s.reasoning, "violation": s.violation, "stopped": s.state == "stopped",
                         "verdict_source": s.verdict_source, "p_yes": s.p_yes})
            if self._needs_revision(t, rnd):
                t0, buf = time.time(), []
                conv = self._revision_conv(t, rnd)
                for piece in self.backend.stream(conv, params(2 * rnd)):
                    buf.append(piece)
                    yield Event("revision", rnd, pid, piece, None)
                self._save_revision(t, rnd, "".join(buf).strip(), time.time() - t0, conv)
            elif s.revision is not None:
                yield Event("revision", rnd, pid, s.revision, {"stored": True})
            if s.revision is not None:
                yield Event("revision_done", rnd, pid, s.revision, None)
        if t.status != "done":
            self._finish(t)
        yield Event("done", len(t.plan), None, t.final(), get_trajectory(self.store, t.id))


def _why(exc: BaseException) -> str:
    """An error's first clause (a backend's no-log-probs error goes on with advice for judges)."""
    return str(exc).split("; ")[0]


def _text(out) -> str:
    """The first completion's text of a generate answer ("" when the backend gave none)."""
    return out[0].text if out else ""


def _stored_critique_output(step: _Step, cot: bool) -> str:
    """Rebuild the critique as the model wrote it, for a step loaded from the store."""
    if cot and step.reasoning is not None and step.reasoning != step.critique:
        return f"{step.reasoning}\n\nVerdict: {step.critique or ''}".strip()
    return step.critique or ""


class Event(NamedTuple):
    """One thing that happened while streaming: kind is start | initial | initial_done | round |
    critique | verdict (the critique is written, its verdict is being read) | critique_done (data:
    violation, verdict_source, p_yes, reasoning, stopped) | revision | revision_done | done; text is
    a token (or a whole stored text, data={"stored": True})."""
    kind: str
    round: int
    principle_id: str | None
    text: str
    data: dict | None


def stream_revision(store: Store, backend: Backend, constitution: Constitution, prompt, settings: ReviseSettings,
                    model: str, *, batch: str = "live") -> Iterator[Event]:
    """Live single-prompt run for the page: yields Events and stores every step like a batch.
    A prompt too long for the model's context is refused here, before the first token."""
    fit_prompts(backend, [getattr(prompt, "text", prompt)], max_new_tokens=settings.max_new_tokens)
    return Reviser(store, backend, constitution, settings, model, batch=batch).stream(prompt)


def run_revision(store: Store, backend: Backend, constitution: Constitution, prompts: Iterable,
                 settings: ReviseSettings, model: str, *, batch: str | None = None, job_id: int | None = None,
                 batch_size: int | None = None, progress=None, should_stop=None, origin: str = "sampled") -> list[int]:
    """Batch run (or resume) over prompts; returns trajectory ids in prompt order. origin: where the
    trajectories come from (sampled, or experiment:<name>: split eval, never in an SFT export by default)."""
    return Reviser(store, backend, constitution, settings, model, batch=batch, job_id=job_id, origin=origin).run(
        prompts, batch_size=batch_size, progress=progress, should_stop=should_stop)


# -- reading results ---------------------------------------------------------------------------
def transcript_json(messages: Conversation) -> str:
    return json.dumps({"messages": messages}, ensure_ascii=False)


def step_transcripts(step: dict) -> dict[str, list[dict] | None]:
    """A stored step's transcripts: {"critique": messages, "revision": messages} exactly as sent
    (None where the step predates transcripts, or has no revision)."""
    out = {}
    for kind in ("critique", "revision"):
        raw = step.get(f"{kind}_prompt_json")
        out[kind] = json.loads(raw)["messages"] if raw else None
    return out


def get_trajectory(store: Store, trajectory_id: int) -> dict:
    """A trajectory with its rounds: {..., "meta", "params", "steps": [{round, principle_id, ...}]}."""
    row = store.one("SELECT * FROM trajectories WHERE id=?", (trajectory_id,))
    if row is None:
        raise CaiError(f"no trajectory {trajectory_id}")
    out = dict(row)
    out["meta"] = loads(out.pop("meta_json"), {})
    out["params"] = loads(out.pop("params_json"), {})
    out["timings"] = loads(out.pop("timings_json"), {})
    steps = []
    for s in store.query("SELECT * FROM trajectory_steps WHERE trajectory_id=? ORDER BY round", (trajectory_id,)):
        d = dict(s)
        d["timings"] = loads(d.pop("timings_json"), {})
        steps.append(d)
    out["steps"] = steps
    return out


def get_trajectories(store: Store, ids: list[int]) -> list[dict]:
    return [get_trajectory(store, i) for i in ids]


def to_jsonl_record(traj: dict) -> dict:
    """The --out line for one prompt: prompt, metadata, every round and the final answer."""
    return {
        "prompt": traj["prompt"],
        "category": traj["category"],
        "meta": traj["meta"],
        "initial": traj["initial"],
        "rounds": [{"round": s["round"], "principle_id": s["principle_id"], "critique": s["critique"],
                    "critique_reasoning": s["critique_reasoning"], "violation": s["violation"],
                    "verdict_source": s.get("verdict_source"), "p_yes": s.get("p_yes"),
                    "revision": s["revision"]} for s in traj["steps"]],
        "final": traj["final"],
        "trajectory_id": traj["id"],
        "constitution": traj["constitution_name"],
        "constitution_version": traj["constitution_version"],
        "model": traj["model"],
        "seed": traj["seed"],
        "params": traj["params"],
        "status": traj["status"],
    }


CHANGE_FILTERS = {
    "any": None,
    "not at all": "t.change_ratio <= 0.0001",
    "a little": "t.change_ratio > 0.0001 AND t.change_ratio < 0.5",
    "a lot": "t.change_ratio >= 0.5",
}


def trajectory_filter(*, batch=None, constitution_version=None, principle=None, change=None, search=None,
                      status="done", model=None) -> tuple[list[str], list]:
    """The one filter over stored trajectories (table alias t): SQL clauses to AND together, and their
    parameters. The lists, the SFT export and the principle statistics all select through it."""
    clauses, params = [], []
    for value, clause in ((status, "t.status=?"), (batch, "t.batch=?"),
                          (constitution_version, "t.constitution_version=?"), (model, "t.model=?"),
                          (principle, "EXISTS (SELECT 1 FROM trajectory_steps s WHERE s.trajectory_id=t.id "
                                      "AND s.principle_id=?)")):
        if value:  # one parameter each; an empty value filters nothing
            clauses.append(clause)
            params.append(value)
    if change:
        if change not in CHANGE_FILTERS:
            raise CaiError(f"unknown change filter {change!r}; use one of {', '.join(CHANGE_FILTERS)}")
        if CHANGE_FILTERS[change]:
            clauses.append(CHANGE_FILTERS[change])
    if search:
        like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(t.prompt LIKE ? ESCAPE '\\' OR t.initial LIKE ? ESCAPE '\\' OR t.final LIKE ? ESCAPE '\\')")
        params += [like, like, like]
    return clauses, params


def _where(batch=None, constitution_version=None, principle=None, change=None, search=None, status="done",
           model=None) -> tuple[str, list]:
    clauses, params = trajectory_filter(batch=batch, constitution_version=constitution_version, principle=principle,
                                        change=change, search=search, status=status, model=model)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_trajectories(store: Store, *, batch: str | None = None, constitution_version: str | None = None,
                      principle: str | None = None, change: str | None = None, search: str | None = None,
                      status: str | None = "done", limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """One page of trajectory summaries (newest first) and the total matching."""
    where, params = _where(batch, constitution_version, principle, change, search, status)
    total = int(store.scalar(f"SELECT COUNT(*) FROM trajectories t{where}", tuple(params)) or 0)
    rows = store.query(
        "SELECT t.id, t.batch, t.prompt, t.category, t.initial, t.final, t.status, t.change_ratio, t.rounds, "
        "t.constitution_name, t.constitution_version, t.model, t.seed, t.created_at, "
        "(SELECT GROUP_CONCAT(principle_id, ', ') FROM (SELECT principle_id FROM trajectory_steps s "
        " WHERE s.trajectory_id=t.id ORDER BY s.round) AS o) AS principles "
        f"FROM trajectories t{where} ORDER BY t.id DESC LIMIT ? OFFSET ?",
        tuple(params) + (int(limit), int(offset)),
    )
    return [dict(r) for r in rows], total


def list_batches(store: Store) -> list[dict]:
    """Batches with their size and progress, newest first."""
    return [dict(r) for r in store.query(
        "SELECT batch, COUNT(*) AS trajectories, SUM(CASE WHEN status='done' THEN 1 ELSE 0 END) AS done, MIN(created_at) AS created_at, "
        "GROUP_CONCAT(DISTINCT constitution_version) AS versions, GROUP_CONCAT(DISTINCT model) AS models "
        "FROM trajectories WHERE batch IS NOT NULL GROUP BY batch ORDER BY MIN(created_at) DESC")]


def principle_stats(store: Store, *, batch: str | None = None, constitution_version: str | None = None) -> list[dict]:
    """Per principle: rounds, how often its critique found a violation, mean word edit distance of
    its revisions, and refusals its revisions introduced.

    Two aggregates over narrow indexes (migration 0085), never the critique/revision texts: the
    counts per principle, and the steps without a revision (a partial index); a batch / version
    filter selects the trajectories by id first."""
    clauses, params = trajectory_filter(batch=batch, constitution_version=constitution_version, status=None)
    scope = (f" AND s.trajectory_id IN (SELECT t.id FROM trajectories t WHERE {' AND '.join(clauses)})"
             if clauses else "")
    rows = store.query(
        "SELECT s.principle_id, COUNT(*) AS rounds, SUM(CASE WHEN s.violation=1 THEN 1 ELSE 0 END) AS violations, "
        "SUM(CASE WHEN s.violation=0 THEN 1 ELSE 0 END) AS clean, "
        "SUM(CASE WHEN s.violation IS NULL THEN 1 ELSE 0 END) AS unclear, "
        "AVG(s.edit_words) AS mean_edit_words, SUM(COALESCE(s.refusal_introduced, 0)) AS refusals_introduced "
        f"FROM trajectory_steps s WHERE 1=1{scope} "
        "GROUP BY s.principle_id ORDER BY s.principle_id",
        tuple(params),
    )
    unrevised = {r[0]: r[1] for r in store.query(
        f"SELECT s.principle_id, COUNT(*) FROM trajectory_steps s WHERE s.revision IS NULL{scope} "
        "GROUP BY s.principle_id", tuple(params))}
    out = []
    for r in rows:
        d = dict(r)
        revisions = d["rounds"] - unrevised.get(d["principle_id"], 0)
        d = {**{k: d[k] for k in ("principle_id", "rounds", "violations", "clean", "unclear")}, "revisions": revisions,
             "mean_edit_words": d["mean_edit_words"], "refusals_introduced": d["refusals_introduced"]}
        judged = (d["violations"] or 0) + (d["clean"] or 0)
        d["violation_rate"] = (d["violations"] or 0) / judged if judged else None
        d["refusal_rate"] = (d["refusals_introduced"] or 0) / d["revisions"] if d["revisions"] else None
        d["mean_edit_words"] = round(d["mean_edit_words"], 2) if d["mean_edit_words"] is not None else None
        out.append(d)
    return out


# -- resolving what a command names ------------------------------------------------------------
def default_batch_name(prompts: str, version: str) -> str:
    """<prompts>-<version>: the same prompts and constitution version get the same batch (the
    page's suggestion and the CLI's default alike), so starting it again resumes it."""
    return f"{slug(prompts, 'prompts')}-{version[:8]}"
