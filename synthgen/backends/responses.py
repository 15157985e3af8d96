"""Reading an OpenAI-compatible server's answers: the completion in a 200 body, and the error any other status means
(retryable, with the wait a Retry-After asks for, or fatal, with what to fix)."""

from __future__ import annotations

import email.utils
import math
from datetime import datetime, timezone
from typing import Any

import orjson

from synthgen.backends.base import Completion
from synthgen.errors import FatalBackendError, RetryableBackendError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 120.0  # seconds: a longer wait asked by a server is cut to this


def completion_from_raw(raw: bytes) -> Completion:
    """The Completion in a 200 body; RetryableBackendError('malformed') for anything else (an HTML page, ...)."""
    try:
        return completion_from_body(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise RetryableBackendError("malformed", f"unparseable response body: {raw[:80]!r}") from None


def error_for(status: int, headers: Any, raw: bytes, model: str, base_url: str) -> Exception:
    """The error a non-200 answer means: retryable (429, 5xx, ...) or fatal with a hint saying what to fix."""
    message = error_message(raw)
    if status in RETRYABLE_STATUS:
        return RetryableBackendError(f"http_{status}", message, retry_after(headers))
    if status in (401, 403):
        hint = "set a valid key in OPENAI_API_KEY (or the variable named by backend.api_key_env)"
    elif status == 404:
        hint = f"model '{model}' or endpoint not found at {base_url}; check --model and that the base URL ends in /v1"
    elif status == 400 and "context" in message.lower():
        hint = "shorten the prompt or lower max_tokens so prompt + output fit the model's context"
    else:
        hint = "the server rejected the request; check the recipe's sampling parameters and schema"
    return FatalBackendError(status, message, hint)


def completion_from_body(data: Any) -> Completion:
    """The Completion in a chat.completion JSON object; RetryableBackendError('malformed') if it has none."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message["content"]
        if not isinstance(text, str):
            refusal = f" (refusal: {str(message.get('refusal'))[:80]})" if message.get("refusal") else ""
            raise RetryableBackendError("malformed", f"message content is {type(text).__name__}, not text{refusal}")
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise RetryableBackendError("malformed", f"no completion in response body: {str(data)[:80]}") from None


def error_message(raw: bytes) -> str:
    """The server's error message (its JSON `error.message`, else the start of the body)."""
    try:
        error = orjson.loads(raw).get("error", {})
        return str(error.get("message") or error)[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return raw[:300].decode("utf-8", "replace")


def retry_after(headers: Any) -> float | None:
    """The wait a Retry-After header asks for (seconds or an HTTP-date), at most MAX_RETRY_AFTER; None if unusable."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        seconds = max(0.0, (when - datetime.now(timezone.utc)).total_seconds())  # a past date: retry now
    return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None
