"""What the progress line says, computed from RunStats alone (so it can be tested without a terminal).

Stages stream into one another, so the line names the first unfinished stage that holds work (inputs taken
whose outputs it has not yielded or rejected yet: a generate stage's requests out, a whole-set stage's spilled
input); that is the stage the rest wait on. Its `done` counts settled inputs, its total is exact once the stage
before it has finished (that stage's output count) and an estimate before then: what the earlier stage has
yielded so far plus, for its inputs not settled yet, what the plan expects them to yield. A dropped record
therefore stops counting in every later total, and the bar, in requests (the unit that costs time and money)
when the run makes any, ends at 100% however many records were rejected, as DataDesigner's and distilabel's
per-step counters do for a step's own work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synthgen.prices import PriceTable
from synthgen.stats import RunStats, StageCounts, StagePlan

if TYPE_CHECKING:
    from synthgen.stages.base import Stage


def plan_stages(stages: Sequence[Stage], source_records: int | None, limit: int | None) -> list[StagePlan]:
    """Each stage's expected inputs, outputs and requests when nothing is dropped (`source_records`: the
    source's estimate; a stage that cannot plan its requests is assumed to pass its input through)."""
    records = source_records or 0
    if limit is not None and records:
        records = min(records, limit)
    plan = []
    for stage in stages:
        requests = stage.planned_requests(records)
        outputs = stage.outputs(records) if requests is not None else records
        plan.append(StagePlan(stage.ctx.label, records, outputs, requests))
        records = outputs
    return plan


@dataclass
class Snapshot:
    """One reading of the run: the current stage, the overall bar, and the figures shown beside it."""

    stage: str
    stage_number: int
    stages: int
    stage_done: int
    stage_total: int
    done: int  # the bar: requests when the run makes any, else the current stage's records
    total: int
    in_flight: int  # requests out at the backend: HTTP requests sent and unanswered, or (no HTTP) unfinished
    queued: int  # requests submitted and waiting for a place in the backend's window
    eta_s: float | None
    cost: float | None  # None: no price known for a model that was used (never a guess)
    unpriced: list[str]
    retries: dict[str, int]


def stage_totals(stats: RunStats) -> list[int]:
    """Every planned stage's expected total, in its own unit (inputs taken; outputs for a stage without input)."""
    totals: list[int] = []
    for index, step in enumerate(stats.plan):
        counts = stats.stages.get(step.label, StageCounts())
        if step.inputs == 0 and index == 0:  # makes its records from nothing: count what it yields
            done = step.label in stats.finished_stages
            totals.append(counts.records_out if done else max(step.outputs, counts.records_out))
            continue
        if step.label in stats.finished_stages:
            totals.append(counts.records_in)
            continue
        total = step.inputs if index == 0 else _expected_inputs(stats, index, totals[-1])
        totals.append(max(total, counts.records_in))
    return totals


def _expected_inputs(stats: RunStats, index: int, previous_total: int) -> int:
    """What stage `index` will take in: the previous stage's output so far, plus the plan's share of its
    inputs not settled yet."""
    previous = stats.plan[index - 1]
    counts = stats.stages.get(previous.label, StageCounts())
    if previous.label in stats.finished_stages:
        return counts.records_out
    if previous.inputs == 0:
        return previous_total
    left = max(previous_total - _settled(stats, index - 1), 0)
    return counts.records_out + round(left * previous.outputs / previous.inputs)


def _settled(stats: RunStats, index: int) -> int:
    """Inputs of stage `index` whose fate is known: all its output (outputs per input as planned) or rejected."""
    step, counts = stats.plan[index], stats.stages.get(stats.plan[index].label, StageCounts())
    if step.inputs == 0 and index == 0:
        return counts.records_out
    if step.label in stats.finished_stages:
        return counts.records_in
    per_input = step.outputs / step.inputs if step.inputs and step.outputs else 1.0
    return min(counts.records_in, round(counts.records_out / per_input) + counts.rejected)


def _current(stats: RunStats) -> int:
    """The first unfinished stage holding work, one that asks a model first (a stage upstream of it may hold
    records only until it pulls them); else the first unfinished one; else the last."""
    unfinished = [i for i, step in enumerate(stats.plan) if step.label not in stats.finished_stages]
    holding = [i for i in unfinished if (i == 0 and stats.plan[i].inputs == 0)
               or _settled(stats, i) < stats.stages.get(stats.plan[i].label, StageCounts()).records_in]
    asking = [i for i in holding if stats.plan[i].requests]
    return (asking or holding or unfinished or [len(stats.plan) - 1])[0]


def snapshot(stats: RunStats, prices: PriceTable | None = None) -> Snapshot:
    """The progress of `stats` now; `prices` turns the tokens sent so far into a cost."""
    totals = stage_totals(stats)
    unfinished = [step for step in stats.plan if step.label not in stats.finished_stages]
    current = _current(stats)
    stage_done = _settled(stats, current) if stats.plan else 0
    stage_total = totals[current] if stats.plan else 0
    if any(step.requests for step in stats.plan) or stats.planned_requests:
        done = stats.finished_requests
        expected = sum(round(step.requests * total / step.inputs) if step.inputs else step.requests
                       for step, total in zip(stats.plan, totals, strict=True) if step.requests is not None)
        total = done if not unfinished else max(expected, stats.planned_requests, done)
    else:
        done, total = stage_done, stage_total
    elapsed = stats.elapsed
    eta = elapsed * (total - done) / done if done and unfinished else (0.0 if not unfinished else None)
    cost, unpriced = prices.cost(_tokens_by_model(stats)) if prices is not None else (None, [])
    pending = stats.planned_requests - stats.finished_requests
    in_flight = min(stats.http_in_flight, pending) if stats.http_requests else pending
    return Snapshot(stats.plan[current].label if stats.plan else "starting", current + 1, len(stats.plan),
                    stage_done, stage_total, done, total, in_flight, pending - in_flight,
                    eta, cost, unpriced, dict(stats.retries))


UNATTRIBUTED = "(model not recorded)"  # tokens counted without their model (Ray workers send totals only)


def _tokens_by_model(stats: RunStats) -> dict[str, list[int]]:
    """[prompt, completion] tokens per model; tokens counted without a model under UNATTRIBUTED, so that only a
    price for every model (`--price-in/--price-out`) prices them, never a per-model one by guess."""
    tokens = {model: list(counts) for model, counts in stats.tokens_by_model.items()}
    rest = [stats.prompt_tokens - sum(c[0] for c in tokens.values()),
            stats.completion_tokens - sum(c[1] for c in tokens.values())]
    if any(rest):
        tokens[UNATTRIBUTED] = rest
    return tokens


def describe_retries(retries: dict[str, int]) -> str:
    """`retries 15 (429: 12, timeout: 3)`: the total, then each cause, most frequent first."""
    total = sum(retries.values())
    if not total:
        return "retries 0"
    causes = sorted(retries.items(), key=lambda item: (-item[1], item[0]))
    return f"retries {total} (" + ", ".join(f"{cause.removeprefix('http_')}: {n}" for cause, n in causes) + ")"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(snap: Snapshot, stats: RunStats) -> str:
    """The text beside the bar: stage, its done/total, requests in flight, rates, ETA, cost, retries."""
    elapsed = max(stats.elapsed, 1e-9)
    parts = [f"stage {snap.stage_number}/{snap.stages} {snap.stage} {snap.stage_done:,}/{snap.stage_total:,}"]
    if stats.embedded:
        parts.append(f"embedded {stats.embedded:,}")
    parts.append(f"in flight {snap.in_flight}" + (f" (+{snap.queued} queued)" if snap.queued else ""))
    parts.append(f"{stats.finished_requests / elapsed:,.0f} req/s "
                 f"{(stats.prompt_tokens + stats.completion_tokens) / elapsed:,.0f} tok/s")
    parts.append("ETA " + ("?" if snap.eta_s is None else _clock(snap.eta_s)))
    if snap.cost is not None:
        parts.append(f"cost ${snap.cost:,.4f}")
    elif snap.unpriced:
        parts.append(f"cost ? (no price for {', '.join(snap.unpriced)})")
    parts.append(describe_retries(snap.retries))
    parts.append(f"cached {stats.cache_hits} rejects {sum(stats.rejects.values())}")
    return " | ".join(parts)
