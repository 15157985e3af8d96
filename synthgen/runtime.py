"""Services a generating stage needs during a real run (absent in dry runs such as `synthgen render`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synthgen.aio import LoopThread
from synthgen.backends.base import Backend, ChatRequest, Completion
from synthgen.errors import RetryableBackendError
from synthgen.hashing import stable_int
from synthgen.stats import RunStats


@dataclass
class Runtime:
    """The cached backend, the loop it runs on, and the model requests go to."""

    backend: Backend
    loop: LoopThread
    model: str
    backend_kind: str
    max_pending: int

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
            finally:
                stats.finished_requests += 1

        async def every() -> list[Completion | RetryableBackendError]:
            return list(await asyncio.gather(*(one(request) for request in requests)))

        stats.planned_requests += len(requests)
        return self.loop.run(every())
