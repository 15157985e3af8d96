"""Services a generating stage needs during a real run (absent in dry runs such as `synthgen render`)."""

from __future__ import annotations

from collections.abc import Coroutine, Generator, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from queue import SimpleQueue
from typing import Any, TypeVar

from synthgen.aio import LoopThread
from synthgen.backends.base import Backend, ChatRequest, Completion
from synthgen.errors import RetryableBackendError
from synthgen.hashing import stable_int
from synthgen.stats import RunStats

T = TypeVar("T")
# Finished results held back until every earlier one is done. Records are a few KB, so the buffer stays within a few
# hundred MB; at 500 req/s a request hung for 30 s lets 15,000 finish behind it, far below the bound, so the window
# keeps flowing. Only a request stuck for longer than this many others take pauses new submissions.
REORDER_LIMIT = 100_000


@dataclass
class Runtime:
    """The cached backend, the loop it runs on, and the model requests go to; `max_pending` bounds the requests
    submitted and unfinished, `reorder_limit` the finished ones waiting for an earlier one (see `stream`)."""

    backend: Backend
    loop: LoopThread
    model: str
    backend_kind: str
    max_pending: int
    identity: dict[str, Any] = field(default_factory=dict)  # what decides the backend's answers (the cache key's part)
    reorder_limit: int = REORDER_LIMIT
    named: dict[str, Runtime] = field(default_factory=dict)  # the recipe's `backends:` (e.g. a judge's), by name

    def for_backend(self, name: str | None) -> Runtime:
        """The runtime of the recipe's backend `name` (`backends:`), or this one (the main backend) for None."""
        return self if name is None else self.named[name]

    def request(self, messages: list[dict[str, str]], sampling: dict[str, Any], seed_parts: Sequence[Any],
                schema: dict[str, Any] | None = None, sample: int = 0, attempt: int = 0) -> ChatRequest:
        """A request whose `seed` is derived from `seed_parts`, `sample` and `attempt`: the same on every run,
        so the cache replays it, and different per sample and attempt."""
        seed = stable_int(*seed_parts, sample, attempt) % 2**31
        return ChatRequest(self.model, messages, {**sampling, "seed": seed}, schema, sample, attempt)

    def complete_all(self, requests: Sequence[ChatRequest], stats: RunStats) -> list[Completion | RetryableBackendError]:
        """Make `requests` concurrently (the backend's window bounds how many are in flight) and wait for all.

        A request that still fails after the backend's retries comes back as its RetryableBackendError, in
        place; a FatalBackendError stops everything and is raised.
        """

        async def one(request: ChatRequest) -> Completion | RetryableBackendError:
            try:
                return await self.backend.complete(request)
            except RetryableBackendError as exc:
                return exc

        return list(self.stream((one(request) for request in requests), stats))

    def stream(self, work: Iterable[Coroutine[Any, Any, T]], stats: RunStats) -> Generator[T, None, None]:
        """Run each coroutine of `work` (one request each) on the loop and yield the results in input order.

        No head-of-line blocking: up to `max_pending` coroutines are unfinished at any time, whatever is done
        waits in a reorder buffer, and a new one is submitted as soon as *any* finishes, so one slow request
        holds back only the release of later results, never the requests behind it. Submission pauses only while
        `reorder_limit` results wait. A coroutine's exception is raised as soon as it finishes; the
        unfinished ones are cancelled when the generator stops early, fails or is closed.
        """
        finished: SimpleQueue[int] = SimpleQueue()  # indices, put by done-callbacks (on the loop thread)
        running: dict[int, Future[T]] = {}
        ready: dict[int, Future[T]] = {}
        submitted = released = 0
        coros = iter(work)
        exhausted = False

        def take(index: int) -> None:
            future = ready[index] = running.pop(index)
            stats.finished_requests += 1  # when it finishes, not when released: the progress shows the real rate
            if future.exception() is not None:
                future.result()  # fail fast, not when the window reaches it

        try:
            while True:
                while not finished.empty():
                    take(finished.get())
                while released in ready:
                    result = ready.pop(released).result()
                    released += 1
                    yield result
                if not exhausted and len(running) < self.max_pending and len(ready) < self.reorder_limit:
                    coro = next(coros, None)
                    if coro is None:
                        exhausted = True
                        continue
                    future = running[submitted] = self.loop.submit(coro)
                    stats.planned_requests += 1
                    future.add_done_callback(partial(_put_index, finished, submitted))
                    submitted += 1
                elif running:
                    take(finished.get())  # wake on any completion, not on the oldest only
                else:
                    return
        finally:
            for future in running.values():
                future.cancel()


def _put_index(queue: SimpleQueue[int], index: int, _: Future[Any]) -> None:
    queue.put(index)
