"""The Files and Batch APIs of the simulated server, in OpenAI's wire format, so a batch client runs end to end.

How a batch moves:
- it is created `validating`; the first look at it (retrieve, list, cancel) checks its input file and makes it
  `failed` (with `errors` naming the lines) or `in_progress`;
- the first look once `SimConfig.batch_delay` has passed answers every line, writes the output and error files once,
  and makes it `completed` (or `expired` when `batch_expired_items` left some lines undone);
- each line gets what the online endpoint gives its body (`SimHandlers.answer`), so batch and online results agree.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from synthgen.sim.batch_input import read_requests
from synthgen.sim.handlers import SimHandlers
from synthgen.sim.http import error_body, error_response, json_response

_Handler = Callable[[web.Request], Awaitable[web.Response]]
_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_WINDOW = 24 * 3600  # seconds in the only completion window, "24h"
_FINAL = ("completed", "failed", "expired")  # statuses a batch can no longer be cancelled from
_EXPIRED = {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}
_SERVER_ERROR = error_body("Internal server error (simulated).", "server_error")


@dataclass
class _Batch:
    """A batch: the object the API returns, plus what the sim needs to run it."""

    data: dict[str, Any]
    raw: bytes  # the input file as it was at creation
    started: float = field(default_factory=time.monotonic)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (custom_id, body), once validated


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


class _BatchApi:
    """The files and batches of one simulated server, kept in memory."""

    def __init__(self, sim: SimHandlers) -> None:
        self.sim = sim
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}  # id -> (file object, content)
        self.batches: dict[str, _Batch] = {}  # in creation order
        self.ids = itertools.count(1)

    def guarded(self, path: str, handler: _Handler) -> _Handler:
        """`handler`, counted under `path` in the endpoint counters and behind the API key."""

        async def guarded(request: web.Request) -> web.Response:
            self.sim.endpoints[path] += 1
            return self.sim._unauthorized(request) or await handler(request)

        return guarded

    async def upload(self, request: web.Request) -> web.Response:
        """POST /v1/files: a multipart form with `file` and `purpose` (streamed, so any size)."""
        if request.content_type != "multipart/form-data":
            return error_response(400, "The request must be multipart/form-data with 'file' and 'purpose'.")
        reader = await request.multipart()
        fields: dict[str, tuple[str | None, bytes]] = {}
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name in ("file", "purpose"):
                fields[part.name] = (part.filename, bytes(await part.read()))
        for name in ("file", "purpose"):
            if name not in fields:
                return error_response(400, f"Missing required parameter: '{name}'.", param=name)
        purpose = fields["purpose"][1].decode(errors="replace")
        if purpose not in _PURPOSES:
            return error_response(400, f"Invalid value: '{purpose}'. Supported values are: {', '.join(map(repr, _PURPOSES))}.",
                          code="invalid_value", param="purpose")
        filename, content = fields["file"]
        return json_response(self._save(content, filename or "file", purpose))

    async def file(self, request: web.Request) -> web.Response:
        """GET /v1/files/{file_id}."""
        file_id = request.match_info["file_id"]
        return json_response(self.files[file_id][0]) if file_id in self.files else self._no_file(file_id)

    async def content(self, request: web.Request) -> web.Response:
        """GET /v1/files/{file_id}/content: the raw bytes."""
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return self._no_file(file_id)
        return web.Response(body=self.files[file_id][1], content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        """DELETE /v1/files/{file_id}."""
        file_id = request.match_info["file_id"]
        if self.files.pop(file_id, None) is None:
            return self._no_file(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    async def create(self, request: web.Request) -> web.Response:
        """POST /v1/batches: JSON with input_file_id, endpoint, completion_window and optional metadata."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if refusal := self._refuse(body):
            return refusal
        batch_id, now = f"batch_sim{next(self.ids):06d}", int(time.time())
        self.batches[batch_id] = _Batch({
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + _WINDOW, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }, self.files[body["input_file_id"]][1])
        self.sim.batches["created"] += 1
        return json_response(self.batches[batch_id].data)

    def _refuse(self, body: Any) -> web.Response | None:
        """The error OpenAI answers a batch-creation body with, if any."""
        if not isinstance(body, dict):
            return error_response(400, "The body must be a JSON object.")
        endpoint, window, metadata = body.get("endpoint"), body.get("completion_window"), body.get("metadata")
        if endpoint not in _ENDPOINTS:
            return error_response(400, f"Invalid value: '{endpoint}'. Supported values are: '/v1/chat/completions' and "
                               "'/v1/completions'.", code="invalid_value", param="endpoint")
        if window != "24h":
            return error_response(400, f"Invalid value: '{window}'. Supported values are: '24h'.", code="invalid_value",
                          param="completion_window")
        if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
            return error_response(400, "Invalid type for 'metadata': expected an object of strings.", code="invalid_type",
                          param="metadata")
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or file_id not in self.files:
            return self._no_file(file_id, "input_file_id")
        if (purpose := self.files[file_id][0]["purpose"]) != "batch":
            return error_response(400, f"The input file must have purpose 'batch', not '{purpose}'.", param="input_file_id")
        return None

    async def retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/batches/{batch_id}."""
        batch = self.batches.get(batch_id := request.match_info["batch_id"])
        return json_response(self._advance(batch)) if batch else self._no_batch(batch_id)

    async def list_batches(self, request: web.Request) -> web.Response:
        """GET /v1/batches: newest first, paged by `limit` (1 to 100, default 20) and `after` (a batch id)."""
        limit = request.query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            return error_response(400, "'limit' must be an integer from 1 to 100.", code="invalid_value", param="limit")
        ids = list(reversed(self.batches))
        start = ids.index(after) + 1 if (after := request.query.get("after")) in self.batches else 0
        page = [self._advance(self.batches[i]) for i in ids[start: start + int(limit)]]
        return json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None, "has_more": start + int(limit) < len(ids)})

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /v1/batches/{batch_id}/cancel: `cancelling` now, `cancelled` at the next look; a finished one gets 409."""
        batch = self.batches.get(batch_id := request.match_info["batch_id"])
        if batch is None:
            return self._no_batch(batch_id)
        data = self._advance(batch)
        if data["status"] in _FINAL:
            return error_response(409, f"Cannot cancel a batch with status '{data['status']}'.")
        if data["status"] in ("validating", "in_progress"):
            data.update(status="cancelling", cancelling_at=int(time.time()))
        return json_response(data)

    def _advance(self, batch: _Batch) -> dict[str, Any]:
        """Move `batch` on by the clock; returns its object."""
        data = batch.data
        if data["status"] == "validating":
            self._validate(batch)
        if data["status"] == "in_progress" and time.monotonic() - batch.started >= self.sim.config.batch_delay:
            self._run(batch)
        if data["status"] == "cancelling":
            data.update(status="cancelled", cancelled_at=int(time.time()))
            self.sim.batches["cancelled"] += 1
        return data

    def _validate(self, batch: _Batch) -> None:
        requests, errors = read_requests(batch.raw, batch.data["endpoint"])
        if errors:
            batch.data.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": errors})
            self.sim.batches["failed"] += 1
            return
        batch.requests = requests
        batch.data.update(status="in_progress", in_progress_at=int(time.time()),
                          request_counts={"total": len(requests), "completed": 0, "failed": 0})

    def _run(self, batch: _Batch) -> None:
        """Answer every request once, write the output and error files, and finish the batch."""
        batch_id, chat = batch.data["id"], batch.data["endpoint"] == "/v1/chat/completions"
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        expired = False
        for custom_id, body in batch.requests:
            digest = hashlib.sha256(f"{batch_id}\n{custom_id}".encode()).hexdigest()
            line: dict[str, Any] = {"id": f"batch_req_{digest[:24]}", "custom_id": custom_id}
            if self._draw(self.sim.config.batch_expired_items):
                expired = True
                errors.append({**line, "response": None, "error": _EXPIRED})
                continue
            status, payload = (500, _SERVER_ERROR) if self._draw(self.sim.config.batch_failed_items) else self._answer(body, chat)
            line.update(response={"status_code": status, "request_id": digest[32:64], "body": payload}, error=None)
            (outputs if status == 200 else errors).append(line)
        final, now = "expired" if expired else "completed", int(time.time())
        batch.data.update({
            "status": final, "finalizing_at": now, f"{final}_at": now,
            "output_file_id": self._save_lines(outputs, f"{batch_id}_output.jsonl"),
            "error_file_id": self._save_lines(errors, f"{batch_id}_error.jsonl"),
            "request_counts": {"total": len(batch.requests), "completed": len(outputs), "failed": len(errors)},
        })
        self.sim.batches[final] += 1

    def _answer(self, body: dict[str, Any], chat: bool) -> tuple[int, dict[str, Any]]:
        """The online endpoint's answer to `body`; a body that would crash it gets a 500, as online."""
        try:
            return self.sim.answer(body, chat)
        except Exception:  # e.g. a response_format whose schema is not an object
            return 500, _SERVER_ERROR

    def _draw(self, rate: float) -> bool:
        """True for a `rate` share of draws; the server RNG is touched only when the rate is set."""
        return bool(rate) and self.sim.rng.random() < rate

    def _save(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-sim{next(self.ids):06d}"
        file = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = (file, content)
        return file

    def _save_lines(self, lines: list[dict[str, Any]], filename: str) -> str | None:
        """The id of a new batch_output file holding `lines`, or None when there are none."""
        return self._save(_jsonl(lines), filename, "batch_output")["id"] if lines else None

    @staticmethod
    def _no_file(file_id: Any, param: str = "id") -> web.Response:
        return error_response(404, f"No such File object: {file_id}", param=param)

    @staticmethod
    def _no_batch(batch_id: str) -> web.Response:
        return error_response(404, f"No batch found with id '{batch_id}'.")


def add_batch_routes(app: web.Application, sim: SimHandlers) -> None:
    """Serve the Files and Batch APIs of `sim` from `app`."""
    api = _BatchApi(sim)
    routes: list[tuple[str, str, _Handler]] = [
        ("POST", "/v1/files", api.upload),
        ("GET", "/v1/files/{file_id}", api.file),
        ("DELETE", "/v1/files/{file_id}", api.delete_file),
        ("GET", "/v1/files/{file_id}/content", api.content),
        ("POST", "/v1/batches", api.create),
        ("GET", "/v1/batches", api.list_batches),
        ("GET", "/v1/batches/{batch_id}", api.retrieve),
        ("POST", "/v1/batches/{batch_id}/cancel", api.cancel),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, api.guarded(path, handler))
