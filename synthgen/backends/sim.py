"""The simulated OpenAI-compatible server: a real loopback HTTP server for tests, benchmarks and `--backend sim`.

Why it looks the way it does:
- an answer is a pure function of (model, messages or prompt, `seed`, schema), so reruns, caches and tests agree;
- faults and jitter come from the server's own RNG (`SimConfig.seed`), so a retried request can succeed;
- the request path is plain dicts and orjson (no pydantic), so a benchmark measures the client, not the sim;
- the Files and Batch APIs (`sim_batch`) answer each batch line as the online endpoint would answer its body;
- with `capacity` set it reports its slots as llama.cpp's server does (GET /props `total_slots`, GET /slots with
  `is_processing` per slot, GET /health), so clients can size their window and tell a busy server from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import ipaddress
import random
import re
import threading
import time
from collections import Counter
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from synthgen.aio import new_event_loop
from synthgen.backends.sim_content import generate
from synthgen.hashing import stable_int

FAULT_KINDS = (
    "rate_limit", "server_error", "unavailable", "hang", "disconnect", "malformed", "truncated", "invalid_json",
    # a misbehaving server: a 200 that is no completion, a nonsensical Retry-After, a body that never ends
    "html_body", "empty_choices", "null_content", "list_content", "empty_content",
    "retry_after_nan", "retry_after_date", "endless_body",
)
DEFAULT_MODEL = "sim-model"
_SHUTDOWN_GRACE = 0.25  # seconds stop() lets in-flight requests finish before cancelling them
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_JSON_OBJECT = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class SimConfig(BaseModel, extra="forbid"):
    """Knobs of the simulated server; the defaults give a fast, fault-free model that sometimes repeats itself."""

    latency: float = Field(default=0.05, ge=0)  # seconds per request, about a short hosted-API completion
    jitter: float = Field(default=0.0, ge=0)  # uniform +- seconds around `latency`
    capacity: int | None = Field(default=None, ge=1)  # requests processed at once; the rest queue (slots, /props)
    faults: dict[str, float] = {}  # fault kind (FAULT_KINDS) -> share of completion requests
    hang_seconds: float = Field(default=30.0, ge=0)  # longer than client timeouts, so a hang reads as a timeout
    retry_after: float = Field(default=0.1, ge=0)  # seconds sent in the Retry-After header of a 429
    duplicate_rate: float = Field(default=0.1, ge=0, le=1)  # prompts whose samples collide (as many: nearly)
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`
    models: list[str] | None = None  # when set, other model names get 404
    max_context_tokens: int | None = Field(default=None, ge=1)  # prompt words + max_tokens above it get 400
    seed: int = 0  # seeds faults, jitter and batch item draws, never the content
    track_bodies: bool = False  # keep a sha256 of every completion request body, for GET /sim/bodies (soak tests)
    batch_delay: float = Field(default=0.2, ge=0)  # seconds from creating a batch to its results (OpenAI: up to 24 h)
    batch_failed_items: float = Field(default=0.0, ge=0, le=1)  # share of batch items answered with a 500 (error file)
    batch_expired_items: float = Field(default=0.0, ge=0, le=1)  # share of batch items left undone; any makes it `expired`

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, faults: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; choose from {list(FAULT_KINDS)}")
        if any(not 0 <= rate <= 1 for rate in faults.values()):
            raise ValueError("each fault rate must be between 0 and 1")
        if sum(faults.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(faults.values()):g}; lower them so they sum to at most 1")
        return faults


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json", headers=headers)


def _error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
                param: str | None = None) -> dict[str, Any]:
    """An error payload in OpenAI's JSON shape."""
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
           headers: dict[str, str] | None = None, param: str | None = None) -> web.Response:
    """An error response in OpenAI's JSON shape."""
    return _json(_error_body(message, kind, code, param), status, headers)


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


class _Sim:
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
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models."""
        self.endpoints[request.path] += 1
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "synthgen-sim"}
                for name in self.config.models or [DEFAULT_MODEL]]
        return self._unauthorized(request) or _json({"object": "list", "data": data})

    async def props(self, request: web.Request) -> web.Response:
        """GET /props, shaped as llama.cpp's (the fields a client reads)."""
        self.endpoints[request.path] += 1
        return _json({"default_generation_settings": {"n_ctx": self.config.max_context_tokens or 2048, "params": {}},
                      "total_slots": self.config.capacity, "model_alias": DEFAULT_MODEL, "endpoint_slots": True})

    async def slots_route(self, request: web.Request) -> web.Response:
        """GET /slots: one entry per capacity slot, the first `processing` of them busy (as llama.cpp lists them)."""
        self.endpoints[request.path] += 1
        n_ctx = self.config.max_context_tokens or 2048
        return _json([{"id": i, "n_ctx": n_ctx, "speculative": False, "is_processing": i < self.processing}
                      for i in range(self.config.capacity or 0)])

    async def health(self, request: web.Request) -> web.Response:
        """GET /health."""
        self.endpoints[request.path] += 1
        return _json({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        """GET /sim/stats."""
        return _json(self.snapshot())

    async def bodies_route(self, request: web.Request) -> web.Response:
        """GET /sim/bodies: sha256 of each completion request body received since the last reset, in order."""
        return _json(self.bodies)

    async def reset_route(self, request: web.Request) -> web.Response:
        """POST /sim/reset."""
        self.reset()
        return _json(self.snapshot())

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
            return _error(400, "The request body is not valid JSON.")
        query = self._check(body, chat)
        if not isinstance(query, _Query):
            return _json(query[1], query[0])
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
            return 400, _error_body("The body must be a JSON object with a 'model' string.")
        if self.config.models is not None and model not in self.config.models:
            return 404, _error_body(f"The model '{model}' does not exist.", code="model_not_found")
        source: Any = body.get("messages") if chat else body.get("prompt")
        if not (isinstance(source, list) and source if chat else isinstance(source, str)):
            return 400, _error_body("'messages' must be a non-empty list." if chat else "'prompt' must be a string.")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        seed, n = body.get("seed") or 0, body.get("n") or 1
        if not all(type(v) is int for v in (max_tokens, seed, n)) or not 1 <= n <= 128:
            return 400, _error_body("'max_tokens', 'seed' and 'n' must be integers (1 <= n <= 128).")
        prompt: str = " ".join(map(_message_text, source)) if chat else source
        prompt_tokens, limit = len(prompt.split()), self.config.max_context_tokens
        if limit and prompt_tokens + max_tokens > limit:
            return 400, _error_body(f"This model's maximum context length is {limit} tokens; the request needs "
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
            text = generate(key, seed + i, words, schema, max_tokens, self.config.duplicate_rate, prompt_tokens)
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
            return _error(429, "Rate limit reached (simulated).", "rate_limit_error", "rate_limit_exceeded",
                          {"Retry-After": retry_after[fault]})
        if fault == "html_body":
            return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        if fault in ("server_error", "unavailable"):
            error = (500, "Internal server error") if fault == "server_error" else (503, "Service unavailable")
            return _error(error[0], f"{error[1]} (simulated).", "server_error")
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


_SIM = web.AppKey("synthgen_sim", _Sim)


def build_app(config: SimConfig) -> web.Application:
    """The aiohttp application of the simulated server."""
    sim = _Sim(config)
    app = web.Application()
    app[_SIM] = sim
    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/v1/completions", sim.completions)
    if config.capacity:
        app.router.add_get("/props", sim.props)
        app.router.add_get("/slots", sim.slots_route)
        app.router.add_get("/health", sim.health)
    app.router.add_get("/sim/stats", sim.stats)
    app.router.add_get("/sim/bodies", sim.bodies_route)
    app.router.add_post("/sim/reset", sim.reset_route)
    from synthgen.backends.sim_batch import add_batch_routes  # here, as sim_batch imports this module

    add_batch_routes(app, sim)
    return app


class SimServer:
    """The sim on a loopback port, served from a background thread: `with SimServer(config) as sim: ...`."""

    def __init__(self, config: SimConfig | None = None, port: int = 0) -> None:
        self.config = config or SimConfig()
        self._app = build_app(self.config)
        self._wanted_port, self._port = port, 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        if not self._port:
            raise RuntimeError("the sim server is not running; call start() or use it in a `with` block")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SimServer:
        """Start serving; returns once the port is open. A server runs once: make a new one to run again."""
        if self._thread is not None or self._ready.is_set():
            raise RuntimeError("this SimServer has already been started; make a new one")
        self._thread = threading.Thread(target=self._run, name="synthgen-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight get a short grace period, then are cancelled."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread, self._port = None, 0

    def stats(self) -> dict[str, Any]:
        """The server's counters (as GET /sim/stats returns them)."""
        sim = self._app[_SIM]
        if self._thread is None or self._loop is None:
            return sim.snapshot()

        async def snapshot() -> dict[str, Any]:  # read on the server's loop, never mid-update
            return sim.snapshot()

        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(timeout=10)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # start() re-raises it in the caller's thread
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self._wanted_port).start()
            self._port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the sim in the foreground until interrupted; it binds loopback addresses only."""
    if not _is_loopback(host):
        raise ValueError(f"the sim server binds loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
    web.run_app(build_app(config), host=host, port=port, loop=new_event_loop(), access_log=None,
                handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE)
