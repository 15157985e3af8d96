"""Reshaping stages: fan a list field out into records, and select / rename fields."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from synthgen.record import Record, make_record_id
from synthgen.stages.base import MapStage, StageParams


class ExplodeParams(StageParams):
    """`field` holds a list; each item becomes a record with the item in `into` (default: the same name)."""

    field: str
    into: str | None = None
    max_items: int | None = Field(default=None, ge=1)


class Explode(MapStage):
    """One record per item of a list field (e.g. the ~20 brainstormed tasks of one completion)."""

    name = "explode"
    predictable = False
    Params = ExplodeParams
    params: ExplodeParams

    def map(self, record: Record) -> Iterator[Record]:
        into = self.params.into or self.params.field
        items = record.fields.get(self.params.field)
        if not isinstance(items, list) or not items:
            self.ctx.reject(record, "no_items", f"field {self.params.field!r} is not a non-empty list")
            return
        rest = {k: v for k, v in record.fields.items() if k != self.params.field}
        for index, item in enumerate(items[: self.params.max_items]):
            meta = {**record.meta, "parents": [record.id], "item": index}
            yield Record(make_record_id(record.id, self.ctx.key, index), {**rest, into: item}, meta)


class SelectParams(StageParams):
    """`fields` maps each output field to the input field it comes from; other fields are dropped."""

    fields: dict[str, str] = Field(min_length=1)


class SelectFields(MapStage):
    """Keeps and renames fields, e.g. {anchor: user_query, positive: positive_document}."""

    name = "select_fields"
    Params = SelectParams
    params: SelectParams

    def map(self, record: Record) -> Iterator[Record]:
        missing = [source for source in self.params.fields.values() if source not in record.fields]
        if missing:
            self.ctx.reject(record, "missing_field", f"lacks {missing}")
            return
        yield Record(record.id, {out: record.fields[source] for out, source in self.params.fields.items()}, record.meta)
