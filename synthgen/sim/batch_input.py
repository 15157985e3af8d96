"""Reading a batch input file as OpenAI's validation does: each line's custom_id and body, or its error."""

from __future__ import annotations

from typing import Any

import orjson


class LineError(Exception):
    """An input line OpenAI's validation rejects: its `errors.data` entry, less the line number."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.entry = {"code": code, "message": message, "param": param}


def _request(line: bytes, endpoint: str) -> tuple[str, dict[str, Any]]:
    """The custom_id and body of one input line; raises `LineError` where OpenAI's validation fails it."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        raise LineError("invalid_json_line", "This line is not parseable as valid JSON.")
    for key in ("custom_id", "method", "url", "body"):
        if key not in item:
            raise LineError("missing_required_parameter", f"Missing required parameter: '{key}'.", key)
    custom_id, body = item["custom_id"], item["body"]
    if not isinstance(custom_id, str):
        raise LineError("invalid_type", "Invalid type for 'custom_id': expected a string.", "custom_id")
    if not isinstance(body, dict):
        raise LineError("invalid_type", "Invalid type for 'body': expected an object.", "body")
    if item["method"] != "POST":
        raise LineError("invalid_value", "Invalid value for 'method': only 'POST' is supported.", "method")
    if item["url"] != endpoint:
        raise LineError("invalid_url", "The URL provided for this request does not match the batch endpoint.", "url")
    if body.get("stream"):
        raise LineError("streaming_unsupported", "Streaming is not supported in the Batch API.", "body.stream")
    return custom_id, body


def read_requests(raw: bytes, endpoint: str) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The (custom_id, body) of each line of an input file, and the validation errors (lines count from 1)."""
    requests: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            custom_id, body = _request(line, endpoint)
            if custom_id in seen:
                raise LineError("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
                                 "The custom_id parameter must be unique for each request in a batch.", "custom_id")
        except LineError as exc:
            errors.append({**exc.entry, "line": number})
            continue
        seen.add(custom_id)
        requests.append((custom_id, body))
    if not requests and not errors:
        errors.append({"code": "empty_file", "message": "The batch input file is empty.", "param": None, "line": None})
    return requests, errors
