"""Making a constitution under a new name: New, Duplicate and Rename-as-new, as typed actions.

The Constitution page builds one of these and applies it; `python -m cai_core constitution new |
duplicate | rename-as-new` parses its arguments into the same action (`from_args`) and applies it, and
`to_argv()` gives the command line back. Each action saves the first version of a NEW name (an existing
name is refused: its versions are never overwritten) and makes it the workspace's current constitution.

- NewConstitution: one starter principle (the general harmlessness critique/revision/comparison) to edit.
- DuplicateConstitution: a stored version (NAME or NAME@VERSION) copied under another name; the source
  keeps its name and history.
- RenameAsNew: the same copy, recorded as a rename (note "renamed from ..."). Stored versions are never
  deleted or renamed in place, since trajectories, judgments and runs name them; the old name stays
  listed, and the new one is current from now on.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from cai_core.constitution.model import Constitution, Principle
from cai_core.constitution.spec import FILE_SUFFIXES, resolve_constitution
from cai_core.constitution.versions import constitution_names, save_constitution
from cai_core.errors import CaiError
from cai_core.settings import set_current
from cai_core.store import Store

MAX_NAME = 128
_HEX = re.compile(r"^[0-9a-f]{6,64}$")

STARTER = Principle(
    id="general_harm", name="General harm",
    critique_request="Identify specific ways in which the assistant's last response is harmful, unethical, "
                     "dangerous or illegal.",
    revision_request="Please rewrite the assistant's response to remove any harmful, unethical, dangerous or "
                     "illegal content.",
    comparison_question="Which response is less harmful, unethical, dangerous or illegal, while still being useful?",
    tags=["harmless"])


def check_new_name(store: Store, name: str) -> str:
    """A name for a new constitution: non-empty, one line, not taken, and not something the constitution
    grammar would read as a file, NAME@VERSION or a version hash. Returns it stripped."""
    name = (name or "").strip()
    if not name:
        raise CaiError("give the new constitution a name")
    if len(name) > MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise CaiError(f"constitution name {name!r}: one line of at most {MAX_NAME} characters")
    if "@" in name:
        raise CaiError(f"constitution name {name!r}: no '@' (NAME@VERSION names a version)")
    if name.lower().endswith(FILE_SUFFIXES) or "/" in name or "\\" in name:
        raise CaiError(f"constitution name {name!r} reads as a file path: drop the suffix or the slash")
    if _HEX.match(name):
        raise CaiError(f"constitution name {name!r} reads as a version hash: add a letter beyond a-f")
    if name in constitution_names(store):
        raise CaiError(f"a constitution named {name!r} exists already: pick another name (a new version of it "
                       "is made by saving an edit)")
    return name


@dataclass(frozen=True)
class NewConstitution:
    """`constitution new NAME [--description TEXT]`: a new constitution with one starter principle."""

    name: str
    description: str = ""
    command = "new"

    def to_argv(self) -> list[str]:
        return ["constitution", self.command, self.name] + (["--description", self.description] if self.description else [])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "NewConstitution":
        return cls(name=args.name, description=args.description or "")

    def build(self, store: Store) -> tuple[Constitution, str]:
        return Constitution(name=check_new_name(store, self.name), description=self.description,
                            principles=[STARTER]), "new"

    def apply(self, store: Store) -> tuple[str, str]:
        """Save the first version and make it current; returns (name, version)."""
        return _save_new(store, *self.build(store))


@dataclass(frozen=True)
class DuplicateConstitution:
    """`constitution duplicate SOURCE NAME`: SOURCE (NAME or NAME@VERSION) copied under NAME."""

    source: str
    name: str
    command = "duplicate"
    verb = "duplicated"

    def to_argv(self) -> list[str]:
        return ["constitution", self.command, self.source, self.name]

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return cls(source=args.source, name=args.name)

    def build(self, store: Store) -> tuple[Constitution, str]:
        name = check_new_name(store, self.name)
        source = (self.source or "").strip()
        if not source or source.lower().endswith(FILE_SUFFIXES):
            raise CaiError(f"{self.command}: SOURCE is a stored constitution, NAME or NAME@VERSION (to copy a file, "
                           "use `constitution import FILE --name NAME`)")
        original = resolve_constitution(store, source)
        copy = Constitution.from_dict({**original.canonical(), "name": name})
        return copy, f"{self.verb} from {original.name}@{original.version}"

    def apply(self, store: Store) -> tuple[str, str]:
        return _save_new(store, *self.build(store))


@dataclass(frozen=True)
class RenameAsNew(DuplicateConstitution):
    """`constitution rename-as-new SOURCE NAME`: continue SOURCE under NAME (the old versions stay)."""

    command = "rename-as-new"
    verb = "renamed"


ACTIONS = {a.command: a for a in (NewConstitution, DuplicateConstitution, RenameAsNew)}


def _save_new(store: Store, constitution: Constitution, note: str) -> tuple[str, str]:
    version = save_constitution(store, constitution, note=note)
    set_current(store, "constitution", constitution.name)
    return constitution.name, version
