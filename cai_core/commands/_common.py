"""What every subcommand shares: the common options (--workspace, --engine, the hidden --job-id)
and argument checks made before any work starts."""
from __future__ import annotations

import argparse
from pathlib import Path

from cai_core.errors import CaiError
from cai_core.evaluation.stats import BOOTSTRAP_RESAMPLES
from cai_core.models.specs import ENGINES

COMMON = argparse.ArgumentParser(add_help=False)
COMMON.add_argument("--workspace", default=None, help="workspace folder (default ./workspace or $CAI_WORKSPACE)")
COMMON.add_argument("--database-url", default=None, metavar="URL",
                    help="keep the store in PostgreSQL (postgresql://user@host:port/dbname; a password is better "
                         "in ~/.pgpass or PGPASSWORD than here) instead of the workspace's SQLite file; "
                         "default: $CAI_DATABASE_URL, else SQLite")
COMMON.add_argument("--job-id", type=int, default=None, help=argparse.SUPPRESS)
COMMON.add_argument("--engine", choices=ENGINES, default=None,
                    help="engine for local models: auto (transformers), transformers, ctranslate2 (CPU, "
                         "float32), or ctranslate2-int8 (opt-in: generation on CTranslate2 int8, option scoring on "
                         "transformers float32; its rows record the model as '<model> [int8]'); "
                         "default: $CAI_ENGINE or auto")


def add_command(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand that also takes the common options (--workspace)."""
    return subparsers.add_parser(
        name, help=help, description=description or help, parents=[COMMON],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def add_group(subparsers, name: str, help: str, description: str) -> argparse._SubParsersAction:
    """Add a command group (`constitution ...`, `prompts ...`) and return its actions; the group
    alone, without an action, prints its help and exits 2."""
    group = subparsers.add_parser(name, help=help, description=description)
    group.set_defaults(func=lambda args: group.print_help() or 2)
    return group.add_subparsers(dest="action", metavar="ACTION")


def add_n_boot(p: argparse.ArgumentParser) -> None:
    """--n-boot, the bootstrap resamples of every command's 95% intervals (args.n_boot); --bootstrap,
    the older spelling of evaluate and ab-experiment, still works but is no longer listed."""
    p.add_argument("--n-boot", type=int, default=BOOTSTRAP_RESAMPLES, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--bootstrap", type=int, dest="n_boot", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def output_file(path: str | None) -> Path | None:
    """Check an --out file path before any work starts (its folder must exist; not a folder itself)."""
    if not path:
        return None
    out = Path(path).expanduser()
    if out.is_dir():
        raise CaiError("--out is a folder; give a file name", where=str(out))
    if not out.parent.exists():
        raise CaiError("the folder for --out does not exist", where=str(out))
    return out
