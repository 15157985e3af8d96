"""Sampling parameters: what a stage sends with each request, below the stages that use them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from synthgen.config import StrictModel
from synthgen.errors import ConfigError


class SamplingParams(StrictModel):
    """Sampling parameters sent with each request; `extra` passes server-specific ones through as-is."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The non-empty parameters as request-body keys."""
        body = self.model_dump(exclude_none=True, exclude={"extra"})
        return {**body, **self.extra}

    def merged(self, overrides: dict[str, Any], source: str, field: str) -> dict[str, Any]:
        """The body of these parameters overridden by `overrides` (a taxonomy leaf's `sampling`); an invalid
        override is a ConfigError at `source`, `field`."""
        try:
            merged = SamplingParams.model_validate({**self.model_dump(exclude_none=True), **overrides})
        except ValueError as exc:
            raise ConfigError(source, field, str(exc)) from None
        return merged.to_body()
