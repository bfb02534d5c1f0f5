"""The workspace: one folder with the SQLite store, runs/, exports/ and models/.

Default ./workspace; CAI_WORKSPACE or --workspace overrides. With a PostgreSQL store shared by
several machines, each machine names its own root for the same shared folder: the store keeps the
paths of runs and exports relative to the root (`store_path`), and `resolve` finds them under
this machine's root (an absolute path, from rows written before, is used as it is). Every name a user types that becomes
a path goes through `child_path`, so run and export names can never escape the folder.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cai_core.errors import CaiError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def default_root() -> Path:
    return Path(os.environ.get("CAI_WORKSPACE", "workspace")).expanduser()


def safe_name(name: str, what: str = "name") -> str:
    """Validate a user-chosen name used as a file or folder name (no slashes, no '..')."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise CaiError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def slug(text: str, fallback: str, max_len: int = 100) -> str:
    """The one rule that turns free text (a prompt set, a file path, a folder name) into a name that
    passes `safe_name`: every run of other characters becomes one '-', '..' becomes '.', and the ends
    lose '-' and '.' (the start also '_'); `fallback` when nothing is left. Used where the app
    *suggests* a name; a name the user types is validated with `safe_name`, never rewritten."""
    name = _NOT_NAME_CHARS.sub("-", str(text))
    name = re.sub(r"\.{2,}", ".", name).lstrip("-._")[:max_len].rstrip("-.")
    return safe_name(name or fallback)


def fresh_name(base: str, taken) -> str:
    """`base-1`, `base-2`, ...: the first not in `taken` (a new item's default name must not be an
    existing one, or starting it would silently add to / resume that item)."""
    taken = set(taken)
    i = 1
    while f"{base}-{i}" in taken:
        i += 1
    return f"{base}-{i}"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, *, create: bool = True) -> "Workspace":
        path = Path(root).expanduser() if root else default_root()
        path = path.resolve()
        if create:
            try:
                for sub in ("", "runs", "exports", "models", "jobs", "reports"):
                    (path / sub).mkdir(parents=True, exist_ok=True)
                # a private probe file: processes opening the workspace at once must not race on one name
                with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
                    pass
            except OSError as exc:
                raise CaiError(f"workspace {path} is not writable ({exc.strerror or exc})") from exc
        elif not path.is_dir():
            raise CaiError(f"workspace {path} does not exist")
        return cls(path)

    @property
    def db_path(self) -> Path:
        return self.root / "cai.sqlite3"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def store_path(self, path: str | os.PathLike) -> str:
        """How the store records a file or folder: relative to the root when inside it (so another
        machine mounting the same folder elsewhere finds it), else absolute."""
        target = Path(path).expanduser().resolve()
        try:
            return target.relative_to(self.root).as_posix()
        except ValueError:
            return str(target)

    def resolve(self, stored: str | os.PathLike | None) -> Path | None:
        """The path a store row names, on this machine: a relative one under the root; an absolute
        one (rows written before paths were relative) as it is."""
        if stored is None or str(stored) == "":
            return None
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def child_path(self, area: str, name: str) -> Path:
        """A path for a user-named item inside one area of the workspace; refuses escapes."""
        base = (self.root / area).resolve()
        target = (base / safe_name(name)).resolve()
        if base not in target.parents:
            raise CaiError(f"{name!r} would leave the workspace folder {base}")
        return target
