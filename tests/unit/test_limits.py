"""The AIMD window and the token buckets."""

from __future__ import annotations

import asyncio
import time

import pytest

from synthgen.backends.limits import AdaptiveWindow, Pace, TokenBucket
from synthgen.errors import ConfigError


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


def test_window_halves_on_overload_once_per_cooldown_and_grows_back() -> None:
    window = AdaptiveWindow(64, cooldown=10.0)
    window.on_overloaded()
    window.on_overloaded()
    assert window.limit == 32
    for _ in range((64**2 - 32**2) // 2 + 1):  # +1/limit per success: limit^2/2 grows by one a success
        window.on_success()
    assert window.limit == 64


def test_window_resizes_to_a_slot_count_and_lets_waiters_in() -> None:
    async def scenario() -> int:
        window = AdaptiveWindow(1)
        await window.acquire()
        waiter = asyncio.ensure_future(window.acquire())
        await asyncio.sleep(0)
        window.resize(4)
        await asyncio.wait_for(waiter, 1)
        return window.in_flight

    assert asyncio.run(scenario()) == 2


def test_pace_deadline_is_the_floor_until_a_completion_then_follows_speed_and_queue() -> None:
    pace = Pace(floor=120.0, ceiling=1800.0)
    assert pace.deadline(500, in_flight=8) == 120.0  # nothing measured, slots unknown
    pace.slots = 4
    assert pace.deadline(500, in_flight=8) == 240.0  # twice the slots in flight: half of them queue
    pace.observe(tokens=100, seconds=10.0)  # 0.1 s a token: a slow local server
    assert pace.seconds_per_token == pytest.approx(0.1)
    assert pace.deadline(500, in_flight=4) == pytest.approx(150.0)  # 3 x 500 tokens x 0.1 s
    assert pace.deadline(500, in_flight=8) == pytest.approx(300.0)
    assert pace.deadline(50, in_flight=4) == 120.0  # never under the floor
    assert pace.deadline(50_000, in_flight=4) == 1800.0  # never over the ceiling
    pace.observe(tokens=100, seconds=0.0)  # a fast answer moves the average a fifth of the way
    assert pace.seconds_per_token == pytest.approx(0.08)


def test_window_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        AdaptiveWindow(0)


def test_token_bucket_paces_requests() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(1200, "rpm")  # 20 per second, one second's burst
        began = time.monotonic()
        for _ in range(40):
            await bucket.acquire()
        return time.monotonic() - began

    elapsed = asyncio.run(scenario())
    assert 0.9 < elapsed < 2.0


def admissions(bucket: TokenBucket, amounts: list[float]) -> tuple[float, list[tuple[float, float]]]:
    """Acquire `amounts` concurrently; the start time and each (admission time, amount)."""
    async def scenario() -> tuple[float, list[tuple[float, float]]]:
        admitted: list[tuple[float, float]] = []

        async def take(amount: float) -> None:
            await bucket.acquire(amount)
            admitted.append((time.monotonic(), amount))

        began = time.monotonic()
        await asyncio.gather(*(take(a) for a in amounts))
        return began, admitted

    return asyncio.run(scenario())


def test_item19_token_bucket_never_admits_more_than_the_rate_allows() -> None:
    bucket = TokenBucket(600, "tpm", window=2.0)  # 300 a second, a bucket of one second's worth (300)
    began, admitted = admissions(bucket, [250.0] * 6)
    for now, _ in admitted:
        total = sum(amount for at, amount in admitted if at <= now)
        assert total <= 300 * (now - began) + 300 + 1e-6, (now - began, total)
    assert admitted[-1][0] - began > 3.5  # 1500 units at 300 a second, less the first bucket


def test_item19_requests_larger_than_a_second_are_charged_in_full() -> None:
    """Each request costs 500 while the bucket holds 300: formerly charged 300, i.e. 1.7x over the budget."""
    bucket = TokenBucket(600, "tpm", window=2.0)
    began, admitted = admissions(bucket, [500.0] * 4)
    for now, _ in admitted:
        in_window = sum(amount for at, amount in admitted if now - 2.0 < at <= now)
        assert in_window <= 600, (now - began, in_window)
    assert admitted[-1][0] - began > 5.5  # one request per 2 s window: two would pass 600


def test_item19_a_request_over_the_whole_budget_names_the_recipe_field() -> None:
    bucket = TokenBucket(6000, "tpm", "or lower the stage's sampling.max_tokens")
    with pytest.raises(ConfigError) as caught:
        asyncio.run(bucket.acquire(7000))
    assert str(caught.value) == ("backend: tpm: a request needs about 7000, more than the whole budget of 6000 a minute; "
                                 "raise backend.tpm or lower the stage's sampling.max_tokens")
