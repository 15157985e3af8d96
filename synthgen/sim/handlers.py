"""The simulated OpenAI-compatible server: a real loopback HTTP server for tests, benchmarks and `--backend sim`.

Why it looks the way it does:
- an answer is a pure function of (model, messages or prompt, `seed`, schema), so reruns, caches and tests agree;
- faults and jitter come from the server's own RNG (`SimConfig.seed`), so a retried request can succeed;
- the request path is plain dicts and orjson (no pydantic), so a benchmark measures the client, not the sim;
- the Files and Batch APIs (`synthgen.sim.batch`) answer each batch line as the online endpoint would answer its body;
- with `capacity` set it reports its slots as llama.cpp's server does (GET /props `total_slots`, GET /slots with
  `is_processing` per slot, GET /health), so clients can size their window and tell a busy server from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import random
import re
import time
from collections import Counter
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from synthgen.hashing import stable_int
from synthgen.sim.config import DEFAULT_MODEL, FAULT_KINDS, SimConfig
from synthgen.sim.content import between, generate, judgement, quoting, repeated_answer, reworded
from synthgen.sim.http import error_body, error_response, json_response

_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_JSON_OBJECT = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _message_text(message: Any) -> str:
    """The text of one chat message (a string or a list of text parts)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the request asks its answer to follow, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_schema", "json_object"):
        return None
    return (fmt.get("json_schema") or {}).get("schema", {}) if fmt["type"] == "json_schema" else _JSON_OBJECT


class _Query(NamedTuple):
    """A completion request body that passed the checks."""

    model: str
    source: Any  # the messages (chat) or the prompt
    prompt: str
    prompt_tokens: int
    max_tokens: int
    seed: int
    n: int
    schema: dict[str, Any] | None


class SimHandlers:
    """The request handlers and counters of one simulated server."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.slots: Any = asyncio.Semaphore(config.capacity) if config.capacity else contextlib.nullcontext()
        self.auth = None if config.api_key is None else f"Bearer {config.api_key}"
        rates = [(kind, config.faults[kind]) for kind in FAULT_KINDS if config.faults.get(kind)]
        self.fault_edges = [(kind, sum(r for _, r in rates[: i + 1])) for i, (kind, _) in enumerate(rates)]
        self.in_flight = 0
        self.processing = 0  # requests holding a capacity slot
        self.reset()

    def reset(self) -> None:
        """Zero the counters (the in-flight gauge stays)."""
        self.endpoints: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.bodies: list[str] = []
        self.batches: Counter[str] = Counter()  # "created" and each final batch status
        self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data; `statuses` and `completed` cover online completion requests."""
        return {
            "requests": sum(self.endpoints.values()), "endpoints": dict(self.endpoints),
            "statuses": {str(status): n for status, n in self.statuses.items()}, "faults": dict(self.faults),
            "completed": self.statuses[200], "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            "batches": dict(self.batches),
        }

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.auth is None or request.headers.get("Authorization") == self.auth:
            return None
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models."""
        self.endpoints[request.path] += 1
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "synthgen-sim"}
                for name in self.config.models or [DEFAULT_MODEL]]
        return self._unauthorized(request) or json_response({"object": "list", "data": data})

    async def props(self, request: web.Request) -> web.Response:
        """GET /props, shaped as llama.cpp's (the fields a client reads)."""
        self.endpoints[request.path] += 1
        return json_response({"default_generation_settings": {"n_ctx": self.config.max_context_tokens or 2048, "params": {}},
                      "total_slots": self.config.capacity, "model_alias": DEFAULT_MODEL, "endpoint_slots": True})

    async def slots_route(self, request: web.Request) -> web.Response:
        """GET /slots: one entry per capacity slot, the first `processing` of them busy (as llama.cpp lists them)."""
        self.endpoints[request.path] += 1
        n_ctx = self.config.max_context_tokens or 2048
        return json_response([{"id": i, "n_ctx": n_ctx, "speculative": False, "is_processing": i < self.processing}
                      for i in range(self.config.capacity or 0)])

    async def health(self, request: web.Request) -> web.Response:
        """GET /health."""
        self.endpoints[request.path] += 1
        return json_response({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        """GET /sim/stats."""
        return json_response(self.snapshot())

    async def bodies_route(self, request: web.Request) -> web.Response:
        """GET /sim/bodies: sha256 of each completion request body received since the last reset, in order."""
        return json_response(self.bodies)

    async def reset_route(self, request: web.Request) -> web.Response:
        """POST /sim/reset."""
        self.reset()
        return json_response(self.snapshot())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/completions (legacy: a `prompt` string in, `choices[i].text` out)."""
        return await self._serve(request, chat=False)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.endpoints[request.path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._complete(request, chat)
        finally:
            self.in_flight -= 1
        if request.transport is not None and not request.transport.is_closing():  # a dropped one sent nothing
            self.statuses[response.status] += 1
        return response

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        """Check the request as OpenAI does, wait the latency in a capacity slot, then answer or fail."""
        if unauthorized := self._unauthorized(request):
            return unauthorized
        raw = await request.read()
        if self.config.track_bodies:
            self.bodies.append(hashlib.sha256(raw).hexdigest())
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error_response(400, "The request body is not valid JSON.")
        query = self._check(body, chat)
        if not isinstance(query, _Query):
            return json_response(query[1], query[0])
        fault = self._draw_fault(query.schema is not None)
        async with self.slots:
            self.processing += 1
            try:
                failure = await self._wait(request, fault)
            finally:
                self.processing -= 1
            if failure:
                return failure
        if fault == "endless_body":
            return await _endless(request)
        payload = orjson.dumps(self._completion(query, chat, fault))
        if fault == "malformed":
            payload = payload[: len(payload) // 2]
        return web.Response(body=payload, content_type="application/json")

    def answer(self, body: Any, chat: bool, fault: str | None = None) -> tuple[int, dict[str, Any]]:
        """The status and JSON payload (a completion or an `{"error": ...}`) the endpoint gives a parsed body, sans latency."""
        query = self._check(body, chat)
        return (200, self._completion(query, chat, fault)) if isinstance(query, _Query) else query

    def _check(self, body: Any, chat: bool) -> _Query | tuple[int, dict[str, Any]]:
        """The request in `body`, or the status and error payload OpenAI would answer it with."""
        if not isinstance(body, dict) or not isinstance(model := body.get("model"), str):
            return 400, error_body("The body must be a JSON object with a 'model' string.")
        if self.config.models is not None and model not in self.config.models:
            return 404, error_body(f"The model '{model}' does not exist.", code="model_not_found")
        source: Any = body.get("messages") if chat else body.get("prompt")
        if not (isinstance(source, list) and source if chat else isinstance(source, str)):
            return 400, error_body("'messages' must be a non-empty list." if chat else "'prompt' must be a string.")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        seed, n = body.get("seed") or 0, body.get("n") or 1
        if not all(type(v) is int for v in (max_tokens, seed, n)) or not 1 <= n <= 128:
            return 400, error_body("'max_tokens', 'seed' and 'n' must be integers (1 <= n <= 128).")
        prompt: str = " ".join(map(_message_text, source)) if chat else source
        prompt_tokens, limit = len(prompt.split()), self.config.max_context_tokens
        if limit and prompt_tokens + max_tokens > limit:
            return 400, error_body(f"This model's maximum context length is {limit} tokens; the request needs "
                                    f"{prompt_tokens} for the prompt + {max_tokens} for the completion.",
                                    code="context_length_exceeded")
        return _Query(model, source, prompt, prompt_tokens, max_tokens, seed, n, _schema(body))

    def _completion(self, query: _Query, chat: bool, fault: str | None) -> dict[str, Any]:
        """The completion object answering `query` (a `truncated` or `invalid_json` fault spoils its text)."""
        model, source, prompt, prompt_tokens, max_tokens, seed, n, schema = query
        key = stable_int(model, source, schema)
        words = tuple(dict.fromkeys(w.lower() for w in _TOKEN.findall(prompt)))[:40]
        choices, completion_tokens = [], 0
        for i in range(n):
            rng = random.Random(stable_int(key, seed + i))
            verdict = (judgement(schema, prompt, rng, self.config.judge_position_bias)
                       or quoting(schema, prompt, rng, words)) if schema else between(prompt, rng)
            repeat = None if verdict else repeated_answer(prompt, self.config.leaf_duplicate_rates, key, seed + i)
            if repeat is not None:
                text = generate(repeat[0], 0, repeat[1], schema, max_tokens)
                if self.config.leaf_repeat == "paraphrase":
                    text = reworded(text, schema is not None, random.Random(stable_int(key, seed + i, "reword")))
            else:
                text = verdict or generate(key, seed + i, words, schema, max_tokens, self.config.duplicate_rate,
                                           prompt_tokens)
            finish = "stop"
            if fault == "truncated":
                text, finish = text[: len(text) // 2], "length"
            elif fault == "invalid_json":
                text = self._break(text, schema or {})
            completion_tokens += len(text.split())
            content: Any = {"null_content": None, "list_content": [{"type": "text", "text": text}],
                            "empty_content": ""}.get(fault or "", text)
            answer = {"message": {"role": "assistant", "content": content}} if chat else {"text": text}
            choices.append({"index": i, **answer, "finish_reason": finish, "logprobs": None})
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-sim-{key:x}-{seed}",
            "object": "chat.completion" if chat else "text_completion", "created": 0, "model": model,
            "choices": [] if fault == "empty_choices" else choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _draw_fault(self, has_schema: bool) -> str | None:
        if not self.fault_edges:
            return None
        roll = self.rng.random()
        kind = next((kind for kind, edge in self.fault_edges if roll < edge), None)
        if kind is None or (kind == "invalid_json" and not has_schema):
            return None
        self.faults[kind] += 1
        return kind

    async def _wait(self, request: web.Request, fault: str | None) -> web.Response | None:
        """Sleep the latency (or the hang); return the response of a fault that replaces the answer."""
        config = self.config
        delay = config.latency + self.rng.uniform(-config.jitter, config.jitter)
        if fault == "hang":
            delay = config.hang_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        if fault in ("rate_limit", "retry_after_nan", "retry_after_date"):
            retry_after = {"rate_limit": f"{config.retry_after:g}", "retry_after_nan": "nan",
                           "retry_after_date": email.utils.formatdate(time.time() + config.retry_after, usegmt=True)}
            return error_response(429, "Rate limit reached (simulated).", "rate_limit_error", "rate_limit_exceeded",
                          {"Retry-After": retry_after[fault]})
        if fault == "html_body":
            return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        if fault in ("server_error", "unavailable"):
            error = (500, "Internal server error") if fault == "server_error" else (503, "Service unavailable")
            return error_response(error[0], f"{error[1]} (simulated).", "server_error")
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: aiohttp finds the transport closed and drops it quietly
        return None

    def _break(self, text: str, schema: dict[str, Any]) -> str:
        """Content that fails `schema`: a required key dropped, or the JSON wrapped in chatter."""
        instance, required = orjson.loads(text), schema.get("required")
        if isinstance(instance, dict) and required and self.rng.random() < 0.5:
            instance.pop(required[0], None)
            return orjson.dumps(instance).decode()
        return f"Sure! Here is the JSON you asked for:\n```json\n{text}\n```"


async def _endless(request: web.Request) -> web.StreamResponse:
    """A 200 whose JSON body never ends: bytes until the client hangs up."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b'{"choices": [' + b" " * (1 << 16)
    with contextlib.suppress(ConnectionError):
        while request.transport is not None and not request.transport.is_closing():
            await response.write(chunk)
            chunk = b" " * (1 << 16)
    return response
