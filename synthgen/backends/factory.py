"""Backend settings as the recipe states them, and the registry that turns them into a Backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from pydantic import Field

from synthgen.backends.base import Backend
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.config import StrictModel, validate
from synthgen.errors import ConfigError
from synthgen.stats import RunStats

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class BackendConfig(StrictModel):
    """Which backend, which model, and how hard to drive it. API keys are never stored here, only the
    name of the environment variable that holds one."""

    kind: str = "openai"
    model: str = "sim-model"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = Field(default=256, ge=1, le=100_000)
    timeout: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    retry_initial: float = Field(default=0.5, gt=0, description="first back-off in seconds; doubles per retry")
    retry_max: float = Field(default=30.0, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    sim: dict[str, Any] = Field(default_factory=dict)

    def resolved_base_url(self) -> str:
        """Precedence: --base-url (already written into base_url by the CLI) > SYNTHGEN_BASE_URL > recipe > OpenAI."""
        return self.base_url or os.environ.get("SYNTHGEN_BASE_URL") or DEFAULT_BASE_URL

    def api_key(self) -> str | None:
        """The key from the environment, if any; read at the last moment and kept nowhere else."""
        return os.environ.get(self.api_key_env) or None


BackendFactory = Callable[[BackendConfig, RunStats, ExitStack], Backend]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(kind: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a factory for `backend.kind` (built-ins use this the same way a plugin would)."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        BACKENDS[kind] = factory
        return factory

    return decorate


def create_backend(config: BackendConfig, stats: RunStats, stack: ExitStack) -> Backend:
    """Build the backend `config.kind` names; resources it opens are closed by `stack`."""
    try:
        factory = BACKENDS[config.kind]
    except KeyError:
        raise ConfigError("backend", "kind", f"unknown backend '{config.kind}'; known: {sorted(BACKENDS)}") from None
    return factory(config, stats, stack)


def _http_backend(config: BackendConfig, base_url: str, api_key: str | None, stats: RunStats) -> OpenAIBackend:
    return OpenAIBackend(
        base_url, api_key, max_concurrency=config.max_concurrency, timeout=config.timeout,
        max_attempts=config.max_attempts, retry_initial=config.retry_initial, retry_max=config.retry_max,
        rpm=config.rpm, tpm=config.tpm, stats=stats,
    )


@register_backend("openai")
def _openai(config: BackendConfig, stats: RunStats, stack: ExitStack) -> Backend:
    return _http_backend(config, config.resolved_base_url(), config.api_key(), stats)


@register_backend("sim")
def _sim(config: BackendConfig, stats: RunStats, stack: ExitStack) -> Backend:
    from synthgen.backends.sim import SimConfig, SimServer

    server = stack.enter_context(SimServer(validate(SimConfig, config.sim, "backend", "sim")))
    return _http_backend(config, server.base_url, config.api_key(), stats)
