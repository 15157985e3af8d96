"""Backend protocol and the request/response models every backend speaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from synthgen.hashing import content_hash


@dataclass(slots=True)
class ChatRequest:
    """One chat completion to make. `sample` and `attempt` make otherwise equal requests distinct."""

    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    sample: int = 0
    attempt: int = 0

    def key(self) -> str:
        """Content address of this request: the cache key."""
        return content_hash(
            [self.model, self.messages, self.params, self.schema, self.sample, self.attempt]
        )

    def body(self) -> dict[str, Any]:
        """The OpenAI-compatible JSON body for /v1/chat/completions."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages, **self.params}
        if self.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                # no "strict": OpenAI's strict mode refuses common keywords (minLength, ...); responses are
                # validated against the full schema here, and vLLM / SGLang enforce it either way
                "json_schema": {"name": "output", "schema": self.schema},
            }
        return body

    def estimated_tokens(self) -> int:
        """Rough prompt + completion token count for TPM budgeting (4 characters a token)."""
        chars = sum(len(m.get("content", "")) for m in self.messages)
        return chars // 4 + int(self.params.get("max_tokens", 256))


@dataclass(slots=True)
class Completion:
    """What a backend returns for one request."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


class Backend(Protocol):
    """Anything that turns a ChatRequest into a Completion. A backend may also have `model_name` (the model's name in
    requests and provenance, instead of `backend.model`) and `identity` (a dict added to its cache-key identity, e.g.
    the sha256 of the model file it serves)."""

    async def complete(self, request: ChatRequest) -> Completion:
        """Make one request; raise FatalBackendError or RetryableBackendError on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
