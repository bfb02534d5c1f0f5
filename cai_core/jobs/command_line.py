"""The shell line behind a UI action: the argv a background job runs, and its copyable text.

One owner for "which command does this page action run": `jobs.start_job` builds the argv it
spawns with `cli_argv`, and the pages preview the same argv (with `python` for the interpreter)
through `command_line`, so what a user copies to a cluster node is what the job ran.
"""
from __future__ import annotations

import shlex
from pathlib import Path

DISPLAY_PYTHON = "python"  # what the preview shows for the interpreter (the job runs sys.executable)


def cli_argv(args: list[str], workspace: str | Path | None = None, *, python: str = DISPLAY_PYTHON) -> list[str]:
    """`python -m cai_core <args> [--workspace W]`: the argv of a job started with these arguments."""
    argv = [python, "-m", "cai_core", *[str(a) for a in args]]
    if workspace is not None:
        argv += ["--workspace", str(workspace)]
    return argv


def command_line(argv: list[str]) -> str:
    """One shell line for an argv, each argument quoted so that pasting it runs exactly this argv."""
    return shlex.join(str(a) for a in argv)


def as_previewed(argv: list[str]) -> list[str]:
    """What a recorded job argv previews as: the interpreter shown as `python`, the internal --job-id
    dropped (so a job row's argv compares equal to the preview of the page that started it)."""
    out, skip = [DISPLAY_PYTHON], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--job-id":
            skip = True
            continue
        out.append(a)
    return out
