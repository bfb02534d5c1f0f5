"""Model commands: build the tiny test model, prepare the embedded default, generate, stream."""
from __future__ import annotations

import json
import sys
import time

from cai_core.commands._common import add_command
from cai_core.models.backends.base import GenerationParams
from cai_core.models.specs import check_spec, default_model_dir, get_backend
from cai_core.models.tiny import build_tiny_model
from cai_core.settings import get_setting, set_setting
from cai_core.store import Store
from cai_core.workspace import Workspace


def register(sub) -> None:
    p = add_command(sub, "tiny-model", "build a tiny random-weight Llama + BPE tokenizer with a chat template (tests)")
    p.add_argument("dir", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)

    p = add_command(sub, "prepare-default", "convert the embedded SmolLM2-135M-Instruct GGUF into workspace/models (once)")
    p.set_defaults(func=cmd_prepare_default)

    p = add_command(sub, "generate", "answer one prompt with a model (streams tokens to stdout)")
    p.add_argument("prompt")
    p.add_argument("--model", default="default", help="default | local folder | file.gguf | hf:ID | http://host:port/v1")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quantization", choices=["4bit", "8bit"], default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_generate)

    p = add_command(sub, "model-use", "make a model the workspace's active model (checked first, not loaded)")
    p.add_argument("spec", help="default | local folder | file.gguf | hf:ID | http://host:port/v1[#model=NAME]")
    p.set_defaults(func=cmd_model_use)

    p = add_command(sub, "model-info", "load a model (with progress) and print its device, dtype and memory as JSON")
    p.add_argument("spec", nargs="?", default=None, help="model spec (default: the workspace's active model)")
    p.add_argument("--quantization", choices=["4bit", "8bit"], default=None)
    p.set_defaults(func=cmd_model_info)


def cmd_model_use(args) -> int:
    ws = Workspace.open(args.workspace)
    spec = check_spec(args.spec, ws)
    store = Store(ws)
    set_setting(store, "active_model", spec)
    store.close()
    print(f"active model: {spec}")
    return 0


def cmd_model_info(args) -> int:
    ws = Workspace.open(args.workspace)
    spec = args.spec
    if not spec:
        store = Store(ws)
        spec = get_setting(store, "active_model", "default")
        store.close()
    t = time.time()
    backend = get_backend(spec, ws, quantization=args.quantization,
                          progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    print(json.dumps({**backend.info(), "load_seconds": round(time.time() - t, 2)}, indent=2))
    return 0


def cmd_tiny_model(args) -> int:
    t = time.time()
    out = build_tiny_model(args.dir, seed=args.seed)
    print(f"tiny model written to {out} in {time.time() - t:.1f}s")
    return 0


def cmd_prepare_default(args) -> int:
    path = default_model_dir(Workspace.open(args.workspace), progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    print(path)
    return 0


def cmd_generate(args) -> int:
    backend = get_backend(args.model, Workspace.open(args.workspace), quantization=args.quantization,
                          progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    conv = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.prompt}]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.json:
        t = time.time()
        out = backend.generate([conv], params)[0][0]
        print(json.dumps({"model": args.model, "text": out.text, "tokens": out.tokens, "seconds": round(time.time() - t, 3)}))
        return 0
    for piece in backend.stream(conv, params):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
