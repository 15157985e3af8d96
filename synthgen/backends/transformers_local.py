"""A local chat model run in-process by Hugging Face transformers: no GPU server and no API key needed.

Concurrent requests are gathered by a MicroBatcher. A batch is split into groups that share decoding settings and
each group is one left-padded `model.generate` call, run in a worker thread, one call at a time. Responses to a
schema are checked at once (a JSON object inside chatter is extracted); those still invalid are asked again,
together, up to `repair_attempts` times, and what stays invalid is returned raw for the calling stage to reject.
A sampled group is seeded from its requests' seeds, so the same batch gives the same text.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.batching import BatchOutcome, MicroBatcher
from synthgen.backends.factory import BackendContext, options
from synthgen.backends.settings import BackendConfig
from synthgen.config import StrictModel
from synthgen.errors import ConfigError
from synthgen.hashing import stable_int
from synthgen.validation import InvalidOutput, OutputSchema

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CausalLM = Any  # a transformers PreTrainedModel with GenerationMixin: a type mypy cannot spell

DEFAULT_MAX_TOKENS = 256
SCHEMA_PROMPT = "Reply with only a JSON object that follows this JSON schema, and no other text: {schema}"
REPAIR_PROMPT = "That was not valid JSON for the schema ({reason}). Reply with only the JSON object."


class TransformersOptions(StrictModel):
    """`backend.options` of `kind: transformers`."""

    device: str = Field(default="cpu", description="cpu, mps, cuda (or cuda:N), or auto: the best one present")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="auto: as saved")
    batch_size: int = Field(default=8, ge=1, description="requests per batch (one generate call per decoding setting)")
    linger: float = Field(default=0.02, ge=0, description="seconds a partial batch waits for more requests")
    repair_attempts: int = Field(default=1, ge=0, description="re-asks of a response that is not valid JSON for the schema")
    trust_remote_code: bool = Field(default=False, description="run model code shipped with the checkpoint")


@dataclass(frozen=True)
class Decoding:
    """The settings all requests in one generate call share."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int

    @classmethod
    def of(cls, params: dict[str, Any]) -> Decoding:
        """From OpenAI parameters: sampled at temperature 1 when none is given, greedy at temperature 0; no top-k
        cut unless `top_k` is given (transformers would otherwise apply its default of 50)."""
        limit = int(params.get("max_completion_tokens") or params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        temperature = float(params["temperature"]) if params.get("temperature") is not None else 1.0
        if temperature == 0:
            return cls(False, 1.0, 1.0, 0, limit)
        return cls(True, temperature, float(params.get("top_p") or 1.0), int(params.get("top_k") or 0), limit)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `model.generate`."""
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k} if self.do_sample else {}
        return {"do_sample": self.do_sample, "max_new_tokens": self.max_new_tokens, **sampling}


@dataclass
class Turn:
    """One request on its way through generation and repair; tokens add up over its generations."""

    request: ChatRequest
    messages: list[dict[str, str]]
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    problem: str = ""

    def settle(self) -> bool:
        """True when the text is final: no schema, or valid for it (then made compact JSON); else notes why not."""
        if self.request.schema is None:
            return True
        try:
            self.text, self.finish_reason = valid_json(self.text, OutputSchema(self.request.schema)), "stop"
        except InvalidOutput as exc:
            self.problem = f"{exc.reason}: {exc.detail}"[:160]
            return False
        return True

    def ask_again(self) -> None:
        """Add the invalid answer and a request to fix it to the conversation."""
        self.messages = [*self.messages, {"role": "assistant", "content": self.text},
                         {"role": "user", "content": REPAIR_PROMPT.format(reason=self.problem)}]

    def completion(self) -> Completion:
        """What the caller gets: the final text, tokens summed over every generation."""
        return Completion(self.text, self.finish_reason, self.prompt_tokens, self.completion_tokens)


class TransformersBackend:
    """Answers chat requests with a loaded model and tokenizer, a batch at a time."""

    def __init__(self, model: CausalLM, tokenizer: PreTrainedTokenizerBase, opts: TransformersOptions) -> None:
        self.model: CausalLM | None = model
        self.tokenizer, self.opts = tokenizer, opts
        eos = model.generation_config.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.batcher = MicroBatcher(self._run_batch, opts.batch_size, opts.linger)
        self._lock = asyncio.Lock()

    async def complete(self, request: ChatRequest) -> Completion:
        """Queue `request` into the next batch and wait for its completion."""
        return await self.batcher.submit(request)

    async def aclose(self) -> None:
        """Stop pending batches and let the model go."""
        await self.batcher.aclose()
        self.model = None

    async def _run_batch(self, requests: list[ChatRequest]) -> BatchOutcome:
        async with self._lock:
            return dict(await asyncio.to_thread(self._answer, requests))

    def _answer(self, requests: list[ChatRequest]) -> dict[str, Completion]:
        turns = [Turn(request, with_schema_prompt(request)) for request in sorted(requests, key=ChatRequest.key)]
        pending = turns
        for attempt in range(self.opts.repair_attempts + 1):
            if attempt:
                for turn in pending:
                    turn.ask_again()
            self._generate(pending)
            pending = [turn for turn in pending if not turn.settle()]
        return {turn.request.key(): turn.completion() for turn in turns}

    def _generate(self, turns: list[Turn]) -> None:
        groups: dict[Decoding, list[Turn]] = {}
        for turn in turns:
            groups.setdefault(Decoding.of(turn.request.params), []).append(turn)
        for decoding, group in groups.items():
            self._generate_group(decoding, group)

    def _generate_group(self, decoding: Decoding, group: list[Turn]) -> None:
        """One batched, left-padded generate call; each turn gets its text, finish reason and token counts."""
        import torch

        if self.model is None:
            raise RuntimeError("the transformers backend is closed")
        prompts = [self.tokenizer.apply_chat_template(turn.messages, tokenize=False, add_generation_prompt=True)
                   for turn in group]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        if decoding.do_sample:
            torch.manual_seed(stable_int(*(turn.request.params.get("seed") for turn in group)))
        with torch.inference_mode():
            output = self.model.generate(**inputs, **decoding.kwargs(), pad_token_id=self.tokenizer.pad_token_id)
        width = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        for turn, ids, prompt in zip(group, output[:, width:].tolist(), prompt_tokens, strict=True):
            self._record(turn, ids, prompt, decoding.max_new_tokens)

    def _record(self, turn: Turn, ids: list[int], prompt_tokens: int, limit: int) -> None:
        """Give `turn` its decoded text (cut after EOS and at a stop string), finish reason and token counts."""
        ended = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        kept = ids if ended is None else ids[: ended + 1]
        text = str(self.tokenizer.decode(kept, skip_special_tokens=True))
        turn.text, stopped = cut_at_stop(text, turn.request.params.get("stop"))
        turn.finish_reason = "length" if ended is None and not stopped and len(kept) >= limit else "stop"
        turn.prompt_tokens += prompt_tokens
        turn.completion_tokens += len(kept)


def with_schema_prompt(request: ChatRequest) -> list[dict[str, str]]:
    """The request's messages, the last user turn asking for JSON that follows its schema (if it has one)."""
    if request.schema is None:
        return request.messages
    instruction = SCHEMA_PROMPT.format(schema=compact_json(request.schema))
    messages = request.messages
    if messages and messages[-1]["role"] == "user":
        return [*messages[:-1], {**messages[-1], "content": f"{messages[-1]['content']}\n\n{instruction}"}]
    return [*messages, {"role": "user", "content": instruction}]


def valid_json(text: str, schema: OutputSchema) -> str:
    """`text` as compact JSON valid for `schema`, taken whole or from the first JSON object in it that validates;
    InvalidOutput about the whole text when there is none."""
    try:
        return compact_json(schema.parse(text))
    except InvalidOutput as whole:
        decoder = json.JSONDecoder()
        for brace in re.finditer("{", text):
            try:
                value, _ = decoder.raw_decode(text, brace.start())
                return compact_json(schema.parse(json.dumps(value)))
            except (ValueError, InvalidOutput):
                continue
        raise whole


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether one was found."""
    stops = [stop] if isinstance(stop, str) else stop or []
    cut = min((found for s in stops if s and (found := text.find(s)) >= 0), default=None)
    return (text, False) if cut is None else (text[:cut], True)


def transformers_backend(config: BackendConfig, context: BackendContext) -> TransformersBackend:
    """`backend: {kind: transformers, model: <local folder or cached hub name>, options: {...}}`."""
    opts = options(TransformersOptions, config)
    model, tokenizer = load(config.model, opts)
    return TransformersBackend(model, tokenizer, opts)


def load(name: str, opts: TransformersOptions) -> tuple[CausalLM, PreTrainedTokenizerBase]:
    """The model (on its device) and its tokenizer (left padding, a pad token); clear errors when they cannot be had."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError("backend", "kind", f"kind 'transformers' needs `pip install transformers torch` ({exc})") from None
    path = Path(name).expanduser()
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~"))):
        raise ConfigError("backend", "model", f"no model folder at {name}")
    gguf = {"gguf_file": path.name} if path.suffix == ".gguf" and path.is_file() else {}  # dequantised (`pip install gguf`)
    source = str(path.parent if gguf else path) if path.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=opts.trust_remote_code, **gguf)
        model: CausalLM = AutoModelForCausalLM.from_pretrained(
            source, dtype=opts.dtype if opts.dtype == "auto" else getattr(torch, opts.dtype),
            trust_remote_code=opts.trust_remote_code, **gguf,
        )
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("backend", "model", f"cannot load model '{name}' ({reason}); it must be a local model folder "
                                              "or a model already in the Hugging Face cache") from None
    if tokenizer.chat_template is None:
        raise ConfigError("backend", "model", f"model '{name}' has no chat template; use a chat (instruct) model")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device(opts.device)), tokenizer


def device(name: str) -> str:
    """`name`, or for `auto` the best device present: cuda, then mps, then cpu."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"
