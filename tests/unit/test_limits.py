"""The AIMD window and the token buckets."""

from __future__ import annotations

import asyncio
import time

import pytest

from synthgen.backends.limits import AdaptiveWindow, TokenBucket


def test_window_never_exceeds_its_limit_and_slides() -> None:
    async def scenario() -> tuple[int, int]:
        window = AdaptiveWindow(8)
        peak = 0
        started = 0

        async def job(i: int) -> None:
            nonlocal peak, started
            await window.acquire()
            started += 1
            peak = max(peak, window.in_flight)
            await asyncio.sleep(0.001 * (i % 5))
            window.release()

        await asyncio.gather(*(job(i) for i in range(200)))
        return peak, started

    peak, started = asyncio.run(scenario())
    assert peak == 8 and started == 200


def test_window_halves_on_429_once_per_cooldown_and_grows_back() -> None:
    window = AdaptiveWindow(64, cooldown=10.0)
    window.on_rate_limited()
    window.on_rate_limited()
    assert window.limit == 32
    for _ in range((64**2 - 32**2) // 2 + 1):  # +1/limit per success: limit^2/2 grows by one a success
        window.on_success()
    assert window.limit == 64


def test_window_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        AdaptiveWindow(0)


def test_token_bucket_paces_requests() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(1200)  # 20 per second, one second's burst
        began = time.monotonic()
        for _ in range(40):
            await bucket.acquire()
        return time.monotonic() - began

    elapsed = asyncio.run(scenario())
    assert 0.9 < elapsed < 2.0
