"""Back-translation, styled paraphrase and verified reformatting end to end on the sim server."""

from __future__ import annotations

from pathlib import Path

from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from tests.conftest import read_jsonl


def run(recipe: str, out: Path, limit: int) -> tuple[list[dict], list[dict], int]:
    loaded = load_recipe(recipe).with_backend(kind="sim", sim={"latency": 0.0})
    result = run_recipe(loaded, out, limit=limit)
    return read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path), result.stats.http_requests


def test_back_translation_makes_two_requests_per_text_and_keeps_the_label(tmp_path: Path) -> None:
    rows, rejects, requests = run("recipes/back_translation.yaml", tmp_path / "bt", 12)
    assert requests == 24 and len(rows) + len(rejects) == 12
    for row in rows:
        to_pivot, back = row["meta"]["steps"]
        assert to_pivot["template"] == "paraphrase/to_pivot.j2" and to_pivot["placeholders"]["pivot"]
        assert back["template"] == "paraphrase/from_pivot.j2"
        assert row["fields"]["category"] and row["fields"]["back_translated"] and row["fields"]["pivot_text"]


def test_styled_paraphrase(tmp_path: Path) -> None:
    rows, rejects, requests = run("recipes/paraphrase_styles.yaml", tmp_path / "st", 10)
    assert requests == 20 and len(rows) + len(rejects) == 20
    assert {row["meta"]["steps"][0]["placeholders"]["style"] for row in rows} <= {"formal", "casual", "concise", "detailed", "polite"}


def test_reformatting_is_verified_by_cosine(tmp_path: Path) -> None:
    """The simulator's rewrites drift in meaning: the shipped recipe keeps each original answer instead, marked."""
    recipe = load_recipe("recipes/reformat.yaml").with_backend(kind="sim", sim={"latency": 0.0})
    strict = run_recipe(recipe, tmp_path / "strict", limit=6)
    rows = read_jsonl(strict.run_dir.dataset_path)
    assert read_jsonl(strict.run_dir.rejects_path) == [] and len(rows) == 6
    assert all(r["fields"]["reformatted"] == r["fields"]["response"] and r["meta"]["kept_original"]["reason"] in {"drifted_meaning", "too_short"}
               for r in rows)
    assert any("cosine" in r["meta"]["kept_original"]["detail"] for r in rows)
    text = Path("recipes/reformat.yaml").read_text().replace("min_cosine: 0.8, min_length_ratio: 0.5", "min_cosine: -1.0")
    loose_path = tmp_path / "recipes" / "loose.yaml"
    loose_path.parent.mkdir()
    loose_path.write_text(text.replace("path: data/answers.jsonl", f"path: {Path('recipes/data/answers.jsonl').resolve()}"))
    loose = run_recipe(load_recipe(loose_path).with_backend(kind="sim", sim={"latency": 0.0}), tmp_path / "loose", limit=6)
    rows = read_jsonl(loose.run_dir.dataset_path)
    assert len(rows) == 6 and all(-1 <= r["meta"]["scores"]["cosine_reformatted_response"] <= 1 for r in rows)
    assert not any("kept_original" in r["meta"] for r in rows)
    assert loose.stats.http_requests == 6
