"""Backend settings as the recipe states them (`backend:`), and the URL checks they use."""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from synthgen.config import StrictModel
from synthgen.errors import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "sim-model"  # what a recipe that names no model asks for
MAX_RESPONSE_BYTES = 16 * 2**20  # a chat completion is kilobytes; 16 MiB leaves room for n=128 long samples


class BatchConfig(StrictModel):
    """Provider batch API settings (`mode: batch`): requests gathered into batch files, polled until done."""

    max_requests: int = Field(default=50_000, ge=1, description="requests per batch (OpenAI allows 50,000)")
    linger: float = Field(default=1.0, ge=0, description="seconds without a new request before a batch is sent")
    poll_initial: float = Field(default=5.0, gt=0, description="first wait between status polls; doubles per poll")
    poll_max: float = Field(default=300.0, gt=0)
    max_resubmits: int = Field(default=3, ge=0, description="rounds that resend failed or expired items")
    completion_window: str = "24h"


class BackendConfig(StrictModel):
    """Which backend, which model, and how hard to drive it. API keys are never stored here, only the
    name of the environment variable that holds one."""

    kind: str = "openai"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    mode: Literal["online", "batch"] = "online"
    max_concurrency: int = Field(default=256, ge=1, le=100_000, description="requests in flight; when not given, the "
                                 "server's slot count if it reports one (llama.cpp), else 256")
    timeout: float = Field(default=120.0, gt=0, description="seconds before an unanswered request is checked on (at "
                           "least: raised for long generations); it is dropped only if the server shows no progress")
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a connection")
    hard_timeout: float = Field(default=1800.0, gt=0, description="seconds after which a request is dropped and "
                                "retried however busy the server looks")
    max_attempts: int = Field(default=6, ge=1)
    retry_initial: float = Field(default=0.5, gt=0, description="first back-off in seconds; doubles per retry")
    retry_max: float = Field(default=30.0, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_response_bytes: int = Field(default=MAX_RESPONSE_BYTES, ge=1024, description="larger response bodies are refused")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    sim: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict, description="settings of the chosen backend kind")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        return None if url is None else check_base_url(url)

    def resolved_base_url(self) -> str:
        """Precedence: --base-url (already written into base_url by the CLI) > SYNTHGEN_BASE_URL > recipe > OpenAI."""
        from_env = os.environ.get("SYNTHGEN_BASE_URL")
        if self.base_url is None and from_env is not None:
            try:
                return check_base_url(from_env)
            except ValueError as exc:
                raise ConfigError("SYNTHGEN_BASE_URL", None, str(exc)) from None
        return self.base_url or DEFAULT_BASE_URL

    def identity(self) -> dict[str, Any]:
        """What decides which server or model answers, and so goes into every request's cache key: the kind, its
        `options`, the simulator's settings for `sim`, and the base URL (without credentials) when one is used.
        Throughput settings (concurrency, timeouts, retries, rate limits, batch mode) are left out: they change
        how answers are fetched, not what they are."""
        identity: dict[str, Any] = {"kind": self.kind, "options": self.options}
        if self.kind == "sim":
            identity["sim"] = self.sim
        elif self.kind == "openai" or self.base_url:
            identity["base_url"] = without_credentials(self.resolved_base_url()).rstrip("/")
        return identity

    def api_key(self) -> str | None:
        """The key from the environment, if any; read at the last moment and kept nowhere else."""
        return os.environ.get(self.api_key_env) or None

    def max_pending(self) -> int:
        """How many requests a generating stage keeps submitted and unfinished (finished ones waiting for an earlier
        one do not count): a full window plus as many queued, so the backend never idles; the whole batch in batch mode."""
        if self.mode == "batch":
            return self.batch.max_requests
        return 2 * self.max_concurrency + 64


def without_credentials(url: str) -> str:
    """`url` with any user:password@ removed (so a rotated credential keeps the cache)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_base_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; else ValueError saying what a base URL looks like."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL {without_credentials(url)!r} needs http:// or https:// and a host, "
                         "e.g. http://localhost:8000/v1")
    return url
