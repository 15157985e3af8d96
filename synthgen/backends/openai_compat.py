"""OpenAI-compatible chat backend: vLLM (`vllm serve`), OpenAI, SGLang, llama.cpp, Ollama, the sim server.

One lean async path (aiohttp + orjson): a sliding window of `max_concurrency` requests in flight,
RPM/TPM token buckets, retries with exponential jitter that honour Retry-After, and an AIMD window
that shrinks on 429. Errors no retry can fix (401, 404, 400 context too long) raise FatalBackendError.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.limits import AdaptiveWindow, TokenBucket
from synthgen.errors import BackendError, FatalBackendError, RetryableBackendError
from synthgen.stats import RunStats

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend:
    """Chat completions against `{base_url}/chat/completions`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int = 256,
        timeout: float = 120.0,
        max_attempts: int = 6,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        rpm: float | None = None,
        tpm: float | None = None,
        stats: RunStats | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self.window = AdaptiveWindow(max_concurrency)
        self._rpm = TokenBucket(rpm) if rpm else None
        self._tpm = TokenBucket(tpm) if tpm else None
        self.stats = stats or RunStats()
        self._session: aiohttp.ClientSession | None = None
        self._backoff = wait_exponential_jitter(multiplier=retry_initial, max=retry_max, jitter=retry_initial)
        self._backoff_state = RetryCallState(AsyncRetrying(), None, (), {})

    async def complete(self, request: ChatRequest) -> Completion:
        """Send `request`, retrying transient failures; the last one is re-raised when attempts run out."""
        try:
            return await self._send(request)  # the common case skips building a retry controller
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
        await asyncio.sleep(self._delay(failure, 1))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(request)
        except RetryableBackendError as exc:
            raise self._give_up(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up(self, exc: RetryableBackendError) -> BackendError:
        """The error to raise once attempts run out: unreachable servers stop the run, the rest reject a record."""
        if exc.cause == "connect":
            return FatalBackendError(
                0, f"cannot connect to {self.base_url} ({exc})",
                "check the base URL (--base-url / SYNTHGEN_BASE_URL / backend.base_url) and that the server is up",
            )
        return exc

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, request: ChatRequest) -> Completion:
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            await self._tpm.acquire(request.estimated_tokens())
        await self.window.acquire()
        try:
            status, headers, raw = await self._post(orjson.dumps(request.body()))
        finally:
            self.window.release()
        if status == 200:
            completion = self._parse(raw)
            self.window.on_success()
            self.stats.http_ok += 1
            return completion
        if status == 429:
            self.window.on_rate_limited()
        raise self._error(status, headers, raw, request)

    async def _post(self, body: bytes) -> tuple[int, Any, bytes]:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.window.max_limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        self.stats.http_requests += 1
        try:
            async with self._session.post(self._url, data=body) as response:
                return response.status, response.headers, await response.read()
        except asyncio.TimeoutError:
            raise RetryableBackendError("timeout", f"no answer within {self._timeout.total:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise RetryableBackendError("connect", str(exc.os_error)) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise RetryableBackendError("disconnect", type(exc).__name__) from None

    @staticmethod
    def _parse(raw: bytes) -> Completion:
        try:
            return completion_from_body(orjson.loads(raw))
        except orjson.JSONDecodeError:
            raise RetryableBackendError("malformed", f"unparseable response body: {raw[:80]!r}") from None

    def _error(self, status: int, headers: Any, raw: bytes, request: ChatRequest) -> Exception:
        message = _error_message(raw)
        if status in RETRYABLE_STATUS:
            return RetryableBackendError(f"http_{status}", message, _retry_after(headers))
        if status in (401, 403):
            hint = "set a valid key in OPENAI_API_KEY (or the variable named by backend.api_key_env)"
        elif status == 404:
            hint = (f"model '{request.model}' or endpoint not found at {self.base_url}; "
                    "check --model and that the base URL ends in /v1")
        elif status == 400 and "context" in message.lower():
            hint = "shorten the prompt or lower max_tokens so prompt + output fit the model's context"
        else:
            hint = "the server rejected the request; check the recipe's sampling parameters and schema"
        return FatalBackendError(status, message, hint)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, RetryableBackendError)
        return self._delay(exc, state.attempt_number + 1)

    def _delay(self, exc: RetryableBackendError, retry_number: int) -> float:
        """Seconds before retry `retry_number` (1-based): the server's Retry-After, else exponential jitter."""
        if exc.retry_after is not None:
            return exc.retry_after
        self._backoff_state.attempt_number = retry_number
        return float(self._backoff(self._backoff_state))

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.retries[exc.cause if isinstance(exc, RetryableBackendError) else "other"] += 1


def completion_from_body(data: Any) -> Completion:
    """The Completion in a chat.completion JSON object; RetryableBackendError('malformed') if it has none."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"]
        usage = data.get("usage") or {}
        return Completion(
            text=text if isinstance(text, str) else "",
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise RetryableBackendError("malformed", f"no completion in response body: {str(data)[:80]}") from None


def _error_message(raw: bytes) -> str:
    try:
        error = orjson.loads(raw).get("error", {})
        return str(error.get("message") or error)[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return raw[:300].decode("utf-8", "replace")


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), 120.0) if value is not None else None
    except ValueError:
        return None
