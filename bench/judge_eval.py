"""The `judge` stage against labels: rubric agreement with junk/usable, and the pairwise inconsistency rate.

    python bench/judge_eval.py [--limit 40] [--threshold 3] [--kind llamacpp] [--model M] [--base-url URL]

Records and labels: bench/data/quality_records.jsonl (`{id, instruction, input, response}`) and
bench/data/quality_labels.jsonl (`{id, label: junk|usable, why}`), hand-labelled by the rule in
bench/quality_filters.py. When they are absent the script makes `--limit` records itself with the packaged model
(the quickstart's two generate steps) and labels them by RULE below instead (say so when quoting the figures).
The judge is the packaged SmolLM2-135M-Instruct on the embedded llama.cpp backend unless `--kind/--model/
--base-url` name another; the same script measures a bigger judge unchanged.

- Rubric: the judge's default rubric (helpfulness, accuracy, clarity on 1-5) over each record's response with its
  instruction and input; a record is predicted junk when its mean score is below `--threshold`. Printed:
  agreement (share of records where prediction = label), junk precision / recall, Cohen's kappa, verdicts that
  failed (invalid JSON or truncated after the re-asks).
- Pairwise: each usable record's response (chosen) against a junk record's response (rejected), both shown for
  the usable record's instruction, asked in both orders. Printed: the inconsistency rate (verdicts that follow
  the position) and the share of pairs whose consistent verdict prefers the usable answer.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from synthgen.pipeline import run_recipe
from synthgen.recipe import recipe_from_data

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"
RULE = re.compile(r"<[^<>]{1,40}>|\[[A-Za-z_ ]{1,40}\]|\{[A-Za-z_ ]+\}|i'm ready to assist|as an ai|i'm sorry|sure! here",
                  re.IGNORECASE)


def rule_label(row: dict[str, str]) -> str:
    """RULE (only for self-made records): junk when any field holds a placeholder, a preamble or a refusal, or the
    response is under 40 characters or repeats the instruction."""
    text = " ".join(row[k] for k in ("instruction", "input", "response"))
    response = row["response"].strip()
    junk = RULE.search(text) or len(response) < 40 or row["instruction"].strip().lower() in response.lower()
    return "junk" if junk else "usable"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_records(limit: int, work: Path) -> list[dict[str, Any]]:
    """`limit` quickstart records from the packaged model, with no filter, labelled by RULE."""
    data = {"name": "judge-eval-records", "seed": 7, "prompts_dir": str(REPO / "prompts"), "backend": {"kind": "llamacpp"},
            "stages": [
                {"generate": {"taxonomy": str(REPO / "taxonomies" / "quickstart.yaml"), "count": limit,
                              "schema": {"type": "object", "required": ["instruction", "input"],
                                         "properties": {"instruction": {"type": "string", "minLength": 10},
                                                        "input": {"type": "string"}}},
                              "sampling": {"temperature": 1.0, "max_tokens": 128}}},
                {"generate": {"template": "quickstart/response.j2", "output": "response",
                              "sampling": {"temperature": 0.7, "max_tokens": 160}, "allow_truncated": True}}]}
    result = run_recipe(recipe_from_data(data, work / "make.yaml"), work / "make")
    rows = [{"id": r["id"], **{k: r["fields"].get(k, "") for k in ("instruction", "input", "response")}}
            for r in read_jsonl(result.run_dir.dataset_path)]
    return [{**row, "label": rule_label(row)} for row in rows]


def labelled(limit: int, work: Path) -> tuple[list[dict[str, Any]], str]:
    """(records with a `label`, where they came from)."""
    records, labels = DATA / "quality_records.jsonl", DATA / "quality_labels.jsonl"
    if records.exists() and labels.exists():
        by_id = {row["id"]: row["label"] for row in read_jsonl(labels)}
        rows = [{**row, "label": by_id[row["id"]]} for row in read_jsonl(records) if row["id"] in by_id]
        return rows[:limit], f"{min(limit, len(rows))} hand-labelled records from {records.relative_to(REPO)}"
    return make_records(limit, work), f"{limit} records made now by the packaged model, labelled by RULE"


def judge_run(records: list[dict[str, Any]], stage: dict[str, Any], backend: dict[str, Any], work: Path,
              name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, rejects, stats metrics) of one judge stage over `records`."""
    source = write_jsonl(work / f"{name}.jsonl", records)
    data = {"name": name, "prompts_dir": str(REPO / "prompts"), "backend": backend, "source": {"path": str(source)},
            "stages": [{"judge": stage}]}
    result = run_recipe(recipe_from_data(data, work / f"{name}.yaml"), work / name)
    return (read_jsonl(result.run_dir.dataset_path), read_jsonl(result.run_dir.rejects_path),
            result.stats.metrics.get("00-judge", {}))


def kappa(pairs: list[tuple[bool, bool]]) -> float:
    """Cohen's kappa of two yes/no raters."""
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    p_a, p_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40, help="records judged (and pairs: at most this many)")
    parser.add_argument("--threshold", type=float, default=3.0, help="mean rubric score below which a record is junk")
    parser.add_argument("--kind", default="llamacpp")
    parser.add_argument("--model", default=None)
    parser.add_argument("--base-url", default=None)
    args = parser.parse_args()
    backend = {"kind": args.kind, **({"model": args.model} if args.model else {}),
               **({"base_url": args.base_url} if args.base_url else {})}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows, origin = labelled(args.limit, work)
        records = [{k: row[k] for k in ("instruction", "input", "response")} | {"label": row["label"]} for row in rows]
        kept, rejects, _ = judge_run(records, {"context_fields": ["instruction", "input"]}, backend, work, "rubric")
        scored = [(row["fields"]["label"], row["meta"]["scores"]["judge"]["mean"]) for row in kept]
        failed = len(records) - len(scored)
        junk = [row for row in records if row["label"] == "junk"]
        usable = [row for row in records if row["label"] == "usable"]
        pairs = [{"instruction": good["instruction"], "input": good["input"], "chosen": good["response"],
                  "rejected": bad["response"]} for good, bad in zip(usable, junk, strict=False)]
        pair_kept, pair_rejects, pair_metrics = judge_run(
            pairs, {"mode": "pairwise", "chosen_field": "chosen", "rejected_field": "rejected",
                    "context_fields": ["instruction", "input"]}, backend, work, "pairwise")
    print(f"judge: {backend}; {origin}: {len(junk)} junk, {len(usable)} usable")
    if scored:
        outcomes = [(label == "junk", mean < args.threshold) for label, mean in scored]
        flagged = [truth for truth, predicted in outcomes if predicted]
        junk_scored = sum(truth for truth, _ in outcomes)
        print(f"rubric (junk = mean < {args.threshold:g}): agreement {sum(a == b for a, b in outcomes) / len(outcomes):.2f}"
              f", junk precision {sum(flagged) / len(flagged) if flagged else float('nan'):.2f}"
              f", recall {sum(flagged) / junk_scored if junk_scored else float('nan'):.2f}"
              f", kappa {kappa(outcomes):.2f}; mean score junk "
              f"{_mean([m for label, m in scored if label == 'junk']):.2f} vs usable "
              f"{_mean([m for label, m in scored if label == 'usable']):.2f}; no verdict: {failed}")
    reasons = [r["reason"] for r in pair_rejects]
    print(f"pairwise ({pair_metrics.get('pairs', 0)} pairs judged both ways, {len(pairs) - pair_metrics.get('pairs', 0)} "
          f"without a verdict): inconsistency rate {pair_metrics.get('inconsistency_rate')}, consistent for the usable "
          f"answer {len(pair_kept)}, consistent for the junk one {reasons.count('judge_prefers_rejected')}")
    print(f"wall {time.perf_counter() - started:.0f} s")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
