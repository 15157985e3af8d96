"""Spilled records read back in order, one row group at a time."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from synthgen.record import Record
from synthgen.stages.spill import read_spill, write_spill


def test_reading_a_spill_holds_one_row_group_not_the_file(tmp_path: Path) -> None:
    records = [Record(f"r{i}", {"text": f"{i} " + "word " * 200}, {"i": i}) for i in range(6_000)]
    path = tmp_path / "s.parquet"
    assert write_spill(records, path, 100) == 60
    peak, seen = 0, []
    for record in read_spill(path):
        seen.append(record)
        peak = max(peak, pa.total_allocated_bytes())
    assert seen == records and list(read_spill(path, group=3)) == records[300:400]
    spilled_bytes = sum(len(r.to_json()) for r in records)  # ~6 MB of JSON
    assert peak < spilled_bytes / 10, (peak, spilled_bytes)  # one row group of 100 records, not all 60
