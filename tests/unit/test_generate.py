"""The generate stage: samples, structured output, retries of invalid output, provenance."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl, write


class Pair(pydantic.BaseModel):
    """A schema given as a pydantic model (`schema_model: tests.unit.test_generate:Pair`)."""

    question: str
    difficulty: int = pydantic.Field(ge=1, le=3)


def recipe_file(tmp_path: Path, stage: str, sim: str = "{latency: 0.0}") -> Path:
    write(tmp_path / "prompts" / "ask.j2", "{% block system %}Shared rules.{% endblock %}{% block user %}Ask about {{ topic }}.{% endblock %}")
    return write(tmp_path / "recipes" / "r.yaml", f"""
name: gen
seed: 1
backend: {{kind: sim, sim: {sim}, max_attempts: 2, retry_initial: 0.001}}
stages:
  - generate:
      template: ask.j2
      count: 6
{stage}
""")


def test_n_samples_per_prompt_have_distinct_ids_and_seeds(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, "      n: 3\n      taxonomy: tax.yaml")
    write(tmp_path / "tax.yaml", "children:\n  - id: only\n    placeholders: {topic: [owls, tides]}\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 18 and len({r["id"] for r in rows}) == 18
    steps = [r["meta"]["steps"][0] for r in rows]
    assert sorted(s["sample"] for s in steps) == sorted([0, 1, 2] * 6)
    assert len({s["sampling"]["seed"] for s in steps}) == 18
    assert {s["placeholders"]["topic"] for s in steps} <= {"owls", "tides"}
    assert all(s["leaf"] == "only" and s["template"] == "ask.j2" for s in steps)


def test_schema_from_a_pydantic_model(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, "      schema_model: tests.unit.test_generate:Pair\n      taxonomy: tax.yaml")
    write(tmp_path / "tax.yaml", "placeholders: {topic: [owls]}\nchildren: [{id: a}]\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 6
    for row in rows:
        Pair.model_validate(row["fields"])


@pytest.mark.parametrize(("fault", "reason"), [("invalid_json", {"invalid_json", "schema_mismatch"}), ("truncated", {"truncated"})])
def test_invalid_output_is_asked_again_then_rejected_with_raw_text(tmp_path: Path, fault: str, reason: set[str]) -> None:
    stage = "      max_retries: 2\n      taxonomy: tax.yaml\n      schema: {type: object, properties: {q: {type: string}}, required: [q]}"
    path = recipe_file(tmp_path, stage, sim=f"{{latency: 0.0, faults: {{{fault}: 1.0}}}}")
    write(tmp_path / "tax.yaml", "placeholders: {topic: [owls]}\nchildren: [{id: a}]\n")
    result = run_recipe(load_recipe(path), tmp_path / "run")
    assert read_jsonl(result.run_dir.dataset_path) == []
    rejects = read_jsonl(result.run_dir.rejects_path)
    assert len(rejects) == 6 and {r["reason"] for r in rejects} <= reason
    assert all("raw: " in r["detail"] for r in rejects)
    assert result.stats.http_ok == 18  # 1 + max_retries attempts, each with a new sample seed


def test_rendering_error_names_the_input_line(tmp_path: Path) -> None:
    from synthgen.errors import TemplateError

    write(tmp_path / "prompts" / "t.j2", "Answer {{ record.question }}")
    write(tmp_path / "in.jsonl", '{"question": "why?"}\n{"other": 1}\n')
    path = write(tmp_path / "recipes" / "r.yaml", f"""
name: gen
backend: {{kind: sim, sim: {{latency: 0.0}}}}
source: {{path: {tmp_path / 'in.jsonl'}}}
stages:
  - generate: {{template: t.j2}}
""")
    with pytest.raises(TemplateError, match=r"t.j2.*question.*in.jsonl:2"):
        run_recipe(load_recipe(path), tmp_path / "run")
    assert not (tmp_path / "run" / "dataset.jsonl").exists()
