"""OpenAI-compatible HTTP backend: vLLM, llama.cpp server, TGI, Ollama, hosted APIs.

Only the standard library (urllib), so it works wherever the app does. The spec is the base URL,
optionally with settings after '#': "http://127.0.0.1:8080/v1#model=NAME&template=PATH".

- generate: one /chat/completions request per sample, run concurrently by a thread pool whose
  size the endpoint sets (see CONCURRENCY): servers with continuous batching (vLLM, TGI) get many
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
  fast with the cause instead of a batch of requests each waiting the long timeout.

The API key comes from the argument or CAI_API_KEY / OPENAI_API_KEY and is never stored.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import string
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from cai_core.errors import CaiError
from cai_core.models.backends.base import (
    Backend,
    Completion,
    Conversation,
    GenerationParams,
    apply_stop,
    assistant_prefixes,
    natural_boundary,
    normalise,
)

DEFAULT_TIMEOUT = 120.0
FIRST_REQUEST_TIMEOUT = 30.0   # the first completion: a hung server fails fast (a warm one answers in seconds)
TOP_LOGPROBS = 20
APPROXIMATE_SCORING = "approximate: first-token top-k"

# Requests in flight per endpoint kind (from /v1/models owned_by). Continuous-batching servers
# (vLLM, TGI) serve many at once, so a deep queue is throughput; llama-cpp-python's server handles
# one request at a time, and extra ones only wait on its lock (and time out).
CONCURRENCY = {"vllm": 32, "tgi": 32, "llama-cpp-python": 1}
DEFAULT_CONCURRENCY = 4
SETTINGS = ("model", "template", "concurrency")


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split "http://host:port/v1#model=NAME&template=PATH&concurrency=N" into (base_url, settings)."""
    base, _, fragment = spec.strip().partition("#")
    settings = dict(urllib.parse.parse_qsl(fragment)) if fragment else {}
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise CaiError(f"{spec}: unknown setting(s) {', '.join(sorted(unknown))} after '#' "
                       "(use model=, template=, concurrency=)")
    if "concurrency" in settings:
        try:
            settings["concurrency"] = int(settings["concurrency"])
        except ValueError:
            settings["concurrency"] = 0
        if not 1 <= settings["concurrency"] <= 1024:
            raise CaiError(f"{spec}: concurrency must be a whole number from 1 to 1024")
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CaiError(f"{spec} is not an http(s) URL such as http://127.0.0.1:8080/v1")
    return base.rstrip("/"), settings


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
                 timeout: float = DEFAULT_TIMEOUT, template: str | None = None, concurrency: int | None = None,
                 check: bool = True):
        """concurrency: requests in flight; None lets "#concurrency=N" or the endpoint's kind decide."""
        self.spec = base_url.strip()
        self.base_url, settings = parse_spec(self.spec)
        self.model = model or settings.get("model")
        self.timeout = float(timeout)
        self._concurrency = concurrency or settings.get("concurrency")
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
        self.server_models: list[str] = []
        if check:
            self._discover()

    # -- transport -----------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _root_url(self, path: str) -> str:
        """A path at the server root (llama.cpp puts /apply-template there, not under /v1)."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        return root + path

    def _request(self, url: str, payload: dict | None = None, *, stream: bool = False, timeout: float | None = None):
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)  # noqa: S310 - the user's endpoint
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")[:400].strip()
            hint = " (check CAI_API_KEY / OPENAI_API_KEY)" if exc.code in (401, 403) else ""
            raise HttpStatusError(exc.code, f"{url} answered HTTP {exc.code}{hint}: {body or exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                msg = "connection refused - is the server running on that port?"
            elif isinstance(reason, (socket.timeout, TimeoutError)):
                msg = f"no answer within {timeout or self.timeout:g} s"
            else:
                msg = str(reason)
            raise CaiError(f"cannot reach {url}: {msg}") from None
        except (socket.timeout, TimeoutError):
            raise CaiError(f"cannot reach {url}: no answer within {timeout or self.timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise CaiError(f"cannot reach {url}: {exc}") from None

    def _post(self, path: str, payload: dict, url: str | None = None, timeout: float | None = None) -> dict:
        url = url or self._url(path)
        timeout = timeout or self.timeout
        try:
            with self._request(url, payload, timeout=timeout) as resp:
                raw = resp.read()
        except (socket.timeout, TimeoutError):
            raise CaiError(f"cannot reach {url}: no answer within {timeout:g} s") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CaiError(f"{url} did not answer with JSON: {raw[:200]!r}") from None

    def _discover(self) -> None:
        """Check the endpoint answers (clear error at load time) and learn the served model's name
        and the server's kind (from owned_by, which sets the concurrency)."""
        url = self._url("/models")
        try:
            with self._request(url, timeout=min(self.timeout, 15.0)) as resp:
                raw = resp.read()
        except HttpStatusError as exc:
            if exc.code in (401, 403):
                raise
            return  # some servers have no /models; generation will still tell
        except (socket.timeout, TimeoutError):
            raise CaiError(f"cannot reach {url}: no answer within {min(self.timeout, 15.0):.0f} s") from None
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise CaiError(f"{url} answered with invalid JSON, so this is not a working OpenAI-compatible "
                           f"endpoint (is the URL right, ending in /v1?): {raw[:200]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("data", []), list):
            raise CaiError(f"{url} answered JSON without a model list ('data'): {str(data)[:200]}")
        models = [m for m in data.get("data", []) if isinstance(m, dict)]
        self.server_models = [m.get("id") for m in models if m.get("id")]
        if not self.model and self.server_models:
            self.model = self.server_models[0]
        owners = {str(m.get("owned_by") or "").lower() for m in models}
        if "vllm" in owners:
            self.server_kind = "vllm"
        elif owners & {"tgi", "text-generation-inference"}:
            self.server_kind = "tgi"
        elif "llamacpp" in owners:
            self.server_kind = "llama.cpp"
        elif "me" in owners and any(m.endswith(".gguf") for m in self.server_models):
            self.server_kind = "llama-cpp-python"   # it names the model by its .gguf path, owned by "me"

    @property
    def concurrency(self) -> int:
        """Requests in flight: the explicit setting, else the endpoint kind's (CONCURRENCY)."""
        if self._concurrency:
            return max(1, int(self._concurrency))
        return CONCURRENCY.get(self.server_kind, DEFAULT_CONCURRENCY)

    def _body(self, extra: dict) -> dict:
        body = dict(extra)
        if self.model:
            body["model"] = self.model
        return body

    def probe(self) -> None:
        """One one-token completion under the short first-request timeout, once per backend, before
        the first real request (generate, stream and choice_logprobs call it; get_backend too): a
        broken or hung endpoint ends here with the cause, before a batch of requests waits the long
        timeout and before any caller writes a row for it."""
        with self._probe_lock:
            if self._first_done:
                return
            timeout = min(self.timeout, FIRST_REQUEST_TIMEOUT)
            body = self._body({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0.0})
            try:
                data = self._post("/chat/completions", body, timeout=timeout)
            except CaiError as exc:
                if "no answer within" in str(exc):
                    raise CaiError(f"{exc} to the first completion request: the server accepts connections and "
                                   "lists models but is not generating (still loading, stuck, or overloaded)") from None
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

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(jobs)))) as pool:
            outs = list(pool.map(run, jobs))
        return [outs[i * n:(i + 1) * n] for i in range(len(conversations))]

    def stream(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        url = self._url("/chat/completions")
        body = self._body({"messages": conversation, "stream": True, **self._sampling(params, params.seed)})
        produced = ""
        self.probe()
        resp = self._request(url, body, stream=True)
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
                data = self._post("", {"messages": conversation}, url=self._root_url("/apply-template"))
                if isinstance(data.get("prompt"), str):
                    return data["prompt"]
            except HttpStatusError:
                pass
            self._server_template = False
        if self._server_tokenize:
            # vLLM: the template applied by the server (/tokenize with messages), as text (/detokenize)
            try:
                ids = self._post("", self._body({"messages": conversation, "add_generation_prompt": True}),
                                 url=self._root_url("/tokenize")).get("tokens")
                if isinstance(ids, list) and ids:
                    text = self._post("", self._body({"tokens": ids}), url=self._root_url("/detokenize")).get("prompt")
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
            with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(conversations)))) as pool:
                out = list(pool.map(score, range(len(conversations))))
        except HttpStatusError as exc:
            if exc.code in (400, 404, 422, 501):
                raise self._no_logprobs(str(exc)) from None
            raise
        self._supports_logprobs = True
        return out

    def info(self) -> dict:
        return {
            "spec": self.spec, "kind": "http", "url": self.base_url, "model": self.model,
            "device": "server", "dtype": None, "memory_mb": None,
            "api_key": "set" if self._api_key else "none",
            "logprobs": {None: "unknown", True: "yes", False: "no"}[self._supports_logprobs],
            "server_kind": self.server_kind or "unknown", "concurrency": self.concurrency,
        }


def _lines(resp, url: str, timeout: float):
    """The response's lines; a stalled stream becomes a clear error instead of a raw socket timeout."""
    while True:
        try:
            raw = resp.readline()
        except (socket.timeout, TimeoutError):
            raise CaiError(f"{url} stopped streaming: no data within {timeout:.0f} s") from None
        if not raw:
            return
        yield raw


class HttpStatusError(CaiError):
    """The server answered with an HTTP error status (kept apart so callers can react to 404/400)."""

    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(message)
