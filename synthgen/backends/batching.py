"""Gathers concurrent single requests into batches, for backends that work a batch at a time (a provider's
batch API, a local model's batched `generate`). Callers still `await complete(request)` one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from synthgen.backends.base import ChatRequest, Completion

BatchOutcome = dict[str, Completion | BaseException]  # request key -> its completion or its error
RunBatch = Callable[[list[ChatRequest]], Awaitable[BatchOutcome]]


class MicroBatcher:
    """Queues requests and hands them to `run_batch` once `max_size` are waiting or none arrived for `linger`
    seconds. Equal requests waiting together are sent once. Batches may run concurrently; a backend that
    must run one at a time serialises inside `run_batch`."""

    def __init__(self, run_batch: RunBatch, max_size: int, linger: float) -> None:
        self._run_batch, self._max_size, self._linger = run_batch, max_size, linger
        self._waiting: dict[str, tuple[ChatRequest, list[asyncio.Future[Completion]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: ChatRequest) -> Completion:
        """Queue `request` and wait for its completion (or its error, raised here)."""
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        key = request.key()
        self._waiting.setdefault(key, (request, []))[1].append(future)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if len(self._waiting) >= self._max_size:
            self._flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._flush)
        return await future

    def _flush(self) -> None:
        self._timer = None
        batch, self._waiting = self._waiting, {}
        if batch:
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: dict[str, tuple[ChatRequest, list[asyncio.Future[Completion]]]]) -> None:
        try:
            outcome = await self._run_batch([request for request, _ in batch.values()])
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the batch's error, cancellation included
            outcome = dict.fromkeys(batch, exc)
        for key, (_, futures) in batch.items():
            result = outcome.get(key) or RuntimeError(f"batch returned no result for request {key}")
            for future in futures:
                if future.done():
                    continue
                if isinstance(result, asyncio.CancelledError):
                    future.cancel()
                elif isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Cancel batches still running (their waiters get CancelledError)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
