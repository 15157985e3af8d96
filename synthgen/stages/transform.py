"""Reshaping stages: fan a list field out into records, and select / rename fields."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field, model_validator

from synthgen.record import Record, make_record_id
from synthgen.stages.base import MapStage, StageParams


class ExplodeParams(StageParams):
    """`field` holds a list; each item becomes a record with the item in `into` (default: the same name), or, with
    `merge`, the item's keys as fields (a list of {input, output} objects becomes flat input / output rows)."""

    field: str
    into: str | None = None
    merge: bool = False
    max_items: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_target(self) -> ExplodeParams:
        if self.merge and self.into is not None:
            raise ValueError("give `into` (the field an item goes to) or `merge: true` (an item's keys become fields), not both")
        return self


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
        items = items[: self.params.max_items]
        if self.params.merge and not all(isinstance(item, dict) for item in items):
            self.ctx.reject(record, "item_not_a_mapping", f"field {self.params.field!r} has an item that is not an object")
            return
        rest = {k: v for k, v in record.fields.items() if k != self.params.field}
        for index, item in enumerate(items):
            meta = {**record.meta, "parents": [record.id], "item": index}
            fields = {**rest, **item} if self.params.merge else {**rest, into: item}  # an item's key wins over the record's
            yield Record(make_record_id(record.id, self.ctx.key, index), fields, meta)


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
