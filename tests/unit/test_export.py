"""Export layouts round-trip through `datasets`; the card carries the funnel and the command; estimates match runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthgen.errors import ConfigError, RunDirError
from synthgen.estimate import estimate_recipe
from synthgen.export import LAYOUTS, ExportConfig, export_records
from synthgen.hashing import stable_int
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.stages.export import export_run
from tests.conftest import write

RECORDS = [Record(f"r{i}", {"instruction": f"Do task {i}", "input": "" if i % 2 else f"data {i}", "response": f"Done {i}",
                            "anchor": f"query {i}", "positive": f"doc {i}", "negative": f"other {i}", "text": f"page {i}"},
                  {"steps": []}) for i in range(40)]
COLUMNS = {
    "records": {"id", "instruction", "input", "response", "anchor", "positive", "negative", "text", "meta"},
    "messages": {"messages"}, "alpaca": {"instruction", "input", "output"}, "sharegpt": {"conversations"},
    "triplets": {"anchor", "positive", "negative"}, "pairs": {"anchor", "positive"}, "text": {"text"},
}


def load(folder: Path, fmt: str) -> datasets.DatasetDict:
    if fmt == "hf":
        return datasets.load_from_disk(str(folder))
    builder = "json" if fmt == "jsonl" else "parquet"
    files = {split: str(folder / f"{split}.{fmt}") for split in ("train", "test") if (folder / f"{split}.{fmt}").exists()}
    return datasets.load_dataset(builder, data_files=files, cache_dir=str(folder.parent / "hf-cache"))


@pytest.mark.parametrize("layout", sorted(COLUMNS))
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_every_layout_and_format_round_trips(tmp_path: Path, layout: str, fmt: str) -> None:
    config = ExportConfig(layout=layout, format=fmt, test_size=0.25, split_seed=1)  # type: ignore[arg-type]
    result = export_records(RECORDS, config, tmp_path / "out", lambda r: "card")
    loaded = load(tmp_path / "out", fmt)
    assert set(loaded) == {"train", "test"}
    assert {split: loaded[split].num_rows for split in loaded} == result.rows
    assert sum(result.rows.values()) == 40 and 3 <= result.rows["test"] <= 18
    assert set(loaded["train"].column_names) == COLUMNS[layout]
    assert (tmp_path / "out" / "README.md").read_text() == "card"
    assert not (tmp_path / "out.tmp").exists()


def test_layout_contents_and_split_stability(tmp_path: Path) -> None:
    config = ExportConfig(layout="messages", test_size=0.5)
    first = export_records(RECORDS, config, tmp_path / "a")
    again = export_records(RECORDS, config, tmp_path / "b")
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()
    assert first.rows == again.rows
    row = load(tmp_path / "a", "jsonl")["train"][0]["messages"]
    assert [m["role"] for m in row] == ["user", "assistant"]
    triplet = export_records(RECORDS[:1], ExportConfig(layout="triplets"), tmp_path / "t")
    assert triplet.rows == {"train": 1}
    bare = [Record("x", {"instruction": "Sum", "anchor": "q", "positive": "p", "negative": "n"})]
    anchors = load(export_records(bare, ExportConfig(layout="triplets"), tmp_path / "u").path, "jsonl")["train"]["anchor"]
    assert anchors == ["Instruct: Sum\nQuery: q"]
    renamed = ExportConfig(layout="alpaca", fields={"output": "text"})
    assert load(export_records(RECORDS[:2], renamed, tmp_path / "v").path, "jsonl")["train"]["output"] == ["page 0", "page 1"]
    partly = export_records([Record("y", {"text": "only"}), *RECORDS[:1]], ExportConfig(layout="alpaca"), tmp_path / "w")
    assert partly.skipped == 1 and partly.rows == {"train": 1}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_an_export_no_record_fits_fails_naming_the_missing_fields(tmp_path: Path, fmt: str) -> None:
    """No file `datasets` cannot load: the error names the fields the layout needs and those the records have."""
    records = [Record("y", {"question": "Why?", "answer": "Because."})]
    with pytest.raises(ConfigError, match=r"none of the 1 records fits the alpaca layout: it needs instruction "
                                          r"\(field `instruction`\), output \(field `response`\).*fields answer, question"):
        export_records(records, ExportConfig(layout="alpaca", format=fmt), tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no records to export"):
        export_records([], ExportConfig(format=fmt), tmp_path / "out")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
    fitted = ExportConfig(layout="alpaca", format=fmt, fields={"instruction": "question", "output": "answer"})  # type: ignore[arg-type]
    assert export_records(records, fitted, tmp_path / "out").rows == {"train": 1}
    empty = export_records([], ExportConfig(format=fmt), tmp_path / "empty", lambda _: "no records", allow_empty=True)  # type: ignore[arg-type]
    assert empty.rows == {} and sorted(p.name for p in empty.path.iterdir()) == [".synthgen-export", "README.md"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_triplets_keep_every_mined_negative(tmp_path: Path, fmt: str) -> None:
    """Mined negatives become sentence-transformers' n-tuple columns, the record's own negative first."""
    records = [Record("filled", {"anchor": "q0", "positive": "p0", "negative": "m1", "mined_negatives": ["m1", "m2", "m3"]}),
               Record("own", {"anchor": "q1", "positive": "p1", "negative": "gen", "mined_negatives": ["m1", "m2", "m3"]})]
    config = ExportConfig(layout="triplets", format=fmt, instruction_in_anchor=False)  # type: ignore[arg-type]
    rows = load(export_records(records, config, tmp_path / "a").path, fmt)["train"].to_list()
    assert rows == [{"anchor": "q0", "positive": "p0", "negative_1": "m1", "negative_2": "m2", "negative_3": "m3"},
                    {"anchor": "q1", "positive": "p1", "negative_1": "gen", "negative_2": "m1", "negative_3": "m2"}]
    four = export_records(records, config.model_copy(update={"negatives": 4}), tmp_path / "b")
    assert four.rows == {"train": 1} and four.skipped == 1  # "filled" has 3 distinct negatives, not 4
    assert load(four.path, fmt)["train"].column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "negative_4"]


def test_push_to_hub_needs_a_token_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="set the HF_TOKEN environment variable"):
        export_records(RECORDS, ExportConfig(push_to_hub="me/data"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


RECIPE = """
name: exported
seed: 4
backend: {kind: sim, sim: {latency: 0.0}}
stages:
  - generate:
      template: quickstart/instruction.j2
      taxonomy: taxonomies/quickstart.yaml
      count: 25
      schema: {type: object, properties: {instruction: {type: string}, input: {type: string}}, required: [instruction, input]}
  - generate: {template: quickstart/response.j2, output: response, n: 2}
  - export: {layout: alpaca, format: hf, test_size: 0.2}
"""


def test_export_stage_card_and_estimate_match_a_run(tmp_path: Path) -> None:
    path = write(tmp_path / "recipes" / "r.yaml", RECIPE.replace("taxonomies/", str(Path.cwd() / "taxonomies") + "/"))
    recipe = load_recipe(path)
    estimates = estimate_recipe(recipe)
    result = run_recipe(recipe, tmp_path / "run")
    assert [e.requests for e in estimates] == [25, 50, 0]
    assert sum(e.requests or 0 for e in estimates) == result.stats.http_requests == 75
    assert estimates[0].input_tokens and estimates[1].output_tokens
    exported = datasets.load_from_disk(str(tmp_path / "run" / "export"))
    assert exported["train"].num_rows + exported["test"].num_rows == 50
    card = (tmp_path / "run" / "export" / "README.md").read_text()
    for text in ("## Funnel (records per stage)", "| 00-generate | 0 | 25 | 0 |", "| 01-generate | 25 | 50 | 0 |",
                 "## How to reproduce", "recipe hash", "## License and intended use", "temperature"):
        assert text in card, text
    again = export_run(tmp_path / "run", ExportConfig(layout="sharegpt"), tmp_path / "again")
    assert again.rows == {"train": 50} and "## Rejects by reason" in (tmp_path / "again" / "README.md").read_text()


def test_parquet_and_hf_unify_rows_whose_types_change_across_batches(tmp_path: Path) -> None:
    """A field null in the first batches and a string later, an int that becomes a float, a key (and a struct's key)
    only later rows have: one schema fits them all, written a few rows at a time."""
    fields = [{"text": "a", "note": None, "score": 1}, {"text": "b", "note": None, "score": 2},
              {"text": "c", "note": "late", "score": 2.5, "extra": {"k": 1}}, {"text": "d", "score": 3, "extra": {"j": "x"}},
              {"text": "e", "note": "z", "score": 4, "tags": ["t"]}]
    records = [Record(f"r{i}", row, {}) for i, row in enumerate(fields)]
    expected = [{"text": row["text"], "note": row.get("note"), "score": float(row["score"]),
                 "extra": {"k": row.get("extra", {}).get("k"), "j": row.get("extra", {}).get("j")} if "extra" in row else None,
                 "tags": row.get("tags")} for row in fields]
    for fmt in ("parquet", "hf"):
        config = ExportConfig(layout="records", format=fmt)  # type: ignore[arg-type]
        result = export_records(records, config, tmp_path / fmt, batch_rows=2)
        assert result.rows == {"train": 5}
        rows = load(tmp_path / fmt, fmt)["train"].to_list()
        assert [{k: row[k] for k in expected[0]} for row in rows] == expected
    assert pq.ParquetFile(tmp_path / "parquet" / "train.parquet").num_row_groups == 3
    assert sorted(path.name for path in (tmp_path / "hf").iterdir()) == [".synthgen-export", "dataset_dict.json", "train"]
    assert sorted(path.name for path in (tmp_path / "hf" / "train").iterdir()) == [  # no staging files left
        "data-00000-of-00001.arrow", "dataset_info.json", "state.json"]


def test_rows_no_column_type_fits_fail_cleanly(tmp_path: Path) -> None:
    records = [Record("a", {"n": 1}, {}), Record("b", {"n": 2}, {}), Record("c", {"n": "three"}, {})]
    with pytest.raises(RunDirError, match="cannot write these rows as Parquet .*give each field one type, or export JSONL"):
        export_records(records, ExportConfig(format="parquet"), tmp_path / "out", batch_rows=2)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


@pytest.mark.parametrize("layout", ["records", "messages", "triplets"])
def test_streamed_files_equal_the_in_memory_export(tmp_path: Path, layout: str) -> None:
    """Each format holds what building the whole table in memory held: same JSONL bytes, same Parquet table, same
    `datasets` features and rows."""
    config = ExportConfig(layout=layout, test_size=0.3)  # type: ignore[arg-type]
    rows: dict[str, list[dict[str, object]]] = {"train": [], "test": []}
    for record in RECORDS:
        rows["test" if stable_int(0, record.id) % 10_000 < 3_000 else "train"].append(LAYOUTS[layout](record, config))  # type: ignore[arg-type]
    for fmt in ("jsonl", "parquet", "hf"):
        export_records(RECORDS, config.model_copy(update={"format": fmt}), tmp_path / fmt, batch_rows=7)
    for split, expected in rows.items():
        assert (tmp_path / "jsonl" / f"{split}.jsonl").read_bytes() == b"".join(orjson.dumps(row) + b"\n" for row in expected)
        pq.write_table(pa.Table.from_pylist(expected), tmp_path / f"{split}.parquet")
        assert pq.read_table(tmp_path / "parquet" / f"{split}.parquet").equals(pq.read_table(tmp_path / f"{split}.parquet"))
        in_memory, streamed = datasets.Dataset.from_list(expected), datasets.load_from_disk(str(tmp_path / "hf"))[split]
        assert streamed.features == in_memory.features and streamed.to_list() == in_memory.to_list()


def test_export_writes_rows_while_they_arrive(tmp_path: Path) -> None:
    """Rows reach the disk as records come, not after the last one: by the last record, most bytes are written."""
    observed: list[int] = []

    def records() -> Iterator[Record]:
        for i in range(400):
            yield Record(f"r{i}", {"text": f"{i} " + "x" * 2000}, {})
        observed.append((tmp_path / "out.tmp" / "train.jsonl").stat().st_size)

    export_records(records(), ExportConfig(layout="text", format="parquet"), tmp_path / "out", batch_rows=50)
    final = 400 * len(orjson.dumps({"text": "100 " + "x" * 2000}) + b"\n")
    assert observed and observed[0] >= final // 2
    assert pq.ParquetFile(tmp_path / "out" / "train.parquet").num_row_groups == 8


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_push_to_hub_sends_the_written_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """The Hub gets the export's own rows, read back from its files (the upload itself is replaced here)."""
    pushed: list[tuple[str, dict[str, list[dict[str, object]]], str | None]] = []

    def push(self: datasets.DatasetDict, repo: str, token: str | None = None) -> None:
        pushed.append((repo, {split: self[split].to_list() for split in self}, token))

    monkeypatch.setenv("HF_TOKEN", "secret")
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push)
    config = ExportConfig(layout="alpaca", format=fmt, test_size=0.25, push_to_hub="me/data")  # type: ignore[arg-type]
    export_records(RECORDS, config, tmp_path / "out", batch_rows=4)
    written = load(tmp_path / "out", fmt)
    assert pushed == [("me/data", {split: written[split].to_list() for split in ("train", "test")}, "secret")]
    assert not list(tmp_path.glob(".hub-*"))  # the Arrow copy made for the upload is gone
