"""Dedup inside a generation run, and the standalone `synthgen dedup` command on JSONL and Parquet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.dedup.text import normalize
from synthgen.file_dedup import dedup_file
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.stages.dedup import MinHashDedupParams
from synthgen.stages.source import SourceConfig
from tests.conftest import read_jsonl, synthgen, write

RECIPE = """
name: dedup-run
seed: 5
backend: {kind: sim, sim: {latency: 0.0, duplicate_rate: 0.3}}
stages:
  - generate:
      template: ask.j2
      taxonomy: topics.yaml
      count: 40
      n: 4
      sampling: {max_tokens: 60}
  - exact_dedup: {fields: [text]}
  - minhash_dedup: {fields: [text], threshold: 0.8}
"""


def test_duplicates_are_removed_inside_the_run(tmp_path: Path) -> None:
    write(tmp_path / "prompts" / "ask.j2", "Tell me something about {{ topic }}.")
    topics = ", ".join(f"topic{i}" for i in range(30))
    write(tmp_path / "topics.yaml", f"placeholders: {{topic: [{topics}]}}\nchildren: [{{id: all}}]\n")
    recipe = load_recipe(write(tmp_path / "recipes" / "r.yaml", RECIPE))
    result = run_recipe(recipe, tmp_path / "run")
    kept = read_jsonl(result.run_dir.dataset_path)
    rejects = read_jsonl(result.run_dir.rejects_path)
    reasons = {r["reason"] for r in rejects}
    assert reasons == {"exact_duplicate", "near_duplicate"}
    kept_ids = {row["id"] for row in kept}
    for reject in rejects:
        assert reject["meta"]["duplicate_of"] in kept_ids
        assert reject["meta"]["similarity"] >= 0.8
    texts = [normalize(row["fields"]["text"]) for row in kept]
    assert len(set(texts)) == len(texts)
    assert len(kept) + len(rejects) == 160
    stats = json.loads(result.run_dir.stats_path.read_text())
    assert stats["rejects_by_reason"]["near_duplicate"] == sum(r["reason"] == "near_duplicate" for r in rejects)
    assert (result.run_dir.checkpoints / "02-minhash_dedup.index.npz").exists()

    dataset = result.run_dir.dataset_path.read_bytes()
    for path in result.run_dir.checkpoints.glob("0[12]-*"):
        path.unlink()
    result.run_dir.dataset_path.unlink()
    again = run_recipe(recipe, tmp_path / "run")
    assert again.stats.http_requests == 0 and again.run_dir.dataset_path.read_bytes() == dataset


def test_dedup_command_on_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"text": "How do I reset my card PIN at an ATM near my home?", "label": 1},
            {"text": "how do i reset my card pin at an atm near my home", "label": 1},
            {"text": "How do I reset my card PIN at the ATM near my home?", "label": 2},
            {"text": "Where can I see my statement for last month?", "label": 3}]
    jsonl = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    for source, out in ((jsonl, tmp_path / "kept.jsonl"), (parquet, tmp_path / "kept.parquet")):
        result = synthgen("dedup", str(source), "--field", "text", "--out", str(out), "--threshold", "0.7")
        assert result.returncode == 0, result.stderr
        kept = read_jsonl(out) if out.suffix == ".jsonl" else pq.read_table(out).to_pylist()
        assert kept == [rows[0], rows[3]]
        rejects = read_jsonl(out.with_name(out.name + ".rejects.jsonl"))
        assert [(r["line"], r["reason"], r["duplicate_of_line"]) for r in rejects] == [(2, "exact_duplicate", 1), (3, "near_duplicate", 1)]
        assert "dropped: near_duplicate" in result.stderr and "2: " not in result.stderr.split("clusters")[0]
        assert f"kept:    {out}  (2 rows)" in result.stdout


def test_dedup_command_reports_bad_input(tmp_path: Path) -> None:
    result = synthgen("dedup", str(tmp_path / "missing.jsonl"), "--field", "text", "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and "missing.jsonl: input file not found" in result.stderr
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\nnot json\n')
    result = synthgen("dedup", str(bad), "--field", "text", "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and "bad.jsonl:2: not valid JSON" in result.stderr
    assert not list(tmp_path.glob("o.jsonl*"))
    shutil.rmtree(tmp_path)


def test_dedup_command_decontaminates_with_its_own_threshold(tmp_path: Path) -> None:
    evaluation = write(tmp_path / "eval.jsonl", '{"text": "How do I reset my card PIN today?"}\n')
    rows = [{"text": "How do I reset my card PIN now?"}, {"text": "How do I reset my password?"},
            {"text": "How do I reset my password ?"}]
    source = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for extra, contaminated in (([], [1]), (["--decontaminate-threshold", "1.0"], [])):
        out = tmp_path / "kept.jsonl"
        result = synthgen("dedup", str(source), "--field", "text", "--out", str(out), "--decontaminate", str(evaluation), *extra)
        assert result.returncode == 0, result.stderr
        rejects = read_jsonl(out.with_name(out.name + ".rejects.jsonl"))
        assert [r["line"] for r in rejects if r["reason"] == "contaminated"] == contaminated
        assert [(r["line"], r["reason"]) for r in rejects if r["reason"] != "contaminated"] == [(3, "exact_duplicate")]
        assert all("containment" in r["detail"] for r in rejects if r["reason"] == "contaminated")


def test_dedup_file_streams_rows_whose_keys_vary_and_names_rejected_originals(tmp_path: Path) -> None:
    """Parquet output keeps a key only later rows have; an exact duplicate of a row that is itself dropped as a near
    duplicate still names that row's line."""
    rows = [{"text": "How do I reset my card PIN at an ATM near my home?", "label": 1},
            {"text": "How do I reset my card PIN at the ATM near my home?", "label": 2},
            {"text": "how do i reset my card pin at the atm near my home", "label": 2},
            {"text": "Where can I see my statement for last month?", "label": 3, "lang": "en"}]
    source = write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for out in (tmp_path / "kept.jsonl", tmp_path / "kept.parquet"):
        summary = dedup_file(SourceConfig(path=str(source)), out, MinHashDedupParams(fields=["text"], threshold=0.7))
        assert (summary.records, summary.kept) == (4, 2)
        kept = read_jsonl(out) if out.suffix == ".jsonl" else pq.read_table(out).to_pylist()
        assert kept == ([rows[0], rows[3]] if out.suffix == ".jsonl" else [{**rows[0], "lang": None}, rows[3]])
        rejects = read_jsonl(out.with_name(out.name + ".rejects.jsonl"))
        assert [(r["line"], r["reason"], r["duplicate_of_line"]) for r in rejects] == [(3, "exact_duplicate", 2), (2, "near_duplicate", 1)]
        assert list(rejects[0]) == ["line", "reason", "duplicate_of_line", "duplicate_of", "similarity", "detail", "row"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "kept.jsonl", "kept.jsonl.rejects.jsonl",
                                                         "kept.parquet", "kept.parquet.rejects.jsonl"]
