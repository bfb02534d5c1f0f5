"""What every subcommand shares: the common options (--workspace, the hidden --job-id) and
argument checks made before any work starts."""
from __future__ import annotations

import argparse
from pathlib import Path

from cai_core.errors import CaiError

COMMON = argparse.ArgumentParser(add_help=False)
COMMON.add_argument("--workspace", default=None, help="workspace folder (default ./workspace or $CAI_WORKSPACE)")
COMMON.add_argument("--job-id", type=int, default=None, help=argparse.SUPPRESS)


def add_command(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand that also takes the common options (--workspace)."""
    return subparsers.add_parser(
        name, help=help, description=description or help, parents=[COMMON],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


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
