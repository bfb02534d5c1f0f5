"""OpenAI-compatible HTTP backend: vLLM, llama.cpp server, TGI, Ollama, hosted APIs.

Only the standard library (urllib), so it works wherever the app does. The spec is the base URL,
optionally with settings after '#': "http://127.0.0.1:8080/v1#model=NAME&template=PATH".

- generate: one /chat/completions request per sample, run concurrently by a thread pool whose
  size the endpoint sets (see CONCURRENCY; requests in flight are bounded per replica whatever the
  number of calling threads): servers with continuous batching (vLLM, TGI) get many
  requests in flight, llama-cpp-python's server (one request at a time) gets one; "#concurrency=N"
  overrides. n>1 is not supported by every server, so samples are separate requests.
- stream: /chat/completions with stream=true (server-sent events).
- choice_logprobs: the probability of each option as a continuation of the assistant turn. Where
  the chat-templated prompt text is known (the server applies the template: llama.cpp's
  /apply-template, vLLM's /tokenize with messages + /detokenize; the server's model id is a local
  .gguf; or template=PATH names a .gguf or HF folder), each option is scored EXACTLY, at the
  natural token boundary every engine shares (base.natural_boundary): /completions with echo and
  logprobs returns the server's own tokens and log-probs of the bare prompt and of each
  prompt+option text; the option's score is the sum from the shared boundary on. Otherwise the
  first answer token's top_logprobs from /chat/completions are matched against the options
  ("(A)" -> "A"), which is approximate: `option_scoring()` then says so and judges put it in
  their key. A server that returns no log-probs gets a clear CaiError and `supports_logprobs`
  becomes False.
- faults: /models answering with something that is not JSON is an error at load time, not
  "ready"; before the first real request one one-token completion runs under a short timeout
  (`probe`, FIRST_REQUEST_TIMEOUT), so a server that lists models but hangs on completions fails
  fast with the cause instead of a batch of requests each waiting the long timeout. After that,
  connection errors (refused, reset, dropped), timeouts, 429 and 5xx (RETRY_STATUS) are retried:
  at most RETRIES times per request ("#retries=N"), timeouts TIMEOUT_RETRIES times, after
  BACKOFF_BASE s doubling up to BACKOFF_CAP s with jitter (x0.5-1; a Retry-After counts, capped);
  every fault is counted (`fault_counts`), and a request that still fails raises RequestFailed
  (base.py) with the cause, which a batch stores against its item.
- replicas: "http://a:8000/v1,http://b:8000/v1" is one model served by several endpoints
  (parse_replicas). Each replica keeps its own concurrency (its kind's, or "#concurrency=N"); a
  request goes to the replica with the least outstanding load; one that refuses connections (or
  fails REPLICA_FAILURES times in a row) is left out for REPLICA_COOLDOWN s, doubling, and its
  requests are retried on the others at once. max_in_flight() is the sum of the replicas' concurrency.
- connections are kept alive per replica (http.client; reused when idle < IDLE_REUSE s).

The API key comes from the argument or CAI_API_KEY / OPENAI_API_KEY and is never stored.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import re
import socket
import string
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from cai_core.errors import CaiError
from cai_core.models.backends.base import (
    Backend,
    Completion,
    Conversation,
    GenerationParams,
    RequestFailed,
    apply_stop,
    assistant_prefixes,
    natural_boundary,
    normalise,
)

DEFAULT_TIMEOUT = 120.0
FIRST_REQUEST_TIMEOUT = 30.0   # the first completion: a hung server fails fast (a warm one answers in seconds)
TOP_LOGPROBS = 20
APPROXIMATE_SCORING = "approximate: first-token top-k"

# Requests in flight per endpoint kind (from /v1/models owned_by), per replica. Continuous-batching
# servers (vLLM, TGI) serve many at once (vLLM batches up to 256 sequences by default), so a deep queue
# is throughput: 128 keeps a server that answers in 0.5 s busier than a 32-thread client does, even
# while a prompt's requests wait on each other and the client's CPU is shared (bench_scale: 64 gave a
# ratio of 0.90 on the busy 2-core VM, 128 gave 1.2);
# llama-cpp-python's server handles one request at a time, and extra ones only wait on its lock (and time out).
CONCURRENCY = {"vllm": 128, "tgi": 128, "llama-cpp-python": 1}
DEFAULT_CONCURRENCY = 4
SETTINGS = ("model", "template", "concurrency", "retries", "timeout")
SHARED_SETTINGS = ("model", "template", "retries", "timeout")  # one model: the same for every replica

# Faults (issue 21): what is retried, how often, how long between tries.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 6              # retries of one request after its first try ("#retries=N"; 0: none)
TIMEOUT_RETRIES = 1      # of those, after a timeout (each try may wait the whole timeout)
BACKOFF_BASE = 0.25      # s before the first retry; doubles per retry of the same request
BACKOFF_CAP = 8.0        # s, the longest wait (a Retry-After beyond it is capped too); with jitter x0.5-1
PROBE_RETRIES = 2        # the health probe retries transient faults only a little (fast failure)
REPLICA_FAILURES = 3     # consecutive connection faults/timeouts that leave a replica out for a while
REPLICA_COOLDOWN = 2.0   # s a replica is left out (refused at once), doubling per failure...
REPLICA_COOLDOWN_CAP = 30.0  # ...up to this; then it gets requests again and shows whether it is back
IDLE_REUSE = 4.0         # s a kept-alive connection may sit idle and be reused (uvicorn closes after 5 s)
STALE_AFTER = 1.0        # a reused connection idle this long that fails is retried at once, uncounted
FAULT_KEYS = ("retries", "http_429", "http_503", "http_5xx", "connection", "timeout", "failed", "replica_down")
_REPLICA_SPLIT = re.compile(r"\s*,\s*(?=https?://)")


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split "http://host:port/v1#model=NAME&template=PATH&concurrency=N&retries=N&timeout=S" into
    (base_url, settings). One endpoint; several replicas: parse_replicas."""
    if len(_REPLICA_SPLIT.split(spec.strip())) > 1:
        raise CaiError(f"{spec} names several endpoints: parse it with parse_replicas")
    base, _, fragment = spec.strip().partition("#")
    settings = dict(urllib.parse.parse_qsl(fragment)) if fragment else {}
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise CaiError(f"{spec}: unknown setting(s) {', '.join(sorted(unknown))} after '#' "
                       "(use model=, template=, concurrency=, retries=, timeout=)")
    for key, low, high, what in (("concurrency", 1, 1024, "a whole number from 1 to 1024"),
                                 ("retries", 0, 20, "a whole number from 0 to 20")):
        if key in settings:
            try:
                settings[key] = int(settings[key])
            except ValueError:
                settings[key] = low - 1
            if not low <= settings[key] <= high:
                raise CaiError(f"{spec}: {key} must be {what}")
    if "timeout" in settings:
        try:
            settings["timeout"] = float(settings["timeout"])
        except ValueError:
            settings["timeout"] = 0.0
        if not 0 < settings["timeout"] <= 3600:
            raise CaiError(f"{spec}: timeout must be seconds, more than 0 and at most 3600")
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CaiError(f"{spec} is not an http(s) URL such as http://127.0.0.1:8080/v1")
    return base.rstrip("/"), settings


def parse_replicas(spec: str) -> tuple[list[tuple[str, dict]], dict]:
    """Several replicas of one model, comma-separated: "http://a:8000/v1,http://b:8000/v1#concurrency=16".
    Returns ([(base_url, {"concurrency": n}) per replica], shared settings). Settings after the LAST
    URL apply to every replica (the usual case); settings after an earlier URL are that replica's
    own. model=, template=, retries= and timeout= are one model's: given on several URLs they must
    agree. One URL is the one-endpoint spec (parse_spec)."""
    parts = [p for p in _REPLICA_SPLIT.split(spec.strip())]
    if any(not p for p in parts):
        raise CaiError(f"{spec}: an empty endpoint between commas")
    parsed = [parse_spec(p) for p in parts]
    last = parsed[-1][1]
    shared: dict = {}
    for key in SHARED_SETTINGS:
        values = {str(s[key]) for _, s in parsed if key in s}
        if len(values) > 1:
            raise CaiError(f"{spec}: the replicas disagree on {key}= ({', '.join(sorted(values))}); "
                           "they serve one model, so give it once after the last URL")
        found = [s[key] for _, s in parsed if key in s]
        if found:
            shared[key] = found[0]
    urls = [base for base, _ in parsed]
    if len(set(urls)) != len(urls):
        raise CaiError(f"{spec}: an endpoint is named twice")
    replicas = [(base, {"concurrency": s.get("concurrency", last.get("concurrency"))}) for base, s in parsed]
    return replicas, shared


class Replica:
    """One endpoint of a (possibly replicated) model, with its load and health (HttpBackend's lock guards them)."""

    def __init__(self, url: str, concurrency: int | None = None):
        self.url = url
        parsed = urllib.parse.urlparse(url)
        self.scheme, self.host = parsed.scheme, parsed.hostname or ""
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.root_prefix = self.prefix[:-3] if self.prefix.endswith("/v1") else self.prefix
        self.origin = f"{parsed.scheme}://{parsed.netloc}"
        self.explicit_concurrency = concurrency
        self.server_kind = ""
        self.outstanding = 0          # requests sent and not yet answered (least-outstanding routing)
        self.failures = 0             # consecutive connection faults / timeouts
        self.down_until = 0.0         # time.monotonic() before which it gets no requests
        self.idle: list = []          # kept-alive connections: (HTTPConnection, time last used)

    @property
    def concurrency(self) -> int:
        if self.explicit_concurrency:
            return max(1, int(self.explicit_concurrency))
        return CONCURRENCY.get(self.server_kind, DEFAULT_CONCURRENCY)

    def path(self, path: str, root: bool = False) -> str:
        return (self.root_prefix if root else self.prefix) + path

    def url_of(self, path: str, root: bool = False) -> str:
        return self.origin + self.path(path, root)

    def info(self) -> dict:
        return {"url": self.url, "server_kind": self.server_kind or "unknown", "concurrency": self.concurrency,
                "up": self.down_until <= time.monotonic(), "outstanding": self.outstanding}


class _Fault(Exception):
    """One failed try worth retrying: kind is timeout | refused | connection | http."""

    def __init__(self, kind: str, message: str, reason: str, status: "HttpStatusError | None" = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.reason, self.status, self.retry_after = kind, message, reason, status, retry_after

    @property
    def counter(self) -> str:
        if self.kind in ("refused", "connection"):
            return "connection"
        if self.kind == "timeout":
            return "timeout"
        code = self.status.code if self.status else 0
        return {429: "http_429", 503: "http_503"}.get(code, "http_5xx")


def _connection_reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut off"
    text = str(exc) or type(exc).__name__
    return text


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def env_api_key() -> str | None:
    return os.environ.get("CAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ChatTemplate:
    """A model's chat template rendered locally (sandboxed Jinja, as transformers and llama.cpp do)."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = "", source: str = ""):
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class _Generation(ext.Extension):  # HF's {% generation %} marker: render its body as is
            tags = {"generation"}

            def parse(self, parser):
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[_Generation, ext.loopcontrols])
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
        self._template = env.from_string(template)
        self.bos_token, self.eos_token, self.source = bos_token, eos_token, source

    def render(self, conversation: Conversation) -> str:
        def raise_exception(message):
            raise CaiError(f"chat template from {self.source}: {message}")

        return self._template.render(messages=conversation, add_generation_prompt=True, bos_token=self.bos_token,
                                     eos_token=self.eos_token, raise_exception=raise_exception)

    @classmethod
    def from_path(cls, path: str | Path) -> "ChatTemplate":
        """Read the template from a .gguf file's metadata or an HF folder's tokenizer files."""
        path = Path(path).expanduser()
        if not path.exists():
            raise CaiError(f"chat template source {path} does not exist")
        if path.is_file() and path.suffix == ".gguf":
            return cls._from_gguf(path)
        if path.is_dir():
            cfg_path = path / "tokenizer_config.json"
            cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
            template = cfg.get("chat_template")
            jinja = path / "chat_template.jinja"
            if not template and jinja.exists():
                template = jinja.read_text()
            if template:
                def tok(v):
                    return v.get("content", "") if isinstance(v, dict) else (v or "")
                return cls(template, tok(cfg.get("bos_token")), tok(cfg.get("eos_token")), str(path))
        raise CaiError(f"{path} has no chat template (give a .gguf file or an HF model folder)")

    @classmethod
    def _from_gguf(cls, path: Path) -> "ChatTemplate":
        try:
            from gguf import GGUFReader

            reader = GGUFReader(str(path))

            def field(name):
                f = reader.fields.get(name)
                return None if f is None else f.parts[f.data[0]]

            raw = field("tokenizer.chat_template")
            if raw is None:
                raise CaiError(f"{path} has no chat template in its metadata")
            tokens = reader.fields.get("tokenizer.ggml.tokens")

            def token_text(key):
                idx = field(key)
                if idx is None or tokens is None:
                    return ""
                return bytes(tokens.parts[tokens.data[int(idx[0])]]).decode("utf-8", "replace")

            return cls(bytes(raw).decode("utf-8"), token_text("tokenizer.ggml.bos_token_id"),
                       token_text("tokenizer.ggml.eos_token_id"), str(path))
        except CaiError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is one clear message
            raise CaiError(f"cannot read the chat template from {path}: {exc}") from exc


def _option_key(option: str, common_prefix: str, common_suffix: str) -> str:
    core = option[len(common_prefix): len(option) - len(common_suffix)] if common_suffix else option[len(common_prefix):]
    return _norm(core) or _norm(option)


def _norm(text: str) -> str:
    return text.strip().strip(string.punctuation + " ").strip().lower()


class HttpBackend(Backend):
    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None,
                 timeout: float | None = None, template: str | None = None, concurrency: int | None = None,
                 check: bool = True, retries: int | None = None):
        """base_url: the spec, one endpoint or several replicas of one model separated by commas
        (parse_replicas). concurrency: requests in flight per replica; None lets "#concurrency=N" or
        the endpoint's kind decide. retries: retries of a failed request (RETRIES; "#retries=N")."""
        self.spec = base_url.strip()
        parts, settings = parse_replicas(self.spec)
        self.replicas = [Replica(url, concurrency or own.get("concurrency")) for url, own in parts]
        self.base_url = self.replicas[0].url
        self.model = model or settings.get("model")
        self.timeout = float(timeout or settings.get("timeout") or DEFAULT_TIMEOUT)
        self.retries = RETRIES if retries is None and "retries" not in settings else int(
            settings["retries"] if retries is None else retries)
        self.server_kind = ""               # vllm | tgi | llama-cpp-python | llama.cpp | "" (unknown)
        self._first_done = False            # the probe's completion succeeded (see probe)
        self._probe_lock = threading.Lock()
        self._api_key = api_key or env_api_key()
        self._template_source = template or settings.get("template")
        self._template: ChatTemplate | None = None
        self._template_resolved = False
        self._server_template = True        # llama.cpp's /apply-template, until it answers 404
        self._server_tokenize = True        # vLLM's /tokenize + /detokenize, until they answer 404
        self._approximate = False           # an option was scored from first-token top-k
        self._supports_logprobs: bool | None = None
        self._lock = threading.Lock()
        self._slots = threading.Condition()  # guards every replica's outstanding / down_until / idle
        self._faults: dict[str, int] = dict.fromkeys(FAULT_KEYS, 0)
        self._rng = random.Random()
        self.server_models: list[str] = []
        if check:
            self._discover()

    # -- transport -----------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _root_url(self, path: str) -> str:
        """A path at the server root (llama.cpp puts /apply-template there, not under /v1)."""
        return self.replicas[0].url_of(path, root=True)

    def fault_counts(self) -> dict:
        """Faults met and what was done about them, since this backend was made: retries (requests
        sent again), http_429, http_503, http_5xx (other 5xx and 408), connection (reset, dropped,
        refused), timeout, failed (requests given up: RequestFailed), replica_down (a replica left
        out for a while after it refused or kept dropping connections)."""
        with self._slots:
            return dict(self._faults)

    def _count(self, key: str, n: int = 1) -> None:
        with self._slots:
            self._faults[key] = self._faults.get(key, 0) + n

    def _acquire(self, avoid: "Replica | None" = None) -> "Replica":
        """A slot on the replica with the least outstanding load (relative to its concurrency) among
        those up; `avoid` (the replica a request just failed on) only when no other has room. Waits
        while every replica is full; while all are down, until the first is due back."""
        with self._slots:
            while True:
                now = time.monotonic()
                up = [r for r in self.replicas if r.down_until <= now]
                if not up:
                    self._slots.wait(max(0.01, min(r.down_until for r in self.replicas) - now))
                    continue
                free = [r for r in up if r.outstanding < r.concurrency]
                others = [r for r in free if r is not avoid]
                if others:
                    free = others
                if free:
                    best = min(free, key=lambda r: (r.outstanding / r.concurrency, r.outstanding))
                    best.outstanding += 1
                    return best
                self._slots.wait(0.5)

    def _release(self, replica: "Replica", fault: "_Fault | None" = None) -> None:
        with self._slots:
            replica.outstanding -= 1
            if fault is None:
                replica.failures = 0
            elif fault.kind in ("refused", "connection", "timeout") and len(self.replicas) > 1:
                # several replicas: one that refuses (not listening) or keeps failing is left out for
                # a while, doubling; its requests go to the others. One replica is never left out:
                # there is nowhere else to go, and the request's own backoff paces it.
                replica.failures += 1
                if fault.kind == "refused" or replica.failures >= REPLICA_FAILURES:
                    if replica.down_until <= time.monotonic():
                        self._faults["replica_down"] += 1
                    pause = min(REPLICA_COOLDOWN_CAP, REPLICA_COOLDOWN * 2 ** min(10, replica.failures - 1))
                    replica.down_until = time.monotonic() + pause
            self._slots.notify_all()

    def _connection(self, replica: "Replica", timeout: float, fresh: bool = False):
        """A kept-alive connection to the replica (idle less than IDLE_REUSE s), else (or when
        `fresh`) a new one; returns (connection, seconds it sat idle or None when new)."""
        now = time.monotonic()
        conn, idle = None, None
        with self._slots:
            while replica.idle and not fresh:
                c, since = replica.idle.pop()
                if now - since < IDLE_REUSE:
                    conn, idle = c, now - since
                    break
                c.close()
        if conn is None:
            cls = http.client.HTTPSConnection if replica.scheme == "https" else http.client.HTTPConnection
            conn = cls(replica.host, replica.port, timeout=timeout)
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        return conn, idle

    def _keep(self, replica: "Replica", conn) -> None:
        with self._slots:
            if len(replica.idle) < replica.concurrency + 4:
                replica.idle.append((conn, time.monotonic()))
                return
        conn.close()

    def _headers(self, stream: bool) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _send(self, replica: "Replica", path: str, payload: dict | None, *, root: bool, timeout: float,
              stream: bool = False):
        """One attempt on one replica: the body (bytes), or for a stream (connection, response).
        Faults worth retrying raise _Fault; other HTTP errors HttpStatusError."""
        url = replica.url_of(path, root)
        data = json.dumps(payload).encode() if payload is not None else None
        method = "POST" if data is not None else "GET"
        for fresh_try in (False, True):
            conn, idle = self._connection(replica, timeout, fresh=fresh_try)
            try:
                conn.request(method, replica.path(path, root), body=data, headers=self._headers(stream))
                resp = conn.getresponse()
                if stream and resp.status < 400:
                    return conn, resp
                raw = resp.read()
                break
            except (socket.timeout, TimeoutError):
                conn.close()
                raise _Fault("timeout", f"cannot reach {url}: no answer within {timeout:g} s", "timeout") from None
            except ConnectionRefusedError:
                conn.close()
                raise _Fault("refused", f"cannot reach {url}: connection refused - is the server running on "
                                        "that port?", "connection refused") from None
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                if idle is not None and idle > STALE_AFTER and not fresh_try:
                    continue  # a kept-alive connection the server closed while idle: once more, on a new one
                reason = _connection_reason(exc)
                raise _Fault("connection", f"cannot reach {url}: {reason}", reason) from None
        if resp.status >= 400:
            if resp.will_close:
                conn.close()
            else:
                self._keep(replica, conn)
            body = raw.decode("utf-8", "replace")[:400].strip()
            hint = " (check CAI_API_KEY / OPENAI_API_KEY)" if resp.status in (401, 403) else ""
            error = HttpStatusError(resp.status, f"{url} answered HTTP {resp.status}{hint}: {body or resp.reason}")
            if resp.status in RETRY_STATUS:
                raise _Fault("http", str(error), f"HTTP {resp.status}", status=error,
                             retry_after=_retry_after(resp.getheader("Retry-After")))
            raise error
        if resp.will_close:
            conn.close()
        else:
            self._keep(replica, conn)
        return raw

    def _call(self, path: str, payload: dict | None = None, *, root: bool = False, timeout: float | None = None,
              stream: bool = False, probe: bool = False):
        """Send a request with retries: connection faults, timeouts, 429 and 5xx are tried again
        (at most `retries` times, timeouts TIMEOUT_RETRIES times), after a capped exponential
        backoff with jitter (honouring Retry-After up to the cap), on the least-loaded replica other
        than the one that failed where there is one. Every fault is counted (fault_counts); a request
        that still fails raises RequestFailed. The probe gives up at once on a timeout (a hung
        server), and on a refusal when there is no other replica (fast failure at load time).
        Returns the body, or for a stream (replica, connection, response) - the caller then
        releases the replica's slot (_release)."""
        timeout = timeout or self.timeout
        attempt, timeouts, avoid = 0, 0, None
        while True:
            attempt += 1
            replica = self._acquire(avoid)
            try:
                out = self._send(replica, path, payload, root=root, timeout=timeout, stream=stream)
            except _Fault as fault:
                self._release(replica, fault)
                self._count(fault.counter)
                timeouts += fault.kind == "timeout"
                limit = PROBE_RETRIES if probe else self.retries
                give_up = attempt > limit or timeouts > TIMEOUT_RETRIES
                if probe and (fault.kind == "timeout" or (fault.kind == "refused" and len(self.replicas) == 1)):
                    give_up = True
                if give_up:
                    self._count("failed")
                    tail = f" (gave up after {attempt} tries)" if attempt > 1 else ""
                    raise RequestFailed(fault.message + tail, reason=fault.reason, attempts=attempt,
                                        code=fault.status.code if fault.status else None) from None
                self._count("retries")
                avoid = replica
                time.sleep(self._backoff(attempt, fault))
                continue
            except BaseException:
                self._release(replica)
                raise
            if stream:
                return replica, out[0], out[1]
            self._release(replica)
            return out

    def _backoff(self, attempt: int, fault: "_Fault") -> float:
        """Seconds before retry number `attempt`: BACKOFF_BASE doubling, capped at BACKOFF_CAP, with
        jitter (half to all of it); the first retry of a request goes at once to another replica
        when there is one up; a 429/503's Retry-After counts up to the cap."""
        if attempt == 1 and len(self.replicas) > 1:
            now = time.monotonic()
            with self._slots:
                if sum(r.down_until <= now for r in self.replicas) > 1 or fault.kind == "refused":
                    return 0.0
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        with self._slots:
            delay *= 0.5 + 0.5 * self._rng.random()
        if fault.retry_after is not None:
            delay = max(delay, min(BACKOFF_CAP, fault.retry_after))
        return delay

    def _post(self, path: str, payload: dict, *, root: bool = False, timeout: float | None = None,
              probe: bool = False) -> dict:
        raw = self._call(path, payload, root=root, timeout=timeout, probe=probe)
        try:
            return json.loads(raw)
        except ValueError:
            url = self.replicas[0].url_of(path, root)
            raise CaiError(f"{url} did not answer with JSON: {raw[:200]!r}") from None

    def _discover(self) -> None:
        """Check the endpoint answers (clear error at load time) and learn the served model's name
        and the server's kind (from owned_by, which sets the concurrency). With several replicas,
        one that cannot be reached is left out for now (its requests go to the others) as long as
        one answers; kinds are learnt per replica."""
        errors: list[CaiError] = []
        for replica in self.replicas:
            try:
                self._discover_one(replica)
            except _Fault as fault:
                errors.append(CaiError(fault.message))
                with self._slots:
                    replica.failures = REPLICA_FAILURES
                    replica.down_until = time.monotonic() + REPLICA_COOLDOWN
                    self._faults["replica_down"] += 1
        if len(errors) == len(self.replicas):
            raise errors[0]
        known = [r.server_kind for r in self.replicas if r.server_kind]
        for replica in self.replicas:  # a replica not reached yet is taken to be what the others are
            if not replica.server_kind and known and replica.down_until > 0:
                replica.server_kind = known[0]
        self.server_kind = known[0] if known else ""

    def _discover_one(self, replica: "Replica") -> None:
        url = replica.url_of("/models")
        timeout = min(self.timeout, 15.0)
        try:
            raw = self._send(replica, "/models", None, root=False, timeout=timeout)
        except HttpStatusError as exc:
            if exc.code in (401, 403):
                raise
            return  # some servers have no /models; generation will still tell
        except _Fault as fault:
            if fault.status is not None and fault.status.code not in (408, 429, 503):
                return  # a 5xx on /models: generation will still tell
            raise
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise CaiError(f"{url} answered with invalid JSON, so this is not a working OpenAI-compatible "
                           f"endpoint (is the URL right, ending in /v1?): {raw[:200]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("data", []), list):
            raise CaiError(f"{url} answered JSON without a model list ('data'): {str(data)[:200]}")
        models = [m for m in data.get("data", []) if isinstance(m, dict)]
        ids = [m.get("id") for m in models if m.get("id")]
        if not self.server_models:
            self.server_models = ids
        if not self.model and ids:
            self.model = ids[0]
        owners = {str(m.get("owned_by") or "").lower() for m in models}
        if "vllm" in owners:
            replica.server_kind = "vllm"
        elif owners & {"tgi", "text-generation-inference"}:
            replica.server_kind = "tgi"
        elif "llamacpp" in owners:
            replica.server_kind = "llama.cpp"
        elif "me" in owners and any(m.endswith(".gguf") for m in ids):
            replica.server_kind = "llama-cpp-python"   # it names the model by its .gguf path, owned by "me"

    @property
    def concurrency(self) -> int:
        """Requests in flight over all replicas: each replica's explicit setting, else its kind's (CONCURRENCY)."""
        return sum(r.concurrency for r in self.replicas)

    def max_in_flight(self) -> int:
        """Requests worth keeping outstanding (dispatch): the sum of the replicas' concurrency."""
        return self.concurrency

    @property
    def concurrent(self) -> bool:
        return True  # the server serves separate requests at once: one per conversation, from threads

    def _body(self, extra: dict) -> dict:
        body = dict(extra)
        if self.model:
            body["model"] = self.model
        return body

    def probe(self) -> None:
        """One one-token completion under the short first-request timeout, once per backend, before
        the first real request (generate, stream and choice_logprobs call it; get_backend too): a
        broken or hung endpoint ends here with the cause, before a batch of requests waits the long
        timeout and before any caller writes a row for it. Transient faults (503, 429, a dropped
        connection) are retried a little (PROBE_RETRIES); a hang or a refusal is not."""
        with self._probe_lock:
            if self._first_done:
                return
            timeout = min(self.timeout, FIRST_REQUEST_TIMEOUT)
            body = self._body({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0.0})
            try:
                data = self._post("/chat/completions", body, timeout=timeout, probe=True)
            except RequestFailed as exc:
                if exc.reason == "timeout":
                    raise RequestFailed(f"{exc} to the first completion request: the server accepts connections and "
                                        "lists models but is not generating (still loading, stuck, or overloaded)",
                                        reason=exc.reason, attempts=exc.attempts) from None
                raise
            if not isinstance(data, dict) or not data.get("choices"):
                raise CaiError(f"{self._url('/chat/completions')} answered without a completion: {str(data)[:200]}")
            self._first_done = True

    # -- generation ----------------------------------------------------------------------------
    def _sampling(self, params: GenerationParams, seed: int | None) -> dict:
        body: dict = {"max_tokens": int(params.max_new_tokens)}
        if params.temperature and params.temperature > 0:
            body.update(temperature=float(params.temperature), top_p=float(params.top_p))
        else:
            body.update(temperature=0.0)
        if seed is not None:
            body["seed"] = int(seed)
        if params.stop:
            body["stop"] = list(params.stop)[:4]  # the OpenAI API allows up to 4; all are applied below too
        return body

    def _one(self, conversation: Conversation, params: GenerationParams, seed: int | None) -> Completion:
        data = self._post("/chat/completions", self._body({"messages": conversation, **self._sampling(params, seed)}))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError):
            raise CaiError(f"{self._url('/chat/completions')} answered without a message: {str(data)[:200]}") from None
        text, stopped = apply_stop(text, params.stop)
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        finish = "stop" if stopped else ("length" if choice.get("finish_reason") == "length" else "stop")
        return Completion(text=text.strip(), tokens=tokens, finish_reason=finish)

    def generate(self, conversations: list[Conversation], params: GenerationParams) -> list[list[Completion]]:
        self.probe()
        n = max(1, int(params.n))
        jobs = [(i, j) for i in range(len(conversations)) for j in range(n)]

        def run(job):
            i, j = job
            seed = None if params.seed is None else params.seed + j
            return self._one(conversations[i], params, seed)

        if len(jobs) == 1:  # the dispatcher's per-item call: no pool of one thread
            outs = [run(jobs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(jobs)))) as pool:
                outs = list(pool.map(run, jobs))
        return [outs[i * n:(i + 1) * n] for i in range(len(conversations))]

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        body = self._body({"messages": conversation, "stream": True, **self._sampling(params, params.seed)})
        produced = ""
        self.probe()
        # faults before the first byte are retried as any request's; a stream cut off midway is an error
        replica, conn, resp = self._call("/chat/completions", body, stream=True)
        url = replica.url_of("/chat/completions")
        try:
            for raw in _lines(resp, url, self.timeout):
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if "error" in event:
                    raise CaiError(f"{url} reported an error while streaming: {event['error']}")
                choices = event.get("choices") or [{}]
                piece = (choices[0].get("delta") or {}).get("content") or ""
                if not piece:
                    continue
                cut, stopped = apply_stop(produced + piece, params.stop)
                if stopped:
                    if len(cut) > len(produced):
                        yield cut[len(produced):]
                    return
                produced += piece
                yield piece
        finally:
            resp.close()
            conn.close()
            self._release(replica)

    # -- option probabilities ------------------------------------------------------------------
    @property
    def supports_logprobs(self) -> bool:
        return self._supports_logprobs is not False

    def _no_logprobs(self, why: str) -> CaiError:
        self._supports_logprobs = False
        return CaiError(f"{self.base_url} offers no log-probs ({why}); use a judge style that parses the "
                        "answer text, or a server with logprobs (vLLM, llama.cpp)")

    def _resolve_template(self) -> None:
        with self._lock:
            if self._template_resolved:
                return
            source = self._template_source
            if not source and is_loopback(self.base_url):
                # llama-cpp-python names the model by its file path: the same .gguf carries the template
                local = [m for m in self.server_models if m.endswith(".gguf") and Path(m).is_file()]
                source = local[0] if local else None
            if source:
                self._template = ChatTemplate.from_path(source)
            self._template_resolved = True

    def prompt_text(self, conversation: Conversation) -> str | None:
        """The chat-templated prompt, or None where neither we nor the server can produce it."""
        self._resolve_template()
        if self._template is not None:
            return self._template.render(conversation)
        if self._server_template and self.server_kind != "vllm":
            try:
                data = self._post("/apply-template", {"messages": conversation}, root=True)
                if isinstance(data.get("prompt"), str):
                    return data["prompt"]
            except HttpStatusError:
                pass
            self._server_template = False
        if self._server_tokenize:
            # vLLM: the template applied by the server (/tokenize with messages), as text (/detokenize)
            try:
                ids = self._post("/tokenize", self._body({"messages": conversation, "add_generation_prompt": True}),
                                 root=True).get("tokens")
                if isinstance(ids, list) and ids:
                    text = self._post("/detokenize", self._body({"tokens": ids}), root=True).get("prompt")
                    if isinstance(text, str):
                        return text
            except CaiError:  # not vLLM (404, an HTML page, ...): the template stays unknown
                pass
            self._server_tokenize = False
        return None

    def option_scoring(self) -> str:
        """'exact' where the templated prompt is known (or nothing approximate has been used yet);
        otherwise APPROXIMATE_SCORING. Asks the server once (a one-message template probe)."""
        if self._approximate:
            return APPROXIMATE_SCORING
        try:
            known = self.prompt_text([{"role": "user", "content": "Hi"}]) is not None
        except CaiError:
            known = False
        return "exact" if known else APPROXIMATE_SCORING

    def _echo(self, texts: list[str]) -> list[tuple[list, list]]:
        """(tokens, log-probs) of each text as the server tokenises and scores it (/completions with
        echo); the first token's log-prob is None. vLLM takes all texts in one request and names
        tokens by id; other servers get one request per text and name tokens by their text."""
        vllm = self.server_kind == "vllm"
        body = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        if vllm:  # the templated text already holds its special tokens (never a second BOS); with echo,
            # max_tokens 0 returns exactly the prompt's tokens (a generated EOS could otherwise blur the cut)
            body.update(max_tokens=0, add_special_tokens=False, return_tokens_as_token_ids=True)
        batches = [texts] if vllm else [[t] for t in texts]
        out: list[tuple[list, list]] = []
        for batch in batches:
            data = self._post("/completions", self._body({**body, "prompt": batch if vllm else batch[0]}))
            choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(batch):
                raise CaiError(f"{self._url('/completions')} answered {len(choices)} choices for {len(batch)} prompts")
            usage = data.get("usage") or {}
            for choice in choices:
                lp = choice.get("logprobs")
                if not lp or not lp.get("tokens") or not lp.get("token_logprobs"):
                    raise self._no_logprobs("/completions returned no logprobs with echo")
                tokens, values = list(lp["tokens"]), list(lp["token_logprobs"])
                if vllm:
                    n = len(tokens)
                else:  # the generated token(s) follow the echoed prompt. Not usage.prompt_tokens: llama-cpp-python
                    # leaves the tokens whose id is the model's BOS out of the echoed list (SmolLM2's BOS is
                    # <|im_start|>, in every turn), so the prompt's count would reach into the generated token
                    n = len(tokens) - int(usage.get("completion_tokens", 1) or 0)
                out.append((tokens[:n], values[:n]))
        return out

    def _score_exact(self, text: str, options: list[str]) -> dict[str, float]:
        """log P(option | text) per option at the natural token boundary (base.natural_boundary)."""
        (bare, _), *fulls = self._echo([text] + [text + o for o in options])
        boundary = natural_boundary(bare, [tokens for tokens, _ in fulls])
        scores = {}
        for option, (tokens, values) in zip(options, fulls):
            part = values[boundary:]
            if any(v is None for v in part):
                raise CaiError(f"{self.base_url}: the server gave no log-prob for a token of option {option!r}")
            scores[option] = float(sum(part))
        return scores

    def _score_first_token(self, conversation: Conversation, options: list[str]) -> dict[str, float]:
        """Match the first answer token's top log-probs against the options' distinctive part."""
        data = self._post("/chat/completions", self._body({
            "messages": conversation, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }))
        choice = (data.get("choices") or [{}])[0]
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            raise self._no_logprobs("/chat/completions returned no logprobs")
        prefix = os.path.commonprefix(options)
        suffix = os.path.commonprefix([o[::-1] for o in options])[::-1]
        keys = {o: _option_key(o, prefix, suffix) for o in options}
        mass = {o: 0.0 for o in options}
        import math

        for cand in content[0].get("top_logprobs") or []:
            t = _norm(cand.get("token") or "")
            for o, k in keys.items():
                if t and t == k:
                    mass[o] += math.exp(float(cand["logprob"]))
        if not any(mass.values()):
            seen = [c.get("token") for c in content[0].get("top_logprobs") or []][:8]
            raise CaiError(f"{self.base_url}: none of the options {options} is among the model's likely first "
                           f"tokens {seen}; give the endpoint a chat template (#template=PATH) for exact scoring")
        floor = min(v for v in mass.values() if v > 0) * 1e-3
        return normalise({o: math.log(max(v, floor)) for o, v in mass.items()})

    def choice_logprobs(self, conversations: list[Conversation], options: list[str],
                        assistant_prefix: str | list[str] = "") -> list[dict[str, float]]:
        if not options:
            raise CaiError("choice_logprobs needs at least one option")
        prefixes = assistant_prefixes(conversations, assistant_prefix)
        if self._supports_logprobs is False:
            raise self._no_logprobs("an earlier request returned none")
        self.probe()
        prompts = [self.prompt_text(c) for c in conversations] if conversations else []
        exact = all(p is not None for p in prompts)

        def score(i):
            if exact:
                return normalise(self._score_exact(prompts[i] + prefixes[i], options))
            self._approximate = True
            return self._score_first_token(conversations[i], options)

        try:
            if len(conversations) == 1:
                out = [score(0)]
            else:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(conversations)))) as pool:
                    out = list(pool.map(score, range(len(conversations))))
        except HttpStatusError as exc:
            if exc.code in (400, 404, 422, 501):
                raise self._no_logprobs(str(exc)) from None
            raise
        self._supports_logprobs = True
        return out

    def close(self) -> None:
        """Close the kept-alive connections (unload)."""
        with self._slots:
            idle = [conn for r in self.replicas for conn, _ in r.idle]
            for r in self.replicas:
                r.idle.clear()
        for conn in idle:
            conn.close()

    def info(self) -> dict:
        return {
            "spec": self.spec, "kind": "http", "url": ",".join(r.url for r in self.replicas), "model": self.model,
            "device": "server", "dtype": None, "memory_mb": None,
            "api_key": "set" if self._api_key else "none",
            "logprobs": {None: "unknown", True: "yes", False: "no"}[self._supports_logprobs],
            "server_kind": self.server_kind or "unknown", "concurrency": self.concurrency,
            "replicas": [r.info() for r in self.replicas] if len(self.replicas) > 1 else None,
            "faults": self.fault_counts(),
        }


def _lines(resp, url: str, timeout: float):
    """The response's lines; a stalled stream becomes a clear error instead of a raw socket timeout."""
    while True:
        try:
            raw = resp.readline()
        except (socket.timeout, TimeoutError):
            raise CaiError(f"{url} stopped streaming: no data within {timeout:.0f} s") from None
        except (http.client.HTTPException, OSError) as exc:
            raise RequestFailed(f"{url} stopped streaming: {_connection_reason(exc)}", reason="connection",
                                attempts=1) from None
        if not raw:
            return
        yield raw


class HttpStatusError(CaiError):
    """The server answered with an HTTP error status (kept apart so callers can react to 404/400)."""

    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)
