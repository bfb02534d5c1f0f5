"""Work in flight: each work item's chain of model requests advances on its own.

A batch (revise, pairs sample, judge, eval-judge, evaluate) hands the dispatcher one *chain* per
work item: a generator that yields `Request`s (generate one conversation, or score options after
it) and receives each answer (`gen.send(result)`), or the request's error (`gen.throw(exc)`; a
chain may catch it, e.g. to leave a violation unknown). Everything a chain does between requests
- store writes included - runs on the caller's thread, so the store is never written from two
threads; only the backend calls run elsewhere.

Two ways to keep the backend busy, chosen by the backend (`Backend.concurrent`):

- a server (HTTP): one request per conversation from a thread pool, `in_flight` requests
  outstanding (`Backend.max_in_flight()`: the endpoint's concurrency); the moment one returns,
  its chain's next request goes out (a prompt's critique follows its answer without waiting for
  the other prompts' answers), and a new chain starts whenever a slot frees up.
- a model in this process (one call at a time): ready requests are grouped into batched calls of
  at most `in_flight` rows, lowest stage first, and chains are admitted in cohorts of `in_flight`;
  so a batch runs exactly the calls the lock-step engine made (answers of prompts 1-8, their
  critiques, their violation questions, their revisions, ...), and sampled text, whose random
  stream the local engines share across a batched call, stays what it was for the same seed and
  batch size.

Results never depend on the schedule for a server: every request carries its own seed. A chain
whose request fails (after the backend's own retries; a failed batched call of a local model is
first tried again item by item, so one bad item never fails its batch-mates) ends as failed
(`on_error`), and the batch goes on; the counts say how many chains ended done, failed, or stopped.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Generator, Iterable

from cai_core.errors import CaiError
from cai_core.models.backends.base import Backend, Conversation, GenerationParams

Chain = Generator["Request", Any, Any]


@dataclass
class Request:
    """One model request of a chain: op "generate" (answer: list[Completion], params.n of them) or
    "choice" (answer: {option: probability} after `prefix`). stage orders batched calls (lowest
    first); requests are batched together only with the same op, stage and settings."""
    op: str
    conversation: Conversation
    params: GenerationParams | None = None
    options: list[str] | None = None
    prefix: str = ""
    stage: float = 0.0
    follow_up: bool = False  # completes the chain's previous step (a stop waits for it: nothing is half stored)
    seconds: float = 0.0   # set when answered: its latency, or its share of a batched call

    def group(self) -> tuple:
        settings = self.params.to_dict() if self.params is not None else None
        return (self.stage, self.op, json.dumps(settings, sort_keys=True), tuple(self.options or ()))

    @property
    def weight(self) -> int:
        """Slots it takes: a generate request of n samples is n server requests."""
        return max(1, int(self.params.n)) if self.op == "generate" and self.params is not None else 1


@dataclass
class Counts:
    """How a dispatch ended: chains done, failed (an error they did not handle), stopped (should_stop
    before they finished), and the model requests sent."""
    done: int = 0
    failed: int = 0
    stopped: int = 0
    requests: int = 0
    calls: int = 0
    max_in_flight: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the report

    def to_dict(self) -> dict:
        return {"done": self.done, "failed": self.failed, "stopped": self.stopped, "requests": self.requests,
                "calls": self.calls, "max_in_flight": self.max_in_flight}


BATCH_SIZE_HELP = ("work in flight: requests outstanding at an endpoint, rows per batched call of a local model "
                   "(default: what the backend serves - the endpoint's concurrency, 8 rows on the CPU)")


def check_batch_size(value: int | None) -> int | None:
    """--batch-size as given (None: the backend decides); a bad value is refused before any work."""
    if value is not None and int(value) < 1:
        raise CaiError("--batch-size must be at least 1")
    return value


def in_flight_for(backend: Backend, override: int | None = None) -> int:
    """The work to keep outstanding: the override (--batch-size) when given, else the backend's."""
    if override is not None:
        if int(override) < 1:
            raise CaiError("--batch-size must be at least 1")
        return int(override)
    try:
        return max(1, int(backend.max_in_flight()))
    except (AttributeError, TypeError, ValueError):
        return 8


def _call(backend: Backend, requests: list[Request]) -> list:
    """One backend call for requests of one group."""
    first = requests[0]
    convs = [r.conversation for r in requests]
    if first.op == "generate":
        out = backend.generate(convs, first.params)
        if len(out) != len(convs):
            raise CaiError(f"the backend answered {len(out)} of {len(convs)} conversations")
        return out
    if first.op == "choice":
        prefixes = [r.prefix for r in requests]
        return backend.choice_logprobs(convs, list(first.options or []),
                                       assistant_prefix=prefixes if len(set(prefixes)) > 1 else prefixes[0])
    raise CaiError(f"unknown request {first.op!r}")


class _Active:
    __slots__ = ("key", "gen", "multi", "values", "left")

    def __init__(self, key, gen: Chain):
        self.key, self.gen = key, gen
        self.multi, self.values, self.left = False, [], 0


def run_chains(backend: Backend, chains: Iterable[tuple[Any, Chain]], *, in_flight: int | None = None,
               should_stop: Callable[[], bool] | None = None,
               on_done: Callable[[Any, Any], None] | None = None,
               on_error: Callable[[Any, BaseException], None] | None = None,
               concurrent: bool | None = None,
               together: Callable[[], ContextManager] | None = None) -> Counts:
    """Run every chain to its end; returns the counts. chains: (key, generator) pairs, started
    lazily in order. on_done(key, value the generator returned); on_error(key, exception) for a
    chain that raised (the dispatch goes on). concurrent: override the backend's mode (tests).
    together: a context for handling a group of answers that came back at once (the store's
    transaction: one commit for all their writes instead of one each)."""
    limit = in_flight_for(backend, in_flight)
    counts = Counts(max_in_flight=0)
    mode = backend.concurrent if concurrent is None else concurrent
    runner = _Concurrent(backend, limit, counts) if mode else _Batched(backend, limit, counts)
    runner.together = together or contextlib.nullcontext
    return runner.run(iter(chains), should_stop or (lambda: False), on_done, on_error)


class _Runner:
    together: Callable[[], ContextManager] = contextlib.nullcontext

    def __init__(self, backend: Backend, limit: int, counts: Counts):
        self.backend, self.limit, self.counts = backend, limit, counts

    def step(self, chain: _Active, value=None, exc: BaseException | None = None, *, stopping: bool,
             on_done, on_error) -> list[Request] | None:
        """Feed a chain its answer (or error); its next requests, or None when it ended."""
        try:
            req = chain.gen.throw(exc) if exc is not None else chain.gen.send(value)
        except StopIteration as stop:
            self.counts.done += 1
            if on_done:
                on_done(chain.key, stop.value)
            return None
        except Exception as err:  # noqa: BLE001 - one item's failure ends that item, not the batch
            self.counts.failed += 1
            if len(self.counts.errors) < 5:
                self.counts.errors.append(f"{chain.key}: {err}")
            if on_error:
                on_error(chain.key, err)
            return None
        multi = isinstance(req, (list, tuple))
        reqs = list(req) if multi else [req]
        if not reqs or not all(isinstance(r, Request) for r in reqs):
            chain.gen.close()
            raise CaiError(f"a work item yielded {type(req).__name__}, not a Request or a list of them")
        if stopping and not any(r.follow_up for r in reqs):
            chain.gen.close()
            self.counts.stopped += 1
            return None
        chain.multi, chain.values, chain.left = multi, [None] * len(reqs), len(reqs)
        return reqs

    def start_next(self, chains, on_done, on_error) -> tuple[_Active, list[Request] | None] | None:
        """The next work item's chain and its first requests; None when there is no more work."""
        try:
            key, gen = next(chains)
        except StopIteration:
            return None
        chain = _Active(key, gen)
        return chain, self.step(chain, None, stopping=False, on_done=on_done, on_error=on_error)

    def answered(self, chain: _Active, index: int, value, exc: BaseException | None, *, stopping: bool,
                 on_done, on_error) -> list[Request] | None:
        """One of a chain's outstanding requests came back; its next requests once all did ([] while
        it still waits, None when it ended). A single request's error is thrown into the chain; a
        list's answers come back as a list holding each answer or its exception."""
        chain.values[index] = exc if exc is not None else value
        chain.left -= 1
        if chain.left:
            return []
        if chain.multi:
            return self.step(chain, chain.values, stopping=stopping, on_done=on_done, on_error=on_error)
        return self.step(chain, None if exc is not None else value, exc, stopping=stopping,
                         on_done=on_done, on_error=on_error)


class _Concurrent(_Runner):
    """One request per conversation, `limit` outstanding, from threads."""

    def run(self, chains, should_stop, on_done, on_error) -> Counts:
        active: dict[Future, tuple[_Active, Request, int]] = {}
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()  # answered requests, in the order they came back
        load = 0
        exhausted = False
        lock = threading.Lock()
        peak = [0, 0]  # requests running now, the most at once

        def call(req: Request):
            with lock:
                peak[0] += req.weight
                peak[1] = max(peak[1], peak[0])
            t0 = time.time()
            try:
                return _call(self.backend, [req])[0]
            finally:
                req.seconds = time.time() - t0
                with lock:
                    peak[0] -= req.weight

        def submit(chain: _Active, reqs: list[Request] | None) -> None:
            nonlocal load
            for index, req in enumerate(reqs or ()):
                fut = pool.submit(call, req)
                active[fut] = (chain, req, index)
                load += req.weight
                self.counts.requests += req.weight
                self.counts.calls += 1
                fut.add_done_callback(finished.put)

        pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="dispatch")
        try:
            while True:
                stopping = should_stop()
                with self.together():
                    while not exhausted and not stopping and load < self.limit:
                        started = self.start_next(chains, on_done, on_error)
                        if started is None:
                            exhausted = True
                            break
                        submit(*started)
                if not active:
                    break
                done = [finished.get()]
                while True:  # everything else that came back meanwhile, in one go
                    try:
                        done.append(finished.get_nowait())
                    except queue.Empty:
                        break
                stopping = should_stop()
                with self.together():
                    for fut in done:
                        chain, req, index = active.pop(fut)
                        load -= req.weight
                        err = fut.exception()
                        submit(chain, self.answered(chain, index, None if err else fut.result(), err,
                                                    stopping=stopping, on_done=on_done, on_error=on_error))
        finally:
            for fut in active:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self.counts.max_in_flight = peak[1]
        return self.counts


class _Batched(_Runner):
    """Batched calls of ready requests, lowest stage first; chains admitted in cohorts of `limit`."""

    def run(self, chains, should_stop, on_done, on_error) -> Counts:
        ready: list[tuple[_Active, Request, int]] = []   # (chain, request, its index in what the chain sent)
        exhausted = False
        while True:
            follow_up = bool(ready) and all(r.follow_up for _, r, _ in ready if r.group() == min(q.group() for _, q, _ in ready))
            if not follow_up and should_stop():  # asked once per batched call, before it
                for chain in {id(c): c for c, _, _ in ready}.values():
                    chain.gen.close()
                    self.counts.stopped += 1
                break
            if not ready and not exhausted:  # a new cohort
                admitted = 0
                while admitted < self.limit:
                    started = self.start_next(chains, on_done, on_error)
                    if started is None:
                        exhausted = True
                        break
                    chain, reqs = started
                    if reqs:  # a chain with nothing to send (stored, or another process's) takes no row
                        ready += [(chain, r, i) for i, r in enumerate(reqs)]
                        admitted += 1
            if not ready:
                break
            group = min(r.group() for _, r, _ in ready)
            batch = [entry for entry in ready if entry[1].group() == group][: self.limit]
            taken = {id(entry) for entry in batch}
            ready = [entry for entry in ready if id(entry) not in taken]
            self.counts.calls += 1
            self.counts.requests += sum(r.weight for _, r, _ in batch)
            self.counts.max_in_flight = max(self.counts.max_in_flight, len(batch))
            t0 = time.time()
            try:
                results = _call(self.backend, [r for _, r, _ in batch])
                errors: list[BaseException | None] = [None] * len(batch)
            except Exception as exc:  # noqa: BLE001 - one item's failure must not fail its batch-mates
                if len(batch) == 1:
                    results, errors = [None], [exc]
                else:  # each alone (out of memory, or one bad item): only what fails alone fails
                    results, errors = [], []
                    for _, r, _ in batch:
                        try:
                            results += _call(self.backend, [r])
                            errors.append(None)
                        except Exception as one:  # noqa: BLE001 - this item fails; the dispatch goes on
                            results.append(None)
                            errors.append(one)
                        self.counts.calls += 1
            for _, r, _ in batch:
                r.seconds = (time.time() - t0) / len(batch)
            with self.together():
                for (chain, _, index), value, err in zip(batch, results, errors):
                    reqs = self.answered(chain, index, value, err, stopping=False, on_done=on_done, on_error=on_error)
                    ready += [(chain, r, i) for i, r in enumerate(reqs or ())]
        return self.counts


def map_requests(backend: Backend, requests: list[Request], *, in_flight: int | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list:
    """Run independent requests; each answer (or the exception it raised) in input order, None
    for requests not sent because should_stop said so."""
    out: list = [None] * len(requests)

    def one(i: int, req: Request):
        out[i] = yield req

    def failed(i, exc):
        out[i] = exc

    run_chains(backend, ((i, one(i, r)) for i, r in enumerate(requests)), in_flight=in_flight,
               should_stop=should_stop, on_error=failed)
    return out
