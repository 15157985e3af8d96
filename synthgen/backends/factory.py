"""The backend registry: it turns a recipe's backend settings into a Backend.

Backends are found through the `synthgen.backends` entry-point group: the built-in ones are declared in
synthgen's own `pyproject.toml` exactly as a plugin package declares its own, e.g.

    [project.entry-points."synthgen.backends"]
    mybackend = "my_package.module:make_backend"   # a BackendFactory

and a recipe then selects it with `backend: {kind: mybackend, options: {...}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TypeVar

from synthgen.backends.base import Backend
from synthgen.backends.settings import BackendConfig
from synthgen.config import StrictModel, validate
from synthgen.errors import ConfigError
from synthgen.stats import RunStats

ENTRY_POINT_GROUP = "synthgen.backends"
OptionsT = TypeVar("OptionsT", bound=StrictModel)


@dataclass
class BackendContext:
    """What a backend factory gets besides the config: the run's stats, a stack that closes what the backend
    opens, and a folder of the run directory for the backend's own state (e.g. batch ids)."""

    stats: RunStats
    stack: ExitStack
    state_dir: Path


BackendFactory = Callable[[BackendConfig, BackendContext], Backend]


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_backends() -> list[str]:
    """The backend kinds installed (built-in and plugins)."""
    return sorted(_entry_points())


def create_backend(config: BackendConfig, context: BackendContext) -> Backend:
    """Build the backend `config.kind` names; resources it opens are closed by `context.stack`."""
    entry = _entry_points().get(config.kind)
    if entry is None:
        raise ConfigError("backend", "kind", f"unknown backend '{config.kind}'; installed: {known_backends()}")
    factory: BackendFactory = entry.load()
    return factory(config, context)


def options(model: type[OptionsT], config: BackendConfig) -> OptionsT:
    """`config.options` checked against a backend's own options model (errors name `backend.options.<field>`)."""
    return validate(model, config.options, "backend", "options")


def openai_backend(config: BackendConfig, context: BackendContext) -> Backend:
    """Any OpenAI-compatible server, online or through its batch API."""
    return http_backend(config, config.resolved_base_url(), context)


def sim_backend(config: BackendConfig, context: BackendContext) -> Backend:
    """The simulated server, started for this run on a loopback port."""
    from synthgen.sim import SimConfig, SimServer

    server = context.stack.enter_context(SimServer(validate(SimConfig, config.sim, "backend", "sim")))
    return http_backend(config, server.base_url, context)


def http_backend(config: BackendConfig, base_url: str, context: BackendContext) -> Backend:
    """The OpenAI-compatible client for the server at `base_url` (its batch API in `mode: batch`)."""
    if config.mode == "batch":
        from synthgen.backends.batch_api import BatchBackend

        return BatchBackend(base_url, config.api_key(), config.batch, context.state_dir, context.stats,
                            timeout=config.timeout, max_attempts=config.max_attempts)
    from synthgen.backends.openai_compat import OpenAIBackend

    return OpenAIBackend(
        base_url, config.api_key(), timeout=config.timeout, connect_timeout=config.connect_timeout,
        hard_timeout=config.hard_timeout,
        max_concurrency=config.max_concurrency if "max_concurrency" in config.model_fields_set else None,
        max_attempts=config.max_attempts, retry_initial=config.retry_initial, retry_max=config.retry_max,
        rpm=config.rpm, tpm=config.tpm, max_response_bytes=config.max_response_bytes, stats=context.stats,
    )
