"""review.jsonl: append-only decisions, the latest per id wins, bad lines named; export honours it."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.errors import InputError
from synthgen.export import ExportConfig
from synthgen.record import Record
from synthgen.review import append_decisions, ids_with, read_review
from synthgen.stages.export import export_run
from tests.conftest import read_jsonl


def test_the_latest_decision_per_id_wins_and_lines_are_only_appended(tmp_path: Path) -> None:
    assert read_review(tmp_path) == {}
    assert append_decisions(tmp_path, ["a", "b", "a"], "excluded", "ana", "off-topic") == 2
    first = (tmp_path / "review.jsonl").read_bytes()
    append_decisions(tmp_path, ["a"], "approved", "ben", "fine after all", filter={"reason": "too_short"})
    assert (tmp_path / "review.jsonl").read_bytes().startswith(first)  # earlier decisions kept as written
    decisions = read_review(tmp_path)
    assert decisions["a"].action == "approved" and decisions["a"].who == "ben" and decisions["a"].filter == {"reason": "too_short"}
    assert decisions["b"].action == "excluded" and decisions["b"].why == "off-topic" and decisions["b"].when.endswith("Z")
    assert ids_with(decisions, "excluded") == {"b"} and ids_with(decisions, "approved") == {"a"}
    assert len(read_jsonl(tmp_path / "review.jsonl")) == 3


@pytest.mark.parametrize("bad", ["{not json", '{"id": "x", "action": "deleted"}', '["x"]'])
def test_a_bad_line_is_named_with_file_and_line(tmp_path: Path, bad: str) -> None:
    append_decisions(tmp_path, ["a"], "excluded", "ana")
    with (tmp_path / "review.jsonl").open("a") as handle:
        handle.write(bad + "\n")
    with pytest.raises(InputError, match=r"review\.jsonl:2: "):
        read_review(tmp_path)


def test_an_unknown_action_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="excluded, approved"):
        append_decisions(tmp_path, ["a"], "deleted", "ana")  # type: ignore[arg-type]


def _run_dir(tmp_path: Path, ids: list[str]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "dataset.jsonl").write_bytes(b"".join(Record(i, {"text": f"record {i}"}).to_json() + b"\n" for i in ids))
    (run / "stats.json").write_text('{"stages": {}}')
    (run / "recipe.yaml").write_text("name: t\nstages: []\n")
    return run


def test_export_leaves_out_excluded_records_and_the_card_counts_them(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, ["r1", "r2", "r3", "r4"])
    append_decisions(run, ["r1", "r2"], "excluded", "ana")
    append_decisions(run, ["r2", "r3"], "approved", "ben")  # r2 re-admitted
    result = export_run(run, ExportConfig())
    assert [row["id"] for row in read_jsonl(result.path / "train.jsonl")] == ["r2", "r3", "r4"]
    card = (result.path / "README.md").read_text()
    assert "1 records excluded by review, 2 approved" in card

    approved = export_run(run, ExportConfig(), tmp_path / "approved", approved_only=True)
    assert [row["id"] for row in read_jsonl(approved.path / "train.jsonl")] == ["r2", "r3"]
    assert "1 records excluded by review, 2 approved, 1 left out as not approved" in (approved.path / "README.md").read_text()


def test_export_without_a_review_has_no_review_section(tmp_path: Path) -> None:
    result = export_run(_run_dir(tmp_path, ["r1"]), ExportConfig())
    card = (result.path / "README.md").read_text()
    assert "## Human review" not in card and "excluded by review" not in card
