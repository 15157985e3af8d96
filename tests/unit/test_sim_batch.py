"""The sim server's Files and Batch APIs, called over real HTTP with the openai SDK."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from openai.types import Batch

from synthgen.sim import SimConfig, SimServer

ENDPOINT = "/v1/chat/completions"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


@contextmanager
def client_for(key: str = "x", **config: Any) -> Iterator[tuple[SimServer, openai.OpenAI]]:
    """A sim server with `config` (no latency, no batch delay unless given) and an SDK client for it."""
    with SimServer(SimConfig(**{"latency": 0.0, "batch_delay": 0.0, **config})) as server:
        with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
            yield server, client


def line(i: int, **body: Any) -> dict[str, Any]:
    """Batch input line `i`: a chat request about topic `i`."""
    messages = [{"role": "user", "content": f"Describe lighthouse number {i} on a rocky coast."}]
    return {"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT,
            "body": {"model": "sim-model", "messages": messages, "seed": i, **body}}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]] | str) -> str:
    text = lines if isinstance(lines, str) else "".join(json.dumps(row) + "\n" for row in lines)
    return client.files.create(file=("input.jsonl", text.encode()), purpose="batch").id


def finish(client: openai.OpenAI, batch_id: str) -> Batch:
    """Poll the batch until it stops moving (at most about 2 s)."""
    for _ in range(200):
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} is still {batch.status}")


def run(client: openai.OpenAI, lines: list[dict[str, Any]] | str) -> Batch:
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT, completion_window="24h")
    assert batch.status == "validating" and batch.object == "batch"
    return finish(client, batch.id)


def rows(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of a result file (none when there is no file)."""
    if file_id is None:
        return []
    return [json.loads(text) for text in client.files.content(file_id).text.splitlines()]


def test_sdk_round_trip_matches_online_answers() -> None:
    lines = [line(i, max_tokens=40) for i in range(5)]
    with client_for(batch_delay=0.3) as (_, client):
        started = time.monotonic()
        created = client.batches.create(input_file_id=upload(client, lines), endpoint=ENDPOINT, completion_window="24h",
                                        metadata={"run": "t1"})
        assert client.batches.retrieve(created.id).status == "in_progress"  # the delay has not passed yet
        batch = finish(client, created.id)
        assert time.monotonic() - started >= 0.3
        assert batch.status == "completed" and batch.error_file_id is None and batch.metadata == {"run": "t1"}
        assert batch.request_counts is not None and batch.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
        assert batch.completed_at is not None and batch.in_progress_at is not None and batch.expires_at == batch.created_at + 86400
        again = client.batches.retrieve(batch.id)
        assert (again.output_file_id, again.completed_at) == (batch.output_file_id, batch.completed_at)  # files made once
        output = rows(client, batch.output_file_id)
        online = {row["custom_id"]: client.chat.completions.create(**row["body"]).choices[0].message.content for row in lines}
        output_file = client.files.retrieve(batch.output_file_id or "")
    assert [row["custom_id"] for row in output] == [f"req-{i}" for i in range(5)]
    for row in output:
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200 and row["response"]["request_id"]
        assert row["response"]["body"]["object"] == "chat.completion"
        assert row["response"]["body"]["choices"][0]["message"]["content"] == online[row["custom_id"]]
    assert len(set(online.values())) == 5
    assert output_file.purpose == "batch_output" and output_file.bytes > 0


def test_failed_items_go_to_the_error_file_and_can_succeed_when_resubmitted() -> None:
    lines = [line(i) for i in range(20)]
    with client_for(batch_failed_items=0.5) as (server, client):
        batch = run(client, lines)
        output, errors = rows(client, batch.output_file_id), rows(client, batch.error_file_id)
        retry = run(client, [row for row in lines if row["custom_id"] in {e["custom_id"] for e in errors}])
        stats = server.stats()
    assert batch.status == "completed" and 0 < len(errors) < 20
    assert sorted(r["custom_id"] for r in output + errors) == sorted(row["custom_id"] for row in lines)
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (20, len(output), len(errors))
    for error in errors:
        assert error["error"] is None and error["response"]["status_code"] == 500
        assert error["response"]["body"]["error"]["type"] == "server_error"
    assert retry.request_counts is not None and retry.request_counts.completed > 0  # the server RNG draws again
    assert stats["batches"] == {"created": 2, "completed": 2}


def test_expired_items_end_the_batch_expired() -> None:
    lines = [line(i) for i in range(20)]
    with client_for(batch_expired_items=0.5) as (_, client):
        batch = run(client, lines)
        output, errors = rows(client, batch.output_file_id), rows(client, batch.error_file_id)
    assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
    assert 0 < len(errors) < 20 and all(row["response"]["status_code"] == 200 for row in output)
    assert sorted(r["custom_id"] for r in output + errors) == sorted(row["custom_id"] for row in lines)
    for error in errors:
        assert error["response"] is None and error["error"]["code"] == "batch_expired"
    assert batch.request_counts is not None and batch.request_counts.failed == len(errors)


def test_request_errors_land_in_the_error_file_as_online() -> None:
    lines = [line(0), line(1, model="other-model"), line(2, n=500)]
    with client_for(models=["sim-model"]) as (_, client):
        batch = run(client, lines)
        output, errors = rows(client, batch.output_file_id), {row["custom_id"]: row["response"] for row in rows(client, batch.error_file_id)}
        with pytest.raises(openai.NotFoundError) as online:
            client.chat.completions.create(**lines[1]["body"])
    assert batch.status == "completed" and [row["custom_id"] for row in output] == ["req-0"]
    assert errors["req-1"]["status_code"] == 404 and errors["req-1"]["body"] == online.value.response.json()
    assert errors["req-2"]["status_code"] == 400 and errors["req-2"]["body"]["error"]["type"] == "invalid_request_error"


def test_an_invalid_input_file_fails_the_batch_naming_its_lines() -> None:
    good = line(0)
    bad_url = {**line(4), "url": "/v1/embeddings"}
    no_id = {k: v for k, v in line(2).items() if k != "custom_id"}
    text = "\n".join([json.dumps(good), "{not json", json.dumps(no_id), json.dumps(good), json.dumps(bad_url)]) + "\n"
    with client_for() as (_, client):
        batch = run(client, text)
    assert batch.status == "failed" and batch.failed_at is not None and batch.output_file_id is None
    assert batch.errors is not None and batch.errors.object == "list" and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [(2, "invalid_json_line", None), (3, "missing_required_parameter", "custom_id"),
                     (4, "duplicate_custom_id", "custom_id"), (5, "invalid_url", "url")]


def test_unknown_ids_get_openai_404s() -> None:
    with client_for() as (server, client):
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")
        with pytest.raises(openai.NotFoundError) as missing_file:
            client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT, completion_window="24h")
        request = urllib.request.Request(server.base_url + "/batches/batch_nope")
        with pytest.raises(urllib.error.HTTPError) as raw:
            _OPENER.open(request, timeout=5)
        with raw.value:
            status, body = raw.value.code, json.loads(raw.value.read())
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and "batch_nope" in body["error"]["message"]
    assert missing_file.value.response.json()["error"]["param"] == "input_file_id"


def test_bad_batch_parameters_get_400() -> None:
    with client_for() as (_, client):
        file_id = upload(client, [line(0)])
        with pytest.raises(openai.BadRequestError) as endpoint:
            client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
        with pytest.raises(openai.BadRequestError) as window:
            client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="1h")  # type: ignore[arg-type]
    assert endpoint.value.response.json()["error"]["param"] == "endpoint"
    assert window.value.response.json()["error"]["param"] == "completion_window"


def test_cancel_moves_through_cancelling_and_a_finished_batch_refuses() -> None:
    with client_for(batch_delay=30.0) as (_, client):
        file_id = upload(client, [line(0)])
        batch = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
        assert client.batches.cancel(batch.id).status == "cancelling"
        cancelled = client.batches.retrieve(batch.id)
        listed = [b.id for b in client.batches.list()]
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None and cancelled.output_file_id is None
    assert listed == [batch.id]
    with client_for() as (_, client):
        done = run(client, [line(0)])
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(done.id)


def test_legacy_completions_batch() -> None:
    row = {"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"model": "sim-model", "prompt": "Once upon"}}
    with client_for() as (_, client):
        file_id = upload(client, [row])
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/completions", completion_window="24h")
        output = rows(client, finish(client, batch.id).output_file_id)
        online = client.completions.create(model="sim-model", prompt="Once upon")
    assert output[0]["response"]["body"]["choices"][0]["text"] == online.choices[0].text


def test_files_need_the_api_key() -> None:
    with client_for(key="wrong", api_key="k") as (server, client):
        with pytest.raises(openai.AuthenticationError) as denied:
            upload(client, [line(0)])
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as allowed:
            file_id = upload(allowed, [line(0)])
        stats = server.stats()
    assert denied.value.status_code == 401 and denied.value.response.json()["error"]["code"] == "invalid_api_key"
    assert file_id and stats["endpoints"] == {"/v1/files": 2}
