"""The dataset card (README.md) written with every export: what was made, how, what was dropped, how to redo it."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from synthgen.export import ExportConfig, ExportResult

DEDUP_REASONS = ("exact_duplicate", "near_duplicate", "semantic_duplicate", "contaminated")


def recipe_hash(recipe_text: str) -> str:
    """sha256 of the frozen recipe as written in the run directory."""
    return hashlib.sha256(recipe_text.encode()).hexdigest()


def _table(header: list[str], rows: list[list[Any]], empty: str = "None.") -> str:
    if not rows:
        return empty
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """`text` safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _sampling(recipe: dict[str, Any]) -> list[list[Any]]:
    """Every stage parameter named `sampling` or `<role>_sampling` (any LLM stage's, a plugin's too)."""
    rows = []
    for index, entry in enumerate(recipe.get("stages", [])):
        ((name, params),) = entry.items()
        for key, value in (params or {}).items():
            if (key == "sampling" or key.endswith("_sampling")) and isinstance(value, dict) and value:
                rows.append([f"{index:02d}-{name}", key, ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)])
    return rows


def _judge_scores(stats: dict[str, Any]) -> list[list[Any]]:
    """Each judge stage's score distribution per criterion (`metrics[<label>].scores`), over every judged record."""
    return [[label, name, d["min"], d["mean"], d["max"], ", ".join(f"{k}: {v}" for k, v in d["histogram"].items())]
            for label, values in stats.get("metrics", {}).items() for name, d in values.get("scores", {}).items()]


def _how_to_load(export: ExportConfig, result: ExportResult) -> list[str]:
    """A `datasets` snippet that loads the files this export wrote (and the Hub copy, when pushed)."""
    splits = list(result.rows) or ["train"]
    if export.format == "hf":
        code = ["from datasets import load_from_disk", "",
                f"dataset = load_from_disk({str(result.path)!r})  # DatasetDict: {', '.join(splits)}"]
    else:
        builder = "json" if export.format == "jsonl" else "parquet"
        files = ", ".join(f"{split!r}: {str(result.path / f'{split}.{export.format}')!r}" for split in splits)
        code = ["from datasets import load_dataset", "", f"dataset = load_dataset({builder!r}, data_files={{{files}}})"]
    if export.push_to_hub:
        code += ["", f"dataset = load_dataset({export.push_to_hub!r})  # the copy on the Hugging Face Hub"]
    return ["## How to load", "", "```python", *code, "```", ""]


def dataset_card(recipe_text: str, stats: dict[str, Any], export: ExportConfig, result: ExportResult) -> str:
    """Markdown card from the frozen recipe, the run's stats and the export's outcome."""
    recipe = yaml.safe_load(recipe_text) or {}
    backend = recipe.get("backend", {})
    run = recipe.get("run") or {}
    name = recipe.get("name", "dataset")
    rejects = stats.get("rejects_by_reason", {})
    requests, tokens = stats.get("requests", {}), stats.get("tokens", {})
    stages = stats.get("stages", {})
    funnel = [[label, c.get("records_in"), c.get("records_out"), c.get("rejected")] for label, c in stages.items()]
    dedup = [[reason, rejects[reason]] for reason in DEDUP_REASONS if reason in rejects]
    metrics = [[label, key, value] for label, values in stats.get("metrics", {}).items() for key, value in values.items()
               if key != "scores"]  # a judge's score distributions have their own section
    judged = _judge_scores(stats)
    examples = stats.get("reject_examples", {})
    by_count = sorted(([reason, count, _cell(examples.get(reason, ""))] for reason, count in rejects.items()),
                      key=lambda row: -row[1])
    command = run.get("command") or f"synthgen run <recipe> --limit {run.get('limit')}"
    requests_line = f"{requests.get('finished')} ({requests.get('http_sent')}, {requests.get('cache_hits')})"
    parts = [
        "---", yaml.safe_dump({"pretty_name": name, "license": "other", "tags": ["synthetic", "synthgen"]}).strip(), "---",
        f"# {name}", "", recipe.get("description") or "Synthetic data generated with synthgen.", "",
        "## Summary", "",
        _table(["", ""], [
            ["rows", ", ".join(f"{split}: {count}" for split, count in result.rows.items())],
            ["layout / format", f"{export.layout} / {export.format}"],
            ["recipe hash (sha256 of recipe.yaml)", recipe_hash(recipe_text)],
            ["seed", recipe.get("seed")],
            ["backend / model", f"{backend.get('kind')} / {backend.get('model')}"],
            ["requests (http, cache hits)", requests_line],
            ["tokens in / out", f"{tokens.get('prompt')} / {tokens.get('completion')}"],
            ["wall time", f"{stats.get('wall_time_s')} s"],
        ]), "",
        *_how_to_load(export, result),
        "## Sampling parameters", "", _table(["stage", "step", "parameters"], _sampling(recipe)), "",
        "## Funnel (records per stage)", "", _table(["stage", "in", "out", "rejected"], funnel, "No stage ran."), "",
        "## Rejects by reason", "", _table(["reason", "records", "first rejected record (shortened)"], by_count), "",
        "## Dedup and decontamination", "", _table(["reason", "records"], dedup, "No dedup stage removed records."), "",
        "## Stage metrics", "", _table(["stage", "metric", "value"], metrics, "No stage measured anything."), "",
        *(["## Judge scores", "", _table(["stage", "criterion", "min", "mean", "max", "histogram (score: records)"],
                                         judged), ""] if judged else []),
        "## How to reproduce", "", "```", command, "```", "",
        "or, from this run's frozen recipe (every parameter spelled out): `synthgen run <run directory>/recipe.yaml"
        + (f" --limit {run['limit']}" if run.get("limit") else "")
        + "`. Every completion is cached by content, so a rerun in the same run directory makes no new requests.", "",
        "## License and intended use", "",
        "_To fill in: the license of this dataset, the terms of the model that generated it, and what it is meant"
        " (and not meant) for._", "",
    ]
    if result.skipped:
        parts += [f"Note: {result.skipped} records lacked a field the `{export.layout}` layout needs and were left out.", ""]
    if review := stats.get("review"):  # counted by `export_run` from the run's review.jsonl (`synthgen view`)
        parts += ["## Human review", "", f"{review['excluded']} records excluded by review, {review['approved']} approved"
                  + (f", {review['not approved']} left out as not approved" if review["not approved"] else "")
                  + " (decisions in the run directory's review.jsonl).", ""]
    return "\n".join(parts)
