"""recipes/preference.yaml end to end on the sim (which judges by text heuristics): 4 answers per instruction,
each judged, best against worst exported as DPOTrainer rows; and best_of_n in the same pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.sim import SimServer
from tests.conftest import read_jsonl, synthgen, write


def test_preference_recipe_makes_dpo_pairs_with_the_margin(tmp_path: Path, sim: SimServer) -> None:
    out = tmp_path / "run"
    result = synthgen("run", "recipes/preference.yaml", "--base-url", sim.base_url, "--limit", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    prompts = stats["stages"]["01-exact_dedup"]["records_out"]
    assert sim.stats()["requests"] == 8 + 4 * prompts + 4 * prompts  # instructions, 4 answers each, a verdict per answer
    pairs = read_jsonl(out / "dataset.jsonl")
    funnel = stats["metrics"]["04-preference_pairs"]
    assert funnel["candidates"] == 4 * prompts and funnel["prompts"] == prompts and funnel["kept"] == len(pairs) > 0
    for pair in pairs:
        fields = pair["fields"]
        assert fields["score_chosen"] - fields["score_rejected"] >= 1.0 and fields["chosen"] != fields["rejected"]
        assert fields["prompt"].strip() and pair["meta"]["preference"] == {"score": "judge", "candidates": 4}
        assert len(pair["meta"]["parents"]) == 2
    reasons = {row["reason"] for row in read_jsonl(out / "rejects.jsonl")}
    assert reasons <= {"margin_too_small", "not_paired"}
    counts = stats["stages"]["04-preference_pairs"]
    assert counts["records_in"] == 2 * len(pairs) + counts["rejected"]  # every candidate is in a pair or rejected
    rows = read_jsonl(out / "export" / "train.jsonl")
    assert rows == [{key: p["fields"][key] for key in ("prompt", "chosen", "rejected")} for p in pairs]


def test_best_of_n_keeps_one_answer_per_instruction(tmp_path: Path, sim: SimServer) -> None:
    recipe = Path("recipes/preference.yaml").read_text(encoding="utf-8").replace("taxonomies/", f"{Path.cwd()}/taxonomies/")
    start, end = recipe.index("  - preference_pairs:"), recipe.index("  # 6.")
    recipe = recipe[:start] + "  - best_of_n:\n      score: judge\n" + recipe[end:].replace("layout: preference", "layout: messages")
    out = tmp_path / "run"
    result = synthgen("run", str(write(tmp_path / "best.yaml", recipe)), "--base-url", sim.base_url, "--limit", "6",
                      "--out", str(out))
    assert result.returncode == 0, result.stderr
    kept = read_jsonl(out / "dataset.jsonl")
    prompts = json.loads((out / "stats.json").read_text())["stages"]["01-exact_dedup"]["records_out"]
    assert len(kept) == prompts and len({row["meta"]["parents"][0] for row in kept}) == prompts
    for row in kept:
        best_of = row["meta"]["best_of"]
        assert best_of["candidates"] == 4 and best_of["rank"] == 1
        assert row["meta"]["scores"]["judge"]["mean"] == max(best_of["scores"])
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len(rejects) == 3 * prompts and {row["reason"] for row in rejects} == {"not_best"}
    assert len(read_jsonl(out / "export" / "train.jsonl")) == prompts
    card = (out / "export" / "README.md").read_text(encoding="utf-8")  # the funnel: what each kept record cost
    assert "| 04-best_of_n | candidates_per_kept | 4.0 |" in card and "## Judge scores" in card
