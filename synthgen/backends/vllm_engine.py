"""vLLM inside the process, on its async engine (`AsyncLLM`): the highest throughput on a GPU box, no server.

Requests stream into the engine as the generating stage submits them, with at most `max_concurrency`
pending inside it (set it to 2-4x the engine's `max_num_seqs`, so the scheduler always has work queued
without holding the whole dataset); each result returns, and is cached, the moment its sequence ends.
Nothing waits for the longest output of a chunk, as `LLM.generate` over fixed chunks would.
Written against vLLM 0.10.2-0.12 (`SamplingParams(structured_outputs=StructuredOutputsParams(json=...))`;
the older `guided_decoding` names are gone in 0.12). The mapping from synthgen requests to vLLM inputs is
plain functions, tested without vLLM.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from typing import Any

from pydantic import Field

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.factory import BackendContext, options
from synthgen.backends.settings import BackendConfig
from synthgen.config import StrictModel
from synthgen.errors import ConfigError, FatalBackendError, RetryableBackendError

SAMPLING_NAMES = {
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "min_tokens", "seed", "stop", "stop_token_ids",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "ignore_eos", "skip_special_tokens",
}
RENAMED = {"max_completion_tokens": "max_tokens"}


class VLLMOptions(StrictModel):
    """Engine options (`backend.options` with `kind: vllm`); `engine_args` passes any other AsyncEngineArgs field."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool = True  # the n samples of one prompt share its prefix
    dtype: str = "auto"
    engine_args: dict[str, Any] = Field(default_factory=dict)


def engine_kwargs(model: str, opts: VLLMOptions) -> dict[str, Any]:
    """Keyword arguments of `AsyncEngineArgs` (unset options left to vLLM's defaults)."""
    named = opts.model_dump(exclude={"engine_args"}, exclude_none=True)
    return {"model": model, **named, **opts.engine_args}


def sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Keyword arguments of `SamplingParams` for `request`; a schema becomes `structured_outputs: {"json": ...}`.

    One completion per request (`n: 1`): synthgen asks for n samples as n requests with their own seeds,
    which vLLM's prefix cache serves from one prompt computation. `max_tokens` absent means "up to the
    context", as on the OpenAI API (vLLM's own default is 16).
    """
    kwargs: dict[str, Any] = {"n": 1, "max_tokens": None}
    for name, value in request.params.items():
        name = RENAMED.get(name, name)
        if name == "n":
            if value != 1:
                raise FatalBackendError(400, f"n={value} in one request", "ask for samples with the stage's `n`")
            continue
        if name not in SAMPLING_NAMES:
            raise FatalBackendError(400, f"sampling parameter '{name}' is not supported in-process",
                                    f"use one of {sorted(SAMPLING_NAMES)}")
        kwargs[name] = [value] if name == "stop" and isinstance(value, str) else value
    if request.schema is not None:
        kwargs["structured_outputs"] = {"json": request.schema}
    return kwargs


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's chat template applied to `messages`, ending where the assistant's answer begins."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def completion_from_output(output: Any) -> Completion:
    """A Completion from vLLM's final `RequestOutput` (first sequence)."""
    sequence = output.outputs[0]
    return Completion(
        text=sequence.text,
        finish_reason=sequence.finish_reason or "stop",
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(sequence.token_ids),
    )


def import_vllm() -> Any:
    """The vllm package, or a ConfigError naming the extra to install."""
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise ConfigError("backend", "kind", "kind: vllm needs vLLM: pip install 'synthgen[vllm]' "
                                             "(vLLM 0.10.2-0.12, on a machine with a supported GPU)") from None


class VLLMBackend:
    """Chat completions from an in-process `AsyncLLM`, started on the first request."""

    def __init__(self, model: str, opts: VLLMOptions, max_pending: int) -> None:
        self._vllm = import_vllm()
        self._engine_kwargs = engine_kwargs(model, opts)
        self._slots = asyncio.Semaphore(max_pending)
        self._starting = asyncio.Lock()
        self._engine: Any = None
        self._tokenizer: Any = None
        self._ids = itertools.count()

    async def complete(self, request: ChatRequest) -> Completion:
        """Generate one completion; the slot bounds how many requests wait inside the engine."""
        engine = await self._started()
        sampling = self._sampling_params(request)
        prompt = prompt_text(self._tokenizer, request.messages)
        final = None
        async with self._slots:
            try:
                async for output in engine.generate(prompt, sampling, f"{request.key()}-{next(self._ids)}"):
                    final = output
            except ValueError as exc:  # e.g. a prompt longer than max_model_len: that record is rejected
                raise RetryableBackendError("invalid_request", str(exc)[:300]) from None
        if final is None:
            raise RetryableBackendError("aborted", "the engine returned no output")
        return completion_from_output(final)

    async def aclose(self) -> None:
        """Shut the engine down (frees the GPU)."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def _started(self) -> Any:
        async with self._starting:
            if self._engine is None:
                arg_utils = importlib.import_module("vllm.engine.arg_utils")
                async_llm = importlib.import_module("vllm.v1.engine.async_llm")
                self._engine = async_llm.AsyncLLM.from_engine_args(arg_utils.AsyncEngineArgs(**self._engine_kwargs))
                self._tokenizer = await self._engine.get_tokenizer()
        return self._engine

    def _sampling_params(self, request: ChatRequest) -> Any:
        kwargs = sampling_kwargs(request)
        params = importlib.import_module("vllm.sampling_params")
        if "structured_outputs" in kwargs:
            kwargs["structured_outputs"] = params.StructuredOutputsParams(**kwargs["structured_outputs"])
        return self._vllm.SamplingParams(**kwargs, output_kind=params.RequestOutputKind.FINAL_ONLY)


def vllm_backend(config: BackendConfig, context: BackendContext) -> VLLMBackend:
    """`kind: vllm`: the model by name or path, engine options from `backend.options`."""
    return VLLMBackend(config.model, options(VLLMOptions, config), config.max_concurrency)
