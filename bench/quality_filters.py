"""The heuristic quality filters of recipes/quickstart.yaml against hand labels, and their throughput.

    python bench/quality_filters.py                         # precision / recall / share dropped, records/s
    python bench/quality_filters.py --save-from RUN_DIR     # append a run's records to bench/data/quality_records.jsonl

The records (bench/data/quality_records.jsonl, 339) are what the packaged SmolLM2-135M-Instruct wrote for the
quickstart recipe with its quality and length filters removed (so the set holds every kind of junk), in two runs:
  - seed 42 (the recipe's), 221 records: the instructions its first step wrote for `count: 340` until the run
    was stopped (a busy shared machine: 293 completions, of which 270 valid JSON under the recipe's schema),
    then, as a source file, through the recipe's exact and MinHash dedup and its answering step
    (`template: quickstart/response.j2`, same sampling), with `synthgen run <that recipe> --out RUN_DIR`;
  - seed 7, 118 records (appended after them with `--save-from`): the same recipe in one run, `seed: 7`,
    `count: 135`: 135 valid instructions, 15 exact duplicates dropped (none near-duplicate), 2 answers
    rejected as truncated at the recipe's `max_tokens: 512`.

Labelling rule, written before labelling (bench/data/quality_labels.jsonl: `{"id", "label", "why"}`). A record
is **junk** when any of these holds, **usable** otherwise:
  1. the instruction or input holds an unfilled or invented placeholder (`<the task>`, `[instruction_type]`,
     `{topic}`), or the instruction is not a task: a statement about the assistant ("I'm ready to assist"),
     a greeting, a request for the user to supply the task, an echo of the request that asked for it ("You
     create training data ...", "Write a new task ..."), a bare title or number, or a story fragment with nothing
     asked;
  2. the response refuses, or is only a preamble or an offer to help without doing the task, or asks for an
     input that the instruction already gave;
  3. the response copies or merely restates the instruction or input instead of doing the task;
  4. the response is degenerate: a line, sentence or phrase repeated over and over, or it stops before doing
     any of the task;
  5. the response is not in English, or is mostly symbols, markup or numbers with no answer in them;
  6. the response does a different task than the instruction asks (off topic).
Weak content is not junk by this rule: factual or arithmetic errors, a dull or partial answer, a letter
that keeps `[Your Name]` for the sender; judging those is the `judge` stage's job, not a heuristic's.

Precision of a rule: the share of the records it drops that are junk. Recall: the share of the junk records it
drops. Each rule runs alone on every record; "all rules" runs the recipe's filters in order, as a run does.
Throughput: the whole filter set in this one process (one thread, so one core), over the records repeated to
20,000; per CPU second, which a busy machine does not distort, and per wall-clock second.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path

from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.stages.base import Filter, StageContext
from synthgen.stages.registry import stage_class

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"
RECIPE = REPO / "recipes" / "quickstart.yaml"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_from(run_dir: Path) -> None:
    """Append a run's dataset (id and the three text fields) to bench/data/quality_records.jsonl.

    The records already there stay, in order and with their ids (their labels refer to them); a run record whose
    id is already in the file is skipped, so ids stay unique and saving the same run twice adds nothing.
    """
    path = DATA / "quality_records.jsonl"
    existing = read_jsonl(path) if path.exists() else []
    seen = {row["id"] for row in existing}
    added = []
    for row in read_jsonl(run_dir / "dataset.jsonl"):
        if row["id"] not in seen:
            seen.add(row["id"])
            added.append({"id": row["id"], **{k: row["fields"].get(k, "") for k in ("instruction", "input", "response")}})
    DATA.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(json.dumps(row) + "\n" for row in added))
    print(f"{len(added)} records added to {path} ({len(existing)} were there, {len(existing) + len(added)} now)")


def recipe_filters(drops: dict[str, str]) -> list[Filter]:
    """The recipe's filter stages, built alone (no run directory); a drop is written to `drops` (id -> reason)."""
    recipe = load_recipe(RECIPE)
    filters = []
    for index, spec in enumerate(recipe.stage_specs):
        cls = stage_class(spec.name)
        if issubclass(cls, Filter):
            ctx = StageContext(label=f"{index:02d}-{spec.name}", index=index, seed=recipe.seed, recipe_path=RECIPE,
                               prompts_dir=REPO / "prompts", resolve=recipe.resolve,
                               reject=lambda record, reason, detail: drops.setdefault(record.id, reason))
            filters.append(cls(spec.params, ctx))
    return filters


def chained(filters: list[Filter], records: Iterable[Record]) -> Iterable[Record]:
    for stage in filters:
        records = stage.run(records)
    return records


def scores(dropped: set[str], junk: set[str]) -> tuple[float, float]:
    precision = len(dropped & junk) / len(dropped) if dropped else float("nan")
    return precision, len(dropped & junk) / len(junk) if junk else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-from", type=Path,
                        help="a run directory whose records are appended (ids already there are skipped)")
    args = parser.parse_args()
    if args.save_from:
        save_from(args.save_from)
        return
    rows = read_jsonl(DATA / "quality_records.jsonl")
    labels = {row["id"]: row["label"] for row in read_jsonl(DATA / "quality_labels.jsonl")}
    records = [Record(row["id"], {k: row[k] for k in ("instruction", "input", "response")}, {}) for row in rows]
    junk = {record.id for record in records if labels[record.id] == "junk"}
    print(f"{len(records)} records, {len(junk)} labelled junk ({len(junk) / len(records):.1%})\n")
    print(f"{'rule (stage: reason)':<44} {'dropped':>8} {'share':>7} {'precision':>10} {'recall':>7}")
    drops: dict[str, str] = {}
    for stage in recipe_filters(drops):
        drops.clear()
        for _ in chained([stage], records):
            pass
        by_reason: dict[str, set[str]] = {}
        for record_id, reason in drops.items():
            by_reason.setdefault(reason, set()).add(record_id)
        for reason, ids in sorted(by_reason.items()) or [("-", set())]:
            precision, recall = scores(ids, junk)
            print(f"{stage.ctx.label + ': ' + reason:<44} {len(ids):>8} {len(ids) / len(records):>7.1%} "
                  f"{precision:>10.2f} {recall:>7.2f}")
    drops.clear()
    filters = recipe_filters(drops)
    kept = {record.id for record in chained(filters, records)}
    dropped = {record.id for record in records} - kept
    precision, recall = scores(dropped, junk)
    print(f"{'all rules, in recipe order':<44} {len(dropped):>8} {len(dropped) / len(records):>7.1%} "
          f"{precision:>10.2f} {recall:>7.2f}")
    missed = sorted(junk - dropped)
    print(f"\njunk kept by every rule: {len(missed)}; wrongly dropped: {len(dropped - junk)}")

    many = (records * (20_000 // len(records) + 1))[:20_000]
    start, cpu = time.perf_counter(), time.process_time()
    for _ in chained(recipe_filters({}), many):
        pass
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"throughput, all {len(filters)} filter stages in one process: {len(many) / cpu:,.0f} records per CPU"
          f" second ({len(many) / elapsed:,.0f}/s wall clock)")


if __name__ == "__main__":
    main()
