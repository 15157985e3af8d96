"""OpenAI-compatible chat backend: vLLM (`vllm serve`), OpenAI, SGLang, llama.cpp, Ollama, the sim server.

One lean async path (aiohttp + orjson): a sliding window of `max_concurrency` requests in flight,
RPM/TPM token buckets, retries with exponential jitter that honour Retry-After, and an AIMD window
that shrinks on 429, 503 and abandoned requests. Errors no retry can fix (401, 404, 400 context too long)
raise FatalBackendError.

A slow server's work is never thrown away. llama.cpp and vLLM send nothing until a non-streaming completion
is done, so the time to the first byte is the whole generation, and no fixed first-byte or total timeout fits
every max_tokens and load: one that fires re-sends a request the server is still computing, which then
computes it twice. So:
- `connect_timeout` bounds only opening a connection: a server that accepts none fails fast;
- each request has a soft deadline (`limits.Pace`): `timeout` at least, raised from its max_tokens, the
  measured seconds per token and the queue on the server's slots. When it passes the request is kept and the
  client checks on the server: if another request was answered within that deadline, or the server shows
  work (a llama.cpp slot processing, vLLM requests running) or, lacking those, answers /health, the wait is
  extended by one more deadline. Only a server showing no progress at two checks in a row gets the request
  abandoned and retried (and the window halved). `hard_timeout` caps the wait however busy the server looks;
- at the first request the client asks the server's root for /props, /slots and /metrics (`server_info`);
  when it reports a slot count and `max_concurrency` was not set, the window is that count: more in flight
  only queue there. What was found and the deadlines in use are saved in stats.json under `backend`.

What a misbehaving server gets: a body that is not a chat completion (HTML, no choices, `content` null or
not a string) is `malformed`; a body over `max_response_bytes` is `oversized` (read in chunks, never whole);
both are retried, then the request is rejected with that cause. Retry-After is honoured in seconds or as an
HTTP-date, capped at two minutes; anything else (nan, inf, negative, garbage) falls back to the back-off.
A server that refuses connections and has never answered is probed for about two seconds, then the run
stops; once it has answered, a refused connection is retried like any transient failure (a restart).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.limits import AdaptiveWindow, Pace, TokenBucket
from synthgen.backends.responses import completion_from_raw, error_for
from synthgen.backends.server_info import server_root
from synthgen.backends.settings import MAX_RESPONSE_BYTES, without_credentials
from synthgen.backends.watchdog import Watchdog
from synthgen.errors import BackendError, ConfigError, FatalBackendError, RetryableBackendError
from synthgen.stats import RunStats

PROBE_DELAYS = (0.25, 0.5, 1.0)  # seconds before each check that a never-answering server is up: ~2 s in all
PROBE_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 256  # the window when neither max_concurrency nor the server's slot count says otherwise


class OpenAIBackend:
    """Chat completions against `{base_url}/chat/completions`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        hard_timeout: float = 1800.0,
        max_attempts: int = 6,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        rpm: float | None = None,
        tpm: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        stats: RunStats | None = None,
    ) -> None:
        self.base_url = without_credentials(base_url).rstrip("/")  # messages never show a URL's password
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if (login := urlsplit(base_url)).username is not None:
            if api_key:
                raise ConfigError("backend", "base_url", "the base URL holds a user:password and an API key is set: both "
                                  "would go in the Authorization header; keep one")
            pair = f"{unquote(login.username)}:{unquote(login.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._max_attempts = max_attempts
        self.window = AdaptiveWindow(DEFAULT_CONCURRENCY if max_concurrency is None else max_concurrency)
        self._window_from = "default" if max_concurrency is None else "max_concurrency"
        self.pace = Pace(timeout, hard_timeout)
        self._rpm = TokenBucket(rpm, "rpm") if rpm else None
        self._tpm = TokenBucket(tpm, "tpm", "or lower the stage's sampling.max_tokens") if tpm else None
        self._max_body = max_response_bytes
        self.stats = stats or RunStats()
        self._session: aiohttp.ClientSession | None = None
        self._answered = False  # has the server ever sent an HTTP response?
        self._probe: asyncio.Task[bool] | None = None
        self.stats.backend.update(connect_timeout_s=connect_timeout, timeout_floor_s=timeout, hard_timeout_s=hard_timeout)
        self.watchdog = Watchdog(self._client, server_root(self.base_url), self.pace, self.stats.backend)
        self._backoff = wait_exponential_jitter(multiplier=retry_initial, max=retry_max, jitter=retry_initial)
        self._backoff_state = RetryCallState(AsyncRetrying(), None, (), {})

    async def complete(self, request: ChatRequest) -> Completion:
        """Send `request`, retrying transient failures; the last one is re-raised when attempts run out."""
        try:
            return await self._attempt(request)  # the common case skips building a retry controller
        except RetryableBackendError as first:
            if self._max_attempts == 1:
                raise self._give_up(first) from None
            failure = first
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableBackendError),
            stop=stop_after_attempt(self._max_attempts - 1),
            wait=self._wait,
            before_sleep=self._count_retry,
            reraise=True,
        )
        self.stats.retries[failure.cause] += 1
        await asyncio.sleep(self._delay(failure.retry_after, 1))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request)
        except RetryableBackendError as exc:
            raise self._give_up(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up(self, exc: RetryableBackendError) -> BackendError:
        """The error to raise once attempts run out: unreachable servers stop the run, the rest reject a record."""
        return self._unreachable(exc) if exc.cause == "connect" else exc

    def _unreachable(self, exc: RetryableBackendError) -> FatalBackendError:
        return FatalBackendError(
            0, f"cannot connect to {self.base_url} ({exc})",
            "check the base URL (--base-url / SYNTHGEN_BASE_URL / backend.base_url) and that the server is up",
        )

    async def _attempt(self, request: ChatRequest) -> Completion:
        """One try; a refused connection to a server that never answered stops the run unless a probe finds it up."""
        try:
            return await self._send(request)
        except RetryableBackendError as exc:
            if exc.cause == "connect" and not self._answered:
                if self._probe is None:  # one probe for every request that failed meanwhile
                    self._probe = asyncio.ensure_future(self._server_is_up())
                if not await asyncio.shield(self._probe):
                    raise self._unreachable(exc) from None
            raise

    async def _server_is_up(self) -> bool:
        """Whether the server answers anything (even a 404) within a few quick tries."""
        timeout = aiohttp.ClientTimeout(total=min(PROBE_TIMEOUT, self.pace.floor), connect=self._connect_timeout)
        for delay in PROBE_DELAYS:
            await asyncio.sleep(delay)
            self.stats.http_requests += 1
            try:
                async with self._client().get(self.base_url + "/models", timeout=timeout):
                    self._answered = True
                    return True
            except (aiohttp.ClientConnectorError, asyncio.TimeoutError):
                continue
            except aiohttp.ClientError:  # it answered, if badly: it is up
                self._answered = True
                return True
        return False

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
        self.watchdog.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, request: ChatRequest) -> Completion:
        if self.watchdog.server is None:
            await self._discover()
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            await self._tpm.acquire(request.estimated_tokens())
        await self.window.acquire()
        started = time.monotonic()
        self.stats.http_in_flight += 1
        try:
            deadline = self.pace.deadline(request.estimated_tokens(), self.window.in_flight)
            self.stats.backend["deadline_s"] = round(deadline, 2)
            status, headers, raw = await self._post(orjson.dumps(request.body()), deadline)
        finally:
            self.stats.http_in_flight -= 1
            self.window.release()
        self._answered = True
        if status == 200:
            completion = completion_from_raw(raw)
            self.window.on_success()
            self.pace.observe(completion.prompt_tokens + completion.completion_tokens, time.monotonic() - started)
            self.stats.http_ok += 1
            return completion
        if status in (429, 503):
            self.window.on_overloaded()
        raise error_for(status, headers, raw, request.model, self.base_url)

    async def _discover(self) -> None:
        """Once per backend: the server's slots (they set the window unless max_concurrency was given)."""
        info = await self.watchdog.discover()
        if info.slots and self._window_from == "default":
            self.window.resize(info.slots)
            self._window_from = f"server slots ({info.slots_from})"
        self.stats.backend.update(slots=info.slots, busy_check=info.busy_path, window=self.window.max_limit,
                                  window_from=self._window_from)

    def _client(self) -> aiohttp.ClientSession:
        """The HTTP session, opened on first use (inside the event loop that will run the requests)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)  # the window bounds what is in flight
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    async def _post(self, body: bytes, deadline: float) -> tuple[int, Any, bytes]:
        """POST `body`; past `deadline` seconds the server is checked on, and the request dropped only if it is idle."""
        self.stats.http_requests += 1
        watch = self.watchdog.watch(deadline)
        try:
            async with self._client().post(self._url, data=body) as response:
                return response.status, response.headers, await self._read(response)
        except asyncio.CancelledError:
            if not watch.abandoned_alone():
                raise
            self.window.on_overloaded()
            raise RetryableBackendError("timeout", f"no answer after {time.monotonic() - watch.started:.3g}s and "
                                        "the server shows no progress") from None
        except aiohttp.ConnectionTimeoutError:
            raise RetryableBackendError("connect", f"no connection within {self._connect_timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise RetryableBackendError("connect", str(exc.os_error)) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise RetryableBackendError("disconnect", type(exc).__name__) from None
        finally:
            watch.stop()

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, read in chunks and refused past `max_response_bytes` (a body that never ends is cut short)."""
        chunks, size = [], 0
        if (response.content_length or 0) <= self._max_body:
            async for chunk in response.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > self._max_body:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        raise RetryableBackendError("oversized", f"response body over max_response_bytes={self._max_body}")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, RetryableBackendError) else None
        return self._delay(retry_after, state.attempt_number + 1)

    def _delay(self, retry_after: float | None, retry_number: int) -> float:
        """Seconds before retry `retry_number` (1-based): the server's Retry-After, else exponential jitter."""
        if retry_after is not None:
            return retry_after
        self._backoff_state.attempt_number = retry_number
        return float(self._backoff(self._backoff_state))

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.retries[exc.cause if isinstance(exc, RetryableBackendError) else "other"] += 1
