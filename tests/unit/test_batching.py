"""MicroBatcher: concurrent requests gathered into batches by size and by idle time, equal requests sent once,
a batch's error reaching every waiter."""

from __future__ import annotations

import asyncio

import pytest

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.batching import BatchOutcome, MicroBatcher
from synthgen.errors import RetryableBackendError


def request(i: int) -> ChatRequest:
    return ChatRequest("m", [{"role": "user", "content": f"q{i}"}])


def test_batches_fill_to_max_size_then_linger_sends_the_rest() -> None:
    sizes: list[int] = []

    async def run_batch(requests: list[ChatRequest]) -> BatchOutcome:
        sizes.append(len(requests))
        return {r.key(): Completion(r.messages[0]["content"].upper()) for r in requests}

    async def scenario() -> list[Completion]:
        batcher = MicroBatcher(run_batch, max_size=4, linger=0.01)
        return await asyncio.gather(*(batcher.submit(request(i)) for i in range(10)))

    results = asyncio.run(scenario())
    assert [r.text for r in results] == [f"Q{i}" for i in range(10)]
    assert sizes == [4, 4, 2]


def test_equal_requests_waiting_together_are_sent_once() -> None:
    sent: list[str] = []

    async def run_batch(requests: list[ChatRequest]) -> BatchOutcome:
        sent.extend(r.key() for r in requests)
        return {r.key(): Completion("same") for r in requests}

    async def scenario() -> list[Completion]:
        batcher = MicroBatcher(run_batch, max_size=100, linger=0.01)
        return await asyncio.gather(*(batcher.submit(request(i % 2)) for i in range(6)))

    assert [r.text for r in asyncio.run(scenario())] == ["same"] * 6
    assert len(sent) == 2


def test_item_errors_and_batch_errors_reach_their_waiters() -> None:
    async def run_batch(requests: list[ChatRequest]) -> BatchOutcome:
        if len(requests) == 1:
            raise RuntimeError("the whole batch failed")
        return {r.key(): Completion("ok") if i else RetryableBackendError("batch_http_500", "boom")
                for i, r in enumerate(requests)}

    async def scenario() -> list[Completion | BaseException]:
        batcher = MicroBatcher(run_batch, max_size=2, linger=0.01)
        first = await asyncio.gather(batcher.submit(request(0)), batcher.submit(request(1)), return_exceptions=True)
        alone = await asyncio.gather(batcher.submit(request(2)), return_exceptions=True)
        return [*first, *alone]

    failed, ok, alone = asyncio.run(scenario())
    assert isinstance(failed, RetryableBackendError) and failed.cause == "batch_http_500"
    assert isinstance(ok, Completion) and ok.text == "ok"
    assert isinstance(alone, RuntimeError) and "whole batch" in str(alone)


def test_close_cancels_running_batches() -> None:
    async def run_batch(requests: list[ChatRequest]) -> BatchOutcome:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def scenario() -> None:
        batcher = MicroBatcher(run_batch, max_size=1, linger=0.0)
        waiter = asyncio.ensure_future(batcher.submit(request(0)))
        await asyncio.sleep(0.01)
        await batcher.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
