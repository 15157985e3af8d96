"""Field names a stage or an export reads must exist: a name that no record has is a typo, not an empty value.

A record may legitimately lack an optional field, so the check is on the whole stream: it passes records through
and raises at the end of the input if some name was never seen. Stages write their output through a temporary
checkpoint, so failing at the end leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from synthgen.errors import ConfigError
from synthgen.record import Record

if TYPE_CHECKING:
    from synthgen.stages.base import Stage


def require_fields(records: Iterable[Record], names: Sequence[str | None], source: str, field: str) -> Iterator[Record]:
    """Yield `records`; at their end, raise ConfigError(`source`, `field`) if no record had one of `names`
    (None entries are skipped; an empty input passes)."""
    wanted = {name for name in names if name is not None}
    seen: set[str] = set()
    any_record = False
    for record in records:
        any_record = True
        if not wanted <= seen:
            seen.update(record.fields)
        yield record
    missing = [name for name in dict.fromkeys(names) if name is not None and name not in seen]
    if any_record and missing:
        listed = ", ".join(repr(name) for name in missing)
        present = ", ".join(sorted(seen)) or "(none)"
        raise ConfigError(source, field, f"no record has the field {listed}; the records have: {present}")


def stage_fields(records: Iterable[Record], stage: Stage, *params: str) -> Iterator[Record]:
    """`require_fields` for the field names held by a stage's parameters `params` (a name or a list of names);
    the error names the recipe and `stages[i].<stage>.<param>`."""
    checked: Iterable[Record] = records
    for param in params:
        value = getattr(stage.params, param)
        names = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        field = f"stages[{stage.ctx.index}].{stage.name}.{param}"
        checked = require_fields(checked, names, str(stage.ctx.recipe_path), field)
    return iter(checked)
