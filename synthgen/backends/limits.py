"""Flow control for backends: an AIMD concurrency window and token buckets for RPM / TPM limits."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class AdaptiveWindow:
    """At most `limit` requests in flight, a sliding window: a finishing request lets the next one in.

    On a 429 the limit halves (at most once per `cooldown` seconds, so one burst of 429s counts once);
    each success then grows it by 1/limit, i.e. about one slot per window of successes (AIMD).
    """

    def __init__(self, max_limit: int, cooldown: float = 1.0) -> None:
        if max_limit < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_limit}")
        self.max_limit = max_limit
        self.limit = float(max_limit)
        self.in_flight = 0
        self._cooldown = cooldown
        self._last_decrease = -cooldown
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a free slot."""
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1
        self._wake()

    def on_success(self) -> None:
        """Additive increase."""
        if self.limit < self.max_limit:
            self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)
            self._wake()

    def on_rate_limited(self) -> None:
        """Multiplicative decrease, once per cooldown."""
        now = time.monotonic()
        if now - self._last_decrease >= self._cooldown:
            self._last_decrease = now
            self.limit = max(1.0, self.limit / 2)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class TokenBucket:
    """`rate_per_minute` units per minute, spent smoothly: the bucket holds one second's worth, so a run
    never bursts a whole minute's budget at once (servers that count per second would reject that)."""

    def __init__(self, rate_per_minute: float) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self._updated = time.monotonic()

    async def acquire(self, amount: float = 1.0) -> None:
        """Take `amount` units, sleeping until the bucket holds them."""
        amount = min(amount, self.capacity)
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self.tokens >= amount:
                self.tokens -= amount
                return
            await asyncio.sleep((amount - self.tokens) / self.rate)
