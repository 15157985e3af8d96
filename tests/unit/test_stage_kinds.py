"""The stage kinds own the bookkeeping: a filter only says why it drops, a map stage handles one record, a
whole-set stage gets its input spilled to Parquet in its folder; the core asks stages, never tests their classes."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from synthgen.build import build_stages
from synthgen.progress import plan_stages
from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.stages.base import Filter, MapStage, StageContext, StageParams, WholeSetStage
from synthgen.stages.spill import Spilled
from synthgen.stats import RunStats
from tests.conftest import REPO, write

Rejects = list[tuple[str, str, str | None]]


def context(tmp_path: Path, rejects: Rejects, seed: int = 7) -> StageContext:
    return StageContext(label="01-kind", index=1, seed=seed, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, stats=RunStats(), workdir=tmp_path,
                        reject=lambda record, reason, detail: rejects.append((record.id, reason, detail)))


class ShortText(Filter):
    name = "short_text"

    def keep(self, record: Record) -> str | None:
        return "too_long" if len(record.fields["text"]) > 3 else None


class Shuffled(MapStage):
    name = "shuffled"

    def map(self, record: Record) -> Iterator[Record]:
        words = record.fields["text"].split()
        self.rng(record).shuffle(words)
        yield Record(record.id, {"text": " ".join(words)}, record.meta)


class Reversed(WholeSetStage):
    """Emits its input in reverse, reading the spill twice: once to count, once to emit."""

    name = "reversed"
    chunk = 2

    def start(self) -> None:
        self.seen: list[list[str]] = []
        self.spills: list[Path] = []

    def see(self, batch: list[Record]) -> None:
        self.seen.append([record.id for record in batch])

    def emit(self, records: Spilled) -> Iterator[Record]:
        self.spills.append(records.path)
        assert records.path.parent == self.ctx.workdir and records.path.exists()
        assert pq.ParquetFile(records.path).num_row_groups == len(self.seen)
        count = sum(1 for _ in records)
        out = list(records)
        assert len(out) == count
        yield from reversed(out)


def texts(*values: str) -> list[Record]:
    return [Record(f"r{i}", {"text": value, "n": i}, {"line": i}) for i, value in enumerate(values)]


def test_a_filter_keeps_on_none_and_drops_with_its_reason(tmp_path: Path) -> None:
    rejects: Rejects = []
    kept = list(ShortText(StageParams(), context(tmp_path, rejects)).run(texts("ab", "abcdef", "xyz")))
    assert [record.id for record in kept] == ["r0", "r2"]
    assert rejects == [("r1", "too_long", None)]


def test_a_map_stage_is_seeded_by_run_seed_stage_key_and_record_id(tmp_path: Path) -> None:
    records = texts("a b c d e f g h", "a b c d e f g h")
    first = [r.fields["text"] for r in Shuffled(StageParams(), context(tmp_path, [])).run(records)]
    again = [r.fields["text"] for r in Shuffled(StageParams(), context(tmp_path, [])).run(records)]
    other_seed = [r.fields["text"] for r in Shuffled(StageParams(), context(tmp_path, [], seed=8)).run(records)]
    assert first == again  # same seed, key and id: same output
    assert first[0] != first[1]  # same text, another record id: another draw
    assert other_seed != first
    assert Shuffled.row_wise and ShortText.row_wise


def test_a_whole_set_stage_reads_its_parquet_spill_in_its_folder_and_removes_it(tmp_path: Path) -> None:
    stage = Reversed(StageParams(), context(tmp_path, []))
    records = texts("a", "b", "c", "d", "e")
    out = list(stage.run(records))
    assert out == list(reversed(records))  # fields and meta replayed exactly
    assert stage.seen == [["r0", "r1"], ["r2", "r3"], ["r4"]]  # shown chunk by chunk while spilling
    assert stage.spills and not stage.spills[0].exists()
    assert not list(tmp_path.iterdir())
    assert list(stage.run([])) == [] and stage.seen == []  # each run starts afresh


def test_progress_expectation_comes_from_the_stages_plans(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "r.yaml", f"""
name: plan
backend: {{kind: sim, model: m}}
prompts_dir: {REPO / "prompts"}
stages:
  - generate: {{template: quickstart/instruction.j2, count: 5, n: 2}}
  - length_filter: {{field: text}}
  - generate: {{template: quickstart/instruction.j2, n: 3}}
"""))
    stages = build_stages(recipe, RunStats())
    assert [stage.planned_requests(4) for stage in stages] == [10, 0, 12]
    plan = plan_stages(stages, None, None)
    assert [(step.inputs, step.outputs, step.requests) for step in plan] == [(0, 10, 10), (10, 10, 0), (10, 30, 30)]
    assert sum(step.requests or 0 for step in plan[2:]) == 30  # resumed after the first two stages


CORE = ["pipeline.py", "build.py", "estimate.py", "card.py", "report.py", "report_data.py", "checkpoints.py",
        "engine/ray_engine.py", "engine/ray_workers.py", "engine/ray_dedup.py"]


def test_the_core_never_tests_for_a_concrete_stage_class() -> None:
    stage_classes = {name for path in (REPO / "synthgen").rglob("*.py") if "stages" in path.parts or "recipes" in path.parts
                     for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
                     for name in [node.name]}
    found = []
    for relative in CORE:
        tree = ast.parse((REPO / "synthgen" / relative).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                found += [f"{relative}:{node.lineno} {name}" for name in named & stage_classes]
    assert not found
