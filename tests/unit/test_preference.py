"""preference_pairs: best against worst (or every pair) of one prompt's judged candidates when their scores differ
by `min_margin`; the `preference` export layout writes the rows TRL's DPOTrainer reads, in both documented forms:
standard {"prompt": str, "chosen": str, "rejected": str} and conversational (prompt: user turns, chosen/rejected:
assistant turns), per https://huggingface.co/docs/trl/dataset_formats (trl itself is not a dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.export import ExportConfig, export_records
from synthgen.record import Record
from synthgen.stages.select import PreferencePairs
from tests.conftest import read_jsonl, write
from tests.unit.test_best_of_n import Rejects, candidate, run_stage


def pairs(tmp_path: Path, records: list[Record], **params: Any) -> tuple[list[Record], Rejects, dict[str, Any]]:
    return run_stage(tmp_path, PreferencePairs, records, **params)


GROUPS = [candidate("a0", "A", 2.0), candidate("a1", "A", 4.5), candidate("a2", "A", 3.0), candidate("a3", "A", 1.5),
          candidate("b0", "B", 3.0), candidate("b1", "B", 3.5), candidate("c0", "C", 5.0)]


def test_best_against_worst_above_the_margin(tmp_path: Path) -> None:
    made, rejects, funnel = pairs(tmp_path, GROUPS)
    assert len(made) == 1
    pair = made[0]
    assert pair.fields == {"prompt": "task A", "chosen": "answer a1", "rejected": "answer a3",
                           "score_chosen": 4.5, "score_rejected": 1.5, "margin": 3.0}
    assert pair.meta["parents"] == ["a1", "a3"] and pair.meta["preference"] == {"score": "judge", "candidates": 4}
    assert rejects == [
        ("a0", "not_paired", "judge=2: neither the best nor the worst"),
        ("a2", "not_paired", "judge=3: neither the best nor the worst"),
        ("b0", "margin_too_small", "judge=3: no candidate differs by min_margin 1 (best 3.5, worst 3)"),
        ("b1", "margin_too_small", "judge=3.5: no candidate differs by min_margin 1 (best 3.5, worst 3)"),
        ("c0", "single_candidate", "a preference pair needs two candidates of one prompt"),
    ]
    assert funnel == {"candidates": 7, "prompts": 3, "kept": 1, "candidates_per_kept": 7.0}


def test_a_smaller_margin_pairs_close_candidates(tmp_path: Path) -> None:
    made, _, _ = pairs(tmp_path, GROUPS, min_margin=0.5)
    assert [(p.fields["chosen"], p.fields["rejected"]) for p in made] == [("answer a1", "answer a3"), ("answer b1", "answer b0")]


def test_all_pairs_above_the_margin(tmp_path: Path) -> None:
    made, rejects, _ = pairs(tmp_path, GROUPS[:4], pairs="all", min_margin=1.5)
    assert [(p.fields["chosen"], p.fields["rejected"], p.fields["margin"]) for p in made] == [
        ("answer a1", "answer a2", 1.5), ("answer a1", "answer a0", 2.5), ("answer a1", "answer a3", 3.0),
        ("answer a2", "answer a3", 1.5)]
    assert rejects == []
    made, rejects, _ = pairs(tmp_path, GROUPS[:4], pairs="all", min_margin=2.6)
    assert len(made) == 1 and {reason for _, reason, _ in rejects} == {"margin_too_small"} and len(rejects) == 2


def test_prompt_joins_its_fields_and_pair_ids_are_stable(tmp_path: Path) -> None:
    records = [Record(f"x{i}", {"instruction": "Sum", "input": "2 and 3", "answer": str(4 + i)},
                      {"parents": ["X"], "scores": {"judge": {"mean": 5 - 3 * i}}}) for i in range(2)]
    made, _, _ = pairs(tmp_path, records, prompt_fields=["instruction", "input"], response_field="answer")
    again, _, _ = pairs(tmp_path, records, prompt_fields=["instruction", "input"], response_field="answer")
    assert made[0].fields["prompt"] == "Sum\n\n2 and 3" and made[0].fields["chosen"] == "4"
    assert made[0].id == again[0].id != records[0].id


def export_rows(tmp_path: Path, records: list[Record], **config: Any) -> list[dict[str, Any]]:
    result = export_records(records, ExportConfig.model_validate({"layout": "preference", **config}), tmp_path / "out")
    return read_jsonl(result.path / "train.jsonl")


def test_preference_export_standard_form(tmp_path: Path) -> None:
    made, _, _ = pairs(tmp_path, GROUPS)
    assert export_rows(tmp_path, made) == [{"prompt": "task A", "chosen": "answer a1", "rejected": "answer a3"}]


def test_preference_export_conversational_form(tmp_path: Path) -> None:
    made, _, _ = pairs(tmp_path, GROUPS)
    assert export_rows(tmp_path, made, conversational=True) == [{
        "prompt": [{"role": "user", "content": "task A"}],
        "chosen": [{"role": "assistant", "content": "answer a1"}],
        "rejected": [{"role": "assistant", "content": "answer a3"}],
    }]


def test_preference_export_maps_roles_and_skips_incomplete_rows(tmp_path: Path) -> None:
    records = [Record("r0", {"question": "Why?", "good": "Because.", "bad": "No."}),
               Record("r1", {"question": "How?", "good": "", "bad": "No."})]
    rows = export_rows(tmp_path, records, fields={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert rows == [{"prompt": "Why?", "chosen": "Because.", "rejected": "No."}]


def test_conversational_belongs_to_the_preference_layout() -> None:
    with pytest.raises(ValidationError, match="only the preference layout has a conversational form"):
        ExportConfig.model_validate({"layout": "messages", "conversational": True})


def test_cli_exports_a_run_in_the_conversational_form(tmp_path: Path) -> None:
    made, _, _ = pairs(tmp_path, GROUPS)
    run_dir = tmp_path / "run"
    write(run_dir / "dataset.jsonl", "".join(record.to_json().decode() + "\n" for record in made))
    write(run_dir / "recipe.yaml", "name: p\nstages: []\n")
    write(run_dir / "stats.json", "{}")
    result = CliRunner().invoke(app, ["export", str(run_dir), "--layout", "preference", "--conversational"])
    assert result.exit_code == 0, result.output
    assert "export: " in result.output and "train: 1 rows" in result.output
    row = read_jsonl(run_dir / "export" / "train.jsonl")[0]
    assert row["chosen"] == [{"role": "assistant", "content": "answer a1"}]
