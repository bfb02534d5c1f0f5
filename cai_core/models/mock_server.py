"""The project's own OpenAI-compatible test server: deterministic text, configurable latency and faults.

What a client of vLLM sees, without a model: any number of requests served at once (asyncio, no
thread per request; an answer after `latency` seconds whatever the load, as continuous batching
looks from outside), plus the faults of a real deployment, each drawn per POST request:

- latency applies to model work (/chat/completions, /completions); /tokenize, /detokenize,
  /apply-template and /v1/models answer at once, as a real server's do;
- fail_rate: HTTP 503 {"error": "overloaded"} (vLLM/TGI under load, a proxy in front of them);
- drop_rate: the connection is closed with a reset after the request was read, no answer at all;
- rate_limit_rate: HTTP 429 with Retry-After: 0 (hosted APIs);
- logprobs=False: no log-probs anywhere (several hosted APIs): /completions rejects echo/logprobs
  with 400 and /chat/completions ignores logprobs;
- die_after=N: after N POST requests the server stops listening and resets every open connection
  (a replica that dies mid-run).

Endpoints (everything cai_core/models/backends/http.py uses): GET /v1/models; POST
/v1/chat/completions (logprobs/top_logprobs, stream=true as server-sent events, stop, seed);
POST /v1/completions (prompt str or list, echo, logprobs, max_tokens 0, return_tokens_as_token_ids:
vLLM's exact option scoring); POST /tokenize (messages or prompt) and /detokenize (vLLM); POST
/apply-template (llama.cpp, only when kind="llamacpp"); GET /mock/stats (counters, for tests).

Text is a pure function of the request (messages or prompt, max_tokens, model, and the seed when
sampling; temperature 0 ignores the seed, as greedy decoding does), so any two servers - replicas -
answer the same request identically. Tokens are a simple word/punctuation split; a token's id is its
UTF-8 bytes as an integer, so /detokenize works on any replica; log-probs depend on the previous
token and the token only.

Python:  ``with MockServer(latency=0.5, fail_rate=0.05) as srv: srv.url`` (in a thread of this
process), or ``proc = start_process(latency=0.5)`` / ``proc.url`` / ``proc.kill()`` (its own
process, for benchmarks and for killing). CLI: ``python -m cai_core serve-mock --latency 0.5`` or
``python -m cai_core.models.mock_server ...``; it prints ``READY <url>`` when it listens.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, fields

KINDS = ("vllm", "llamacpp", "other")
WORDS = ("the of and to in is that it for as with was on be by this are or an at from which have not "
         "but can all their more one will would should answer help people safe question harmful kind "
         "response careful advice consider legal other ways rather better honest clear simple please "
         "instead request might could information sorry explain because however first second about "
         "important risk health friend support think reason good bad true false yes no").split()
TOP_ALTERNATIVES = ["Yes", "No", "A", "B", "(A", "(B", " Yes", " No", " A", " B", "The", "I"]
_TOKEN = re.compile(r"<\|[A-Za-z_]+\|>|\s*\w+|\s*[^\w\s]|\s+")


@dataclass
class MockOptions:
    latency: float = 0.0          # seconds before each answer (streaming: before the first chunk)
    fail_rate: float = 0.0        # share of POSTs answered 503 "overloaded"
    drop_rate: float = 0.0        # share of POSTs whose connection is reset without an answer
    rate_limit_rate: float = 0.0  # share of POSTs answered 429
    logprobs: bool = True         # False: a server that offers no log-probs
    kind: str = "vllm"            # owned_by in /v1/models: vllm | llamacpp | other
    model: str = "mock"
    seed: int = 0                 # the fault draws' RNG (text never depends on it)
    die_after: int = 0            # >0: stop and reset all connections after this many POSTs

    def check(self) -> "MockOptions":
        for name in ("fail_rate", "drop_rate", "rate_limit_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {v}")
        if self.fail_rate + self.drop_rate + self.rate_limit_rate > 1.0:
            raise ValueError("fail_rate + drop_rate + rate_limit_rate must not exceed 1")
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        return self


# -- deterministic model ---------------------------------------------------------------------------

def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def token_id(token: str) -> int:
    return int.from_bytes(token.encode("utf-8"), "big")


def id_token(i: int) -> str:
    i = int(i)
    return i.to_bytes(max(1, (i.bit_length() + 7) // 8), "big").decode("utf-8", "replace")


def token_logprob(prev: str, token: str) -> float:
    return -0.05 - (zlib.crc32(f"{prev}\x00{token}".encode()) % 400) / 100.0


def chat_template(messages: list, add_generation_prompt: bool = True) -> str:
    out = "".join(f"<|im_start|>{m.get('role', 'user')}\n{m.get('content') or ''}<|im_end|>\n"
                  for m in messages if isinstance(m, dict))
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _digest(*parts) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).digest()


def generated_tokens(source, body: dict) -> tuple[list[str], str]:
    """(tokens, finish_reason) the mock 'model' writes for a request: a function of the input text,
    max_tokens, model and (when sampling) the seed."""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
    max_tokens = 16 if max_tokens is None else max(0, int(max_tokens))
    temperature = float(body.get("temperature", 1.0) or 0.0)
    seed = body.get("seed") if temperature > 0 else None
    d = _digest(source, body.get("model"), seed, temperature)
    natural = 4 + d[0] % 28
    words = [WORDS[d[1 + (i % 30)] * (i + 1) % len(WORDS)] for i in range(natural)]
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)] + ["."]
    finish = "stop"
    if len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    for s in body.get("stop") or []:
        text = "".join(tokens)
        if s and s in text:
            cut = text[: text.index(s)]
            return tokenize(cut), "stop"
    return tokens, finish


def _top(prev: str, token: str, k: int) -> list[dict]:
    chosen = max(token_logprob(prev, token), -0.7)  # the written token is the likeliest
    out = [{"token": token, "logprob": chosen, "bytes": list(token.encode())}]
    for j, alt in enumerate(a for a in TOP_ALTERNATIVES if a != token):
        if len(out) >= k:
            break
        lp = chosen - 1.0 - j * 0.5 - (zlib.crc32(f"{prev}|{alt}".encode()) % 50) / 100.0
        out.append({"token": alt, "logprob": lp, "bytes": list(alt.encode())})
    return out[:k]


# -- the server --------------------------------------------------------------------------------------

class _Drop(Exception):
    """Reset the connection without answering."""


class MockServer:
    """The server in a background thread of this process (asyncio event loop), on 127.0.0.1."""

    def __init__(self, options: MockOptions | None = None, *, host: str = "127.0.0.1", port: int = 0, **kw):
        self.options = (options or MockOptions(**kw)).check()
        self.host, self.port = host, port
        self.stats = {"requests": 0, "posts": 0, "answered": 0, "failed_503": 0, "dropped": 0, "rate_limited": 0,
                      "in_flight": 0, "peak_in_flight": 0, "by_path": {}, "dead": False,
                      "model_requests": 0, "first_model_at": None, "last_model_at": None}
        self._rng = random.Random(self.options.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._writers: set = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # lifecycle
    def start(self) -> "MockServer":
        self._thread = threading.Thread(target=self._run, name=f"mock-server-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=2048,
                                                  limit=2 ** 22)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening and reset every open connection (also what a crash looks like to clients)."""
        if self._loop is None or self._loop.is_closed():
            return
        done = threading.Event()

        def halt():
            self._die()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_soon(self._loop.stop)
            done.set()

        try:
            self._loop.call_soon_threadsafe(halt)
        except RuntimeError:
            return
        done.wait(5)
        if self._thread:
            self._thread.join(5)

    def _die(self) -> None:
        self.stats["dead"] = True
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            _reset(w)
        self._writers.clear()

    def __enter__(self) -> "MockServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the calling thread (the CLI)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._listen())
        print(f"READY {self.url}", flush=True)
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            pass

    # HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stats["dead"]:
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                try:
                    keep = await self._dispatch(method, path.split("?")[0], raw, writer, keep)
                except _Drop:
                    _reset(writer)
                    return
                if not keep:
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)

    async def _dispatch(self, method: str, path: str, raw: bytes, writer, keep: bool) -> bool:
        st = self.stats
        st["requests"] += 1
        st["by_path"][path] = st["by_path"].get(path, 0) + 1
        o = self.options
        if method == "GET":
            if path.rstrip("/") in ("/v1/models", "/models"):
                owner = {"llamacpp": "llamacpp", "vllm": "vllm"}.get(o.kind, "mock")
                return self._send(writer, 200, {"object": "list", "data": [
                    {"id": o.model, "object": "model", "owned_by": owner, "max_model_len": 8192}]}, keep)
            if path == "/mock/stats":
                return self._send(writer, 200, st, keep)
            return self._send(writer, 404, {"error": f"no route {path}"}, keep)
        if method != "POST":
            return self._send(writer, 405, {"error": "method not allowed"}, keep)
        st["posts"] += 1
        if o.die_after and st["posts"] > o.die_after:
            self._die()
            raise _Drop
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send(writer, 400, {"error": "body is not JSON"}, keep)
        r = self._rng.random()
        if r < o.drop_rate:
            st["dropped"] += 1
            if o.latency:
                await asyncio.sleep(o.latency * self._rng.random())
            raise _Drop
        r -= o.drop_rate
        if r < o.fail_rate:
            st["failed_503"] += 1
            return self._send(writer, 503, {"error": {"message": "overloaded: try again", "code": 503}}, keep)
        r -= o.fail_rate
        if r < o.rate_limit_rate:
            st["rate_limited"] += 1
            return self._send(writer, 429, {"error": {"message": "rate limited", "code": 429}}, keep,
                              extra={"Retry-After": "0"})
        route = path.rstrip("/")
        model_work = route.endswith("/completions")  # chat or text completions; tokenizing is instant, as in vLLM
        st["in_flight"] += model_work
        st["peak_in_flight"] = max(st["peak_in_flight"], st["in_flight"])
        if model_work:
            st["first_model_at"] = st.get("first_model_at") or time.time()
        try:
            if o.latency and model_work:
                await asyncio.sleep(o.latency)
            if st["dead"]:
                raise _Drop
            if route.endswith("/chat/completions"):
                if body.get("stream"):
                    await self._stream(writer, body)
                    st["answered"] += 1
                    return False
                code, answer = self._chat(body)
            elif route.endswith("/completions"):
                code, answer = self._completions(body)
            elif route == "/tokenize":
                code, answer = self._tokenize(body)
            elif route == "/detokenize":
                code, answer = 200, {"prompt": "".join(id_token(i) for i in body.get("tokens") or [])}
            elif route == "/apply-template" and o.kind == "llamacpp":
                code, answer = 200, {"prompt": chat_template(body.get("messages") or [])}
            else:
                code, answer = 404, {"error": f"no route {path}"}
            st["answered"] += code == 200
            return self._send(writer, code, answer, keep)
        finally:
            st["in_flight"] -= model_work
            if model_work:
                st["model_requests"] += 1
                st["last_model_at"] = time.time()

    def _send(self, writer, code: int, body: dict, keep: bool, extra: dict | None = None) -> bool:
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  429: "Too Many Requests", 503: "Service Unavailable"}.get(code, "Error")
        head = [f"HTTP/1.1 {code} {reason}", "Content-Type: application/json", f"Content-Length: {len(data)}",
                "Connection: " + ("keep-alive" if keep else "close")]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return keep

    # endpoints
    def _usage(self, prompt_tokens: int, completion: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}

    def _chat(self, body: dict) -> tuple[int, dict]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, {"error": "messages must be a non-empty list"}
        prompt = chat_template(messages)
        tokens, finish = generated_tokens(messages, body)
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": finish}
        if body.get("logprobs") and self.options.logprobs:
            k = int(body.get("top_logprobs") or 0)
            prev, content = prompt_tokens_last(prompt), []
            for t in tokens:
                entry = {"token": t, "logprob": max(token_logprob(prev, t), -0.7), "bytes": list(t.encode())}
                entry["top_logprobs"] = _top(prev, t, k) if k else []
                content.append(entry)
                prev = t
            choice["logprobs"] = {"content": content}
        else:
            choice["logprobs"] = None
        return 200, {"id": "chatcmpl-mock", "object": "chat.completion", "model": body.get("model") or self.options.model,
                     "choices": [choice], "usage": self._usage(len(tokenize(prompt)), len(tokens))}

    async def _stream(self, writer, body: dict) -> None:
        tokens, finish = generated_tokens(body.get("messages") or [], body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        for i, t in enumerate(tokens):
            chunk = {"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
            writer.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if i % 8 == 7:
                await writer.drain()
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        writer.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        await writer.drain()
        writer.close()

    def _completions(self, body: dict) -> tuple[int, dict]:
        prompt = body.get("prompt", "")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return 400, {"error": "prompt must be a string or a list of strings"}
        want = body.get("logprobs")
        if (want is not None or body.get("echo")) and not self.options.logprobs:
            return 400, {"error": "this server offers no logprobs"}
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        choices, usage_p, usage_c = [], 0, 0
        for i, p in enumerate(prompts):
            gen, finish = generated_tokens(p, body)
            ptoks = tokenize(p)
            usage_p, usage_c = usage_p + len(ptoks), usage_c + len(gen)
            listed = (ptoks if body.get("echo") else []) + gen
            choice = {"index": i, "text": (p if body.get("echo") else "") + "".join(gen), "finish_reason": finish,
                      "logprobs": None}
            if want is not None:
                values, prev = [], (None if body.get("echo") else (ptoks[-1] if ptoks else ""))
                for t in listed:
                    values.append(None if prev is None else token_logprob(prev, t))
                    prev = t
                names = [f"token_id:{token_id(t)}" for t in listed] if as_ids else listed
                choice["logprobs"] = {"tokens": names, "token_logprobs": values,
                                      "top_logprobs": [None if v is None else {n: v} for n, v in zip(names, values)],
                                      "text_offset": []}
            choices.append(choice)
        return 200, {"id": "cmpl-mock", "object": "text_completion", "model": body.get("model") or self.options.model,
                     "choices": choices, "usage": self._usage(usage_p, usage_c)}

    def _tokenize(self, body: dict) -> tuple[int, dict]:
        if isinstance(body.get("messages"), list):
            text = chat_template(body["messages"], bool(body.get("add_generation_prompt", True)))
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif isinstance(body.get("content"), str):  # llama.cpp's spelling
            text = body["content"]
        else:
            return 400, {"error": "give messages or prompt"}
        ids = [token_id(t) for t in tokenize(text)]
        return 200, {"tokens": ids, "count": len(ids), "max_model_len": 8192}


def prompt_tokens_last(prompt: str) -> str:
    toks = tokenize(prompt)
    return toks[-1] if toks else ""


def _reset(writer) -> None:
    """Close with RST (SO_LINGER 0): the client reads 'connection reset', as from a crashed server."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    except (OSError, AttributeError, RuntimeError):
        pass


def fetch_stats(url: str) -> dict:
    """GET /mock/stats of a running mock server (url: its …/v1 base)."""
    import urllib.request

    root = url[:-3] if url.endswith("/v1") else url
    with urllib.request.urlopen(root + "/mock/stats", timeout=10) as resp:  # noqa: S310 - loopback test server
        return json.loads(resp.read())


# -- in its own process ----------------------------------------------------------------------------

class MockProcess:
    """The server as a child process (`python -m cai_core.models.mock_server`)."""

    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc, self.url = proc, url

    def stats(self) -> dict:
        return fetch_stats(self.url)

    def kill(self) -> None:
        """SIGKILL: the kernel resets its connections, as when a replica's machine dies."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    stop = kill

    def __enter__(self) -> "MockProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def cli_args(options: MockOptions, port: int = 0) -> list[str]:
    args = ["--port", str(port), "--latency", str(options.latency), "--fail-rate", str(options.fail_rate),
            "--drop-rate", str(options.drop_rate), "--rate-limit-rate", str(options.rate_limit_rate),
            "--kind", options.kind, "--model", options.model, "--seed", str(options.seed),
            "--die-after", str(options.die_after)]
    return args + ([] if options.logprobs else ["--no-logprobs"])


def start_process(options: MockOptions | None = None, *, port: int = 0, timeout: float = 30.0, **kw) -> MockProcess:
    options = (options or MockOptions(**kw)).check()
    cmd = [sys.executable, "-m", "cai_core.models.mock_server", *cli_args(options, port)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return MockProcess(proc, line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the mock server did not start: {line.strip() or 'no output'}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = MockOptions()
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    p.add_argument("--port", type=int, default=0, help="port (0: a free one; the URL is printed as READY <url>)")
    p.add_argument("--latency", type=float, default=d.latency, help="seconds before each answer")
    p.add_argument("--fail-rate", type=float, default=d.fail_rate, help="share of requests answered 503 overloaded")
    p.add_argument("--drop-rate", type=float, default=d.drop_rate, help="share of connections reset without answer")
    p.add_argument("--rate-limit-rate", type=float, default=d.rate_limit_rate, help="share of requests answered 429")
    p.add_argument("--no-logprobs", action="store_true", help="offer no log-probs (like several hosted APIs)")
    p.add_argument("--kind", choices=KINDS, default=d.kind, help="what /v1/models says owns the model")
    p.add_argument("--model", default=d.model, help="the served model's id")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the fault draws")
    p.add_argument("--die-after", type=int, default=0, help="stop and reset all connections after N POSTs (0: never)")


def options_from_args(args) -> MockOptions:
    return MockOptions(latency=args.latency, fail_rate=args.fail_rate, drop_rate=args.drop_rate,
                       rate_limit_rate=args.rate_limit_rate, logprobs=not args.no_logprobs, kind=args.kind,
                       model=args.model, seed=args.seed, die_after=args.die_after).check()


def serve(args) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the mock server binds loopback only")
    MockServer(options_from_args(args), host=args.host, port=args.port).serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cai_core.models.mock_server", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return serve(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


OPTION_NAMES = tuple(f.name for f in fields(MockOptions))
__all__ = ["MockOptions", "MockServer", "MockProcess", "start_process", "fetch_stats", "asdict"]

if __name__ == "__main__":
    sys.exit(main())
