"""Typed jobs: one spec dataclass per background job kind, the same options as its CLI command.

Each class is the one field list of its kind: the command builds it with `from_args`, the service
runs it (`run_evaluation(store, EvaluateSpec)`, `run_ab_experiment(store, ABExperimentSpec)`,
`run_eval_judge(store, EvalJudgeSpec)`) and a page builds it to start the job. Classes are named
after their job kind (`JudgeJobSpec` is the `judge` job; `rlaif.judges.JudgeSpec` is one judge's
configuration, which a job derives).

A page builds a spec (never an argv list); `jobs.start_job(store, spec)` records the spec's JSON
on the job row and spawns `python -m cai_core <spec.to_argv()>`; the command's argparse reads the
argv back and `Spec.from_args(args)` rebuilds the same spec. tests/test_jobspecs.py round-trips
every kind (spec -> argv -> parse_args -> spec) and checks that each command option is a field
with the same default, so the two cannot drift apart.

Field names are the argparse dests; the flag is `--` + the name with '-' for '_'. A bool field is
a store_true flag; None (and any value equal to the field's default) is left off the argv.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from cai_core.jobs.command_line import cli_argv
from cai_core.jobs.command_line import command_line as format_command
from cai_core.errors import CaiError


@dataclass(frozen=True)
class JobSpec:
    """What every job kind shares: its kind (the jobs.kind column) and its CLI command words."""

    KIND: ClassVar[str] = ""
    COMMAND: ClassVar[tuple[str, ...]] = ()

    def to_argv(self) -> list[str]:
        """The command's arguments (without `python -m cai_core`, --workspace and --job-id)."""
        argv = list(self.COMMAND)
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.default is not MISSING and value == f.default:
                continue
            if isinstance(value, bool):
                if value:
                    argv.append(flag)
            elif value is None:
                continue
            elif isinstance(value, (list, tuple)):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "JobSpec":
        """The spec of a parsed command line (the command's own argparse Namespace)."""
        values = {}
        for f in fields(cls):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    @classmethod
    def from_argv(cls, argv: list[str]) -> "JobSpec":
        """A spec from a stored command line (job rows from before specs were stored); the words
        before the command (interpreter, -m cai_core) and --workspace/--job-id are skipped."""
        words = list(cls.COMMAND)
        start = next((i for i in range(len(argv)) if argv[i:i + len(words)] == words), None)
        if start is None:
            raise CaiError(f"not a {' '.join(words)} command line: {shlex.join(argv)}")
        types = {f.name: f for f in fields(cls)}
        values: dict = {}
        rest = argv[start + len(words):]
        i = 0
        while i < len(rest):
            word = rest[i]
            name = word[2:].replace("-", "_") if word.startswith("--") else None
            if name in ("workspace", "job_id"):
                i += 2
                continue
            if name not in types:
                raise CaiError(f"{cls.KIND} has no option {word!r}")
            ann = str(types[name].type)
            if ann == "bool":
                values[name], i = True, i + 1
            elif ann.startswith("tuple"):
                j = i + 1
                while j < len(rest) and not rest[j].startswith("--"):
                    j += 1
                values[name], i = tuple(rest[i + 1:j]), j
            else:
                if i + 1 >= len(rest):
                    raise CaiError(f"{word} needs a value")
                convert = int if ann.startswith("int") else float if ann.startswith("float") else str
                values[name], i = convert(rest[i + 1]), i + 2
        try:
            return cls(**values)
        except TypeError as exc:
            raise CaiError(f"incomplete {cls.KIND} command line: {exc}") from exc

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "JobSpec":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise CaiError(f"{cls.KIND} job spec has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def pinned(self) -> dict[str, str]:
        """The inputs that decide what the job works on, in words (for the jobs panel)."""
        out = {}
        for label, name in self.PINNED:
            value = getattr(self, name, None)
            if value not in (None, "", ()):
                out[label] = ", ".join(value) if isinstance(value, tuple) else str(value)
        return out

    PINNED: ClassVar[tuple[tuple[str, str], ...]] = ()

    def title(self) -> str:
        """A default one-line title for the job list."""
        return self.KIND + "".join(f" {v}" for v in list(self.pinned().values())[:1])


@dataclass(frozen=True)
class ReviseSpec(JobSpec):
    KIND: ClassVar[str] = "revise"
    COMMAND: ClassVar[tuple[str, ...]] = ("revise",)
    PINNED: ClassVar = (("batch", "batch"), ("prompts", "prompts"), ("constitution", "constitution"), ("model", "model"))

    constitution: str
    prompts: str
    model: str = "default"
    rounds: int = 1
    cot: bool = False
    out: str | None = None
    schedule: str = "random"
    sequence: str = ""
    seed: int = 0
    max_new_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.95
    early_stop: bool = False
    no_few_shot: bool = False
    batch_size: int | None = None            # work in flight (None: what the backend serves; models/dispatch.py)
    limit: int | None = None
    batch: str | None = None
    quantization: str | None = None
    truncate_prompts: bool = False


@dataclass(frozen=True)
class PairsSampleSpec(JobSpec):
    KIND: ClassVar[str] = "pairs-sample"
    COMMAND: ClassVar[tuple[str, ...]] = ("pairs", "sample")
    PINNED: ClassVar = (("batch", "batch"), ("prompts", "prompts"), ("policy", "model"))

    prompts: str
    batch: str
    model: str = "default"
    k: int = 2
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 0
    limit: int | None = None
    truncate_prompts: bool = False
    batch_size: int | None = None            # work in flight (None: what the backend serves)


@dataclass(frozen=True)
class JudgeJobSpec(JobSpec):
    KIND: ClassVar[str] = "judge"
    COMMAND: ClassVar[tuple[str, ...]] = ("judge",)
    PINNED: ClassVar = (("batch", "batch"), ("pairs file", "pairs"), ("constitution", "constitution"),
                        ("judge model", "judge_model"), ("style", "style"))

    judge_model: str
    constitution: str | None = None
    pairs: str | None = None
    batch: str | None = None
    cot: bool = False
    style: str | None = None
    no_swap: bool = False
    principles: str = "random"
    ensemble_models: str = ""
    combine: str = "mean"
    cot_clamp: str = "0.4,0.6"
    max_new_tokens: int = 160
    seed: int = 0
    batch_size: int | None = None            # work in flight (None: what the backend serves; models/dispatch.py)
    zero_shot: bool = False
    out: str | None = None
    json: bool = False
    truncate_prompts: bool = False            # cut pairs too long for the judge's context (models.bounds)


@dataclass(frozen=True)
class ExportSftSpec(JobSpec):
    KIND: ClassVar[str] = "export-sft"
    COMMAND: ClassVar[tuple[str, ...]] = ("export-sft",)
    PINNED: ClassVar = (("export", "name"), ("batch", "batch"), ("constitution version", "constitution_version"),
                        ("helpful mix", "mix_helpful"), ("also splits", "include_split"))

    name: str
    batch: str | None = None
    constitution_version: str | None = None
    mix_helpful: str | None = None
    format: str = "jsonl,hf"
    model: str | None = None
    max_new_tokens: int = 200
    seed: int = 0
    include_split: str | None = None     # held-out splits to read too (eval,gold); default train only
    overwrite: bool = False


@dataclass(frozen=True)
class ExportPrefsSpec(JobSpec):
    KIND: ClassVar[str] = "export-prefs"
    COMMAND: ClassVar[tuple[str, ...]] = ("export-prefs",)
    PINNED: ClassVar = (("export", "name"), ("batch", "batch"), ("source", "source"), ("judges", "judges"),
                        ("also splits", "include_split"))

    name: str
    batch: str | None = None
    source: str | None = None
    judges: str | None = None
    combine: str = "mean"
    soft_labels: bool = False
    margin: bool = False
    include_split: str | None = None     # held-out splits to read too (eval,gold); default train only
    keep_flipped: bool = False
    min_confidence: float | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class EvaluateSpec(JobSpec):
    KIND: ClassVar[str] = "evaluate"
    COMMAND: ClassVar[tuple[str, ...]] = ("evaluate",)
    PINNED: ClassVar = (("name", "name"), ("policies", "policies"), ("prompts", "prompts"),
                        ("helpfulness prompts", "helpful_prompts"), ("judge model", "judge_model"),
                        ("judge constitution", "judge_constitution"))

    policies: tuple[str, ...]                 # policy specs as given (SPEC or NAME=SPEC; evaluation.policies)
    prompts: str                              # red-team prompts: prompt set name or file
    judge_model: str
    helpful_prompts: str | None = None
    judge_constitution: str | None = None     # harmlessness judge: constitution spec (None: the built-in one)
    judge_style: str = "auto"                 # auto (mc where log-probs exist, else parse) | mc | cot | parse
    checkpoints: bool = False
    limit: int | None = None
    seed: int = 0
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int | None = None            # work in flight (None: what the backend serves; models/dispatch.py)
    tie_margin: float = 0.0
    n_boot: int = 1000
    name: str | None = None
    json: bool = False
    out: str | None = None


@dataclass(frozen=True)
class ABExperimentSpec(JobSpec):
    KIND: ClassVar[str] = "ab-experiment"
    COMMAND: ClassVar[tuple[str, ...]] = ("ab-experiment",)
    PINNED: ClassVar = (("name", "name"), ("constitution A", "constitution_a"), ("constitution B", "constitution_b"),
                        ("prompts", "prompts"), ("model", "model"), ("judge model", "judge_model"))

    constitution_a: str                       # constitution spec of arm A (file, NAME, NAME@VERSION, hash)
    constitution_b: str
    prompts: str                              # prompt set name or file
    model: str = "default"
    judge_model: str | None = None            # optional: judge final A vs final B
    judge_constitution: str | None = None
    judge_style: str = "auto"
    rounds: int = 1
    schedule: str = "random"
    sequence: str = ""
    cot: bool = False
    no_few_shot: bool = False
    seed: int = 0
    limit: int | None = None
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int | None = None            # work in flight per arm (None: what the backend serves; models/dispatch.py)
    n_boot: int = 1000
    name: str | None = None
    json: bool = False
    out: str | None = None


@dataclass(frozen=True)
class EvalJudgeSpec(JobSpec):
    KIND: ClassVar[str] = "eval-judge"
    COMMAND: ClassVar[tuple[str, ...]] = ("eval-judge",)
    PINNED: ClassVar = (("gold set", "gold"), ("judge model", "judge_model"), ("constitution", "constitution"),
                        ("style", "style"))

    judge_model: str
    gold: str                                 # a paper eval set or a pairs JSONL with gold_label
    limit: int | None = None
    style: str = "mc"
    constitution: str | None = None           # constitution spec; None: harmless_helpful if stored; "builtin"
    principles: str = "random"
    no_swap: bool = False
    seed: int = 0
    batch_size: int | None = None            # work in flight (None: what the backend serves; models/dispatch.py)
    max_new_tokens: int = 160
    n_boot: int = 1000
    device: str = "auto"
    dtype: str = "auto"
    few_shot: tuple[str, ...] | None = None   # judge-example files added to the constitution
    zero_shot: bool = False
    out: str | None = None
    json: bool = False
    truncate_prompts: bool = False            # cut items too long for the judge's context (rlaif.judge_bounds)


SPECS: dict[str, type[JobSpec]] = {cls.KIND: cls for cls in (
    ReviseSpec, PairsSampleSpec, JudgeJobSpec, ExportSftSpec, ExportPrefsSpec, EvaluateSpec, ABExperimentSpec,
    EvalJudgeSpec)}


def spec_from_json(kind: str, data: dict) -> JobSpec:
    """A job row's stored spec back as its dataclass."""
    cls = SPECS.get(kind)
    if cls is None:
        raise CaiError(f"unknown job kind {kind!r} (known: {', '.join(SPECS)})")
    return cls.from_dict(data)


def command_line(spec: JobSpec, workspace: str | Path | None = None) -> str:
    """The equivalent shell command, shell-quoted (what a start form shows before it starts the job)."""
    return format_command(cli_argv(spec.to_argv(), workspace))


def field_names(kind: str) -> list[str]:
    return [f.name for f in fields(SPECS[kind])]


__all__ = ["JobSpec", "SPECS", "command_line", "spec_from_json", "field_names", *(c.__name__ for c in SPECS.values())]
