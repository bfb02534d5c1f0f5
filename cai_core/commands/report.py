"""`report`: export a trajectory, an evaluation or an A/B experiment as one self-contained HTML file."""
from __future__ import annotations

from cai_core.commands._common import add_command, output_file
from cai_core.errors import CaiError
from cai_core.evaluation.reports import write_report
from cai_core.store import open_store


def register(sub) -> None:
    p = add_command(sub, "report", "export a trajectory, evaluation or experiment as a self-contained HTML report",
                    description="One HTML file with the charts inline (plotly.js embedded) and all text escaped: "
                                "it opens offline and can be mailed.")
    p.add_argument("kind", choices=["trajectory", "evaluation", "experiment"])
    p.add_argument("ref", help="trajectory id, or evaluation/experiment id or name")
    p.add_argument("--out", default=None, help="output .html file (default: workspace/reports/<kind>-<ref>.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    store = open_store(args.workspace)
    if args.kind == "trajectory" and not str(args.ref).isdigit():
        raise CaiError(f"a trajectory is named by its number, not {args.ref!r}")
    path = write_report(store, args.kind, args.ref, output_file(args.out))
    print(path)
    return 0
