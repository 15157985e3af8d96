"""The simulated OpenAI-compatible server: a real HTTP server on loopback for tests, benchmarks and `--backend sim`.

Why it looks the way it does:
- an answer is a pure function of (model, messages, `seed`, schema), so reruns, caches and tests agree;
- faults are drawn from the server's own RNG (`SimConfig.seed`), so a retried request can succeed;
- the request path is plain dicts and orjson (no pydantic), so a benchmark measures the client, not the sim.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import random
import re
import threading
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from synthgen.hashing import stable_int

FAULT_KINDS = (
    "rate_limit", "server_error", "unavailable", "hang", "disconnect", "malformed", "truncated", "invalid_json",
)
DEFAULT_MODEL = "sim-model"
_SHUTDOWN_TIMEOUT = 0.25  # seconds stop() waits for in-flight requests before cancelling them
_MAX_DEPTH = 6  # past this depth schema instances take the smallest valid shape (recursive schemas end)
_WORDS = tuple(
    """river signal harvest lantern orbit granite whisper ledger canyon protocol meadow circuit falcon
    archive tensor glacier mosaic quarry beacon saddle prism vintage harbor compass tundra cipher orchard
    voltage ember fabric summit lattice nomad pigment reactor willow atlas thunder cobalt garden vector
    estuary marble parcel kernel horizon basalt spindle ferry lagoon quartz ballad dynamo thistle bridge
    nebula anchor cedar median pulse rampart sorbet timber umbra valley wander yeast zenith acorn bramble
    candle delta engine fjord gossip hazel inlet jasper kettle lumen mantle nectar oxide pepper quiver
    rhythm sierra trellis uplink velvet walnut yonder zephyr amber bishop cliff dune fathom gravel hollow
    island jungle kiosk lichen mirror nutmeg opal pillar radish sketch tango urchin vessel wicker
    baseline sample measure predict explain compare improve reduce observe design balance verify
    gather select recover describe""".split()
)
_WORD_RING = _WORDS * 2
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "12:00:00Z", "email": "user@example.com",
    "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000",
}
_JSON_OBJECT = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class SimConfig(BaseModel, extra="forbid"):
    """Knobs of the simulated server; the defaults give a fast, fault-free model that sometimes repeats itself."""

    latency: float = Field(0.05, ge=0)  # seconds per request, about a short hosted-API completion
    jitter: float = Field(0.0, ge=0)  # uniform +- seconds around `latency`
    capacity: int | None = Field(None, ge=1)  # requests processed at once; the rest queue
    faults: dict[str, float] = {}  # fault kind (FAULT_KINDS) -> share of completion requests
    hang_seconds: float = Field(30.0, ge=0)  # longer than client timeouts, so a hang is seen as a timeout
    retry_after: float = Field(0.1, ge=0)  # seconds sent in the Retry-After header of a 429
    duplicate_rate: float = Field(0.1, ge=0, le=1)  # share of prompts whose samples all collide (as many near-dup)
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`
    models: list[str] | None = None  # when set, other model names get 404
    max_context_tokens: int | None = Field(None, ge=1)  # prompt words + max_tokens above it get 400
    seed: int = 0  # seeds fault injection and jitter, never the content

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


def _text(rng: random.Random, prompt_words: tuple[str, ...], n_words: int) -> str:
    """Sentences of `n_words` words drawn from the prompt's words and a random window of the word list."""
    start = rng.randrange(len(_WORDS))
    pool = _WORD_RING[start : start + 40] + prompt_words
    size = len(pool)
    words = [pool[b % size] for b in rng.randbytes(n_words)]  # bytes: one call, not one per word
    sentences, i = [], 0
    for b in rng.randbytes(n_words // 6 + 1):
        chunk = words[i : i + 6 + b % 10]
        i += len(chunk)
        if chunk:
            sentences.append(" ".join(chunk).capitalize() + ".")
    return " ".join(sentences)


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> int | float:
    """A number inside the schema's (exclusive) minimum and maximum."""
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    lo = (0 if hi is None else hi - 100) if lo is None else lo
    hi = lo + 100 if hi is None else hi
    if integer:
        first, last = math.ceil(lo), math.floor(hi)
        first += first == schema.get("exclusiveMinimum")
        last -= last == schema.get("exclusiveMaximum")
        return rng.randint(first, last)
    value = lo + (hi - lo) * rng.uniform(0.05, 0.95)
    return rounded if lo < (rounded := round(value, 2)) < hi else value


def _instance(schema: dict[str, Any], rng: random.Random, defs: dict[str, Any], words: tuple[str, ...], depth: int = 0) -> Any:
    """A random instance of `schema` (the JSON Schema subset structured-output APIs accept)."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[-1]], rng, defs, words, depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        nulls = [o for o in options if o.get("type") == "null"]
        return _instance(nulls[0] if nulls and depth >= _MAX_DEPTH else rng.choice(options), rng, defs, words, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        nullable = "null" in kind and (depth >= _MAX_DEPTH or rng.random() < 0.2)
        kind = "null" if nullable or not others else rng.choice(others)
    if kind == "object":
        required = set(schema.get("required", ()))
        return {
            key: _instance(sub, rng, defs, words, depth + 1)
            for key, sub in schema.get("properties", {}).items()
            if key in required or (depth < _MAX_DEPTH and rng.random() < 0.7)
        }
    if kind == "array":
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems", lo + 3)
        n = lo if depth >= _MAX_DEPTH else rng.randint(min(max(lo, 1), hi), hi)
        return [_instance(schema.get("items", {}), rng, defs, words, depth + 1) for _ in range(n)]
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = _text(rng, words, rng.randint(2, 10))[:-1]
    while len(text) < schema.get("minLength", 0):
        text += " " + rng.choice(_WORDS)
    return text[: schema.get("maxLength")]


def generate(key: int, seed: int, words: tuple[str, ...], schema: dict[str, Any] | None, max_tokens: int | None, duplicate_rate: float) -> str:
    """The answer to a request whose content hashes to `key`: the same inputs always give the same text."""
    roll = key % 1_000_000 / 1_000_000
    duplicate, near = roll < duplicate_rate, roll < 2 * duplicate_rate
    rng = random.Random(key if near else stable_int(key, seed))
    if schema is not None:
        return orjson.dumps(_instance(schema, rng, schema.get("$defs", {}), words)).decode()
    n_words = rng.randint(20, 120)
    text = _text(rng, words, min(n_words, max_tokens) if max_tokens else n_words)
    if near and not duplicate:
        tweak, parts = random.Random(stable_int(key, seed)), text.split(" ")
        for _ in range(2):
            parts[tweak.randrange(len(parts))] = tweak.choice(_WORDS)
        text = " ".join(parts)
    return text


def _error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None) -> web.Response:
    """An error response in OpenAI's JSON shape."""
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json(data: Any) -> web.Response:
    """A 200 JSON response."""
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _invalid(message: str) -> web.Response:
    """A 400 for a request OpenAI would reject as malformed."""
    return _error(400, message, "invalid_request_error", None)


def _message_text(message: Any) -> str:
    """The text of one chat message (plain string or a list of text parts)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_schema", "json_object"):
        return None
    return (fmt.get("json_schema") or {}).get("schema", {}) if fmt["type"] == "json_schema" else _JSON_OBJECT


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
        self.reset()

    def reset(self) -> None:
        """Zero the counters (the in-flight gauge stays)."""
        self.endpoints: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data; `statuses` and `completed` count completion requests only."""
        return {
            "requests": sum(self.endpoints.values()),
            "endpoints": dict(self.endpoints),
            "statuses": {str(status): n for status, n in self.statuses.items()},
            "faults": dict(self.faults),
            "completed": self.statuses[200],
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.auth is None or request.headers.get("Authorization") == self.auth:
            return None
        return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models."""
        self.endpoints[request.path] += 1
        names = self.config.models or [DEFAULT_MODEL]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "synthgen-sim"} for name in names]
        return self._unauthorized(request) or _json({"object": "list", "data": data})

    async def stats(self, request: web.Request) -> web.Response:
        """GET /sim/stats."""
        return _json(self.snapshot())

    async def reset_route(self, request: web.Request) -> web.Response:
        """POST /sim/reset."""
        self.reset()
        return _json(self.snapshot())

    async def chat(self, request: web.Request) -> web.Response:
        """POST /v1/chat/completions."""
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.Response:
        """POST /v1/completions (legacy: a `prompt` string in, `choices[i].text` out)."""
        return await self._serve(request, chat=False)

    async def _serve(self, request: web.Request, chat: bool) -> web.Response:
        self.endpoints[request.path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._complete(request, chat)
        finally:
            self.in_flight -= 1
        if request.transport is not None and not request.transport.is_closing():
            self.statuses[response.status] += 1
        return response

    async def _complete(self, request: web.Request, chat: bool) -> web.Response:
        """Validate like OpenAI does, wait the latency inside a capacity slot, then answer or fail."""
        limit = self.config.max_context_tokens
        if unauthorized := self._unauthorized(request):
            return unauthorized
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _invalid("The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(model := body.get("model"), str):
            return _invalid("The body must be a JSON object with a 'model' string.")
        if self.config.models is not None and model not in self.config.models:
            return _error(404, f"The model '{model}' does not exist.", "invalid_request_error", "model_not_found")
        source = body.get("messages") if chat else body.get("prompt")
        if not (isinstance(source, list) and source if chat else isinstance(source, str)):
            return _invalid("'messages' must be a non-empty list." if chat else "'prompt' must be a string.")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        seed, n = body.get("seed") or 0, body.get("n") or 1
        if not all(isinstance(v, int) for v in (max_tokens, seed, n)) or not 1 <= n <= 128:
            return _invalid("'max_tokens', 'seed' and 'n' must be integers (1 <= n <= 128).")
        prompt = " ".join(map(_message_text, source)) if chat else source
        prompt_tokens = len(prompt.split())
        if limit and prompt_tokens + max_tokens > limit:
            message = (f"This model's maximum context length is {limit} tokens; the request needs "
                       f"{prompt_tokens + max_tokens} ({prompt_tokens} prompt + {max_tokens} completion).")
            return _error(400, message, "invalid_request_error", "context_length_exceeded")
        schema = _schema(body)
        fault = self._draw_fault(schema is not None)
        async with self.slots:
            if failure := await self._wait(request, fault):
                return failure
        key = stable_int(model, source, schema)
        words = tuple(dict.fromkeys(w.lower() for w in _TOKEN.findall(prompt)))[:40]
        choices, completion_tokens = [], 0
        for i in range(n):
            text, finish = generate(key, seed + i, words, schema, max_tokens, self.config.duplicate_rate), "stop"
            if fault == "truncated":
                text, finish = text[: len(text) // 2], "length"
            elif fault == "invalid_json":
                text = self._break(text, schema or {})
            completion_tokens += len(text.split())
            message = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            choices.append({"index": i, **message, "finish_reason": finish, "logprobs": None})
        payload = orjson.dumps({
            "id": f"{'chatcmpl' if chat else 'cmpl'}-sim-{key:x}-{seed}",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0, "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
        if fault == "malformed":
            payload = payload[: len(payload) // 2]
        return web.Response(body=payload, content_type="application/json")

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
        """Sleep the latency (or the hang); return the error response of an HTTP-level fault."""
        config = self.config
        delay = config.hang_seconds if fault == "hang" else config.latency + self.rng.uniform(-config.jitter, config.jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "rate_limit":
            retry = {"Retry-After": f"{config.retry_after:g}"}
            return _error(429, "Rate limit reached (simulated).", "rate_limit_error", "rate_limit_exceeded", retry)
        if fault == "server_error":
            return _error(500, "Internal server error (simulated).", "server_error", None)
        if fault == "unavailable":
            return _error(503, "Service unavailable (simulated).", "server_error", None)
        if fault == "disconnect":
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never sent: aiohttp sees the closed transport and drops it quietly
        return None

    def _break(self, text: str, schema: dict[str, Any]) -> str:
        """Content that fails `schema`: a required key dropped, or the JSON wrapped in chatter."""
        instance, required = orjson.loads(text), schema.get("required")
        if isinstance(instance, dict) and required and self.rng.random() < 0.5:
            instance.pop(required[0], None)
            return orjson.dumps(instance).decode()
        return f"Sure! Here is the JSON you asked for:\n```json\n{text}\n```"


_SIM = web.AppKey("synthgen_sim", _Sim)


def build_app(config: SimConfig) -> web.Application:
    """The aiohttp application of the simulated server."""
    sim = _Sim(config)
    app = web.Application()
    app[_SIM] = sim
    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/v1/completions", sim.completions)
    app.router.add_get("/sim/stats", sim.stats)
    app.router.add_post("/sim/reset", sim.reset_route)
    return app


def _new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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
        """Start serving; returns once the port is open."""
        if self._thread is not None:
            raise RuntimeError("the sim server is already running")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="synthgen-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread, error, self._error = None, self._error, None
            raise error
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
        """The server's counters (see GET /sim/stats)."""
        sim = self._app[_SIM]
        if self._thread is None or self._loop is None:
            return sim.snapshot()

        async def snapshot() -> dict[str, Any]:
            return sim.snapshot()

        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = _new_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", self._wanted_port)
            await site.start()
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
        raise ValueError(f"the sim server binds loopback only (127.0.0.1, ::1, localhost), not {host!r}")
    web.run_app(build_app(config), host=host, port=port, loop=_new_loop(), access_log=None,
                handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT)
