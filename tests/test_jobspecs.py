"""Typed jobs: every job kind's spec and its command's argparse agree (spec -> argv -> parse -> spec)."""
from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from cai_core.cli import build_parser
from cai_core.jobs.specs import SPECS, command_line, spec_from_json

SKIP = {"help", "workspace", "job_id", "engine", "database_url"}  # common options; a job inherits $CAI_ENGINE and $CAI_DATABASE_URL


def command_parser(cls) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in cls.COMMAND:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def options(parser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in SKIP and a.help != argparse.SUPPRESS}


def non_default(action: argparse.Action, field: dataclasses.Field):
    """A valid value for the option that differs from its default."""
    if action.choices:
        return next(c for c in action.choices if c != action.default)
    if isinstance(action, argparse._StoreTrueAction):
        return True
    if action.nargs == "+":
        return ("base=default", "sft=run:sft 1")  # a space survives the round trip
    if action.type is int:
        return 7
    if action.type is float:
        return 0.25
    return f"{field.name}-x y"  # quoting must survive the command line


def full_spec(cls):
    parser = command_parser(cls)
    opts = options(parser)
    left_default = {a.dest for g in parser._mutually_exclusive_groups for a in g._group_actions[1:]}
    values = {f.name: non_default(opts[f.name], f) for f in dataclasses.fields(cls) if f.name not in left_default}
    return cls(**values)


def minimal_spec(cls):
    parser = command_parser(cls)
    needed = {g._group_actions[0].dest for g in parser._mutually_exclusive_groups if g.required}
    return cls(**{f.name: non_default(options(parser)[f.name], f) for f in dataclasses.fields(cls)
                  if f.default is dataclasses.MISSING or f.name in needed})


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_option_is_a_field_with_the_same_default(kind):
    cls = SPECS[kind]
    opts = options(command_parser(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(opts) == set(fields), (f"{cls.__name__} (cai_core/jobs/specs.py) and `{' '.join(cls.COMMAND)}` "
                                      f"disagree: options only {sorted(set(opts) - set(fields))}, "
                                      f"fields only {sorted(set(fields) - set(opts))}")
    for name, f in fields.items():
        action = opts[name]
        if action.required:
            assert f.default is dataclasses.MISSING, f"{kind} --{name} is required, the spec has a default"
        else:
            assert f.default == action.default, f"{kind} --{name}: spec default {f.default!r} != {action.default!r}"


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("build", [full_spec, minimal_spec])
def test_spec_round_trips_through_the_commands_argparse(kind, build):
    cls = SPECS[kind]
    spec = build(cls)
    argv = spec.to_argv()
    args = build_parser().parse_args(argv + ["--workspace", "/tmp/ws", "--job-id", "3"])
    assert cls.from_args(args) == spec
    assert args.func is not None and args.job_id == 3
    assert cls.from_argv(["/usr/bin/python", "-m", "cai_core", *argv, "--workspace", "w", "--job-id", "3"]) == spec
    assert spec_from_json(kind, spec.to_dict()) == spec
    assert shlex.split(command_line(spec)) == ["python", "-m", "cai_core", *argv]


def test_pinned_inputs_read_in_words():
    from cai_core.jobs.specs import JudgeJobSpec, ReviseSpec

    judge = JudgeJobSpec(judge_model="default", constitution="hh@abc123", batch="pairs-1")
    assert judge.pinned() == {"batch": "pairs-1", "constitution": "hh@abc123", "judge model": "default"}
    assert ReviseSpec(constitution="c@v1", prompts="red", batch="b").pinned()["constitution"] == "c@v1"
