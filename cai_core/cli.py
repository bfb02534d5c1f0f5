"""`python -m cai_core ...`: every UI action has a command here.

Subcommands live in cai_core/commands/<name>.py, each with `register(subparsers)`; they are found
by listing that package, so adding a capability means adding one file. A CaiError becomes one
line on stderr and exit code 2; nothing half-written is left behind by the commands.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
import traceback

from cai_core import commands as _commands_pkg
from cai_core.errors import CaiError
from cai_core.models.specs import set_default_engine
from cai_core.store import DATABASE_URL_ENV, check_url, open_store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cai_core",
        description="Constitutional AI workbench: the same actions as the app, headless.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        if getattr(args, "database_url", None):
            check_url(args.database_url)
            # the environment, not argv: the jobs this command starts open the same store, and the URL
            # (with any password) never reaches a job's argv, its row or its log
            os.environ[DATABASE_URL_ENV] = args.database_url
        if getattr(args, "engine", None):
            set_default_engine(args.engine)  # every backend this command (and its jobs) loads
        return int(args.func(args) or 0)
    except CaiError as exc:
        _mark_job_failed(args, str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed our stdout: not an error of the command
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        _mark_job_failed(args, "interrupted")
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a job must record why it died
        traceback.print_exc()
        _mark_job_failed(args, f"{type(exc).__name__}: {exc}")
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _mark_job_failed(args, error: str) -> None:
    if getattr(args, "job_id", None):
        try:
            store = open_store(args.workspace)
            store.execute(
                "UPDATE jobs SET status='failed', error=?, exit_code=2, ended_at=?, updated_at=? WHERE id=? AND status NOT IN ('finished','stopped')",
                (error, time.time(), time.time(), args.job_id),
            )
        except Exception:  # noqa: BLE001 - the error itself was already printed
            pass
