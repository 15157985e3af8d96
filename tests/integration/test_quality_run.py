"""The heuristic quality filters in a recipe on the sim: junk is dropped before its answer is paid for, every drop
is in rejects.jsonl with its reason, and the card and report show each reason's count with its first example."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.sim import SimServer
from tests.conftest import read_jsonl
from tests.test_bad_input import run

RECIPE = """name: quality
prompts_dir: prompts
source: {path: in.jsonl, fields: [instruction]}
backend: {kind: sim, sim: {latency: 0.0}}
stages:
  - placeholder_filter: {fields: [instruction]}
  - refusal_filter: {fields: [instruction]}
  - language_filter: {fields: [instruction]}
  - generate: {template: t/answer.j2, output: response}
  - gopher_repetition_filter: {fields: [response]}
  - non_alpha_filter: {fields: [response]}
  - export: {}
"""
INSTRUCTIONS = {
    "Write a haiku about the first snow falling on a quiet city garden.": None,
    "Explain to a busy professional why public libraries still matter today.": None,
    "Summarise the weather warning for the coast in three short sentences.": None,
    "Compare cycling infrastructure in two cities for a university student.": None,
    "write your answer to this [instruction_type], [input_type]": "placeholder",
    "Describe <the task> in detail for the reader.": "placeholder",
    "I'm ready to assist! Please tell me what you would like me to write.": "preamble",
    "Écrivez un court poème sur la mer, le vent du soir et les bateaux du port.": "language",
}


def test_filters_drop_junk_with_named_reasons_before_answering(tmp_path: Path, sim: SimServer) -> None:
    lines = "".join(json.dumps({"instruction": text}) + "\n" for text in INSTRUCTIONS)
    code, output, out = run(tmp_path, RECIPE, "--base-url", sim.base_url, files={"in.jsonl": lines})
    assert code == 0, output

    rejects = read_jsonl(out / "rejects.jsonl")
    assert {row["fields"]["instruction"]: row["reason"] for row in rejects} == {
        text: reason for text, reason in INSTRUCTIONS.items() if reason}
    kept = read_jsonl(out / "dataset.jsonl")
    assert sorted(row["fields"]["instruction"] for row in kept) == sorted(t for t, r in INSTRUCTIONS.items() if not r)
    assert sim.stats()["requests"] == len(kept)  # no answer was asked for a dropped instruction

    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejects_by_reason"] == {"language": 1, "placeholder": 2, "preamble": 1}
    assert stats["reject_examples"]["placeholder"] == "instruction: write your answer to this [instruction_type], [input_type]"
    card = (out / "export" / "README.md").read_text()
    assert "| placeholder | 2 | instruction: write your answer to this [instruction_type], [input_type] |" in card
    assert "| preamble | 1 | instruction: I'm ready to assist!" in card

    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text()
    assert "instruction: Describe &lt;the task&gt; in detail" not in page  # only the first reject of a reason is shown
    assert "instruction: write your answer to this [instruction_type], [input_type]" in page
    assert "instruction: I&#x27;m ready to assist!" in page
