"""Flow control for backends: an AIMD concurrency window, token buckets for RPM / TPM limits, and the pace that
sets how long a request may take before the client checks on the server."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from synthgen.errors import ConfigError


class AdaptiveWindow:
    """At most `limit` requests in flight, a sliding window: a finishing request lets the next one in.

    On overload (429, 503, a request abandoned after its deadline) the limit halves, at most once per `cooldown`
    seconds so one burst counts once; each success then grows it by 1/limit, i.e. about one slot per window of
    successes (AIMD).
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

    def resize(self, max_limit: int) -> None:
        """A new ceiling (e.g. the server's slot count); the limit starts there."""
        self.max_limit, self.limit = max_limit, float(max_limit)
        self._wake()

    def on_overloaded(self) -> None:
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
    """At most `per_minute` units in any `window` (60 s), spent smoothly.

    Two rules admit a charge, both charging its full amount:
    - the window rule: the charges of the last `window` seconds plus this one stay within `per_minute`, so
      no minute ever sees more than the budget, however large the requests;
    - the pacing rule: a bucket refilling at `per_minute / window` a second holds one second's worth, so a run
      never bursts a minute's budget at once (servers that count per second would reject that). A request
      larger than the bucket waits for a full bucket and leaves it in debt, paid back before the next one.
    Charges are admitted in arrival order, so a large request is not starved by small ones. A request
    larger than the whole budget can never pass: ConfigError naming `backend.<name>`.
    """

    def __init__(self, per_minute: float, name: str, hint: str = "", window: float = 60.0) -> None:
        if per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {per_minute}")
        self.budget, self.name, self.hint, self.window = per_minute, name, hint, window
        self.rate = per_minute / window
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self._updated = time.monotonic()
        self._charges: deque[tuple[float, float]] = deque()  # (time, amount) within the last window
        self._spent = 0.0  # sum of `_charges`
        self._turn: asyncio.Lock | None = None

    async def acquire(self, amount: float = 1.0) -> None:
        """Take `amount` units, sleeping until both rules admit them."""
        if amount > self.budget:
            raise ConfigError("backend", self.name, f"a request needs about {amount:g}, more than the whole budget of "
                              f"{self.budget:g} a minute; raise backend.{self.name} {self.hint}".rstrip())
        self._turn = self._turn or asyncio.Lock()
        async with self._turn:
            while (delay := self._delay(amount, time.monotonic())) > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            self.tokens -= amount
            self._charges.append((now, amount))
            self._spent += amount

    def _delay(self, amount: float, now: float) -> float:
        """Seconds until `amount` may be charged (0: now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        while self._charges and self._charges[0][0] <= now - self.window:
            self._spent -= self._charges.popleft()[1]
        pacing = max(0.0, (min(amount, self.capacity) - self.tokens) / self.rate)
        excess, expiry = self._spent + amount - self.budget, now
        for charged_at, charged in self._charges:  # the window rule: wait for enough old charges to expire
            if excess <= 1e-9:
                break
            excess, expiry = excess - charged, charged_at + self.window
        return max(pacing, expiry - now)


class Pace:
    """The soft deadline of a request: how long it may go unanswered before the client checks on the server.

    deadline = max(floor, safety * expected), at most `ceiling`, where expected = the request's tokens (prompt
    estimate + max_tokens) times the seconds a token took in recent completions (a moving average of wall time
    over usage), times in-flight / slots when more requests are in flight than the server has slots (they queue
    there). Before the first completion it is `floor` times that queue factor.
    """

    SAFETY = 3.0  # a completion may run to max_tokens where recent ones stopped early, on a server under more load
    SMOOTHING = 0.2  # weight of the newest completion in the moving average

    def __init__(self, floor: float, ceiling: float) -> None:
        self.floor, self.ceiling = floor, ceiling
        self.seconds_per_token: float | None = None
        self.slots: int | None = None
        self.last_completion = float("-inf")  # time.monotonic() of the latest answer

    def observe(self, tokens: int, seconds: float) -> None:
        """A request answered after `seconds` with `tokens` of usage (prompt + completion)."""
        self.last_completion = time.monotonic()
        if tokens > 0:
            now = seconds / tokens
            spt = self.seconds_per_token
            self.seconds_per_token = now if spt is None else spt + self.SMOOTHING * (now - spt)

    def deadline(self, tokens: int, in_flight: int) -> float:
        """Seconds a request of about `tokens` may take while `in_flight` requests (it included) are out."""
        queued = max(1.0, in_flight / self.slots) if self.slots else 1.0
        spt = self.seconds_per_token
        wait = self.floor * queued if spt is None else max(self.floor, self.SAFETY * tokens * spt * queued)
        return min(self.ceiling, wait)
