"""Bad input names its culprit (issue 14): field names checked against the records (item 10), strict YAML
(item 11), CLI values (item 12), corrupt input files, caches and schemas (items 13 and 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.sim import SimServer
from tests.test_bad_input import assert_clean_failure, run

ROWS = "".join(json.dumps({"instruction": f"task number {i} about topic {i * 7}", "output": f"answer {i}"}) + "\n"
               for i in range(50))
SOURCED = """name: fields
source: {path: in.jsonl}
backend: {kind: sim, sim: {latency: 0.0}}
stages:
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.stderr + result.stdout


@pytest.mark.parametrize("stage", ["exact_dedup: {fields: [instrution]}", "minhash_dedup: {fields: [instrution]}",
                                   "export: {layout: text, fields: {text: body}}"])
def test_item10_stage_field_no_record_has(tmp_path: Path, stage: str) -> None:
    code, message, out = run(tmp_path, SOURCED + f"  - {stage}\n", files={"in.jsonl": ROWS})
    name = stage.split(":")[0]
    missing = "body" if name == "export" else "instrution"
    assert_clean_failure(code, message, out, f"r.yaml: stages[0].{name}.fields: no record has the field '{missing}'",
                         "the records have: instruction, output")
    assert code == 2


def test_item10_stage_field_present_in_some_records_is_fine(tmp_path: Path) -> None:
    rows = ROWS + json.dumps({"other": "x"}) + "\n"
    code, message, out = run(tmp_path, SOURCED + "  - exact_dedup: {fields: [instruction]}\n", files={"in.jsonl": rows})
    assert code == 0, message
    assert len((out / "dataset.jsonl").read_text().splitlines()) == 51


def test_item10_dedup_field_no_record_has(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(ROWS)
    out = tmp_path / "kept.jsonl"
    code, message = invoke("dedup", str(tmp_path / "in.jsonl"), "--field", "instrution", "--out", str(out))
    assert code == 2, message
    assert "in.jsonl: --field: no record has the field 'instrution'; the records have: instruction, output" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_item10_export_unknown_role_and_missing_field(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, SOURCED + "  - exact_dedup: {fields: [instruction]}\n", files={"in.jsonl": ROWS})
    assert code == 0, message
    code, message = invoke("export", str(out), "--layout", "triplets", "--field", "anchr=text")
    assert code == 2 and "the triplets layout has no role 'anchr'; its roles: anchor, positive, negative" in message
    code, message = invoke("export", str(out), "--layout", "text", "--field", "text=body")
    assert code == 2, message
    assert "dataset.jsonl: --field: no record has the field 'body'; the records have: instruction, output" in message
    assert not (out / "export").exists() and not (out / "export.tmp").exists()


BASE = """name: yaml
prompts_dir: prompts
backend: {kind: sim, sim: {latency: 0.0}}
stages:
  - generate:
      template: t/plain.j2
      count: 3
"""
BOMB = "".join(f"{a}: &{a} [" + ", ".join([f"*{p}" if p else '"lol"'] * 9) + "]\n"
               for p, a in zip(["", *"abcdefgh"], "abcdefghi", strict=True))
YAML_CASES = {
    "duplicate top-level key": (BASE + "name: other\n", {}, ("r.yaml: invalid YAML: line 8", "duplicate key 'name' (first given at line 1)")),
    "duplicate stage key": (BASE.replace("count: 3", "count: 3\n      count: 30"), {},
                            ("line 8", "duplicate key 'count' (first given at line 7)")),
    "duplicate taxonomy key": (BASE.replace("template: t/plain.j2", "taxonomy: tax.yaml"),
                               {"tax.yaml": "template: t/plain.j2\nchildren:\n  - {id: a, weight: 1, weight: 2}\n"},
                               ("tax.yaml: invalid YAML: line 3", "duplicate key 'weight' (first given at line 3)")),
    "alias bomb": (BASE + BOMB.replace("a: &a", "x-a: &a"), {}, ("r.yaml: invalid YAML", "aliases expand the document past 1,000,000 nodes")),
    "deep nesting": (BASE + "deep: " + "[" * 20_000 + "]" * 20_000 + "\n", {}, ("r.yaml: invalid YAML: nested too deeply",)),
    "recursive alias": (BASE.replace("backend: {kind: sim,", "backend: &b {options: {loop: *b}, kind: sim,"), {},
                        ("r.yaml: invalid YAML: line 3", "an alias refers to a node that contains it")),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_item11_strict_yaml(tmp_path: Path, case: str) -> None:
    recipe, files, needles = YAML_CASES[case]
    code, message, out = run(tmp_path, recipe, files=files)
    assert_clean_failure(code, message, out, *needles)


def test_item11_merge_keys_may_override(tmp_path: Path) -> None:
    from synthgen.config import load_yaml

    path = tmp_path / "m.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 5\n")
    assert load_yaml(path)["other"] == {"x": 5, "y": 2}


@pytest.mark.parametrize(("args", "needle"), [
    (("--max-concurrency", "0"), "--max-concurrency"), (("--max-concurrency", "-5"), "--max-concurrency"),
    (("--limit", "-3"), "--limit"), (("--limit", "0"), "--limit"),
    (("--base-url", "localhost:8000/v1"), "base URL 'localhost:8000/v1' needs http:// or https:// and a host"),
    (("--base-url", ""), "base URL '' needs http:// or https:// and a host"),
])
def test_item12_bad_cli_values_refused_before_anything_is_created(tmp_path: Path, args: tuple[str, ...],
                                                                  needle: str) -> None:
    code, message, out = run(tmp_path, BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai"), *args,
                             env={"COLUMNS": "250"})
    assert code == 2, message
    assert needle in message and "Traceback" not in message
    assert not out.exists()


def test_item12_bad_base_url_in_recipe(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, BASE.replace("kind: sim,", "kind: openai, base_url: 'localhost:8000',"))
    assert_clean_failure(code, message, out, "r.yaml: backend.base_url", "base URL 'localhost:8000' needs http://")
    assert not out.exists()


def test_item12_credentials_in_base_url_are_redacted(tmp_path: Path, sim: SimServer) -> None:
    url = str(sim.base_url).replace("http://", "http://alice:hunter2@")
    recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai")
    code, message, out = run(tmp_path, recipe, "--base-url", url)
    assert code == 0, message
    code, message = invoke("export", str(out))
    assert code == 0, message
    recipe_text = (out / "recipe.yaml").read_text()
    assert "base_url: http://<redacted>@127.0.0.1" in recipe_text
    for written in (out / "recipe.yaml", out / "export" / "README.md", out / "stats.json"):
        assert "hunter2" not in written.read_text() and "alice" not in written.read_text(), written


def test_item12_credentials_in_base_url_and_an_api_key_conflict(tmp_path: Path, sim: SimServer) -> None:
    url = str(sim.base_url).replace("http://", "http://alice:hunter2@")
    recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai")
    code, message, out = run(tmp_path, recipe, "--base-url", url, env={"OPENAI_API_KEY": "sk-x"})
    assert_clean_failure(code, message, out, "backend: base_url", "holds a user:password and an API key")
    assert "hunter2" not in message


def test_item12_credentials_never_shown_in_messages(tmp_path: Path) -> None:
    recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai")
    code, message, out = run(tmp_path, recipe, "--base-url", "http://alice:hunter2@127.0.0.1:9/v1")
    assert_clean_failure(code, message, out, "cannot connect to http://127.0.0.1:9/v1")
    assert "hunter2" not in message


def test_item12_redact_urls_in_any_string() -> None:
    from synthgen.rundir import redact

    command = "synthgen run r.yaml --base-url https://bob:s3cret@llm.internal/v1?api_key=k123&x=1"
    assert redact({"run": {"command": command}}) == {
        "run": {"command": "synthgen run r.yaml --base-url https://<redacted>@llm.internal/v1?api_key=<redacted>&x=1"}}


def parquet_bytes(rows: int = 3000) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"instruction": [f"task {i}" for i in range(rows)]})
    pq.write_table(table, buffer, row_group_size=1000, compression="snappy")
    return buffer.getvalue()


SOURCE = SOURCED.replace("in.jsonl", "NAME") + "  - exact_dedup: {fields: [instruction]}\n"
INPUT_CASES: dict[str, tuple[str, str | bytes, tuple[str, ...]]] = {
    "truncated jsonl": ("in.jsonl", '{"instruction": "a"}\n{"instruction": "b", "out', ("in.jsonl:2", "not valid JSON",
                                                                                       "the file ends inside this record")),
    "truncated parquet": ("in.parquet", parquet_bytes()[:-300], ("in.parquet: not a readable Parquet file (truncated?)",)),
    "csv unclosed quote": ("in.csv", 'instruction,output\nfine,1\n"never closed,2\nmore,3\n',
                           ("in.csv:3: malformed CSV", "an unclosed quote?")),
    "csv NUL bytes": ("in.csv", "instruction,output\nfine,1\nbin\0ary,2\n", ("in.csv:3: contains a NUL byte",)),
    "csv extra values": ("in.csv", "instruction,output\nfine,1,surplus\n", ("in.csv:2: 1 more value(s) than the header",)),
    "csv invalid utf-8": ("in.csv", b"instruction,output\nfine,1\n\xff\xfe,2\n", ("in.csv: not UTF-8 text",)),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_item13_corrupt_inputs_name_the_file(tmp_path: Path, case: str) -> None:
    name, content, needles = INPUT_CASES[case]
    code, message, out = run(tmp_path, SOURCE.replace("NAME", name), files={name: content})
    assert_clean_failure(code, message, out, *needles)
    assert code == 2


def test_item13_corrupt_parquet_row_group_is_named(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from synthgen.errors import InputError
    from synthgen.stages.source import Source, SourceConfig

    data = bytearray(parquet_bytes())
    path = tmp_path / "in.parquet"
    path.write_bytes(data)
    start = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data[start:start + 2000] = b"\xff" * 2000
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"in.parquet: row group 1 of 3 is unreadable \(rows after 1000\)"):
        list(Source(SourceConfig(path=str(path)), path))


def foreign_db(path: Path, table: str) -> None:
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute(table)
    db.commit()
    db.close()


@pytest.mark.parametrize("table", ["CREATE TABLE users (id INTEGER, name TEXT)", "CREATE TABLE completions (key, value)"])
def test_item13_foreign_cache_is_named_and_left_alone(tmp_path: Path, table: str) -> None:
    cache = tmp_path / "run" / "cache.sqlite"
    foreign_db(cache, table)
    before = cache.read_bytes()
    code, message, out = run(tmp_path, BASE)
    assert_clean_failure(code, message, out, "cache.sqlite: not a synthgen request cache (its tables: ",
                         "synthgen leaves it as it is")
    assert cache.read_bytes() == before


def test_item13_item4_corrupt_cache_says_what_to_do(tmp_path: Path) -> None:
    cache = tmp_path / "run" / "cache.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"not a database" * 300)
    code, message, out = run(tmp_path, BASE)
    assert_clean_failure(code, message, out, "cache.sqlite: request cache is unreadable (file is not a database)",
                         "synthgen does not delete it: move it aside")
    assert cache.read_bytes() == b"not a database" * 300


def test_item4_locked_cache_does_not_suggest_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from synthgen import cache as request_cache

    monkeypatch.setattr(request_cache, "LOCK_WAIT_S", 1.0)  # a real run waits a minute for another process
    cache = tmp_path / "run" / "cache.sqlite"
    code, message, out = run(tmp_path, BASE)
    assert code == 0, message
    holder = sqlite3.connect(cache, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        code, message, out = run(tmp_path, BASE)
    finally:
        holder.close()
    assert code == 2, message
    assert "cache.sqlite: the request cache is locked by another process (database is locked)" in message
    assert "the cache is intact" in message and "--fresh" not in message


SCHEMA_CASES = {
    "dangling": ("{type: object, properties: {a: {$ref: '#/$defs/missing'}}}",
                 "stages[0].generate.schema.properties.a.$ref: $ref '#/$defs/missing' points at nothing"),
    "cycle": ("{$ref: '#/$defs/a', $defs: {a: {$ref: '#/$defs/b'}, b: {$ref: '#/$defs/a'}}}",
              "stages[0].generate.schema.$ref: $ref '#/$defs/a' leads into a cycle of references"),
    "remote": ("{$ref: 'http://example.com/s.json'}", "stages[0].generate.schema.$ref: $ref 'http://example.com/s.json': only references inside the schema (#/...) are supported"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_item13_bad_schema_refs_refused_before_any_request(tmp_path: Path, sim: SimServer, case: str) -> None:
    schema, needle = SCHEMA_CASES[case]
    recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai").replace("count: 3", f"count: 3\n      schema: {schema}")
    code, message, out = run(tmp_path, recipe, "--base-url", str(sim.base_url))
    assert_clean_failure(code, message, out, "r.yaml: " + needle)
    assert sim.stats()["requests"] == 0


def test_item13_recursive_tree_schema_is_fine() -> None:
    from synthgen.validation import OutputSchema

    tree = {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}
    schema = OutputSchema.from_inline(tree, "r.yaml", "schema")
    assert schema.parse('{"name": "a", "children": [{"name": "b", "children": []}]}')["name"] == "a"
