"""Provider batch APIs (`mode: batch`): OpenAI's Files + Batches endpoints, and servers that copy them.

Requests gathered by a MicroBatcher are written as the provider's batch JSONL (`custom_id` = the request's
cache key), uploaded, and a batch is created; its id goes to `backend/batches.jsonl` in the run directory
before polling starts, so a restarted run polls the same batch instead of paying again. Results pour into
the request cache through the usual CachedBackend, so the rest of the pipeline is unchanged. Failed,
expired and cancelled items are resent in a new batch, up to `max_resubmits` rounds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import orjson

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.batching import BatchOutcome, MicroBatcher
from synthgen.backends.responses import completion_from_body
from synthgen.backends.settings import BatchConfig
from synthgen.errors import FatalBackendError, RetryableBackendError
from synthgen.stats import RunStats

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "expired", "cancelled", "failed"}


class BatchLedger:
    """The batches this run created, appended durably as each is created: batch id -> its request keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._batch_of: dict[str, str] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():  # a line cut short by a crash is the last one; it cannot parse, so it is skipped
                    try:
                        entry = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    self._batch_of.update(dict.fromkeys(entry["keys"], entry["batch"]))

    def batch_of(self, key: str) -> str | None:
        """The id of the latest batch that holds request `key`, if any."""
        return self._batch_of.get(key)

    def add(self, batch_id: str, keys: list[str]) -> None:
        """Record that `batch_id` holds `keys` (fsynced before polling begins)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(orjson.dumps({"batch": batch_id, "keys": keys}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._batch_of.update(dict.fromkeys(keys, batch_id))


def batch_file(requests: list[ChatRequest]) -> bytes:
    """The provider's batch input JSONL for `requests`."""
    return b"".join(
        orjson.dumps({"custom_id": r.key(), "method": "POST", "url": ENDPOINT, "body": r.body()}) + b"\n" for r in requests
    )


def parse_results(raw: bytes) -> BatchOutcome:
    """Output- or error-file lines -> request key -> Completion, or RetryableBackendError for a failed item."""
    outcome: BatchOutcome = {}
    for line in raw.splitlines():
        if not line.strip():
            continue
        item = orjson.loads(line)
        key, response, error = item["custom_id"], item.get("response"), item.get("error")
        if response and response.get("status_code") == 200:
            try:
                outcome[key] = completion_from_body(response.get("body"))
            except RetryableBackendError as exc:
                outcome[key] = exc
        elif response:
            message = str((response.get("body") or {}).get("error", {}).get("message", ""))[:200]
            outcome[key] = RetryableBackendError(f"batch_http_{response.get('status_code')}", message)
        else:
            code = (error or {}).get("code") or "unknown"
            outcome[key] = RetryableBackendError(f"batch_{code}", str((error or {}).get("message", ""))[:200])
    return outcome


class BatchBackend:
    """Chat completions through a provider's batch API, with batch ids kept for resuming."""

    def __init__(self, base_url: str, api_key: str | None, config: BatchConfig, state_dir: Path, stats: RunStats,
                 *, timeout: float = 120.0, max_attempts: int = 6) -> None:
        self.base_url, self.config, self.stats = base_url, config, stats
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout,
                                         max_retries=max_attempts - 1)
        self.ledger = BatchLedger(state_dir / "batches.jsonl")
        self.batcher = MicroBatcher(self._run, config.max_requests, config.linger)

    async def complete(self, request: ChatRequest) -> Completion:
        """Queue `request` into the next batch and wait for its result."""
        return await self.batcher.submit(request)

    async def aclose(self) -> None:
        """Stop waiting on batches (they keep running at the provider; a re-run polls them) and close the client."""
        await self.batcher.aclose()
        await self.client.close()

    async def _run(self, requests: list[ChatRequest]) -> BatchOutcome:
        pending = {request.key(): request for request in requests}
        results: BatchOutcome = {}
        earlier = {batch for key in pending if (batch := self.ledger.batch_of(key))}
        for batch_id in sorted(earlier):  # created by a run that stopped while waiting: collect, never resend
            try:
                results.update(await self._collect(batch_id))
            except FatalBackendError as exc:
                if exc.status != 404:  # a batch the server no longer knows is simply sent again
                    raise
        for round_number in range(self.config.max_resubmits + 1):
            todo = [r for key, r in pending.items() if not isinstance(results.get(key), Completion)]
            if not todo:
                break
            if round_number or earlier:
                self.stats.retries["batch_resubmit"] += len(todo)
            results.update(await self._collect(await self._create(todo)))
        return {key: results.get(key) or RetryableBackendError("batch_missing", "no result in the batch files")
                for key in pending}

    async def _create(self, requests: list[ChatRequest]) -> str:
        with _api_errors(self.base_url):
            upload = await self.client.files.create(file=("synthgen-batch.jsonl", batch_file(requests)), purpose="batch")
            batch = await self.client.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window=self.config.completion_window,  # type: ignore[arg-type]
                metadata={"created_by": "synthgen"},
            )
        self.ledger.add(batch.id, [request.key() for request in requests])
        self.stats.http_requests += len(requests)
        return batch.id

    async def _collect(self, batch_id: str) -> BatchOutcome:
        """Poll `batch_id` with doubling waits until it ends; its items' results (successes and failures)."""
        delay = self.config.poll_initial
        while True:
            with _api_errors(self.base_url):
                batch = await self.client.batches.retrieve(batch_id)
            counts = batch.request_counts
            self.stats.batches[batch_id] = {"status": batch.status, "running": batch.status not in TERMINAL,
                                            "total": counts.total if counts else 0,
                                            "completed": counts.completed if counts else 0,
                                            "failed": counts.failed if counts else 0}
            if batch.status in TERMINAL:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.poll_max)
        if batch.status == "failed":
            errors = "; ".join(f"line {e.line}: {e.message}" for e in (batch.errors.data or [])) if batch.errors else ""
            raise FatalBackendError(400, f"batch {batch_id} failed validation: {errors or 'no detail'}",
                                    "the server refused the batch input file; check the model name and sampling parameters")
        outcome: BatchOutcome = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # successes last: they win over older errors
            if file_id:
                with _api_errors(self.base_url):
                    content = await self.client.files.content(file_id)
                outcome.update(parse_results(content.content))
        self.stats.http_ok += sum(isinstance(result, Completion) for result in outcome.values())
        return outcome


@contextmanager
def _api_errors(base_url: str) -> Iterator[None]:
    """Turns the SDK's errors into synthgen's: a wrong key, a missing endpoint or an unreachable server stop
    the run; other HTTP errors are retryable."""
    try:
        yield
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise FatalBackendError(exc.status_code, exc.message,
                                "set a valid key in OPENAI_API_KEY (or the variable named by backend.api_key_env)") from None
    except openai.NotFoundError as exc:
        raise FatalBackendError(404, exc.message, f"check that {base_url} offers the batch API, or use mode: online") from None
    except openai.APIConnectionError as exc:
        raise FatalBackendError(0, f"cannot connect to {base_url} ({exc})",
                                "check the base URL and that the server is up") from None
    except openai.APIStatusError as exc:
        raise RetryableBackendError(f"http_{exc.status_code}", exc.message) from None
