"""`notebook`: the workspace's experiment notebook (items and lineage) as self-contained HTML or JSON."""
from __future__ import annotations

import json
from dataclasses import asdict

from cai_core.commands._common import add_command, output_file
from cai_core.summaries.lineage import notebook_html, workspace_lineage
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(sub, "notebook", "the workspace's constitutions, batches, judges, exports, runs and "
                                     "evaluations with their lineage, as one HTML file (or --json)")
    p.add_argument("--out", default=None, help="output .html file (default: workspace/reports/notebook.html)")
    p.add_argument("--json", action="store_true", help="print the nodes and edges as JSON instead")
    p.set_defaults(func=cmd_notebook)


def cmd_notebook(args) -> int:
    store = open_store(args.workspace)
    if args.json:
        lin = workspace_lineage(store)
        print(json.dumps({"nodes": [asdict(n) for n in lin.nodes.values()],
                          "edges": [asdict(e) for e in lin.edges]}, ensure_ascii=False))
        return 0
    path = output_file(args.out) or store.workspace.child_path("reports", "notebook.html")
    text = notebook_html(store)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    print(path)
    return 0
