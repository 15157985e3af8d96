"""Soft deadlines for requests to one server: past its deadline a request is kept while the server shows progress.

The rule and why are in `openai_compat`'s docstring. Mechanism: a timer per request; when it fires, a check
(requests overdue together share one probe of the server) either re-arms the timer for one more deadline or
cancels the request's task, which the client turns into a retryable timeout. It takes two checks in a row
without progress to abandon a request: one probe can fall between a slot finishing and the next queued
request taking it, or see a completion still on its way to the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from synthgen.backends.limits import Pace
from synthgen.backends.server_info import ServerInfo, discover, is_busy


class Watch:
    """One request's soft deadline: `timer` fires the check on the server; `abandoned` once the client gave up."""

    __slots__ = ("task", "deadline", "started", "timer", "done", "abandoned", "idle")

    def __init__(self, task: asyncio.Task[Any] | None, deadline: float) -> None:
        self.task, self.deadline, self.started = task, deadline, time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.done = self.abandoned = self.idle = False  # idle: the last check saw no progress

    def stop(self) -> None:
        """The request is over (answered or failed): no more checks."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()

    def abandoned_alone(self) -> bool:
        """Whether the client abandoned it and nothing else cancelled it too (Python 3.11+ counts; 3.10 cannot)."""
        uncancel = getattr(self.task, "uncancel", None)
        return self.abandoned and (uncancel is None or uncancel() == 0)


class Watchdog:
    """Discovers what the server reports (once) and keeps or abandons overdue requests; counts both in `record`."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession], root: str, pace: Pace,
                 record: dict[str, Any]) -> None:
        self.server: ServerInfo | None = None
        self._session, self._root, self.pace, self._record = session, root, pace, record
        self._discovery: asyncio.Task[ServerInfo] | None = None
        self._busy: asyncio.Task[bool] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        record.update(waits_extended=0, abandoned=0)

    async def discover(self) -> ServerInfo:
        """The server's slots and busy signal, asked once however many requests wait for the answer."""
        if self._discovery is None:
            self._discovery = asyncio.ensure_future(discover(self._session(), self._root))
        self.server = await asyncio.shield(self._discovery)
        self.pace.slots = self.server.slots
        return self.server

    def watch(self, deadline: float) -> Watch:
        """Start the soft deadline of the request running in the current task."""
        watch = Watch(asyncio.current_task(), deadline)
        watch.timer = asyncio.get_running_loop().call_later(deadline, self._overdue, watch)
        return watch

    def close(self) -> None:
        """Cancel discovery and checks still running."""
        for task in (self._discovery, self._busy, *self._checks):
            if task is not None and not task.done():
                task.cancel()

    def _overdue(self, watch: Watch) -> None:
        check = asyncio.ensure_future(self._check(watch))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _check(self, watch: Watch) -> None:
        since = time.monotonic() - watch.deadline  # progress: an answer since then (until the probe is back) or work
        progress = self.pace.last_completion > since or await self._server_busy() or self.pace.last_completion > since
        if watch.done:
            return
        waited = time.monotonic() - watch.started
        if (progress or not watch.idle) and waited < self.pace.ceiling:
            self._record["waits_extended"] += progress
            watch.idle = not progress
            delay = min(watch.deadline, self.pace.ceiling - waited)
            watch.timer = asyncio.get_running_loop().call_later(delay, self._overdue, watch)
        elif watch.task is not None:
            self._record["abandoned"] += 1
            watch.abandoned = True
            watch.task.cancel()

    async def _server_busy(self) -> bool:
        if self._busy is None or self._busy.done():
            self._busy = asyncio.ensure_future(is_busy(self._session(), self._root, self.server or ServerInfo()))
        return await asyncio.shield(self._busy)
