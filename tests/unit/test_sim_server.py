"""The simulated OpenAI-compatible server, called over real HTTP (the openai SDK and urllib)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import Enum
from typing import Any, Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field, ValidationError

from synthgen.sim import SimConfig, SimServer, serve
from synthgen.sim.content import generate

PROMPT = "Write a short note about tidal energy in small coastal towns."
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


class Color(str, Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=40)
    zip_code: int = Field(ge=10000, le=99999)


class Person(BaseModel, extra="forbid"):
    name: str
    age: int = Field(ge=0, le=120)
    score: float = Field(gt=0, lt=1)
    color: Color
    kind: Literal["a", "b"]
    tags: list[str] = Field(min_length=1, max_length=4)
    home: Address
    previous: list[Address]
    nickname: str | None
    work: Address | None = None
    active: bool


class Node(BaseModel):
    name: str
    children: list[Node]


class Answer(BaseModel):
    title: str
    rating: int


@contextmanager
def running(**config: Any) -> Iterator[SimServer]:
    """A sim server with `config` (no latency unless given)."""
    with SimServer(SimConfig(**{"latency": 0.0, **config})) as server:
        yield server


def call(sim: SimServer, path: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """POST `body` (GET when None) to the sim; returns status, headers and raw body, errors included."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    url = sim.base_url.removesuffix("/v1") + path
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def chat(sim: SimServer, **body: Any) -> dict[str, Any]:
    """A successful chat completion as parsed JSON."""
    status, _, raw = call(sim, "/v1/chat/completions", {"model": "sim-model", "messages": MESSAGES, **body})
    assert status == 200, raw
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def content(response: dict[str, Any], i: int = 0) -> str:
    text: str = response["choices"][i]["message"]["content"]
    return text


def schema_format(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_openai_sdk_lists_models_and_chats(sim: SimServer) -> None:
    with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["sim-model"]
        response = client.chat.completions.create(model="sim-model", messages=MESSAGES, seed=1)
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert 20 <= len((choice.message.content or "").split()) <= 120
    assert response.usage is not None and response.usage.prompt_tokens == len(PROMPT.split())
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_openai_sdk_structured_output_validates(sim: SimServer) -> None:
    with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
        response = client.chat.completions.parse(model="sim-model", messages=MESSAGES, response_format=Answer)
    parsed = response.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    assert Answer.model_validate_json(response.choices[0].message.content or "") == parsed


def test_answers_are_deterministic_and_follow_the_seed() -> None:
    with running(duplicate_rate=0.0) as sim:
        first, again, other, third = (content(chat(sim, seed=seed)) for seed in (7, 7, 8, 9))
        several = chat(sim, seed=7, n=3)
    assert first == again != other
    assert [content(several, i) for i in range(3)] == [first, other, third]  # sample i uses seed + i


def test_text_uses_prompt_words_and_respects_max_tokens(sim: SimServer) -> None:
    texts = [content(chat(sim, seed=s, max_tokens=30)) for s in range(10)]
    assert all(len(t.split()) <= 30 for t in texts)
    assert any(w in " ".join(texts).lower() for w in ("tidal", "coastal", "towns", "energy"))


def test_duplicate_prompts_collide_exactly_or_nearly() -> None:
    kinds = set()
    with running(duplicate_rate=0.5) as sim:  # every prompt is an exact (rate) or near (rate again) duplicate
        for i in range(30):
            messages = [{"role": "user", "content": f"Topic {i}: describe a harbor at dawn."}]
            a, b = (content(chat(sim, messages=messages, seed=s)).split() for s in (0, 1))
            changed = sum(x != y for x, y in zip(a, b))
            assert len(a) == len(b) and changed <= 4  # a near duplicate changes 2 words of the seed-free text
            kinds.add(changed == 0)
    assert kinds == {True, False}


def test_legacy_completions_endpoint(sim: SimServer) -> None:
    status, _, raw = call(sim, "/v1/completions", {"model": "sim-model", "prompt": "Once upon a time", "seed": 3})
    body = json.loads(raw)
    assert status == 200 and body["object"] == "text_completion" and body["choices"][0]["text"]


def test_schema_instances_validate_over_many_seeds() -> None:
    for model in (Person, Node):
        schema = model.model_json_schema()
        for seed in range(60):
            model.model_validate_json(generate(1234, seed, ("harbor", "lantern"), schema))


def test_nullable_type_lists_give_both_values() -> None:
    schema = {"type": "object", "properties": {"x": {"type": ["integer", "null"], "minimum": 3, "maximum": 5}},
              "required": ["x"], "additionalProperties": False}
    values = {json.loads(generate(99, seed, (), schema))["x"] for seed in range(100)}
    assert None in values and values - {None} <= {3, 4, 5} and len(values) > 2


def test_schema_over_http_validates(sim: SimServer) -> None:
    for seed in range(5):
        Person.model_validate_json(content(chat(sim, seed=seed, response_format=schema_format(Person))))


@pytest.mark.parametrize(("kind", "status"), [("rate_limit", 429), ("server_error", 500), ("unavailable", 503)])
def test_http_error_faults(kind: str, status: int) -> None:
    with running(faults={kind: 1.0}) as sim:
        got, headers, raw = call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
        assert sim.stats()["faults"] == {kind: 1}
    assert got == status and "message" in json.loads(raw)["error"]
    assert (headers.get("Retry-After") == "0.1") == (kind == "rate_limit")


def test_disconnect_fault_drops_the_connection() -> None:
    with running(faults={"disconnect": 1.0}) as sim:
        with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
            call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
        with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
            with pytest.raises(openai.APIConnectionError):
                client.chat.completions.create(model="m", messages=MESSAGES)


def test_malformed_fault_sends_a_body_that_is_not_json() -> None:
    with running(faults={"malformed": 1.0}) as sim:
        status, _, raw = call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


def test_truncated_fault_cuts_the_content() -> None:
    with running(faults={"truncated": 1.0}) as sim:
        cut = chat(sim, seed=1)
    with running() as sim:
        whole = chat(sim, seed=1)
    assert cut["choices"][0]["finish_reason"] == "length"
    assert content(whole).startswith(content(cut)) and len(content(cut)) < len(content(whole))


def test_invalid_json_fault_breaks_schema_answers_only() -> None:
    with running(faults={"invalid_json": 1.0}) as sim:
        for seed in range(6):
            with pytest.raises(ValidationError):
                Answer.model_validate_json(content(chat(sim, seed=seed, response_format=schema_format(Answer))))
        assert chat(sim)["choices"][0]["finish_reason"] == "stop"
        assert sim.stats()["faults"] == {"invalid_json": 6}


def test_hang_fault_times_out_the_client_and_stop_stays_quick() -> None:
    with running(faults={"hang": 1.0}, hang_seconds=2.0) as server:
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=0.5) as client:
            with pytest.raises(openai.APITimeoutError):
                client.chat.completions.create(model="m", messages=MESSAGES)
        with ThreadPoolExecutor(1) as pool:  # a hang whose client is still waiting when the server stops
            pending = pool.submit(call, server, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
            time.sleep(0.2)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 1.5
            with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
                pending.result()


def test_wrong_api_key_gets_401() -> None:
    with running(api_key="secret") as sim:
        status, _, raw = call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES},
                              headers={"Authorization": "Bearer wrong"})
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
        assert call(sim, "/v1/models")[0] == 401
        with openai.OpenAI(base_url=sim.base_url, api_key="secret", max_retries=0) as client:
            assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_unknown_model_gets_404() -> None:
    with running(models=["small", "large"]) as sim:
        with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["small", "large"]
            with pytest.raises(openai.NotFoundError) as info:
                client.chat.completions.create(model="medium", messages=MESSAGES)
    assert info.value.code == "model_not_found"


def test_context_length_exceeded_gets_400() -> None:
    prompt_words = len(PROMPT.split())
    with running(max_context_tokens=prompt_words + 10) as sim:
        status, _, raw = call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "max_tokens": 11})
        assert status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded"
        assert chat(sim, max_tokens=10)["choices"]


def test_bad_requests_get_400(sim: SimServer) -> None:
    assert call(sim, "/v1/chat/completions", b"{not json")[0] == 400
    assert call(sim, "/v1/chat/completions", {"model": "m", "messages": []})[0] == 400
    assert call(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "n": "two"})[0] == 400


def test_stats_count_and_reset(sim: SimServer) -> None:
    chat(sim)
    chat(sim)
    call(sim, "/v1/models")
    call(sim, "/v1/chat/completions", {"model": "m"})
    stats = json.loads(call(sim, "/sim/stats")[2])
    assert stats == sim.stats()
    assert stats["requests"] == 4 and stats["completed"] == 2 and stats["statuses"] == {"200": 2, "400": 1}
    assert stats["endpoints"] == {"/v1/chat/completions": 3, "/v1/models": 1}
    assert call(sim, "/sim/reset", {})[0] == 200
    assert sim.stats()["requests"] == 0 and sim.stats()["completed"] == 0


def test_capacity_queues_requests() -> None:
    with running(latency=0.2, capacity=2) as sim, ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        list(pool.map(lambda _: chat(sim), range(4)))
        assert time.monotonic() - started >= 0.4
        assert sim.stats()["max_in_flight"] == 4


def test_capacity_is_reported_as_llama_cpp_reports_its_slots() -> None:
    with running(latency=0.5, capacity=3) as sim, ThreadPoolExecutor(2) as pool:
        props = json.loads(call(sim, "/props")[2])
        assert props["total_slots"] == 3 and props["default_generation_settings"]["n_ctx"] == 2048
        assert json.loads(call(sim, "/health")[2]) == {"status": "ok"}
        idle = json.loads(call(sim, "/slots")[2])
        assert [(s["id"], s["is_processing"]) for s in idle] == [(0, False), (1, False), (2, False)]
        pending = [pool.submit(chat, sim) for _ in range(2)]
        time.sleep(0.25)
        busy = json.loads(call(sim, "/slots")[2])
        assert sum(s["is_processing"] for s in busy) == 2
        for answer in pending:
            answer.result()
        assert sim.stats()["endpoints"]["/slots"] == 2


def test_without_capacity_there_are_no_slot_endpoints(sim: SimServer) -> None:
    assert [call(sim, path)[0] for path in ("/props", "/slots", "/health")] == [404, 404, 404]


def test_config_rejects_bad_faults() -> None:
    with pytest.raises(ValidationError, match="unknown fault"):
        SimConfig(faults={"meteor": 0.1})
    with pytest.raises(ValidationError, match="sum to at most 1"):
        SimConfig(faults={"hang": 0.6, "rate_limit": 0.6})
    with pytest.raises(ValidationError):
        SimConfig(latencyy=1)  # type: ignore[call-arg]


def test_start_reports_a_busy_port(sim: SimServer) -> None:
    with pytest.raises(OSError):
        SimServer(SimConfig(), port=sim.port).start()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com"])
def test_serve_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        serve(SimConfig(), host=host)
