"""`serve-mock`: the project's own OpenAI-compatible test server (cai_core/models/mock_server.py) -
deterministic text, latency and faults (503, dropped connections, 429, no log-probs) as options."""
from __future__ import annotations

from cai_core.commands._common import add_command
from cai_core.errors import CaiError
from cai_core.models import mock_server


def register(sub) -> None:
    p = add_command(sub, "serve-mock", "run the project's OpenAI-compatible test server (no model; "
                    "deterministic text, latency and faults as options) in the foreground; prints READY <url>")
    mock_server.add_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    try:
        return mock_server.serve(args)
    except ValueError as exc:
        raise CaiError(str(exc)) from None
