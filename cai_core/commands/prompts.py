"""`prompts ...`: import prompt sets from files or HF dataset folders, list and show them."""
from __future__ import annotations

import json

from cai_core.commands._common import add_command, add_group
from cai_core.data.prompt_sets import (
    KINDS,
    delete_prompt_set,
    get_prompts,
    import_hf_dataset_column,
    import_prompt_set,
    list_prompt_sets,
    load_prompts_file,
)
from cai_core.store import open_store


def register(sub) -> None:
    actions = add_group(sub, "prompts", "import, list and show prompt sets",
                        "Prompt sets: named prompts (red-team, helpfulness) the pipelines run over.")

    p = add_command(actions, "import", "import a JSONL ('prompt' field), CSV (prompt column) or TXT (one per line)")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--kind", choices=KINDS, default="red-team")
    p.add_argument("--replace", action="store_true", help="replace an existing set of that name")
    p.set_defaults(func=cmd_import)

    p = add_command(actions, "import-hf", "import one column of a HF dataset folder (save_to_disk) as a prompt set")
    p.add_argument("path", help="dataset folder (or a hub ID when CAI_ALLOW_HUB=1)")
    p.add_argument("--column", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--kind", choices=KINDS, default="red-team")
    p.add_argument("--category-column", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_import_hf)

    p = add_command(actions, "list", "list prompt sets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = add_command(actions, "show", "print the prompts of a set")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSONL (one prompt per line)")
    p.set_defaults(func=cmd_show)

    p = add_command(actions, "delete", "delete a prompt set")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)


def _store(args):
    return open_store(args.workspace)


def cmd_import(args) -> int:
    load_prompts_file(args.file)  # validate before the store is opened
    store = _store(args)
    import_prompt_set(store, args.name, args.file, kind=args.kind, replace=args.replace)
    print(f"imported {len(get_prompts(store, args.name))} prompts as {args.name!r} ({args.kind})")
    return 0


def cmd_import_hf(args) -> int:
    store = _store(args)
    import_hf_dataset_column(store, args.name, args.path, args.column, split=args.split, kind=args.kind,
                             category_column=args.category_column, limit=args.limit, replace=args.replace)
    print(f"imported {len(get_prompts(store, args.name))} prompts as {args.name!r} ({args.kind})")
    return 0


def cmd_list(args) -> int:
    rows = list_prompt_sets(_store(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no prompt sets yet")
    for r in rows:
        print(f"{r['name']:<28} {r['kind']:<12} {r['prompts']:>5} prompts  {r['source'] or ''}")
    return 0


def cmd_show(args) -> int:
    for p in get_prompts(_store(args), args.name):
        if args.json:
            print(json.dumps({"prompt": p["text"], "category": p["category"], **p["meta"]}, ensure_ascii=False))
        else:
            print(f"{p['idx']:>4}  [{p['category'] or '-'}]  {p['text']}")
    return 0


def cmd_delete(args) -> int:
    delete_prompt_set(_store(args), args.name)
    print(f"deleted {args.name!r}")
    return 0
