"""The simulated server's settings and fault kinds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

FAULT_KINDS = (
    "rate_limit", "server_error", "unavailable", "hang", "disconnect", "malformed", "truncated", "invalid_json",
    # a misbehaving server: a 200 that is no completion, a nonsensical Retry-After, a body that never ends
    "html_body", "empty_choices", "null_content", "list_content", "empty_content",
    "retry_after_nan", "retry_after_date", "endless_body",
)
DEFAULT_MODEL = "sim-model"


class SimConfig(BaseModel, extra="forbid"):
    """Knobs of the simulated server; the defaults give a fast, fault-free model that sometimes repeats itself."""

    latency: float = Field(default=0.05, ge=0)  # seconds per request, about a short hosted-API completion
    jitter: float = Field(default=0.0, ge=0)  # uniform +- seconds around `latency`
    capacity: int | None = Field(default=None, ge=1)  # requests processed at once; the rest queue (slots, /props)
    faults: dict[str, float] = {}  # fault kind (FAULT_KINDS) -> share of completion requests
    hang_seconds: float = Field(default=30.0, ge=0)  # longer than client timeouts, so a hang reads as a timeout
    retry_after: float = Field(default=0.1, ge=0)  # seconds sent in the Retry-After header of a 429
    duplicate_rate: float = Field(default=0.1, ge=0, le=1)  # prompts whose samples collide (as many: nearly)
    # prompt substring (e.g. a taxonomy leaf path) -> share of its answers drawn from a small fixed set per
    # substring: that leaf "repeats itself" (exact duplicates of its earlier answers); none by default
    leaf_duplicate_rates: dict[str, float] = {}
    # how such a repeat reads: `exact` (one of the fixed texts, byte for byte) or `paraphrase` (that text with a
    # fifth of its words swapped or replaced and one dropped: MinHash misses it, embeddings do not)
    leaf_repeat: Literal["exact", "paraphrase"] = "exact"
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`
    models: list[str] | None = None  # when set, other model names get 404
    max_context_tokens: int | None = Field(default=None, ge=1)  # prompt words + max_tokens above it get 400
    seed: int = 0  # seeds faults, jitter and batch item draws, never the content
    track_bodies: bool = False  # keep a sha256 of every completion request body, for GET /sim/bodies (soak tests)
    batch_delay: float = Field(default=0.2, ge=0)  # seconds from creating a batch to its results (OpenAI: up to 24 h)
    batch_failed_items: float = Field(default=0.0, ge=0, le=1)  # share of batch items answered with a 500 (error file)
    batch_expired_items: float = Field(default=0.0, ge=0, le=1)  # share of batch items left undone; any makes it `expired`
    judge_position_bias: float = Field(default=0.0, ge=0, le=1)  # share of pairwise verdicts for answer A, whatever it is

    @field_validator("leaf_duplicate_rates")
    @classmethod
    def _check_leaf_rates(cls, rates: dict[str, float]) -> dict[str, float]:
        if any(not 0 <= rate <= 1 for rate in rates.values()):
            raise ValueError("each leaf duplicate rate must be between 0 and 1")
        return rates

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
