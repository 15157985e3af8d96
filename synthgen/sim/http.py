"""JSON and OpenAI-shaped error responses, shared by the sim's completion and batch endpoints."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`data` as a JSON response."""
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json", headers=headers)


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """An error payload in OpenAI's JSON shape."""
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def error_response(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                   headers: dict[str, str] | None = None, param: str | None = None) -> web.Response:
    """An error response in OpenAI's JSON shape."""
    return json_response(error_body(message, kind, code, param), status, headers)
