"""Rule-based filters: each keeps or drops one record with a named reason."""

from __future__ import annotations

from pydantic import Field

from synthgen.record import Record
from synthgen.stages.base import Filter, StageParams


class LengthParams(StageParams):
    """Bounds on the character length of `field` (after stripping whitespace)."""

    field: str = "text"
    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)


class LengthFilter(Filter):
    """Drops records whose `field` is missing, too short or too long."""

    name = "length_filter"
    Params = LengthParams
    params: LengthParams

    def keep(self, record: Record) -> str | None:
        value = record.fields.get(self.params.field)
        if not isinstance(value, str):
            return f"missing_field:{self.params.field}"
        length = len(value.strip())
        if length < self.params.min_chars:
            return "too_short"
        if self.params.max_chars is not None and length > self.params.max_chars:
            return "too_long"
        return None
