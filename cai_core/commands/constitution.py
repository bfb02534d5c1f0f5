"""`constitution ...`: import, export, list, versions, diff and validate constitutions headless, and make
one under a new name (new, duplicate, rename-as-new: the typed actions of cai_core.constitution.actions,
the same ones the Constitution page applies)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cai_core.commands._common import add_command, add_group
from cai_core.constitution.actions import ACTIONS
from cai_core.constitution.diff import diff_constitutions
from cai_core.constitution.files import load_import
from cai_core.constitution.versions import (
    export_constitution,
    get_constitution,
    list_constitutions,
    list_versions,
    save_imported,
)
from cai_core.errors import CaiError
from cai_core.store import open_store


def register(sub) -> None:
    actions = add_group(sub, "constitution", "import, export, list, diff and validate constitutions",
                        "Constitutions: named, versioned lists of principles.")

    p = add_command(actions, "import", "import a constitution file (this project's YAML/JSON or the paper's JSON)")
    p.add_argument("file", help=".yaml/.yml/.json: ours, CritiqueRevisionInstructions.json, RLMadisonInstructions.json "
                                "or CritiqueRevisionFewShotPrompts.json")
    p.add_argument("--name", default=None, help="store it under this name (default: the file's own name)")
    p.add_argument("--comparisons", default=None, metavar="FILE",
                   help="add these comparison questions (e.g. RLMadisonInstructions.json) as a separate list "
                        "of comparison-only principles (the judge draws from it)")
    p.add_argument("--few-shot", default=None, metavar="FILE", action="append",
                   help="add few-shot examples; repeat for several files: critique/revision examples "
                        "(CritiqueRevisionFewShotPrompts.json) or judge examples (RLMadisonFewShotPrompts.json, "
                        "RLMadisonPrecogFewShotPrompts.json for the cot judge)")
    p.add_argument("--note", default=None, help="note stored with the version")
    p.set_defaults(func=cmd_import)

    p = add_command(actions, "export", "print or write a stored constitution as YAML or JSON")
    p.add_argument("name")
    p.add_argument("--version", default=None, help="content-hash version (default: newest)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_export)

    p = add_command(actions, "list", "list stored constitutions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = add_command(actions, "versions", "list the saved versions of a constitution, newest first")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_versions)

    p = add_command(actions, "diff", "per-principle word-level diff between two versions")
    p.add_argument("name")
    p.add_argument("v1", help="old version")
    p.add_argument("v2", help="new version")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_diff)

    p = add_command(actions, "new", "a new constitution with one starter principle to edit (made current)")
    p.add_argument("name", help="the new name (not taken; no '@', no file suffix)")
    p.add_argument("--description", default="", help="its description")
    p.set_defaults(func=cmd_new_name, action_cls="new")

    for command, helptext in (("duplicate", "copy a stored version under a new name (made current); the source stays"),
                              ("rename-as-new", "continue a constitution under a new name (made current); its old "
                                                "versions stay stored and listed, since runs name them")):
        p = add_command(actions, command, helptext)
        p.add_argument("source", help="NAME (its newest version) or NAME@VERSION")
        p.add_argument("name", help="the new name (not taken; no '@', no file suffix)")
        p.set_defaults(func=cmd_new_name, action_cls=command)

    p = add_command(actions, "validate", "check a constitution file without storing anything")
    p.add_argument("file")
    p.add_argument("--comparisons", default=None, metavar="FILE")
    p.add_argument("--few-shot", default=None, metavar="FILE", action="append")
    p.set_defaults(func=cmd_validate)


def _store(args):
    return open_store(args.workspace)


def _load_with_extras(args):
    return load_import(args.file, name=getattr(args, "name", None), comparisons=args.comparisons,
                       few_shot=args.few_shot)


def cmd_import(args) -> int:
    c = _load_with_extras(args)  # everything validated before the store is even opened
    version = save_imported(_store(args), c, args.note or f"imported from {Path(args.file).name}")
    print(f"imported {c.name!r} version {version}: {len(c.principles)} principles "
          f"({len(c.critique_principles())} for critique/revision, {len(c.comparison_principles())} with a "
          f"comparison question), {len(c.few_shot)} few-shot examples, {len(c.judge_examples)} judge examples")
    return 0


def cmd_new_name(args) -> int:
    """new / duplicate / rename-as-new: build the typed action (as the page does) and apply it."""
    action = ACTIONS[args.action_cls].from_args(args)
    name, version = action.apply(_store(args))
    print(f"{action.command}: {name!r} version {version} (now the current constitution)")
    return 0


def cmd_export(args) -> int:
    text = export_constitution(_store(args), args.name, args.version, args.format)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise CaiError("is a folder; give a file name", where=str(out))
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CaiError(f"cannot write ({exc.strerror or exc})", where=str(out)) from exc
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args) -> int:
    rows = list_constitutions(_store(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no constitutions yet")
    for r in rows:
        print(f"{r['name']:<28} {r['version']}  {r['principles']:>3} principles  {r['versions']:>3} version(s)")
    return 0


def cmd_versions(args) -> int:
    rows = list_versions(_store(args), args.name)
    if not rows:
        raise CaiError(f"no constitution {args.name!r}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    import time

    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        print(f"{r['version']}  {when}  parent={r['parent_version'] or '-':<12}  {r['note'] or ''}")
    return 0


def cmd_diff(args) -> int:
    store = _store(args)
    old = get_constitution(store, args.name, args.v1)
    new = get_constitution(store, args.name, args.v2)
    changes = diff_constitutions(old, new)
    if args.json:
        print(json.dumps([{"kind": c.kind, "key": c.key, "status": c.status, "label": c.label,
                           "old_index": c.old_index, "new_index": c.new_index,
                           "fields": {k: [[s.op, s.text] for s in v] for k, v in c.fields.items()}}
                          for c in changes], indent=2, ensure_ascii=False))
        return 0
    if not changes:
        print("no differences")
    for ch in changes:
        where = f" (position {ch.old_index + 1} -> {ch.new_index + 1})" if ch.status == "moved" else ""
        print(f"== {ch.kind} {ch.key} [{ch.status}]{where}: {ch.label}")
        for fld, segments in ch.fields.items():
            rendered = "".join(s.text if s.op == "equal" else f"[-{s.text}-]" if s.op == "delete" else f"{{+{s.text}+}}"
                               for s in segments)
            print(f"  {fld}: {rendered}")
    return 0


def cmd_validate(args) -> int:
    c = _load_with_extras(args)
    print(f"ok: {c.name!r} version {c.version}, {len(c.principles)} principles, {len(c.few_shot)} few-shot examples, "
          f"{len(c.judge_examples)} judge examples")
    return 0
