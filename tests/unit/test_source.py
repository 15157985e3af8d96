"""Input sources: each format reads into Records; malformed input names the file and line."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthgen.errors import InputError
from synthgen.stages.source import Source, SourceConfig
from tests.conftest import write

ROWS = [{"text": "alpha", "label": 1}, {"text": "beta", "label": 2}, {"text": "alpha", "label": 1}]


def read(path: Path, **config: object) -> list[dict[str, object]]:
    return [r.fields for r in Source(SourceConfig(path=str(path), **config), path)]


def test_jsonl_csv_parquet_and_hf_folder_read_the_same_rows(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "d.jsonl", "\n".join('{"text": "%s", "label": %d}' % (r["text"], r["label"]) for r in ROWS) + "\n\n")
    csv = write(tmp_path / "d.csv", "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    folder = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    assert read(jsonl) == read(parquet) == read(folder) == ROWS
    assert read(csv) == [{"text": r["text"], "label": str(r["label"])} for r in ROWS]


def test_ids_are_stable_and_distinct_for_equal_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 1}\n')
    first = [r.id for r in Source(SourceConfig(path=str(path)), path)]
    again = [r.id for r in Source(SourceConfig(path=str(path)), path)]
    assert first == again and len(set(first)) == 2


def test_field_selection_limit_and_estimate(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", "".join('{"text": "t%d", "x": %d}\n' % (i, i) for i in range(10)))
    source = Source(SourceConfig(path=str(path), fields=["text"], limit=4), path)
    assert [r.fields for r in source] == [{"text": f"t{i}"} for i in range(4)]
    assert source.estimate() == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": \n', "d.jsonl:2: not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', "d.jsonl:2: expected a JSON object, got list"),
        (b'{"a": "\xff\xfe"}\n', "d.jsonl:1: not valid JSON"),
        (b"\n\n", "d.jsonl: input has no records"),
        (b'{"b": 1}\n', "d.jsonl:1: row lacks field(s) ['a']"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read(path, fields=["a"])
    assert message in str(info.value)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input file not found"):
        read(tmp_path / "none.jsonl")
    with pytest.raises(InputError, match="set source.format"):
        read(write(tmp_path / "d.txt", "x"))


def test_non_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text\n\xff\xfe\n")
    with pytest.raises(InputError, match="d.csv: not UTF-8"):
        read(path)


def test_dataset_dict_needs_a_split(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(folder))
    with pytest.raises(InputError, match=r"source.split: one of \['train'\]"):
        read(folder)
    assert read(folder, split="train") == ROWS
