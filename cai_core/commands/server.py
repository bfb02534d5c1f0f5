"""llama.cpp server commands: start / stop / status of the local OpenAI-compatible server."""
from __future__ import annotations

import json

from cai_core.commands._common import add_command
from cai_core.models import llama_server
from cai_core.settings import set_setting
from cai_core.store import Store
from cai_core.workspace import Workspace


def register(sub) -> None:
    p = add_command(sub, "server-start", "start the local llama.cpp server (fast CPU path) in the background")
    p.add_argument("--model", default=None, help="a .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback needs CAI_API_KEY (see docs/models.md)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait until it answers (0: don't wait)")
    p.add_argument("--use", action="store_true", help="make it the active model of the workspace")
    p.set_defaults(func=cmd_start)

    p = add_command(sub, "server-stop", "stop the local llama.cpp server")
    p.set_defaults(func=cmd_stop)

    p = add_command(sub, "server-status", "show the local llama.cpp server (pid, port, model spec) as JSON")
    p.set_defaults(func=cmd_status)


def cmd_start(args) -> int:
    ws = Workspace.open(args.workspace)
    st = llama_server.start(ws, args.model, port=args.port, host=args.host, threads=args.threads, wait=args.wait)
    if args.use:
        store = Store(ws)
        set_setting(store, "active_model", st["spec"])
        store.close()
    print(json.dumps({k: st.get(k) for k in ("pid", "port", "host", "model", "ready", "spec")}))
    return 0


def cmd_stop(args) -> int:
    stopped = llama_server.stop(Workspace.open(args.workspace))
    print("stopped" if stopped else "no llama.cpp server was running")
    return 0


def cmd_status(args) -> int:
    st = llama_server.status(Workspace.open(args.workspace))
    st["installed"] = llama_server.is_installed()
    print(json.dumps(st, indent=2))
    return 0
